"""The chapters' setup cell as a Colab student meets it, run here with Colab and pip faked: a visible warning on a
runtime without a GPU, the three install paths (PyPI, the repository's tag, its newest code) and pip's own words when
all of them fail, and Google Drive switched on and off again."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import pytest
import torch

from .helpers import CHAPTERS, CONFIG, load_script

EXECUTE = load_script("execute_notebooks")

pytestmark = pytest.mark.repository  # reads only the repository's own files

URL = CONFIG["repository"]["url"].rstrip("/")
SOURCE = EXECUTE.setup_source()
BEFORE_IMPORT = SOURCE.split("import lora_merge_utils as lmu")[0]
"""The part of the cell that runs before the package exists (the rest opens a study, tested everywhere else)."""


class FakeColab:
    """``google.colab`` in ``sys.modules`` (the cell's test for Colab), a Drive that records mounts, a pip that
    answers from a script, and a runtime with or without CUDA."""

    def __init__(self, monkeypatch, pip_answers=(), cuda=True):
        self.mounted, self.pip_calls = [], []
        self.answers = list(pip_answers)
        colab = types.ModuleType("google.colab")
        colab.drive = types.SimpleNamespace(mount=self.mounted.append)
        google = types.ModuleType("google")
        google.colab = colab
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", colab)
        monkeypatch.setattr(subprocess, "run", self._pip)
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "lora_merge_utils" else find_spec(name, *a)
        )
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.delenv("LORA_BOOK_ARTIFACTS", raising=False)

    def _pip(self, command, **kwargs):
        assert command[:4] == [sys.executable, "-m", "pip", "install"], command
        self.pip_calls.append(command[-1])
        code, stderr = self.answers.pop(0)
        return subprocess.CompletedProcess(command, code, stdout="", stderr=stderr)

    def run(self, use_drive: bool | None = None) -> None:
        """The cell as a student runs it: as shipped (``None``), or with ``USE_DRIVE`` set to ``use_drive``."""
        source = BEFORE_IMPORT
        if use_drive is not None:
            assert "USE_DRIVE = True  #" in source, "the shipped cell keeps artifacts on Drive"
            source = source.replace("USE_DRIVE = True  #", f"USE_DRIVE = {use_drive}  #")
        exec(compile(source, "setup cell", "exec"), {})


OK = (0, "")
NO_PACKAGE = (
    1,
    "ERROR: Could not find a version that satisfies the requirement lora-merge-utils==0.2.0\n"
    "ERROR: No matching distribution found for lora-merge-utils==0.2.0",
)
GIT_TAIL = (
    "  error: subprocess-exited-with-error\n  \n  × git {what} did not run successfully.\n  │ exit code: {code}\n"
    "  ╰─> See above for output.\n  \n  note: This error originates from a subprocess, and is likely not a problem "
    "with pip.\nerror: subprocess-exited-with-error\n\n× git {what} did not run successfully.\n│ exit code: {code}\n"
    "╰─> See above for output.\n\nnote: This error originates from a subprocess, and is likely not a problem with pip."
)
"""How pip ends a failed git install (pip 24): its last four lines never say why."""
NO_TAG = (
    1,
    "  error: pathspec 'v0.2.0' did not match any file(s) known to git\n"
    + GIT_TAIL.format(what="checkout -q v0.2.0", code=1),
)
NO_REPO = (
    1,
    "  fatal: repository 'https://github.com/someone/fork/' not found\n"
    + GIT_TAIL.format(what="clone --filter=blob:none --quiet", code=128),
)
OFFLINE = (1, "ERROR: Could not install packages due to an OSError: Temporary failure in name resolution")


def test_a_published_version_installs_from_pypi(monkeypatch, capsys):
    colab = FakeColab(monkeypatch, [OK])
    colab.run()
    version = EXECUTE.book_ref().removeprefix("v")
    assert colab.pip_calls == [f"lora-merge-utils=={version}"]
    assert f"installed lora-merge-utils=={version}" in capsys.readouterr().out


def test_without_the_package_on_pypi_the_repository_s_tag_then_main_are_tried(monkeypatch, capsys):
    colab = FakeColab(monkeypatch, [NO_PACKAGE, NO_TAG, OK])
    colab.run()
    ref = EXECUTE.book_ref()
    assert colab.pip_calls[1:] == [f"git+{URL}@{ref}", f"git+{URL}@main"]
    assert capsys.readouterr().out.strip().endswith(f"installed git+{URL}@main")


@pytest.mark.parametrize("git_failure", [NO_TAG, NO_REPO], ids=["no such tag", "no such repository"])
def test_when_every_install_fails_the_lines_that_say_why_are_shown(monkeypatch, git_failure):
    """pip's last lines after a failed git install are "exit code: 128 / See above for output": the cause (a tag or
    a repository not found) is earlier, and it is what the student must see."""
    colab = FakeColab(monkeypatch, [NO_PACKAGE, git_failure, OFFLINE])
    with pytest.raises(SystemExit) as stop:
        colab.run()
    message = str(stop.value)
    assert len(colab.pip_calls) == 3
    assert "No matching distribution found for lora-merge-utils" in message and "Temporary failure" in message
    assert git_failure[1].strip().splitlines()[0].strip() in message, "git's own reason is shown"
    assert "See above for output" not in message and "exit code" not in message
    assert "internet access" in message and "BOOK_REF = 'main'" in message


def test_a_runtime_without_a_gpu_is_told_how_to_switch_before_any_work(monkeypatch, capsys):
    colab = FakeColab(monkeypatch, [OK], cuda=False)
    colab.run()
    out = capsys.readouterr().out
    assert out.startswith("⚠ This runtime has no GPU")
    assert "Runtime > Change runtime type > T4 GPU" in out and out.index("⚠") < out.index("installed")


def test_drive_is_on_as_shipped_and_switched_off_uses_local_storage_again(monkeypatch):
    import os

    colab = FakeColab(monkeypatch, [OK, OK])
    colab.run()  # as shipped: Drive keeps what each chapter trains for the next, on a fresh runtime
    assert colab.mounted == ["/content/drive"]
    assert os.environ["LORA_BOOK_ARTIFACTS"] == "/content/drive/MyDrive/lora-merge-book"
    colab.run(use_drive=False)  # the student sets USE_DRIVE = False and runs the cell again, same runtime
    assert "LORA_BOOK_ARTIFACTS" not in os.environ
    assert "lmu.storage_report(DRIVE)" in SOURCE, "with Drive on, the cell says what Drive holds and its size"


def test_off_colab_the_cell_installs_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran off Colab"))
    exec(compile(BEFORE_IMPORT, "setup cell", "exec"), {})


def test_every_chapter_and_student_copy_asks_colab_for_a_t4():
    import nbformat

    for path in CHAPTERS + [p.parent / "student" / p.name for p in CHAPTERS]:
        metadata = nbformat.read(path, as_version=4).metadata
        assert metadata.get("accelerator") == "GPU", path
        assert metadata.get("colab", {}).get("gpuType") == "T4", path
