"""Shared fixtures. Tests never touch the network: the Hub is switched to offline mode before anything imports it."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Settings that would point the tests at other data or weights. (LORA_BOOK_PROGRESS stays: the chapters that nbval
# executes in this same process's kernels rely on it to keep progress bars out of their outputs.)
for _name in (
    "LORA_BOOK_PROFILE",
    "LORA_BOOK_DATA_DIR",
    "LORA_BOOK_BACKBONE_FILE",
    "LORA_BOOK_OVERRIDES",
    "LORA_BOOK_ARTIFACTS",
    "LORA_BOOK_HUB_MIRROR",
):
    os.environ.pop(_name, None)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from torch import nn  # noqa: E402

from lora_merge_utils import TINY, create_backbone  # noqa: E402
from lora_merge_utils.profiles import GeneratedData, TrainSettings  # noqa: E402

from .helpers import make_random_adapter  # noqa: E402


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path_factory, monkeypatch):
    """Nothing a test writes by default (samples of hub datasets, artifacts) lands in the working directory."""
    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path_factory.getbasetemp() / "artifacts"))


@pytest.fixture(scope="session")
def backbone() -> nn.Module:
    """The shipped tiny backbone (frozen, CPU)."""
    return create_backbone(TINY)


@pytest.fixture(scope="session")
def mini_profile():
    """The tiny profile shrunk for tests: three tasks, few images, one short epoch, two training seeds."""
    return TINY.replace(
        tasks=("digits", "shapes", "gratings"),
        data=GeneratedData(train_per_class=12, val_per_class=10, test_per_class=8),
        train=TrainSettings(head_l2=(1e-3, 1e-1), adapter_epochs=1, batch_size=32, eval_batch_size=128),
        seeds=2,
    )


@pytest.fixture
def random_adapters(backbone, tmp_path):
    """Three random rank-4 adapters saved under tmp_path, as ``{name: directory}``."""
    return {name: make_random_adapter(backbone, tmp_path / name, seed=i) for i, name in enumerate(["a", "b", "c"])}


@pytest.fixture(scope="session")
def public_book(tmp_path_factory) -> Path:
    """The public book as `make html` renders it (stored notebook outputs, nothing executed; warnings are errors),
    built once per session for the tests that read its pages."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("book")
    root = Path(__file__).resolve().parent.parent
    command = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(root),
        "-W",
        "--keep-going",
        "--path-output",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "_build" / "html"
