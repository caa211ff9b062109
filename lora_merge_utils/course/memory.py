"""How much GPU memory each chapter needs in the full profile, before running it.

A chapter's peak is the CUDA context, the backbone copies it keeps on the GPU (the frozen backbone, the PEFT model
holding the adapters, a merged backbone, K separate models in chapter 7, ...), and the activations of its largest
step: a batch of LoRA training, of AdaMerging, or of evaluation. The activations per image are measured, not
guessed: :func:`measure_activations` runs the profile's backbone on the CPU at two batch sizes and weighs, with
saved-tensor hooks, what autograd keeps for the backward pass (training, AdaMerging), and, with a dispatch mode that
follows every tensor, the largest set of tensors alive at once in a forward pass without gradients (evaluation); the
difference between the batch sizes is one image's share. ``python -m lora_merge_utils.course.memory`` measures the full
profile's ViT-B/16 again and writes ``lora_merge_utils/course/activations.json``, which :func:`chapter_memory` reads.

Half precision is measured under CPU autocast (bfloat16), as a stand-in for CUDA autocast (float16 on a T4): the
same operations run in 16 bits, though the two autocast policies differ in a few of them. The CPU runs attention
without a fused kernel, so the attention matrix counts in full: the estimates err on the high side.
"""

from __future__ import annotations

import copy
import json
import math
import re
import weakref
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .chapters import CHAPTERS

MEASURED = Path(__file__).parent / "activations.json"
"""The activations per image measured for the full profile's ViT-B/16 (written by :func:`main`)."""
KINDS = ("train", "adapt", "evaluate")
CUDA_CONTEXT_GB = 0.5
"""The CUDA context and kernels' workspace, which PyTorch's allocator does not count (about 0.3-0.5 GB)."""
LIMIT_GB = 12.0
"""What every chapter must fit: a Colab T4 has 15 GB, of which some is taken before the notebook starts."""


def _saved_bytes(step) -> int:
    """Bytes of the tensors autograd saves for the backward pass during ``step()`` (each storage once)."""
    seen: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(seen.values())


class _LiveBytes(TorchDispatchMode):
    """Follows every tensor an operation creates until it is freed; ``peak`` is the most bytes alive at once."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._owned: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._owned.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._owned:  # a new allocation (views share their base's storage)
                    self._owned[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(tensor, self._free, key)
        return out


def _peak_forward_bytes(step) -> int:
    """The most tensor bytes alive at once during ``step()`` (a forward pass without gradients)."""
    mode = _LiveBytes()
    with mode:
        step()
    return mode.peak


def measure_activations(backbone: nn.Module, image_size: int, rank: int = 8, half: bool = True) -> dict[str, float]:
    """Megabytes of activations per image of ``backbone`` (a timm ViT, ``num_classes=0``) for each kind of step:
    ``train`` (a LoRA training step), ``adapt`` (an AdaMerging step: gradients reach every target layer's weights)
    and ``evaluate`` (a forward pass without gradients), measured on the CPU at batch sizes 1 and 2."""
    from peft import LoraConfig, get_peft_model
    from torch.func import functional_call

    targets = r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
    torch.manual_seed(0)
    lora = get_peft_model(copy.deepcopy(backbone), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))
    head = nn.Linear(backbone.num_features, 10)
    plain = copy.deepcopy(backbone).eval().requires_grad_(False)
    names = [n for n, _ in plain.named_modules() if n and re.fullmatch(targets, n)]
    coefficients = torch.ones(len(names), requires_grad=True)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if half else nullcontext()

    def images(batch: int) -> torch.Tensor:
        return torch.randn(batch, 3, image_size, image_size)

    def train(batch: int) -> int:
        x, y = images(batch), torch.zeros(batch, dtype=torch.long)
        with context:
            return _saved_bytes(lambda: nn.functional.cross_entropy(head(lora(x)).float(), y))

    def adapt(batch: int) -> int:
        x = images(batch)
        weights = {f"{n}.weight": plain.get_submodule(n).weight * c for n, c in zip(names, coefficients)}
        with context:
            return _saved_bytes(lambda: head(functional_call(plain, weights, (x,))).float().logsumexp(1).mean())

    def evaluate(batch: int) -> int:
        x = images(batch)
        with context, torch.no_grad():
            return _peak_forward_bytes(lambda: plain(x))

    steps = {"train": train, "adapt": adapt, "evaluate": evaluate}
    return {kind: round((step(2) - step(1)) / 2**20, 1) for kind, step in steps.items()}


def _architecture(profile, device: str = "cpu") -> nn.Module:
    """The profile's backbone, randomly initialised (the sizes are what matter here; nothing is downloaded)."""
    import timm

    with torch.device(device):
        return timm.create_model(
            profile.backbone.model_name, pretrained=False, num_classes=0, **profile.backbone.overrides
        ).eval()


def activations(profile) -> dict[str, float]:
    """Megabytes per image of each kind of step for ``profile``'s backbone in half precision: read from
    :data:`MEASURED` when it was measured for this backbone, image size and rank (the full profile), else measured
    now (seconds for a small backbone)."""
    record = json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}
    same = (record.get("backbone"), record.get("image_size"), record.get("lora_rank")) == (
        profile.backbone.model_name,
        profile.image_size,
        profile.lora.rank,
    )
    if same and not profile.backbone.overrides:
        return {kind: float(record["megabytes_per_image"][kind]) for kind in KINDS}
    return measure_activations(_architecture(profile), profile.image_size, profile.lora.rank)


