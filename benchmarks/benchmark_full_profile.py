"""Figures of the full profile's data path and merges, measured on this machine against the offline stand-ins.

    python benchmarks/benchmark_full_profile.py          # ~3 minutes on a 2-core CPU

Prints, never asserts:

* decoding + resizing to 224 px, images/s per task with the profile's 2 workers (the stand-ins have each hub
  dataset's image format and size; a Colab runtime has 2 vCPUs like this machine, so these are the decode rates
  the time plan uses);
* merge evaluation over the 15 pairs (task arithmetic, shallow stand-in backbone), images/s: **before**, decoding
  every test image again for every merge in the main process (what the code did until the decoded-once cache), and
  **after**, decoding each test split once and slicing batches from memory;
* the time of one merge and of one float64 exactness check on a real-size ViT-B/16 (random weights, six rank-8
  adapters), on this CPU.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _environment(directory: Path) -> dict[str, str]:
    from lora_merge_utils.data.standins import build_standins

    return build_standins(directory, per_class={"train": 4, "test": 10})


def _child(directory: str) -> None:
    """Runs in a subprocess whose environment points the full profile at the stand-ins."""
    import pandas as pd
    from peft import LoraConfig, get_peft_model
    from torch import nn

    import lora_merge_utils as lmu
    from lora_merge_utils.artifacts import save_adapter
    from lora_merge_utils.backbone import backbone_identity
    from lora_merge_utils.batches import decode_all
    from lora_merge_utils.evaluation import evaluate_merges
    from lora_merge_utils.merging import update_error

    profile = lmu.get_profile("full")
    backbone = lmu.create_backbone(profile)
    tasks = {t: lmu.load_task(profile, t) for t in profile.tasks}
    print(
        f"stand-ins: {', '.join(f'{t} {len(task.test)} test' for t, task in tasks.items())}; backbone "
        f"{sum(p.numel() for p in backbone.parameters()):,} parameters at {profile.image_size} px"
    )

    print("\ndecode + resize, 2 workers (images/s):")
    decoded = {}
    for name, task in tasks.items():
        start = time.perf_counter()
        decoded[name] = decode_all(task.test, num_workers=profile.num_workers)
        seconds = time.perf_counter() - start
        print(f"  {name:9s} {len(task.test) / seconds:7.0f}")

    def random_adapters(model: nn.Module, out: Path) -> dict[str, Path]:
        dirs = {}
        for i, name in enumerate(profile.tasks):
            torch.manual_seed(i)
            config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, target_modules=profile.lora.target_modules)
            peft_model = get_peft_model(copy.deepcopy(model), config)
            head = nn.Linear(model.num_features, tasks[name].num_classes)
            dirs[name] = save_adapter(
                peft_model, head, {"backbone": backbone_identity(model), "accuracy": 0.5}, out / name
            )
        return dirs

    model, heads = lmu.load_adapters(backbone, random_adapters(backbone, Path(directory) / "adapters"))
    singles = pd.DataFrame({"task": list(profile.tasks), "adapter_accuracy": 1.0, "head_accuracy": 0.0})
    pairs = lmu.merge_combinations(list(profile.tasks), (2,))
    images = sum(len(tasks[a].test) + len(tasks[b].test) for a, b in pairs)
    print(f"\nmerge evaluation, 15 pairs x task arithmetic ({images:,} images):")
    for label, sets, workers in (
        ("before: decode per merge, 0 workers", {t: tasks[t].test for t in tasks}, 0),
        ("after: decoded once, in memory", decoded, profile.num_workers),
    ):
        start = time.perf_counter()
        evaluate_merges(
            model,
            heads,
            sets,
            singles,
            methods=("task_arithmetic",),
            sizes=(2,),
            batch_size=256,
            num_workers=workers,
            progress=False,
        )
        seconds = time.perf_counter() - start
        print(f"  {label:38s} {images / seconds:7.0f} images/s ({seconds:.1f} s)")

    print("\nViT-B/16 (86 M parameters, random weights), six rank-8 adapters, on this CPU:")
    vit_b = lmu.create_backbone(
        profile.replace(backbone=profile.backbone.__class__(profile.backbone.model_name, "hub", {})), pretrained=False
    )
    big, _ = lmu.load_adapters(vit_b, random_adapters(vit_b, Path(directory) / "vit_b"))
    pair = list(profile.tasks[:2])
    for method, kwargs in (("task_arithmetic", {}), ("linear", {}), ("knots_ties", {"density": 0.2})):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            lmu.merge_adapters(big, pair, method=method, **kwargs)
            times.append(time.perf_counter() - start)
        print(f"  merge {method:16s} {statistics.median(times):6.2f} s (median of 3)")
    start = time.perf_counter()
    update_error(big, pair)
    print(f"  update_error (float64 copy)  {time.perf_counter() - start:6.2f} s")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return
    import subprocess

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        env = (
            os.environ
            | _environment(Path(tmp) / "standins")
            | {
                "LORA_BOOK_PROFILE": "full",
                "LORA_BOOK_ARTIFACTS": str(Path(tmp) / "artifacts"),
                "LORA_BOOK_PROGRESS": "0",
            }
        )
        overrides = json.loads(env["LORA_BOOK_OVERRIDES"]) | {"data.test_size": None}  # every stand-in test image
        env["LORA_BOOK_OVERRIDES"] = json.dumps(overrides)
        print("overrides:", json.loads(env["LORA_BOOK_OVERRIDES"]))
        subprocess.run([sys.executable, __file__, "--child", tmp], env=env, check=True)


if __name__ == "__main__":
    main()
