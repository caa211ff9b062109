"""The checks that need a CUDA GPU, in one command (``make gpu-check``): run it on a GPU machine, or on a Colab GPU
runtime after the setup cell (``!python scripts/gpu_check.py`` from a clone of the repository).

    python scripts/gpu_check.py [--out artifacts/gpu_measurements.json] [--quick]

1. **The tiny profile on the GPU**: a small study (three tasks, two seeds, pairs and a triple) trained, merged and
   scored on CUDA, with its peak memory.
2. **The full profile's code path on the GPU**: every chapter executed in the full profile against the offline
   stand-ins (``make smoke``'s run, on CUDA), each chapter's peak GPU memory printed.
3. **ViT-B/16 at the full profile's batch sizes** (random weights; nothing is downloaded): images per second and peak
   memory of a LoRA training step (batch 64), an AdaMerging step (16 images of each of 3 tasks) and evaluation
   (batch 256), each with and without autocast.
4. **Merges of ViT-B/16 on the GPU**: seconds of one merge of two rank-8 adapters (task arithmetic, TIES, TSV) and
   the float64 rate of the dense SVDs that ``iso_c_full`` and ``iso_cts_full`` add.

The figures are written to ``--out`` as JSON; ``python -m lora_merge_utils plan --measured FILE`` then prices the
chapters with them instead of the throughputs derived from published figures. Without a CUDA GPU it stops at once,
saying so. ``--quick`` skips step 2 (a few minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _timed(step, device, repeats: int) -> tuple[float, float]:
    """``(seconds per call, peak GB)`` of ``step()`` after one warm-up call."""
    import torch

    step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats, torch.cuda.max_memory_allocated(device) / 1e9


def vit_b_steps(device, repeats: int = 5) -> dict:
    """Throughput (images/s) and peak GB of each kind of step on ViT-B/16, with and without autocast."""
    import timm
    import torch
    from torch import nn
    from torch.func import functional_call

    from lora_merge_utils import FULL, autocast, grad_scaler, lora_config

    backbone = timm.create_model(FULL.backbone.model_name, pretrained=False, num_classes=0).to(device).eval()
    from peft import get_peft_model

    model = get_peft_model(copy.deepcopy(backbone), lora_config(FULL.lora)).to(device)
    head = nn.Linear(backbone.num_features, 10).to(device)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    train_x = torch.randn(FULL.train.batch_size, 3, 224, 224, device=device)
    train_y = torch.zeros(FULL.train.batch_size, dtype=torch.long, device=device)
    eval_x = torch.randn(FULL.train.eval_batch_size, 3, 224, 224, device=device)
    adapt_x = torch.randn(16 * 3, 3, 224, 224, device=device)
    names = [n for n, m in backbone.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks.")]
    coefficients = torch.ones(len(names), device=device, requires_grad=True)
    results: dict = {}
    for amp in (True, False):
        scaler = grad_scaler(device, amp)

        def train(amp=amp, scaler=scaler):
            with autocast(device, amp):
                loss = nn.functional.cross_entropy(head(model(train_x)).float(), train_y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        def adapt(amp=amp):
            weights = {f"{n}.weight": backbone.get_submodule(n).weight * c for n, c in zip(names, coefficients)}
            with autocast(device, amp):
                loss = head(functional_call(backbone, weights, (adapt_x,))).float().logsumexp(1).mean()
            loss.backward()

        def evaluate(amp=amp):
            with torch.no_grad(), autocast(device, amp):
                backbone(eval_x)

        label = "amp" if amp else "fp32"
        for kind, step, images in (
            ("train", train, len(train_x)),
            ("adapt", adapt, len(adapt_x)),
            ("evaluate", evaluate, len(eval_x)),
        ):
            seconds, peak = _timed(step, device, repeats)
            results.setdefault(f"{kind}_images_per_second", {})[label] = round(images / seconds, 1)
            results.setdefault(f"{kind}_peak_gb", {})[label] = round(peak, 2)
            print(f"ViT-B/16 {kind:8s} {label:4s}: {images / seconds:7.1f} images/s, peak {peak:.2f} GB", flush=True)
    return results


def vit_b_merges(device, repeats: int = 3) -> dict:
    """Seconds of one merge of two random rank-8 adapters of ViT-B/16 on the GPU (the median over ``repeats``, after
    a warm-up), and the float64 FLOP rate of a dense SVD of a 3072 x 768 layer there."""
    import statistics

    import timm
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_merge_utils import FULL, merge_adapters
    from lora_merge_utils.course.plan import svd_flops

    backbone = timm.create_model(FULL.backbone.model_name, pretrained=False, num_classes=0)
    model = None
    for i, name in enumerate(("one", "two")):  # PEFT warns about a name inside its prefix "lora_"
        torch.manual_seed(i)
        config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, target_modules=FULL.lora.target_modules)
        if model is None:
            model = get_peft_model(backbone, config, adapter_name=name)
        else:
            model.add_adapter(name, config)
    model = model.to(device).eval()
    results: dict = {}
    for method, knobs in (("task_arithmetic", {}), ("ties", {"density": 0.2}), ("tsv", {})):
        times = []
        for _ in range(repeats + 1):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            merge_adapters(model, ["one", "two"], method=method, **knobs)
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        results[method] = round(statistics.median(times[1:]), 3)
        print(f"ViT-B/16 merge {method:16s} on {device}: {results[method]:.3f} s", flush=True)
    layer = torch.randn(3072, 768, dtype=torch.float64, device=device)
    torch.linalg.svd(layer, full_matrices=False)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.linalg.svd(layer, full_matrices=False)
    torch.cuda.synchronize(device)
    rate = repeats * svd_flops(3072, 768) / (time.perf_counter() - start)
    print(f"dense float64 SVD (3072 x 768) on {device}: {rate / 1e9:.0f} GFLOP/s", flush=True)
    return {"merge_seconds": results, "float64_flops": round(rate)}


def tiny_study(device) -> dict:
    """A small tiny-profile study on the GPU: its time and peak memory."""
    import torch

    from lora_merge_utils import TINY, run_study
    from lora_merge_utils.profiles import apply_overrides

    profile = apply_overrides(TINY, {"tasks": ["digits", "shapes", "gratings"], "seeds": 2, "train.adapter_epochs": 1})
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tables = run_study(
            profile,
            Path(folder) / "tiny",
            methods=("task_arithmetic", "linear", "tsv"),
            device=str(device),
            progress=False,
        )
    seconds, peak = time.perf_counter() - start, torch.cuda.max_memory_allocated(device) / 1e9
    print(f"tiny profile on {device}: {len(tables['merges'])} merge rows in {seconds:.0f} s, peak {peak:.2f} GB")
    return {"tiny_study_seconds": round(seconds, 1), "tiny_study_peak_gb": round(peak, 2)}


def full_profile_chapters(pattern: str = "[0-9]*.ipynb", save=lambda record: None) -> dict:
    """The chapters matching ``pattern`` in the full profile on the stand-ins, on the GPU: seconds and peak GB per
    chapter, handed to ``save`` after each one (a run stopped midway keeps what it measured)."""

    import nbformat

    from book_tools.execute_notebooks import NOTEBOOKS, run, smoke_environment

    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        env = smoke_environment(Path(folder))
        for path in sorted(NOTEBOOKS.glob(pattern)):
            notebook = nbformat.read(path, as_version=4)
            notebook.cells.append(
                nbformat.v4.new_code_cell(
                    "import torch\nprint('PEAK_GB', torch.cuda.max_memory_allocated() / 1e9, torch.cuda.is_available())"
                )
            )
            seconds = run(notebook, Path(folder), env, timeout=1200)
            text = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
            _, peak, on_gpu = text.split()
            if on_gpu != "True":
                raise SystemExit(f"{path.name} did not run on the GPU")
            peaks[path.name] = round(float(peak), 2)
            save({"full_profile_chapter_peak_gb": peaks})
            print(f"full profile (stand-ins) {path.name}: {seconds:.0f} s, peak {float(peak):.2f} GB", flush=True)
    return {"full_profile_chapter_peak_gb": peaks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("artifacts/gpu_measurements.json"))
    parser.add_argument("--quick", action="store_true", help="skip the chapters in the full profile")
    parser.add_argument(
        "--chapters", default="[0-9]*.ipynb", help="glob of the chapters to run in the full profile (default: all)"
    )
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here; run it on a GPU machine or a Colab GPU runtime.", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    record = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(part: dict) -> None:  # after every step, so that a run cut short keeps its figures
        record.update(part)
        args.out.write_text(json.dumps(record, indent=2) + "\n")

    save(vit_b_steps(device))
    save(vit_b_merges(device))
    save(tiny_study(device))
    if not args.quick:
        full_profile_chapters(args.chapters, save)
    print(f"wrote {args.out}: python -m lora_merge_utils plan --measured {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
