"""Print how fast the command line answers: ``--help``, ``list`` and a refused argument (no torch is loaded for
them), and a warm ``run`` (everything saved: adapters, heads and every merge's score read back through the checked
cache).

    python benchmarks/benchmark_cli.py                   # builds a study first (a few minutes on a 2-core CPU)
    python benchmarks/benchmark_cli.py --out artifacts/tiny   # times a warm run of a study already there
    python benchmarks/benchmark_cli.py --skip-run        # the start-up figures only, seconds

Figures are measurements of this machine (median of repeats, peak resident memory), printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = [sys.executable, "-m", "lora_merge_utils"]


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Seconds, peak memory in MB (of the child) and exit status of one command."""
    start = time.perf_counter()
    child = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def _report(label: str, argv: list[str], env: dict[str, str], repeats: int) -> None:
    runs = [_timed(argv, env) for _ in range(repeats)]
    seconds = statistics.median(r[0] for r in runs)
    memory = max(r[1] for r in runs)
    print(f"{label:34s} {seconds:6.2f} s  {memory:7.0f} MB  exit {runs[0][2]}  (median of {repeats})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="a tiny-profile study folder to time warm runs of")
    parser.add_argument("--skip-run", action="store_true", help="only the start-up figures")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "LORA_BOOK_PROGRESS": "0"}

    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPU(s)")
    _report("--help", ["--help"], env, args.repeats)
    _report("list", ["list"], env, args.repeats)
    refused = ["merge", "digits", "shapes", "--method", "ties", "--profile", "tiny"]
    _report("merge without --density (refused)", refused, env, args.repeats)
    unknown = ["train-head", "--task", "cats", "--profile", "tiny"]
    _report("train-head --task cats (refused)", unknown, env, args.repeats)
    if args.skip_run:
        return
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "study"
        run = ["run", "--profile", "tiny", "--out", str(out), "--quiet"]
        if args.out is None:
            env["LORA_BOOK_ARTIFACTS"] = str(Path(scratch) / "artifacts")  # its own dataset cache
            seconds, memory, status = _timed(run, env)
            print(f"{'run, cold (trains everything)':34s} {seconds:6.2f} s  {memory:7.0f} MB  exit {status}")
        _timed(run, env)  # scores of this code version in place
        _report("run, warm (everything saved)", run, env, max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
