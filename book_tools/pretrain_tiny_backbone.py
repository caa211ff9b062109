"""Pretrain the tiny profile's ViT on formula-driven synthetic images and ship it inside the package.

    python scripts/pretrain_tiny_backbone.py            # ~18 minutes on a 2-core CPU

Three families of generated images, each category a random formula (``lora_merge_utils.data.fractals`` and
``lora_merge_utils.data.contours``): FractalDB-style fractals, radial contours and pen strokes. Writes
``lora_merge_utils/assets/tiny_vit_formula.safetensors`` (backbone only, no classifier) and
``tiny_vit_formula.json`` (architecture, recipe, sha256, final pretraining accuracy). The backbone never sees the
six tasks' data nor any natural image.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from lora_merge_utils.backbone import file_sha256
from lora_merge_utils.data.contours import make_contour_dataset
from lora_merge_utils.data.fractals import make_fractal_dataset
from lora_merge_utils.data.tasks import to_tensor
from lora_merge_utils.profiles import TINY
from lora_merge_utils.safe_io import write_atomic
from lora_merge_utils.training import cosine_with_warmup

ASSETS = Path(__file__).resolve().parent.parent / "lora_merge_utils" / "assets"


def pretraining_data(args) -> tuple[torch.Tensor, torch.Tensor]:
    """The three families, their categories numbered one after the other."""
    parts, offset = [], 0
    families = [
        (args.fractal_classes, lambda n: make_fractal_dataset(n, args.per_class, args.seed, TINY.image_size)),
        (
            args.contour_classes,
            lambda n: make_contour_dataset(n, args.per_class, args.seed, TINY.image_size, "contours"),
        ),
        (args.stroke_classes, lambda n: make_contour_dataset(n, args.per_class, args.seed, TINY.image_size, "strokes")),
    ]
    for classes, make in families:
        if classes:
            images, labels = make(classes)
            parts.append((images, labels + offset))
            offset += classes
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return to_tensor(images), torch.from_numpy(labels).long()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractal-classes", type=int, default=100, help="number of IFS categories")
    parser.add_argument("--contour-classes", type=int, default=100, help="number of radial-contour categories")
    parser.add_argument("--stroke-classes", type=int, default=100, help="number of stroke categories")
    parser.add_argument("--per-class", type=int, default=100, help="rendered instances per category")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS / "tiny_vit_formula.safetensors")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    start = time.time()
    x, y = pretraining_data(args)
    classes = int(y.max()) + 1
    print(f"generated {len(x)} images of {classes} categories in {time.time() - start:.0f}s", flush=True)

    spec = TINY.backbone
    model = timm.create_model(spec.model_name, pretrained=False, num_classes=classes, **spec.overrides)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(x) / args.batch_size)
    schedule = cosine_with_warmup(optimizer, steps_per_epoch * args.epochs, warmup_steps=steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(x), generator=generator)
        correct = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False)
        for step in bar:
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            logits = model(x[idx])
            loss = torch.nn.functional.cross_entropy(logits, y[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += (logits.argmax(1) == y[idx]).sum().item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        train_accuracy = correct / len(x)
        print(f"epoch {epoch + 1}: train accuracy {train_accuracy:.3f} ({time.time() - start:.0f}s)", flush=True)

    model.reset_classifier(0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_atomic(args.out, lambda tmp: save_file(state, str(tmp)))
    manifest = {
        "architecture": {"timm_model": spec.model_name, "overrides": spec.overrides, "num_classes": 0},
        "parameters": sum(v.numel() for v in state.values()),
        "recipe": {
            "data": "formula-driven images: FractalDB-style IFS fractals (lora_merge_utils.data.fractals), "
            "radial contours and pen strokes (lora_merge_utils.data.contours)",
            "categories": {
                "fractals": args.fractal_classes,
                "contours": args.contour_classes,
                "strokes": args.stroke_classes,
            },
            "per_class": args.per_class,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "optimizer": "AdamW(weight_decay=0.05), warmup one epoch, cosine decay, label smoothing 0.1",
            "normalisation": "(x/255 - 0.5) / 0.5",
            "seed": args.seed,
        },
        "final_train_accuracy": round(train_accuracy, 4),
        "sha256": file_sha256(args.out),
        "seconds": round(time.time() - start),
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    write_atomic(args.out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
