"""Print the figures the project promises: training and evaluation throughput, merge time, and the wall time and
peak memory of the whole grid from cold (no artifacts) and warm (everything saved).

    python benchmarks/benchmark_grid.py              # ~15 minutes on a 2-core CPU (runs the grid twice)
    python benchmarks/benchmark_grid.py --skip-grid  # throughput and merge time only, ~1 minute

Figures are measurements of this machine, printed, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lora_merge_utils import (
    create_backbone,
    get_profile,
    load_adapters,
    load_task,
    merge_adapters,
    train_adapter,
)
from lora_merge_utils.instrumentation.benchmarking import time_call
from lora_merge_utils.scoring import accuracy
from lora_merge_utils.study import Study


def _median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` over ``repeats`` calls after one warm-up, and the spread p90 - p10."""
    timing = time_call(fn, warmup=1, repeats=repeats)
    return timing["median"], timing["p90"] - timing["p10"]


def throughput(profile_name: str, task_name: str) -> None:
    profile = get_profile(profile_name)
    backbone = create_backbone(profile)
    task = load_task(profile, task_name)
    # One epoch, every other training setting (learning rate, batch size...) as the profile has it.
    one_epoch = profile.replace(train=dataclasses.replace(profile.train, adapter_epochs=1))
    _, _, result = train_adapter(backbone, task.train, task.num_classes, one_epoch, progress=False)
    print(
        f"adapter training : {result.images_per_second:8.0f} images/s ({task_name}, 1 epoch, "
        f"{result.images_seen} images, batch {profile.train.batch_size})"
    )
    head = torch.nn.Linear(backbone.num_features, task.num_classes)
    seconds, spread = _median_seconds(lambda: accuracy(lambda x: head(backbone(x)), task.test, batch_size=256), 3)
    print(f"evaluation       : {len(task.test) / seconds:8.0f} images/s (median of 3, spread {spread:.2f} s)")


def merge_time(profile_name: str, out: Path) -> None:
    study = Study.open(profile_name, out, progress=False)
    tasks = study.profile.tasks[:3]
    model, _ = load_adapters(study.backbone, {t: study.ensure_adapter(t) for t in tasks})
    for method in ("task_arithmetic", "linear"):
        for k in (2, 3):
            seconds, spread = _median_seconds(lambda m=method, k=k: merge_adapters(model, tasks[:k], method=m), 5)
            print(f"merge {method:15s} K={k}: {seconds * 1000:7.1f} ms (median of 5, spread {spread * 1000:.1f} ms)")


def grid_wall_time(profile_name: str, out: Path) -> None:
    command = [sys.executable, "-m", "lora_merge_utils", "run", "--profile", profile_name, "--out", str(out), "--quiet"]
    for label in ("cold", "warm"):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print(f"grid {label:4s}        : {seconds:8.1f} s wall, peak RSS so far {peak:.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--task", default="mnist", help="task used for the throughput figures")
    parser.add_argument("--skip-grid", action="store_true", help="skip the cold and warm runs of the whole grid")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    throughput(args.profile, args.task)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_grid:
            grid_wall_time(args.profile, Path(tmp) / "grid")
        merge_time(args.profile, Path(tmp) / "grid")


if __name__ == "__main__":
    main()
