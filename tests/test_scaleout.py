"""The study on two processes (``accelerate launch``, gloo on this CPU) gives the tables one process gives, and a
launch killed mid-grid leaves no table behind and is completed by the next launch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_merge_utils.distributed import WORLD_SIZE_VARIABLES, launched_processes
from lora_merge_utils.evaluation import SINGLE_ADAPTER
from lora_merge_utils.safe_io import FolderBusy, lock_held_by_launch, training_lock

from .helpers import MINI_METHODS, MINI_OVERRIDES

# The tests' small study (three tasks, two training seeds, one short epoch) still has something to share.
CELLS = MINI_OVERRIDES["seeds"] * 4 * len(MINI_METHODS)  # seeds x (3 pairs + 1 triple) x methods
TABLES = ("singles.csv", "merges.csv", "summary.csv")
# Everything `accelerate launch` would otherwise ask a config file for, so that it neither prompts nor warns.
# `--multi_gpu` is the launcher that starts N processes (torchrun's); on a machine without GPUs, or with `--device
# cpu`, they join over gloo on CPUs. (`--cpu --num_processes 2` alone starts a single process unless MPI is set up.)
LAUNCH = [
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
    "0",
]


def _env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in WORLD_SIZE_VARIABLES}
    env.update(
        LORA_BOOK_OVERRIDES=json.dumps(MINI_OVERRIDES),
        LORA_BOOK_ARTIFACTS=str(base),
        LORA_BOOK_PROGRESS="0",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        PYTHONHASHSEED="0",
    )
    return env


def _launch(base: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        *LAUNCH,
        "-m",
        "lora_merge_utils",
        "run",
        "--profile",
        "tiny",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
        "--methods",
        *MINI_METHODS,
    ]


def _weights(root: Path) -> dict[str, bytes]:
    """The trained weights: every adapter's and head's (saved features are not weights)."""
    files = sorted(root.glob("adapters/**/*.safetensors")) + sorted(root.glob("heads/**/*.safetensors"))
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _merge_entries(scores: Path) -> list[Path]:
    """The score cache's merges (it also keeps each adapter's own results, written by the singles)."""
    entries = []
    for path in scores.glob("*.json"):
        try:
            if json.loads(path.read_text()).get("method") != SINGLE_ADAPTER.method:
                entries.append(path)
        except ValueError:  # being written: not there yet
            continue
    return entries


def _rank(process) -> str | None:
    """The ``RANK`` a launcher gave a process, if it can be read (a process may be exiting)."""
    import psutil

    try:
        return process.environ().get("RANK")
    except psutil.Error:
        return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_study):
    """One process (the session's shared study: run in a test process on one thread, as each launched process is)
    and a two-process launch into a fresh folder."""
    base = tmp_path_factory.mktemp("scaleout")
    shutil.copytree(shared_study, base / "one", ignore=shutil.ignore_patterns(".training.lock"))
    start = time.perf_counter()
    two = subprocess.run(_launch(base, base / "two"), env=_env(base), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    return base, two, time.perf_counter() - start


@pytest.mark.subprocess
def test_two_processes_train_the_same_adapters_and_write_the_same_tables(runs):
    base, two, _ = runs
    one_root, two_root = base / "one", base / "two"
    for name in TABLES:
        assert (two_root / "results" / name).read_bytes() == (one_root / "results" / name).read_bytes(), name
    one_weights = _weights(one_root)
    assert len(one_weights) == 3 * 2 * 2 + 3, "adapter and head of 3 tasks x 2 seeds, and 3 baseline heads"
    assert _weights(two_root) == one_weights, "every job is seeded on its own: whichever process trains it"
    assert "2 processes (gloo)" in two.stdout and "Single adapters" in two.stdout
    assert two.stdout.count("Single adapters") == 1, "only the main process prints the tables"
    assert "warn" not in two.stderr.lower() and "not passed" not in two.stderr, two.stderr


@pytest.mark.subprocess
def test_a_launch_killed_mid_grid_leaves_no_table_and_the_next_one_completes_it(runs):
    import psutil

    from lora_merge_utils.integrity import KEY_NAME

    base, _, _ = runs
    root = base / "killed"
    for part in ("heads", "adapters"):  # trained already: this launch goes straight to singles and the grid
        shutil.copytree(base / "two" / part, root / part)
    shutil.copy(base / "two" / KEY_NAME, root / KEY_NAME)  # what they were sealed with comes with them
    scores = root / "results" / "scores"
    launch = subprocess.Popen(
        _launch(base, root),
        env=_env(base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while len(_merge_entries(scores)) < 1 and launch.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        ranks = [p for p in psutil.Process(launch.pid).children(recursive=True) if _rank(p) == "1"]
        assert ranks and launch.poll() is None, "the grid had begun, with both processes alive"
        ranks[0].send_signal(signal.SIGKILL)  # one process dies mid-grid, as on a preempted machine
        launch.wait(timeout=120)
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
    assert launch.returncode != 0
    done = {p: p.stat().st_mtime_ns for p in _merge_entries(scores)}
    assert 1 <= len(done) < CELLS, "killed mid-grid"
    assert not any((root / "results" / name).exists() for name in TABLES), "no table, partial or whole"

    again = subprocess.run(_launch(base, root), env=_env(base), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(_merge_entries(scores)) == CELLS
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in done.items()), "scored merges are not scored again"
    for name in TABLES:
        assert (root / "results" / name).read_bytes() == (base / "one" / "results" / name).read_bytes(), name


@pytest.mark.subprocess
def test_a_launch_into_a_folder_another_run_is_training_into_is_refused(tmp_path):
    """The launch's main process asks for the folder's lock before anyone trains: held by another run (this test
    process), the launch stops with one clear line and trains nothing."""
    fcntl = pytest.importorskip("fcntl")
    base = tmp_path
    root = tmp_path / "busy"
    root.mkdir()
    fd = os.open(root / ".training.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, str(os.getpid()).encode())
        refused = subprocess.run(_launch(base, root), env=_env(base), capture_output=True, text=True, timeout=600)
    finally:
        os.close(fd)
    assert refused.returncode != 0
    assert refused.stderr.count(f"error: Another run (process {os.getpid()}) is training into") == 1, refused.stderr
    assert not (root / "heads").exists() and not (root / "adapters").exists()


def test_the_processes_of_one_launch_share_its_lock_and_others_are_still_refused(tmp_path):
    """The launch's main process holds the folder's training lock (here, a lock taken on another descriptor, as
    another process would): the launch's other processes may train under it; anything else is refused."""
    fcntl = pytest.importorskip("fcntl")
    fd = os.open(tmp_path / ".training.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242")
        with lock_held_by_launch(tmp_path), training_lock(tmp_path):
            pass
        with pytest.raises(FolderBusy, match="process 4242"):
            with training_lock(tmp_path):
                pass
    finally:
        os.close(fd)
    with training_lock(tmp_path):  # released: taken again
        pass


def test_one_process_is_a_plain_run(monkeypatch):
    for name in WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert launched_processes() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launched_processes() == 4
