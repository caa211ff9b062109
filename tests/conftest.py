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

from . import helpers  # noqa: E402
from .helpers import make_random_adapter  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker (see the root conftest.py)
    import torch  # noqa: E402

    torch.set_num_threads(1)


COLAB_VERSIONS_ENV = "LORA_BOOK_COLAB_VERSIONS"
"""Set by tests/test_colab_versions.py for the run under Colab's package versions: only that run keeps the tests
marked ``colab`` (the full-profile smoke, which a Colab student runs under those versions), unless they are asked for
by name (``-m smoke``)."""


def pytest_collection_modifyitems(config, items):
    if os.environ.get(COLAB_VERSIONS_ENV) == "1" or "smoke" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("colab") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


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
    """The tiny profile shrunk for tests: three tasks, few images, one short epoch, two training seeds
    (:data:`tests.helpers.MINI_OVERRIDES`)."""
    return helpers.mini_profile()


def shared_folder(tmp_path_factory) -> Path:
    """A folder every xdist worker of this run sees (the base temporary folder when there are no workers)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def shared_study(tmp_path_factory, mini_profile) -> Path:
    """The one small study of this test run: ``run_study`` of the mini profile with :data:`helpers.MINI_METHODS`
    on one thread, as a ``python -m lora_merge_utils run`` subprocess or an ``accelerate launch`` process runs it
    (so their bytes can be compared with it). Built by the first worker that asks, under a file lock, and read by
    every other test: a test that changes artifacts works on a copy (``copy_of_shared_study``)."""
    from filelock import FileLock

    from lora_merge_utils import run_study
    from lora_merge_utils.combine import one_thread

    folder = shared_folder(tmp_path_factory)
    root = folder / "shared-study"
    with FileLock(str(folder / "shared-study.lock")):
        if not (root / "results" / "summary.csv").is_file():
            with pytest.MonkeyPatch.context() as patch, one_thread():
                patch.setenv("LORA_BOOK_ARTIFACTS", str(folder / "shared-artifacts"))  # its generated data
                run_study(mini_profile, root, methods=helpers.MINI_METHODS, progress=False)
    return root


@pytest.fixture
def copy_of_shared_study(shared_study, tmp_path) -> Path:
    """A private copy of the shared study's folder, for a test that deletes, edits or adds artifacts."""
    import shutil

    root = tmp_path / "study"
    shutil.copytree(shared_study, root, ignore=shutil.ignore_patterns(".training.lock"))
    return root


@pytest.fixture
def random_adapters(backbone, tmp_path):
    """Three random rank-4 adapters saved under tmp_path, as ``{name: directory}``."""
    return {name: make_random_adapter(backbone, tmp_path / name, seed=i) for i, name in enumerate(["a", "b", "c"])}
