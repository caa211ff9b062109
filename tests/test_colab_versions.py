"""The package versions a Colab GPU runtime ships (``requirements/colab.txt``): the unit tests and the full-profile
smoke of every chapter run under them, in their own environment (``.venv-colab``, made by ``make colab-venv``, which
``make test`` does first), so a new Colab image that breaks the book is found here, not by a student. torch and
torchvision are the exception: that environment shares ``.venv``'s, by hard links, to fit CI's disk. The smoke runs
only here (it is what a Colab student runs, so Colab's versions are the ones that matter for it); the tests marked
``repository`` read only the repository's own files and run only under CI's versions."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import COLAB_VERSIONS_ENV
from .helpers import ROOT

PYTHON = ROOT / ".venv-colab" / "bin" / "python"
SELECTED = "colab or not (notebook or smoke or book or subprocess or repository)"
"""What runs under Colab's versions: `make check`'s tests that a package version could change, and every chapter in
the full profile (``colab``)."""


def _pins(path: Path = ROOT / "requirements" / "colab.txt") -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(re.match(r"([\w.-]+)==(\S+)", line).groups() for line in lines if re.match(r"[\w.-]+==", line))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_colab_pins_name_the_book_s_dependencies():
    pins = {name.lower().replace("_", "-") for name in _pins()}
    needed = {"torch", "torchvision", "timm", "peft", "datasets", "numpy", "pandas", "transformers", "accelerate"}
    assert needed <= pins, f"requirements/colab.txt lacks {sorted(needed - pins)}"


@pytest.mark.subprocess
def test_unit_tests_and_the_smoke_pass_under_colab_versions():
    if not PYTHON.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs .venv-colab: make test makes it (make colab-venv)")
        pytest.skip("no .venv-colab here: make colab-venv (make test does it) installs Colab's versions")
    installed = json.loads(
        subprocess.run(
            [
                str(PYTHON),
                "-c",
                "import importlib.metadata as m, json; "
                "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    installed = {_canonical(name): version.split("+")[0] for name, version in installed.items()}
    ours = _pins(ROOT / "requirements" / "constraints.txt")
    expected = {_canonical(name): version for name, version in _pins().items()}
    expected |= {name: ours[name] for name in ("torch", "torchvision")}  # shared from .venv (scripts/share_packages.py)
    wrong = {
        name: (installed.get(name), version) for name, version in expected.items() if installed.get(name) != version
    }
    assert not wrong, f".venv-colab differs from its pins (installed, pinned): {wrong}; rebuild it: make colab-venv"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_XDIST")}
    done = subprocess.run(
        [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-m", SELECTED],
        cwd=ROOT,
        env=env | {COLAB_VERSIONS_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert re.search(r"\d+ passed", done.stdout) and " failed" not in done.stdout.splitlines()[-1]
