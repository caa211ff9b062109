"""A run killed with SIGKILL (no cleanup code runs) mid-training and stopped with SIGTERM mid-grid resumes to the same
bytes.

Real processes of ``python -m lora_merge_utils run``, on the tests' shrunk tiny profile (three tasks, few training
images, one epoch, two seeds) on one core; the uninterrupted run they are compared with is the session's shared study,
built with the same profile, methods and thread count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import MINI_METHODS, MINI_OVERRIDES, ROOT

pytestmark = pytest.mark.subprocess
TIMING = ("train_seconds", "train_images_per_second")
"""The only recorded fields that may differ between runs: how long training took."""


def _command(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lora_merge_utils",
        "run",
        "--profile",
        "tiny",
        "--out",
        str(out),
        "--quiet",
        "--methods",
        *MINI_METHODS,
    ]


def _env() -> dict[str, str]:
    env = dict(
        os.environ,
        LORA_BOOK_OVERRIDES=json.dumps(MINI_OVERRIDES),
        LORA_BOOK_PROGRESS="0",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    return env


def _run(out: Path) -> None:
    result = subprocess.run(_command(out), env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def _kill_when(out: Path, ready, what: str) -> None:
    """Start a run and SIGKILL it as soon as ``ready(out)`` holds; it must still have been running."""
    process = subprocess.Popen(_command(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not ready(out):
        if process.poll() is not None:
            pytest.fail(
                f"the run ended (exit {process.returncode}) before it was {what}: "
                f"{process.stderr.read().decode()[-2000:]}"
            )
        assert time.monotonic() < deadline, f"the run was never {what}"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"the run finished before it could be killed {what}"


def _training(out: Path) -> bool:
    """The first adapter is saved; the others are still to train."""
    return (out / "adapters" / "digits" / "seed-0" / "metrics.json").is_file()


def _in_grid(out: Path) -> bool:
    """Every adapter is saved (the last task's, of the last seed); the tables are not written yet."""
    last_task, seeds = MINI_OVERRIDES["tasks"][-1], MINI_OVERRIDES["seeds"]
    return (out / "adapters" / last_task / f"seed-{seeds - 1}" / "metrics.json").is_file()


def _record(out: Path) -> dict[str, bytes | dict]:
    """Every file that should be the same from run to run: weights, configs, tables; metrics less their timings."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    record: dict[str, bytes | dict] = {}
    for path in sorted(out.rglob("*")):
        name = str(path.relative_to(out))
        if (
            name.startswith("features/") and path.is_file()
        ):  # its seal is the folder's own: the tensors and what they were made from
            with safe_open(str(path), framework="pt") as saved:
                identity = json.loads(saved.metadata()["identity"])
            record[name] = {"tensors": {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}}
            record[name]["identity"] = {k: v for k, v in identity.items() if k != "seal"}
        elif path.suffix in (".safetensors", ".csv") or path.name == "adapter_config.json":
            record[name] = path.read_bytes()
        elif path.name == "metrics.json":  # less the seal: each folder seals with its own key
            record[name] = {k: v for k, v in json.loads(path.read_text()).items() if k not in {*TIMING, "seal"}}
    return record


def _debris(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if p.name.endswith((".tmp", ".old"))]


def test_a_run_killed_then_stopped_resumes_to_the_uninterrupted_bytes(tmp_path, shared_study):
    """One sequence, one resumed run: SIGKILL mid-training (no cleanup code runs), then SIGTERM mid-grid (what a
    scheduler or a closing terminal sends: exit 143, one line saying what was kept, no traceback), then the same
    command again, which finishes with the uninterrupted run's weights and tables, byte for byte, and no debris."""
    reference, resumed = shared_study, tmp_path / "resumed"
    _kill_when(resumed, _training, "killed mid-training")
    assert not list((resumed / "results").glob("*.csv")), "no table yet (the adapters' own results are kept)"

    process = subprocess.Popen(
        _command(resumed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not _in_grid(resumed):
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the run never finished training"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("terminated: run stopped"), stderr
    assert not (resumed / "results" / "merges.csv").exists()

    _run(resumed)
    expected, got = _record(reference), _record(resumed)
    assert sorted(got) == sorted(expected)
    assert {name for name in expected if name.startswith("results/")} >= {
        "results/singles.csv",
        "results/merges.csv",
        "results/summary.csv",
    }
    differ = [name for name in expected if got[name] != expected[name]]
    assert not differ, f"not the same as an uninterrupted run: {differ}"
    assert _debris(resumed) == [] and _debris(reference) == []
