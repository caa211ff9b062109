"""Merge LoRA adapters of a vision transformer into one multi-task model.

The helper library of the book *Can I just merge my vision LoRAs?*. The main entry points:

* :func:`~lora_merge_utils.profiles.get_profile` -- the ``tiny`` (offline CPU) or ``full`` (Colab GPU) settings;
* :func:`~lora_merge_utils.backbone.create_backbone` -- the profile's frozen timm ViT (``num_classes=0``);
* :func:`~lora_merge_utils.data.tasks.load_task` -- one of the profile's six tasks, with torch-dataset
  ``train``/``val``/``test`` splits;
* :func:`~lora_merge_utils.training.train_head`, :func:`~lora_merge_utils.training.train_adapter` -- the baseline
  and the LoRA training loops;
* :func:`~lora_merge_utils.artifacts.load_adapters`, :func:`~lora_merge_utils.merging.merge_adapters`,
  :class:`~lora_merge_utils.multitask.MultiTaskModel` -- load, merge, serve;
* :class:`~lora_merge_utils.study.Study`, :func:`~lora_merge_utils.study.run_study`,
  :func:`~lora_merge_utils.evaluation.evaluate_merges` -- the study's grid and tables;
* :mod:`lora_merge_utils.course` -- the book's own policy and tooling, imported from there and never from here: the
  chapters' checks and glue, the exercises, the verdicts the book corrects together, grading, and the expected time
  of every chapter on a Colab T4 (``python -m lora_merge_utils plan``).

The names are imported on first use (PEP 562), so ``import lora_merge_utils`` and the command line's ``--help`` and
``list`` start without loading torch.
"""

from importlib.metadata import PackageNotFoundError, version

from . import _progress  # noqa: F401  (first: imports tqdm.auto before any library does, without its warning)
from ._lazy import lazy_exports as _lazy_exports

_EXPORTS: dict[str, str] = {
    # module (core modules at the top, then the data/ and instrumentation/ subpackages): the public names it gives
    # the package. Nothing of course/ (the book's policy: its checks, glue, exercises, verdicts): it is imported from
    # there, so that the layer drawing sees every arrow into it
    **dict.fromkeys(("ArtifactStore", "load_adapters", "load_head", "storage_report"), "artifacts"),
    **dict.fromkeys(("backbone_identity", "create_backbone"), "backbone"),
    **dict.fromkeys(("autocast", "grad_scaler"), "batches"),
    **dict.fromkeys(("evaluate_merges", "merge_combinations", "pairwise_matrix", "summarize_merges"), "evaluation"),
    **dict.fromkeys(("MERGE_METHODS", "MergeSpec", "get_merge_method"), "methods"),
    **dict.fromkeys(("delta_weights", "merge_adapters", "merged_delta", "update_error"), "merging"),
    "MultiTaskModel": "multitask",
    **dict.fromkeys(
        ("FULL", "TINY", "Budget", "GeneratedData", "HubData", "Profile", "get_device", "get_profile"), "profiles"
    ),
    **dict.fromkeys(("accuracy", "adapter_accuracy", "evaluate_multitask", "head_accuracy"), "scoring"),
    **dict.fromkeys(("Study", "run_study"), "study"),
    **dict.fromkeys(("ImageTask", "load_task", "load_tasks"), "data.tasks"),
    **dict.fromkeys(("extract_features", "lora_config", "train_adapter", "train_head"), "training"),
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, globals())


try:
    __version__ = version("lora-merge-utils")  # one place: pyproject.toml
except PackageNotFoundError:  # used from a source tree without being installed
    __version__ = "unknown"
