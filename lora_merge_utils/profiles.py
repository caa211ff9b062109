"""Profiles: every setting that differs between the offline ``tiny`` world and the Colab ``full`` world.

A profile is a frozen dataclass addressed by name, the way timm addresses models: ``get_profile("tiny")``.
All other modules read their settings from it, so the training, merging and evaluation code is one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import torch

PROFILE_ENV_VAR = "LORA_BOOK_PROFILE"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build the frozen ViT.

    ``model_name`` is a timm model name. ``overrides`` are keyword arguments passed to ``timm.create_model``
    (the tiny profile uses them to shrink a ViT to 32 px). ``weights`` is either ``"asset:<file>"`` (weights shipped
    inside this package), ``"hub"`` (timm downloads the pretrained tag), or a path to a local weights file.
    """

    model_name: str
    weights: str
    overrides: dict = field(default_factory=dict)
    local_weights_env: str = "LORA_BOOK_BACKBONE_FILE"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyperparameters shared by every adapter of a profile."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    # A regex, not a list of names: a bare "proj" would also match the patch-embedding Conv2d `patch_embed.proj`.
    target_modules: str = r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings for the head-only baseline and for the adapters."""

    head_epochs: int = 100
    head_lr: float = 3e-2
    head_weight_decay: float = 1e-4
    adapter_epochs: int = 6
    adapter_lr: float = 5e-3
    adapter_weight_decay: float = 1e-4
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the two worlds.

    Attributes:
        name: ``"tiny"`` or ``"full"``.
        image_size: Side of the square images fed to the backbone.
        backbone: How to build and load the ViT.
        tasks: The six task names, in a fixed order (the order of every table and plot).
        similar_pairs: Task pairs built to be similar, used to test the study's similarity claim.
        train_per_class / test_per_class: Class-balanced subsampling of each split (``None`` keeps all).
        val_per_class: Images per class held out of training for choosing hyperparameters (never the test split).
        lora / train: Hyperparameters.
        data_dir: Where local copies of datasets live (full profile); ``None`` means the Hugging Face cache.
        amp: Use mixed precision on CUDA.
    """

    name: str
    image_size: int
    backbone: BackboneSpec
    tasks: tuple[str, ...]
    similar_pairs: tuple[tuple[str, str], ...]
    train_per_class: int | None
    test_per_class: int | None
    val_per_class: int = 30
    lora: LoraSettings = LoraSettings()
    train: TrainSettings = TrainSettings()
    data_dir: str | None = None
    amp: bool = True
    num_workers: int = 0

    def replace(self, **changes) -> Profile:
        """A copy with some fields changed (profiles are frozen)."""
        return replace(self, **changes)


TINY = Profile(
    name="tiny",
    image_size=32,
    backbone=BackboneSpec(
        model_name="vit_tiny_patch16_224",
        weights="asset:tiny_vit_fractal.safetensors",
        overrides=dict(img_size=32, patch_size=4, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0, global_pool="avg"),
    ),
    tasks=("digits", "mnist", "letters", "shapes", "textures", "gratings"),
    similar_pairs=(("digits", "mnist"),),
    train_per_class=200,
    test_per_class=40,
)
"""The offline profile: a 0.68 M-parameter ViT (32 px, patch 4, width 96, depth 6) pretrained by
``scripts/pretrain_tiny_backbone.py`` on synthetic fractals, and six small tasks built from data that installed packages
carry or that we generate. The whole grid runs in minutes on a 2-core CPU."""

FULL = Profile(
    name="full",
    image_size=224,
    backbone=BackboneSpec(model_name="vit_base_patch16_224.augreg_in21k", weights="hub"),
    tasks=("mnist", "svhn", "eurosat", "resisc45", "gtsrb", "dtd"),
    similar_pairs=(("mnist", "svhn"), ("eurosat", "resisc45")),
    train_per_class=None,
    test_per_class=None,
    lora=LoraSettings(rank=8, alpha=16, dropout=0.1),
    train=TrainSettings(
        head_epochs=50, head_lr=1e-2, adapter_epochs=2, adapter_lr=5e-4, batch_size=64, eval_batch_size=256
    ),
    num_workers=2,
)
"""The Colab GPU profile: timm ViT-B/16 pretrained on ImageNet-21k at 224 px and six Hugging Face Hub datasets
(MNIST and SVHN are the similar digit pair, EuroSAT and RESISC45 the similar remote-sensing pair, GTSRB and DTD stand
apart). Training sets are subsampled to 2,000 images per task (plus 500 more held out of the training split for
validation) and test sets to 1,000 (see ``lora_merge_utils.tasks.FULL_SUBSAMPLE``).

Time estimate on a Colab T4 with AMP (an estimate from ViT-B/16 throughput, about 120 training and 450 evaluation
images/s, not a measurement of this exact grid): 6 adapters x 2,000 images x 2 epochs ~ 4 min of training, feature
extraction for the head baselines ~ 1 min, and 35 merges x 2 methods scoring their member tasks (180 x 1,000 images)
~ 7 min, plus dataset download and preprocessing (~ 10-20 min the first time): well under an hour in total."""

PROFILES: dict[str, Profile] = {"tiny": TINY, "full": FULL}


def _running_on_colab_gpu() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def default_profile_name() -> str:
    """``$LORA_BOOK_PROFILE`` if set, else ``full`` on a Colab GPU runtime, else ``tiny``."""
    env = os.environ.get(PROFILE_ENV_VAR)
    if env:
        return env
    return "full" if _running_on_colab_gpu() else "tiny"


def get_profile(name: str | Profile | None = None) -> Profile:
    """Return the profile called ``name`` (``"tiny"`` or ``"full"``); ``None`` picks :func:`default_profile_name`."""
    if isinstance(name, Profile):
        return name
    if name is None:
        name = default_profile_name()
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"Unknown profile {name!r}. Valid profiles: {', '.join(sorted(PROFILES))}. "
            f"Pass one of them, or set ${PROFILE_ENV_VAR} to one of them."
        ) from None


def progress_enabled() -> bool:
    """Progress bars are on unless ``$LORA_BOOK_PROGRESS`` is ``0`` (the notebook execute command turns them off so
    stored outputs hold results, not bars)."""
    return os.environ.get("LORA_BOOK_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def get_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
