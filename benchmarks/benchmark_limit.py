"""The limit of this machine for the book's work, and how close each chapter comes to it.

Measures the tiny backbone's best throughput for evaluation (images/s through the frozen ViT, no gradients), for LoRA
training (image-steps/s at the profile's batch size: forward, backward, AdamW) and for AdaMerging (image-steps/s of
its short schedule's shape), over batch sizes and thread settings: one process of one thread, one process of every
thread, and one single-thread process per thread side by side (their throughputs added). Then each chapter's
floor: its counted work (``lora_merge_utils.course.plan``, the replay the full-profile smoke test checks against real
runs) divided by the best throughput of each kind, beside its measured time; measured / floor is the chapter's
efficiency.

    python benchmarks/benchmark_limit.py                          # ~2 minutes on a 2-core CPU
    python scripts/execute_notebooks.py --times times.json        # measure the chapters from cold (make notebooks)
    python benchmarks/benchmark_limit.py --measured times.json    # the floors beside those times

Figures are measurements of this machine, printed, never asserted. Take them with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SECONDS = 3.0
"""How long each setting is timed (after a warm-up)."""


def _rate(kind: str, batch: int, threads: int, seconds: float = SECONDS) -> float:
    """Images (or image-steps) per second of one setting, in this process."""
    import torch
    from torch import nn

    from lora_merge_utils import TINY, create_backbone
    from lora_merge_utils.training import add_lora

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    backbone = create_backbone(TINY)
    x = torch.randn(batch, 3, TINY.image_size, TINY.image_size)
    y = torch.randint(0, 10, (batch,))
    if kind == "evaluate":

        def step():
            with torch.inference_mode():
                backbone(x)

    elif kind == "train":
        model, head = add_lora(backbone, TINY.lora).train(), nn.Linear(backbone.num_features, 10)
        params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-3)

        def step():
            loss = nn.functional.cross_entropy(head(model(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    elif kind == "adapt":
        from lora_merge_utils.adamerging import adamerging

        pairs = [(0.01 * torch.randn(o, 8), 0.01 * torch.randn(8, i)) for o, i in _target_shapes(backbone)]
        factors = {name: [pair, pair] for name, pair in zip(_target_names(backbone), pairs)}
        heads = {t: nn.Linear(backbone.num_features, 10) for t in ("a", "b")}
        images = {t: x for t in heads}

        def step():  # one Adam step of both tasks: 2 * batch image-steps
            adamerging(backbone, factors, images, heads, init=[0.5, 0.5], steps=1, batch_size=batch)

    else:
        raise ValueError(kind)
    per_step = 2 * batch if kind == "adapt" else batch
    for _ in range(3):
        step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += per_step
    return done / (time.perf_counter() - start)


def _target_names(backbone) -> list[str]:
    import re

    from lora_merge_utils import TINY

    return [n for n, _ in backbone.named_modules() if re.fullmatch(TINY.lora.target_modules, n)]


def _target_shapes(backbone) -> list[tuple[int, int]]:
    modules = dict(backbone.named_modules())
    return [tuple(modules[n].weight.shape) for n in _target_names(backbone)]


def _side_by_side(kind: str, batch: int, processes: int) -> float:
    """The summed rate of ``processes`` single-thread processes timed at the same time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [sys.executable, __file__, "--worker", kind, str(batch)]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    return sum(float(child.communicate()[0].strip().splitlines()[-1]) for child in children)


def limits(cores: int) -> dict[str, float]:
    """Print every setting's rate; return the best of each kind."""
    from lora_merge_utils import TINY

    settings = {
        "evaluate": (32, 64, 128, 256),
        "train": (TINY.train.batch_size,),  # a hyperparameter: the chapters cannot change it
        "adapt": (16,),  # the short schedule's images per task and step
    }
    best = {}
    print(f"{'work':9s} {'batch':>5s} {'1 thread':>10s} {f'{cores} threads':>11s} {f'{cores} x 1 thread':>13s}")
    for kind, batches in settings.items():
        for batch in batches:
            one = _rate(kind, batch, 1)
            every = _rate(kind, batch, cores)
            side = _side_by_side(kind, batch, cores) if cores > 1 else one
            print(f"{kind:9s} {batch:5d} {one:10.0f} {every:11.0f} {side:13.0f}", flush=True)
            best[kind] = max(best.get(kind, 0.0), one, every, side)
    return best


def floors(best: dict[str, float], measured: dict[str, float] | None) -> None:
    from lora_merge_utils.course.plan import chapter_plan

    plan = chapter_plan("tiny")
    print("\nfloor: counted work at the best rates: trained/train + adapted/adapt + (evaluated + timed)/evaluate")
    header = f"{'chapter':36s} {'trained':>8s} {'adapted':>8s} {'evaluated':>10s} {'floor s':>8s}"
    print(header + (f" {'measured s':>10s} {'measured/floor':>14s}" if measured else ""))
    total_floor = total_measured = 0.0
    for row in plan.itertuples():
        evaluated = row.evaluated + row.timed
        floor = row.trained / best["train"] + row.adapted / best["adapt"] + evaluated / best["evaluate"]
        total_floor += floor
        line = f"{row.notebook[:36]:36s} {row.trained:8d} {row.adapted:8d} {row.evaluated:10d} {floor:8.0f}"
        if measured and row.notebook in measured:
            total_measured += measured[row.notebook]
            ratio = f"{measured[row.notebook] / floor:14.2f}" if floor > 0 else f"{'(no counted work)':>14s}"
            line += f" {measured[row.notebook]:10.0f} {ratio}"
        print(line)
    line = f"{'the book':36s} {'':8s} {'':8s} {'':10s} {total_floor:8.0f}"
    if measured:
        line += f" {total_measured:10.0f} {total_measured / total_floor:14.2f}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measured", type=Path, help="JSON {notebook: seconds} from execute_notebooks.py --times")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(_rate(args.worker[0], int(args.worker[1]), 1))
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"python {sys.version.split()[0]}, {cores} core(s); rates in images (or image-steps) per second")
    best = limits(cores)
    measured = json.loads(args.measured.read_text()) if args.measured else None
    floors(best, measured)


if __name__ == "__main__":
    main()
