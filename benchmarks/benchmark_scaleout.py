"""Wall time of the study on 1 and on N processes (``accelerate launch``), and whether they write the same tables.

    python benchmarks/benchmark_scaleout.py                      # tiny profile, 1 and 2 processes, on this CPU
    python benchmarks/benchmark_scaleout.py --processes 1 2 4 --device cuda   # on a machine with 4 GPUs
    LORA_BOOK_OVERRIDES='{"seeds": 1}' python benchmarks/benchmark_scaleout.py --skip-cold   # a quicker look

Two measurements per process count, each a whole `run` command timed from outside (start-up included):

* **cold**: an empty artifacts folder, so the run trains every baseline head and adapter, then scores the grid;
* **grid**: the trained heads and adapters copied in and no results, so the run scores the singles and the merge
  grid and writes the tables (what a reader reruns after adding a merge method).

Threads per process: ``--threads``, else ``$OMP_NUM_THREADS``, else this machine's cores divided among the
processes. Generated task data is built once beforehand and shared by every run. Figures are measurements of this
machine under whatever else it is running, printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lora_merge_utils.data.tasks import load_task
from lora_merge_utils.profiles import get_profile

LAUNCH = [
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "--main_process_port",
    "0",
]


def command(processes: int, profile: str, out: Path, device: str, methods: list[str]) -> list[str]:
    """The `run` command on ``processes`` processes: plain for one, under ``accelerate launch`` for more."""
    run = [
        "-m",
        "lora_merge_utils",
        "run",
        "--profile",
        profile,
        "--out",
        str(out),
        "--device",
        device,
        "--quiet",
        "--methods",
        *methods,
    ]
    if processes == 1:
        return [sys.executable, *run]
    return [sys.executable, *LAUNCH, "--num_processes", str(processes), *run]


def timed_run(processes: int, threads: int, args, out: Path, base: Path) -> tuple[float, float]:
    """Wall seconds of the whole command, and the seconds `run` itself reports (after the imports)."""
    env = {
        **os.environ,
        "LORA_BOOK_ARTIFACTS": str(base),
        "LORA_BOOK_PROGRESS": "0",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    start = time.perf_counter()
    result = subprocess.run(
        command(processes, args.profile, out, args.device, args.methods), env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{processes} process(es) failed:\n{result.stderr[-3000:]}")
    reported = re.search(r"\((\d+) s\)\s*$", result.stdout)
    return seconds, float(reported.group(1)) if reported else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=None, help="threads per process (see above)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", nargs="+", default=["task_arithmetic", "linear"])
    parser.add_argument("--skip-cold", action="store_true", help="time the grid only (adapters trained once)")
    args = parser.parse_args()
    if 1 not in args.processes:
        parser.error("--processes must include 1: it is the reference the others are compared with")

    profile = get_profile(args.profile)
    cores = os.cpu_count() or 1
    print(
        f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, device "
        f"{args.device}; profile {profile.label}: {len(profile.tasks)} tasks x {profile.seeds} seed(s), "
        f"methods {' '.join(args.methods)}"
    )
    with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
        base = Path(tmp)
        os.environ["LORA_BOOK_ARTIFACTS"] = str(base)
        for task in profile.tasks:  # generated once, shared: no run pays for building the data
            load_task(profile, task)
        rows, trained = [], None
        for kind in ("grid",) if args.skip_cold else ("cold", "grid"):
            for processes in args.processes:
                threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, cores // processes)
                out = base / f"{kind}-{processes}"
                if kind == "grid":
                    if trained is None:  # --skip-cold: train once, untimed
                        trained = base / "trained"
                        timed_run(max(args.processes), threads, args, trained, base)
                    for part in ("heads", "adapters"):
                        shutil.copytree(trained / part, out / part)
                seconds, inside = timed_run(processes, threads, args, out, base)
                if kind == "cold" and trained is None:
                    trained = out
                rows.append((kind, processes, threads, seconds, inside, out))
        print(
            f"\n{'run':<6}{'processes':>10}{'threads each':>14}{'wall s':>9}{'speed-up':>10}{'in run s':>10}"
            f"{'speed-up':>10}  tables as 1 process"
        )
        for kind, processes, threads, seconds, inside, out in rows:
            one = next(r for r in rows if r[0] == kind and r[1] == 1)
            same = all(
                (out / "results" / name).read_bytes() == (one[5] / "results" / name).read_bytes()
                for name in ("singles.csv", "merges.csv", "summary.csv")
            )
            print(
                f"{kind:<6}{processes:>10}{threads:>14}{seconds:>9.1f}{one[3] / seconds:>10.2f}{inside:>10.0f}"
                f"{one[4] / inside:>10.2f}  {'same bytes' if same else 'DIFFERENT'}"
            )
    print(
        "\ncold = train every head and adapter, then the grid; grid = singles + merge grid + tables, adapters "
        "trained already. Wall times include each process's start-up (imports, backbone) and, for more than one "
        "process, the launcher's; 'in run s' is what `run` reports, after the imports (whole seconds)."
    )


if __name__ == "__main__":
    main()
