"""Merge LoRA adapters of a vision transformer into one multi-task model.

The helper library of the book *Can I just merge my vision LoRAs?*. The main entry points:

* :func:`get_profile` -- the ``tiny`` (offline CPU) or ``full`` (Colab GPU) settings;
* :func:`create_backbone` -- the profile's frozen timm ViT (``num_classes=0``);
* :func:`load_task` -- one of the profile's six tasks, with torch-dataset ``train``/``val``/``test`` splits;
* :func:`train_head`, :func:`train_adapter` -- the baseline and the LoRA training loops;
* :func:`load_adapters`, :func:`merge_adapters`, :class:`MultiTaskModel` -- load, merge, serve;
* :class:`Study`, :func:`run_study`, :func:`evaluate_merges` -- the study's grid and tables;
* :func:`chapter_plan` -- the expected time of every chapter on a Colab T4 (``python -m lora_merge_utils plan``).
"""

from importlib.metadata import PackageNotFoundError, version

from . import _progress  # noqa: F401  (first: imports tqdm.auto before any library does, without its warning)
from .artifacts import ArtifactStore, load_adapters, load_head, storage_report
from .backbone import backbone_identity, create_backbone
from .batches import autocast, grad_scaler
from .evaluation import evaluate_merges, merge_combinations, pairwise_matrix, summarize_merges
from .exercises import EXERCISES, check_exercise
from .expectations import EXPECTED
from .merging import (
    MERGE_METHODS,
    MergeSpec,
    delta_weights,
    get_merge_method,
    merge_adapters,
    merged_delta,
    update_error,
)
from .multitask import MultiTaskModel
from .plan import chapter_plan
from .profiles import FULL, TINY, Budget, GeneratedData, HubData, Profile, get_device, get_profile
from .report import glue
from .scoring import accuracy, adapter_accuracy, evaluate_multitask, head_accuracy
from .study import Study, run_study
from .tasks import ImageTask, load_task, load_tasks
from .training import extract_features, lora_config, train_adapter, train_head

try:
    __version__ = version("lora-merge-utils")  # one place: pyproject.toml
except PackageNotFoundError:  # used from a source tree without being installed
    __version__ = "unknown"

__all__ = [
    "ArtifactStore",
    "Budget",
    "EXERCISES",
    "EXPECTED",
    "FULL",
    "GeneratedData",
    "HubData",
    "ImageTask",
    "MERGE_METHODS",
    "MergeSpec",
    "MultiTaskModel",
    "Profile",
    "Study",
    "TINY",
    "accuracy",
    "adapter_accuracy",
    "autocast",
    "backbone_identity",
    "chapter_plan",
    "check_exercise",
    "create_backbone",
    "delta_weights",
    "evaluate_merges",
    "evaluate_multitask",
    "extract_features",
    "get_device",
    "get_merge_method",
    "get_profile",
    "glue",
    "grad_scaler",
    "head_accuracy",
    "load_adapters",
    "load_head",
    "load_task",
    "load_tasks",
    "lora_config",
    "merge_adapters",
    "merge_combinations",
    "merged_delta",
    "pairwise_matrix",
    "run_study",
    "storage_report",
    "summarize_merges",
    "train_adapter",
    "train_head",
    "update_error",
]
