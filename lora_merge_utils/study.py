"""The whole study, stage by stage, each stage reading what the previous one saved.

``ensure_head`` and ``ensure_adapter`` train only what is missing; ``run_study`` runs the grid and writes the tables.
Chapters call the same functions, so any chapter can run on its own.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ._progress import tqdm
from .artifacts import (
    ArtifactStore,
    default_root,
    library_versions,
    load_adapters,
    load_head,
    read_json,
    save_adapter,
    save_head,
    write_atomic,
    write_json,
)
from .backbone import backbone_identity, create_backbone
from .evaluation import DECIMALS, MergeSpec, adapter_accuracy, evaluate_merges, head_accuracy, summarize_merges
from .profiles import Profile, get_device, get_profile, progress_enabled
from .tasks import ImageTask, check_task_name, load_task
from .training import extract_features, train_adapter, train_head

DEFAULT_METHODS = ("task_arithmetic", "linear")


@dataclass
class Study:
    """The shared state of one study: profile, backbone, device, output root and cached features."""

    profile: Profile
    root: Path
    backbone: nn.Module
    device: torch.device
    progress: bool = True
    _features: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, profile: Profile | str | None = None, root: Path | str | None = None,
             device: torch.device | str | None = None, progress: bool | None = None) -> Study:
        """Set up a study: pick the profile, build the backbone, and choose where artifacts go.

        ``progress=None`` shows progress bars unless ``$LORA_BOOK_PROGRESS=0``.
        """
        profile = get_profile(profile)
        progress = progress_enabled() if progress is None else progress
        root = Path(root) if root is not None else default_root(profile)
        device = torch.device(device) if device is not None else get_device()
        backbone = create_backbone(profile).to(device)
        return cls(profile, root, backbone, device, progress)

    def describe(self) -> str:
        """A few lines saying what this run uses: profile, device, backbone, artifact folder and library versions."""
        versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
        return (f"profile: {self.profile.name} ({len(self.profile.tasks)} tasks: {', '.join(self.profile.tasks)})\n"
                f"device: {self.device}\n"
                f"backbone: {backbone_identity(self.backbone)} "
                f"({sum(p.numel() for p in self.backbone.parameters()):,} parameters)\n"
                f"artifacts: {self.root}\n"
                f"versions: {versions}")

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)

    def task(self, name: str) -> ImageTask:
        return load_task(self.profile, name)

    def seed_of(self, task: str) -> int:
        """A distinct, fixed seed per task."""
        return self.profile.train.seed * 1000 + self.profile.tasks.index(task)

    def features(self, task: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-backbone features of a split, computed once per session."""
        key = (task, split)
        if key not in self._features:
            dataset = getattr(self.task(task), split)
            self._features[key] = extract_features(
                self.backbone, dataset, self.profile.train.eval_batch_size, self.device, self.profile.amp,
                progress=f"{task} {split} features" if self.progress else False, num_workers=self.profile.num_workers,
            )
        return self._features[key]

    def eval_kwargs(self) -> dict:
        """Device, batch size, AMP and workers for the evaluation helpers, from the profile."""
        return dict(device=self.device, batch_size=self.profile.train.eval_batch_size, amp=self.profile.amp,
                    num_workers=self.profile.num_workers)

    # ------------------------------------------------------------------------------------------------- baseline
    def ensure_head(self, task: str, retrain: bool = False) -> tuple[nn.Linear, dict]:
        """The head-only baseline of a task: loaded if saved, else trained on frozen features and saved."""
        check_task_name(self.profile, task)
        directory = self.store.head_dir(task)
        if self.store.has_head(task) and not retrain:
            metrics = read_json(directory / "metrics.json")
            if metrics.get("backbone") == backbone_identity(self.backbone):
                return load_head(directory / "head.safetensors"), metrics
        x, y = self.features(task, "train")
        start = time.perf_counter()
        head, result = train_head(x, y, self.task(task).num_classes, self.profile.train, seed=self.seed_of(task),
                                  progress=f"{task} head" if self.progress else False)
        seconds = time.perf_counter() - start
        metrics = {
            "task": task,
            "accuracy": round(head_accuracy(head, *self.features(task, "test")), DECIMALS),
            "train_seconds": round(seconds, 2),
            "loss_curve": [round(v, 5) for v in result.loss_curve],
            "seed": self.seed_of(task),
            "backbone": backbone_identity(self.backbone),
            "trainable_parameters": sum(p.numel() for p in head.parameters()),
            "versions": library_versions(),
        }
        save_head(head, directory / "head.safetensors")
        write_json(directory / "metrics.json", metrics)
        return head, metrics

    # -------------------------------------------------------------------------------------------------- adapters
    def ensure_adapter(self, task: str, retrain: bool = False) -> Path:
        """The LoRA adapter of a task: its saved directory if complete, else trained (from the baseline head) and
        saved atomically. Returns the directory."""
        check_task_name(self.profile, task)
        directory = self.store.adapter_dir(task)
        if self.store.has_adapter(task) and not retrain:
            metrics = read_json(directory / "metrics.json")
            if metrics.get("backbone") == backbone_identity(self.backbone):
                return directory
        baseline, _ = self.ensure_head(task)
        data = self.task(task)
        model, head, result = train_adapter(
            self.backbone, data.train, data.num_classes, self.profile, seed=self.seed_of(task), init_head=baseline,
            device=self.device, progress=f"{task} adapter" if self.progress else False,
        )
        model.to(self.device)
        head.to(self.device)
        acc = adapter_accuracy(model, head, "default", data.test, **self.eval_kwargs())
        model.cpu()
        head.cpu()
        steps = max(1, len(result.loss_curve) // 50)
        metrics = {
            "task": task,
            "accuracy": round(acc, DECIMALS),
            "train_seconds": round(result.seconds, 2),
            "train_images_per_second": round(result.images_per_second, 1),
            "loss_curve": [round(sum(result.loss_curve[i:i + steps]) / len(result.loss_curve[i:i + steps]), 5)
                           for i in range(0, len(result.loss_curve), steps)],
            "loss_curve_step": steps,
            "seed": self.seed_of(task),
            "backbone": backbone_identity(self.backbone),
            "profile": self.profile.name,
            "lora": {"rank": self.profile.lora.rank, "alpha": self.profile.lora.alpha,
                     "target_modules": self.profile.lora.target_modules},
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "head_parameters": sum(p.numel() for p in head.parameters()),
            "versions": library_versions(),
        }
        return save_adapter(model, head, metrics, directory)

    def load_all_adapters(self, tasks: list[str] | None = None):
        """``(peft_model, heads)`` with every task's adapter loaded (trained first where missing)."""
        tasks = list(tasks or self.profile.tasks)
        dirs = {task: self.ensure_adapter(task) for task in tasks}
        model, heads = load_adapters(self.backbone, dirs)
        return model.to(self.device), {k: v.to(self.device) for k, v in heads.items()}

    # ---------------------------------------------------------------------------------------------------- tables
    def singles_table(self, model=None, heads=None, split: str = "test") -> pd.DataFrame:
        """Per task: head-only baseline accuracy and single-adapter accuracy on ``split`` (test by default)."""
        if model is None:
            model, heads = self.load_all_adapters()
        rows = []
        for task in tqdm(self.profile.tasks, desc="singles", disable=not self.progress):
            baseline, _ = self.ensure_head(task)
            data = self.task(task)
            rows.append({
                "task": task,
                "num_classes": data.num_classes,
                "num_train": len(data.train),
                f"num_{split}": len(data.split(split)),
                "head_accuracy": round(head_accuracy(baseline, *self.features(task, split)), DECIMALS),
                "adapter_accuracy": round(adapter_accuracy(model, heads[task], task, data.split(split),
                                                           **self.eval_kwargs()), DECIMALS),
            })
        table = pd.DataFrame(rows)
        table["adapter_gain"] = (table["adapter_accuracy"] - table["head_accuracy"]).round(DECIMALS)
        return table

    def merges_table(self, singles: pd.DataFrame, methods=DEFAULT_METHODS, sizes=(2, 3), model=None, heads=None,
                     split: str = "test", cache: bool = False, **kwargs) -> pd.DataFrame:
        """Every merge of ``sizes`` adapters with every method, each member task scored on ``split`` against the
        ``singles`` table of the same split (see :func:`~lora_merge_utils.evaluation.evaluate_merges`).

        With ``cache=True`` the table is saved under ``results/`` keyed by the request and the adapters' contents,
        and loaded from there by any later call with the same request (so chapters can share evaluations).
        """
        path = None
        if cache:
            specs = [MergeSpec.of(m) for m in methods]
            request = [split, [(m.label, m.method, m.params_label) for m in specs], list(sizes),
                       [list(c) for c in kwargs.get("combos") or []], self.adapters_fingerprint(),
                       singles.to_csv(index=False)]
            key = hashlib.sha256(json.dumps(request).encode()).hexdigest()[:16]
            path = self.store.results_dir / "cache" / f"merges-{key}.csv"
            if path.is_file():
                return pd.read_csv(path, keep_default_na=False)
        if model is None:
            model, heads = self.load_all_adapters()
        eval_sets = {t: self.task(t).split(split) for t in self.profile.tasks}
        e = self.eval_kwargs()
        table = evaluate_merges(model, heads, eval_sets, singles, methods=methods, sizes=sizes, device=e["device"],
                                batch_size=e["batch_size"], amp=e["amp"], progress=self.progress, **kwargs)
        if path is not None:
            save_table(table, path)
        return table

    def adapters_fingerprint(self) -> str:
        """A hash of every saved adapter's weights and head: cached evaluations are valid only for these."""
        digest = hashlib.sha256()
        for task in self.profile.tasks:
            for name in ("adapter_model.safetensors", "head.safetensors"):
                file = self.store.adapter_dir(task) / name
                digest.update(file.read_bytes() if file.is_file() else b"missing")
        return digest.hexdigest()[:16]


def save_table(table: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically."""
    write_atomic(Path(path), lambda tmp: table.to_csv(tmp, index=False))


def run_study(profile: Profile | str | None = "tiny", out: Path | str | None = None, methods=DEFAULT_METHODS,
              device: str | None = None, progress: bool | None = None) -> dict[str, pd.DataFrame]:
    """The whole grid headless: baselines, adapters, singles, all pairs and triples, tables and heatmap.

    Returns ``{"singles": ..., "merges": ..., "summary": ...}``; writes them under ``<out>/results``.
    """
    from .plots import pairwise_heatmap

    study = Study.open(profile, out, device=device, progress=progress)
    for task in tqdm(study.profile.tasks, desc="baselines", disable=not study.progress):
        study.ensure_head(task)
    for task in tqdm(study.profile.tasks, desc="adapters", disable=not study.progress):
        study.ensure_adapter(task)
    model, heads = study.load_all_adapters()
    singles = study.singles_table(model, heads)
    merges = study.merges_table(singles, methods=methods, model=model, heads=heads)
    summary = summarize_merges(merges)
    results = study.store.results_dir
    save_table(singles, results / "singles.csv")
    save_table(merges, results / "merges.csv")
    save_table(summary, results / "summary.csv")
    for method in methods:
        figure = pairwise_heatmap(merges, method, study.profile.tasks)
        write_atomic(results / f"pairwise_heatmap_{method}.png",
                     lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    return {"singles": singles, "merges": merges, "summary": summary}