def _params_gb(profile) -> float:
    """Gigabytes of one copy of the profile's backbone in full precision (counted on the meta device: nothing is
    downloaded or allocated)."""
    return sum(p.numel() for p in _architecture(profile, "meta").parameters()) * 4 / 1e9


CHAPTER_STEPS: dict[str, tuple[float, str, str]] = {chapter.file: chapter.memory for chapter in CHAPTERS}
"""Per chapter: backbone-sized copies on the GPU at its peak, its largest step, and that step's batch.

0: the frozen backbone and a LoRA-wrapped copy (no batch runs on the GPU). 1: the backbone and a random one, features
in evaluation batches. 2: the backbone, the hand-trained model, the copy :func:`train_adapter` trains and the PEFT
model of every adapter; training batches. 3: the backbone, the PEFT model and a merged backbone. 4 and 6: those, and
the copy that trains the joint adapter (4) or the adapters of other ranks (6), in training batches. 5: those of 3, plus
AdaMerging's stacked updates of K = 3 adapters (3 copies' worth of the target layers) on 16 images per task. 7: the
backbone, the PEFT model of K = 4 adapters, four separate models and a merged one, timed at batch 64."""


def chapter_memory(profile=None, measured: dict[str, float] | None = None) -> dict[str, float]:
    """Estimated peak GPU gigabytes of each chapter in ``profile`` (default: full), CUDA context included."""
    from ..profiles import get_profile

    profile = get_profile(profile or "full")
    per_image = measured or activations(profile)
    copy_gb = _params_gb(profile)
    batches = {
        "0": 0,
        "64": 64,
        "eval_batch": profile.train.eval_batch_size,
        "batch": profile.train.batch_size,
        "adamerging": 16 * 3,
    }
    return {
        notebook: round(CUDA_CONTEXT_GB + copies * copy_gb + batches[batch] * per_image[kind] / 1024, 2)
        for notebook, (copies, kind, batch) in CHAPTER_STEPS.items()
    }


def main() -> None:
    """Measure the full profile's backbone and write :data:`MEASURED`."""
    import timm

    from ..profiles import FULL

    torch.manual_seed(0)
    backbone = timm.create_model(FULL.backbone.model_name, pretrained=False, num_classes=0)
    half = measure_activations(backbone, FULL.image_size, FULL.lora.rank, half=True)
    full = measure_activations(backbone, FULL.image_size, FULL.lora.rank, half=False)
    record = {
        "backbone": FULL.backbone.model_name,
        "image_size": FULL.image_size,
        "lora_rank": FULL.lora.rank,
        "megabytes_per_image": half,
        "megabytes_per_image_full_precision": full,
        "how": "lora_merge_utils.course.memory.measure_activations on the CPU, torch " + torch.__version__,
    }
    MEASURED.parent.mkdir(parents=True, exist_ok=True)
    MEASURED.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    assert all(math.isfinite(v) for v in half.values())


if __name__ == "__main__":
    main()
