"""The whole study, stage by stage, each stage reading what the previous one saved.

``ensure_head`` and ``ensure_adapter`` train only what is missing; ``run_study`` runs the grid and writes the tables.
Chapters call the same functions, so any chapter can run on its own. Every adapter is trained with
``profile.seeds`` training seeds; the tables have one row per seed, and :mod:`lora_merge_utils.stats` turns them
into intervals.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ._progress import tqdm
from .artifacts import (
    ArtifactStore,
    check_adapter_dir,
    check_head_classes,
    check_reuse,
    default_root,
    library_versions,
    load_adapters,
    load_features,
    load_head,
    load_joint_adapter,
    read_json,
    save_adapter,
    save_features,
    save_head,
    save_joint_adapter,
    verify_checksums,
    write_metrics,
)
from .backbone import backbone_identity, create_backbone
from .batches import InMemoryImages, amp_dtype, decode_all, normalize
from .data.tasks import (
    ImageTask,
    check_profile_tasks,
    labels_of,
    load_task,
    relabelled,
    relabelling_of,
    sample_cache_dir,
    subsample,
)
from .evaluation import (
    DECIMALS,
    SINGLE_ADAPTER,
    MergeInputs,
    ScoreStore,
    code_version,
    evaluate_merges,
    merge_combinations,
    merge_row,
    summarize_merges,
    without_bits,
)
from .integrity import SEAL_FIELD
from .methods import DEFAULT_METHODS, MergeSpec, get_merge_method
from .parallel import job_slots, one_thread, run_jobs
from .profiles import Profile, all_tasks, apply_overrides, check_task_name, get_device, get_profile, progress_enabled
from .safe_io import atomic_dir, check_confined, lock_held_by_launch, remove_debris, training_lock, write_atomic
from .scoring import adapter_correctness, head_correctness
from .stats import Bootstrap, pack, unpack
from .training import extract_features, train_adapter, train_head, train_joint_adapter

JOINT = "one LoRA trained on all tasks"
"""The method label of :meth:`Study.joint_table`'s rows."""


@dataclass
class Study:
    """The shared state of one study: profile, backbone, device, output root and what this session decoded."""

    profile: Profile
    root: Path
    backbone: nn.Module
    device: torch.device
    progress: bool = True
    _features: dict = field(default_factory=dict, repr=False)
    _decoded: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(
        cls,
        profile: Profile | str | None = None,
        root: Path | str | None = None,
        device: torch.device | str | None = None,
        progress: bool | None = None,
    ) -> Study:
        """Set up a study: pick the profile, build the backbone, and choose where artifacts go.

        ``progress=None`` shows progress bars unless ``$LORA_BOOK_PROGRESS=0``.
        """
        profile = get_profile(profile)
        check_profile_tasks(profile)  # before the backbone is built or anything trained
        progress = progress_enabled() if progress is None else progress
        root = Path(root) if root is not None else default_root(profile)
        device = torch.device(device) if device is not None else get_device()
        check_confined(root)  # before anything is built or written
        backbone = create_backbone(profile).to(device)
        ArtifactStore(root).remove_debris()  # what runs killed mid-save left behind, artifacts and data samples
        remove_debris(sample_cache_dir(), old_copies=False, folders=None)  # the samples' cache is wholly ours
        return cls(profile, root, backbone, device, progress)

    def variant(self, overrides: dict) -> Study:
        """This study with its adapters' settings changed, e.g. ``{"lora.rank": 2, "lora.alpha": 4, "seeds": 1}``
        for a rank sweep: a profile with those fields replaced (:func:`~lora_merge_utils.profiles.apply_overrides`),
        its own artifact folder beside this one's (named by the profile's label), and this study's backbone,
        device, decoded images, frozen features and head-only baselines, none of which depends on the adapters.

        Only ``lora.*``, ``seeds`` and ``train.adapter_*`` fields can change: anything else would change what is
        shared.
        """
        shared = [k for k in overrides if not k.startswith(("lora.", "train.adapter_")) and k != "seeds"]
        if shared:
            raise ValueError(
                f"A variant changes only the adapters (lora.*, seeds, train.adapter_*), not {shared}: open another "
                "study with Study.open(apply_overrides(profile, ...)) for those."
            )
        profile = apply_overrides(self.profile, overrides)
        variant = Study(profile, self.root.parent / profile.label, self.backbone, self.device, self.progress)
        variant._features, variant._decoded = self._features, self._decoded
        key = variant.store.key() if any(self.store.has_head(t) for t in all_tasks(self.profile)) else None
        for task in all_tasks(self.profile):
            if self.store.has_head(task) and not variant.store.has_head(task):
                metrics = read_json(self.store.head_dir(task) / "metrics.json")
                if SEAL_FIELD not in metrics:
                    continue  # used unverified here ($LORA_BOOK_TRUST_UNCHECKED): not sealed as if checked there
                verify_checksums(self.store.head_dir(task), metrics, self.store.key())  # this folder's seal...
                with atomic_dir(variant.store.head_dir(task)) as copy:
                    shutil.copytree(self.store.head_dir(task), copy, dirs_exist_ok=True)
                    write_metrics(copy, metrics, key)  # ...and now with the variant's
        return variant

    def describe(self) -> str:
        """A few lines saying what this run uses: profile, device, backbone, artifact folder and library versions."""
        versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
        lines = [
            f"profile: {self.profile.name} ({len(self.profile.tasks)} tasks: {', '.join(self.profile.tasks)}; "
            f"{self.profile.seeds} training seed(s) per adapter)"
        ]
        if self.profile.overrides:
            lines.append("overrides: " + ", ".join(f"{k}={v}" for k, v in self.profile.overrides))
        if self.profile.smoke:
            lines.append(
                "smoke run: stand-in data and a shallow backbone prove the code path; the numbers mean "
                "nothing, and checks that need real pretrained weights are skipped"
            )
        lines += [
            f"device: {self.device}",
            f"backbone: {backbone_identity(self.backbone)} "
            f"({sum(p.numel() for p in self.backbone.parameters()):,} parameters)",
            f"artifacts: {self.root}",
            f"versions: {versions}",
        ]
        return "\n".join(lines)

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)

    @property
    def seeds(self) -> list[int]:
        """The training seed indices of every adapter, ``0 .. profile.seeds - 1``."""
        return list(range(self.profile.seeds))

    def task(self, name: str) -> ImageTask:
        return load_task(self.profile, name)

    def seed_of(self, task: str, seed: int = 0) -> int:
        """A distinct, fixed training seed per task and seed index."""
        return self.profile.train.seed * 1000 + 100 * seed + all_tasks(self.profile).index(task)

    def dataset(self, task: str, split: str, images: int | None = None):
        """A split (or a class-balanced sample of ``images`` of its images) decoded and resized once per session and
        held in memory: every later use (features, training, each merge's evaluation) reads the same tensors
        instead of decoding the images again."""
        whole = self.task(task).split(split)
        chosen = subsample(whole, images, self.profile.train.seed)
        key = (task, split, len(chosen))
        spec = relabelling_of(task)
        if key not in self._decoded and spec is not None and len(chosen) == len(whole):
            # a relabelled task's split is its images' task's, image for image: decoded once, for both
            self._decoded[key] = relabelled(self.profile, task, split, self.dataset(spec.base, split))
        if key not in self._decoded:
            decoded_whole = self._decoded.get((task, split, len(whole)))
            if decoded_whole is not None:  # the whole split is in memory already: pick the sample from it
                self._decoded[key] = subsample(decoded_whole, images, self.profile.train.seed)
            else:
                self._decoded[key] = decode_all(
                    chosen, self.profile.num_workers, progress=f"{task} {split} images" if self.progress else False
                )
        return self._decoded[key]

    def images(self, task: str, split: str, images: int | None = None) -> torch.Tensor:
        """The normalised images of :meth:`dataset` as one tensor on the study's device (for AdaMerging)."""
        data = self.dataset(task, split, images)
        if isinstance(data, InMemoryImages):
            return normalize(data.images.to(self.device))
        return data.tensors[0].to(self.device)

    def features(self, task: str, split: str, images: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen-backbone features of a split (or of the sample :meth:`dataset` gives): computed once, saved under
        ``features/`` for the chapters that come after (with what they were computed from: the backbone, the
        images' labels, the device and precision, the code), and held in memory for the session."""
        chosen = subsample(self.task(task).split(split), images, self.profile.train.seed)
        key = (task, split, len(chosen))
        if key not in self._features:
            path = self.store.features_path(task, split, len(chosen))
            identity = {
                "backbone": backbone_identity(self.backbone),
                "task": task,
                "split": split,
                "labels": hashlib.sha256(labels_of(chosen).numpy().tobytes()).hexdigest()[:16],
                "device": f"{self.device.type}:{amp_dtype(self.device) if self.profile.amp else None}",
                "code": code_version(),
            }
            cached = load_features(path, identity, self.store.key())
            if cached is None:
                cached = extract_features(
                    self.backbone,
                    self.dataset(task, split, images),
                    self.profile.train.eval_batch_size,
                    self.device,
                    self.profile.amp,
                    progress=f"{task} {split} features" if self.progress else False,
                )
                save_features(path, *cached, identity, self.store.key())
            self._features[key] = cached
        return self._features[key]

    def eval_kwargs(self) -> dict:
        """Device, batch size, AMP and workers for the evaluation helpers, from the profile."""
        return dict(
            device=self.device,
            batch_size=self.profile.train.eval_batch_size,
            amp=self.profile.amp,
            num_workers=self.profile.num_workers,
        )

    # ------------------------------------------------------------------------------------------------- baseline
    def ensure_head(self, task: str, retrain: bool = False) -> tuple[nn.Linear, dict]:
        """The head-only baseline of a task (frozen backbone + linear head): loaded if saved, else fitted on frozen
        features, its L2 penalty chosen on the validation split, and saved."""
        check_task_name(self.profile, task)
        directory = self.store.head_dir(task)
        if self.store.has_head(task) and not retrain:
            metrics = read_json(directory / "metrics.json")
            expected = {
                "task": task,
                "backbone": backbone_identity(self.backbone),
                "made_with": self._made_with("head"),
            }
            check_reuse(directory, metrics, expected, "head", self.store.key())
            head = load_head(directory / "head.safetensors")
            check_head_classes(directory, head, self.task(task).num_classes)
            return head, metrics
        with training_lock(self.root):  # two runs into one folder must not both train
            return self._train_head(task)

    def _train_head(self, task: str) -> tuple[nn.Linear, dict]:
        directory = self.store.head_dir(task)
        x, y = self.features(task, "train")
        head, result = train_head(
            x,
            y,
            self.task(task).num_classes,
            self.profile.train,
            progress=f"{task} head" if self.progress else False,
            val=self.features(task, "val"),
        )
        metrics = {
            "task": task,
            "accuracy": round(float(head_correctness(head, *self.features(task, "test")).mean()), DECIMALS),
            **result.record(),
            "backbone": backbone_identity(self.backbone),
            "made_with": self._made_with("head"),
            "trainable_parameters": sum(p.numel() for p in head.parameters()),
            "versions": library_versions(),
        }
        save_head(head, directory / "head.safetensors")
        metrics = write_metrics(directory, metrics, self.store.key())
        return head, metrics

    # -------------------------------------------------------------------------------------------------- adapters
    def ensure_adapter(self, task: str, seed: int = 0, retrain: bool = False) -> Path:
        """The LoRA adapter of a task for one training seed index: its saved directory if complete, else trained
        (from the baseline head) and saved atomically. Returns the directory."""
        check_task_name(self.profile, task)
        directory = self.store.adapter_dir(task, seed)
        if not retrain and self._adapter_saved(task, seed):
            metrics = check_adapter_dir(directory, self.store.key())  # complete, readable, and as saved
            check_reuse(
                directory,
                metrics,
                {
                    "task": task,
                    "backbone": backbone_identity(self.backbone),
                    "seed": self.seed_of(task, seed),
                    "lora": self._lora_record(),
                    "made_with": self._made_with("adapter"),
                },
                "adapter",
                self.store.key(),
            )
            check_head_classes(directory, load_head(directory / "head.safetensors"), self.task(task).num_classes)
            return directory
        with training_lock(self.root):
            return self._train_adapter(task, seed)

    def ensure_adapters(
        self, tasks: list[str] | None = None, seeds: int | list[int] | None = None, joint: bool = False
    ) -> dict[tuple[str, int], Path]:
        """Every adapter of ``tasks`` (default: the profile's six and its relabelled ones) and ``seeds`` (default:
        every seed index), each loaded if saved and checked as :meth:`ensure_adapter` does, the missing ones trained
        several at a time on a CPU (:mod:`lora_merge_utils.parallel`); with ``joint=True`` also the adapter trained
        on all six tasks at once (:meth:`joint_adapter`), one for each of ``seeds``, in the same batch of jobs.
        Returns each adapter's directory by ``(task, seed)``."""
        tasks = list(tasks or all_tasks(self.profile))
        for task in tasks:
            check_task_name(self.profile, task)
        seeds = self._seeds(seeds)
        wanted = [(task, seed) for seed in seeds for task in tasks]
        jobs = [("adapter", task, seed) for task, seed in wanted if not self._adapter_saved(task, seed)]
        if joint:
            jobs += [("joint", seed) for seed in seeds if not self._joint_saved(seed)]
        # the longest first (the joint adapter trains on every task), so that no process is left with a long job at
        # the end while the others wait
        jobs.sort(key=lambda job: -float("inf") if job[0] == "joint" else -len(self.task(job[1]).train))
        if jobs:
            with training_lock(self.root):
                for task in dict.fromkeys(job[1] for job in jobs if job[0] == "adapter"):
                    self.ensure_head(task)  # here, once: the workers read the saved heads
                if any(job[0] == "joint" for job in jobs):
                    for task in self.profile.tasks:
                        self.ensure_head(task)
                slots = job_slots(self.device)
                if slots > 1 and len(jobs) > 1:
                    self.store.key()  # made here, once, before the workers seal with it
                    start = (self.profile, str(self.root))
                    run_jobs(jobs, _train_in_worker, slots, _start_worker, start, "adapters", self.progress)
                else:
                    for job in tqdm(jobs, desc="adapters", disable=not self.progress or len(jobs) < 2):
                        self._train_job(job)
        return {(task, seed): self.ensure_adapter(task, seed) for task, seed in wanted}

    def _train_job(self, job: tuple) -> None:
        """``("adapter", task, seed)`` or ``("joint", seed)``, trained here (the caller holds the training lock)."""
        if job[0] == "adapter":
            self._train_adapter(*job[1:])
        else:
            self.joint_adapter(*job[1:])

    def _adapter_saved(self, task: str, seed: int) -> bool:
        if not self.store.has_adapter(task, seed) and self.store.interrupted(task, seed):
            with training_lock(self.root):  # a save was cut between its two renames: only the lock's holder mends it
                return self.store.has_adapter(task, seed)
        return self.store.has_adapter(task, seed)

    def _train_adapter(self, task: str, seed: int) -> Path:
        directory = self.store.adapter_dir(task, seed)
        baseline, _ = self.ensure_head(task)
        data = self.task(task)
        with one_thread(self.device):  # the same bytes whatever the thread setting (lora_merge_utils.parallel)
            model, head, result = train_adapter(
                self.backbone,
                self.dataset(task, "train"),
                data.num_classes,
                self.profile,
                seed=self.seed_of(task, seed),
                init_head=baseline,
                device=self.device,
                progress=f"{task} adapter (seed {seed})" if self.progress else False,
            )
        model.to(self.device)
        head.to(self.device)
        correct = adapter_correctness(model, head, "default", self.dataset(task, "test"), **self.eval_kwargs())
        model.cpu()
        head.cpu()
        metrics = {
            "task": task,
            "accuracy": round(float(correct.mean()), DECIMALS),
            **result.record(points=50),
            "seed": self.seed_of(task, seed),
            "seed_index": seed,
            "backbone": backbone_identity(self.backbone),
            "profile": self.profile.name,
            "lora": self._lora_record(),
            "made_with": self._made_with("adapter"),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "head_parameters": sum(p.numel() for p in head.parameters()),
            "versions": library_versions(),
        }
        save_adapter(model, head, metrics, directory, self.store.key())
        self.single_store(task, seed).put((task,), SINGLE_ADAPTER, {task: pack(correct)}, {task: len(correct)})
        return directory

    def _made_with(self, kind: str) -> dict:
        """The settings a saved ``"head"`` or ``"adapter"`` (the joint one too) was made with, beyond its task,
        backbone, seed and LoRA shape, as its ``metrics.json`` records them: reusing one made otherwise would report
        another run's numbers. A head depends on its training settings, the data seed and the training and validation
        images; an adapter on all that (it starts from the head) and its own training settings and LoRA dropout; both
        on the code that trains them and makes their images (:func:`trainer_code_version`). The test split and where
        the data lives change neither. Written through JSON, so that it compares equal to what
        is read back (tuples become lists)."""
        import dataclasses
        import json

        train = self.profile.train
        data = {k: v for k, v in dataclasses.asdict(self.profile.data).items() if "test" not in k and k != "data_dir"}
        record = {
            "head_l2": train.head_l2,
            "head_max_iter": train.head_max_iter,
            "data_seed": train.seed,
            "image_size": self.profile.image_size,
            "data": data,
        }
        record["code"] = trainer_code_version()
        if kind != "head":
            record |= {
                "adapter_epochs": train.adapter_epochs,
                "adapter_lr": train.adapter_lr,
                "adapter_weight_decay": train.adapter_weight_decay,
                "batch_size": train.batch_size,
                "lora_dropout": self.profile.lora.dropout,
            }
        return json.loads(json.dumps(record))

    def _lora_record(self) -> dict:
        lora = self.profile.lora
        return {"rank": lora.rank, "alpha": lora.alpha, "target_modules": lora.target_modules}

    def load_all_adapters(self, tasks: list[str] | None = None, seed: int = 0):
        """``(peft_model, heads)`` with the adapter of every task (of one seed index) loaded, trained first where
        missing."""
        tasks = list(tasks or self.profile.tasks)
        dirs = {task: self.ensure_adapter(task, seed) for task in tasks}
        model, heads = load_adapters(self.backbone, dirs, self.store.key())
        return model.to(self.device), {k: v.to(self.device) for k, v in heads.items()}

    def adapter_head(self, task: str, seed: int = 0) -> nn.Linear:
        """The saved head of a task's adapter (trained first if missing), on the study's device."""
        return load_head(self.ensure_adapter(task, seed) / "head.safetensors").to(self.device)

    def joint_adapter(self, seed: int = 0, tasks: list[str] | None = None):
        """``(peft_model, heads)``: one LoRA adapter trained on all of ``tasks`` (default: the profile's six) at once,
        each with its own head (:func:`~lora_merge_utils.training.train_joint_adapter`), from the head-only baselines;
        loaded if saved under ``joint/seed-<k>`` and checked, else trained and saved atomically. The upper bound of
        what one shared adapter holds, to set merged adapters against."""
        tasks = list(tasks or self.profile.tasks)
        seed = self._seeds(seed)[0]
        directory = self.root / "joint" / f"seed-{seed}"
        record = self._joint_record(seed, tasks)
        if (directory / "metrics.json").is_file():
            model, heads, metrics = load_joint_adapter(self.backbone, directory, self.store.key())
            if _same_record(metrics, record):
                # Saved heads load on the CPU: without this a CUDA study scores CUDA features with CPU heads.
                return model.to(self.device), {task: head.to(self.device) for task, head in heads.items()}
        with training_lock(self.root):
            baselines = {task: self.ensure_head(task)[0] for task in tasks}
            with one_thread(self.device):  # the same bytes whatever the thread setting (lora_merge_utils.parallel)
                model, heads, result = train_joint_adapter(
                    self.backbone,
                    {task: self.dataset(task, "train") for task in tasks},
                    {task: self.task(task).num_classes for task in tasks},
                    self.profile,
                    seed=record["seed"],
                    init_heads=baselines,
                    device=self.device,
                    progress="joint adapter" if self.progress else False,
                )
            metrics = {
                **record,
                **result.record(points=50),
                "backbone": backbone_identity(self.backbone),
                "profile": self.profile.name,
                "versions": library_versions(),
            }
            save_joint_adapter(model, heads, metrics, directory, self.store.key())
        return model.eval().to(self.device), {task: head.to(self.device) for task, head in heads.items()}

    def _joint_record(self, seed: int, tasks: list[str]) -> dict:
        """What a saved joint adapter must have been trained with to be reused."""
        return {
            "tasks": tasks,
            "seed": self.profile.train.seed * 1000 + 100 * seed,
            "lora": self._lora_record(),
            "made_with": self._made_with("adapter"),
            "steps": "one batch of every task",  # how it was trained: an adapter trained otherwise is not reused
        }

    def _joint_saved(self, seed: int) -> bool:
        metrics = self.root / "joint" / f"seed-{seed}" / "metrics.json"
        if not metrics.is_file():
            return False
        record = self._joint_record(seed, list(self.profile.tasks))
        return _same_record(read_json(metrics), record)

    def joint_table(self, singles: pd.DataFrame, seed: int = 0, tasks: list[str] | None = None) -> pd.DataFrame:
        """Rows like :meth:`merges_table`'s, one per task, for the jointly trained adapter of :meth:`joint_adapter`
        scored on each task's test split (method ``"one LoRA trained on all tasks"``), against ``singles``' rows of
        the same seed."""
        tasks = list(tasks or self.profile.tasks)
        model, heads = self.joint_adapter(seed, tasks)
        reference = singles[singles["seed"] == seed].set_index("task")
        rows = []
        for task in tasks:
            single = reference.loc[task]
            right = adapter_correctness(model, heads[task], "default", self.dataset(task, "test"), **self.eval_kwargs())
            if len(right) != int(single["num_images"]):
                raise ValueError(f"singles scored {int(single['num_images'])} {task!r} images, not its test split.")
            rows.append(merge_row(tasks, JOINT, "{}", "-", task, seed, single, right))
        return pd.DataFrame(rows)

    # ---------------------------------------------------------------------------------------------------- tables
    def _seeds(self, seeds) -> list[int]:
        if seeds is None:
            return self.seeds
        seeds = [seeds] if isinstance(seeds, int) else list(seeds)
        unknown = [s for s in seeds if s not in self.seeds]
        if unknown:
            raise ValueError(f"Seed index(es) {unknown} do not exist: this profile trains seeds {self.seeds}.")
        return seeds

    def singles_table(
        self,
        model=None,
        heads=None,
        split: str = "test",
        images: int | None = None,
        seeds: int | list[int] | None = None,
        tasks: list[str] | None = None,
    ) -> pd.DataFrame:
        """Per task (the profile's six, or ``tasks``, e.g. with its relabelled ones) and training seed: head-only
        baseline accuracy (frozen backbone + head; the same for every seed)
        and single-adapter accuracy, on ``split`` (test by default) or on the class-balanced sample of ``images``
        images per task that :meth:`dataset` gives. ``model``/``heads`` (all adapters of one seed) save a reload
        when a single seed is asked for. The packed ``head_correct``/``adapter_correct`` columns record which images
        were right (for intervals)."""
        rows = []
        tasks = list(tasks or self.profile.tasks)
        given = model is not None and len(self._seeds(seeds)) == 1
        if not given:
            self.ensure_adapters(tasks, seeds)  # what is missing, several at a time on a CPU
        for seed in self._seeds(seeds):
            loaded = (model, heads) if given else None
            for task in tqdm(tasks, desc=f"singles (seed {seed})", disable=not self.progress):
                baseline, _ = self.ensure_head(task)
                data = self.task(task)
                head_right = head_correctness(baseline, *self.features(task, split, images))
                adapter_right = self._saved_correctness(task, seed, split, images)
                if adapter_right is None:  # scored here, and saved for the chapters after this one
                    loaded = loaded or self.load_all_adapters(tasks, seed=seed)
                    adapter_right = self._adapter_correctness(*loaded, task, seed, split, images)
                rows.append(
                    {
                        "task": task,
                        "seed": seed,
                        "num_classes": data.num_classes,
                        "num_train": len(data.train),
                        "num_images": len(head_right),
                        "head_accuracy": round(float(head_right.mean()), DECIMALS),
                        "adapter_accuracy": round(float(adapter_right.mean()), DECIMALS),
                        "head_correct": pack(head_right),
                        "adapter_correct": pack(adapter_right),
                    }
                )
        table = pd.DataFrame(rows)
        table["adapter_gain"] = (table["adapter_accuracy"] - table["head_accuracy"]).round(DECIMALS)
        return table

    def _saved_correctness(self, task: str, seed: int, split: str, images: int | None):
        """Which images of a split one adapter gets right, from the store of adapters' results (its training saved
        its test split's), or ``None``."""
        n = len(subsample(self.task(task).split(split), images, self.profile.train.seed))
        saved = self.single_store(task, seed, split, images).get((task,), SINGLE_ADAPTER, {task: n})
        return None if saved is None else unpack(saved[task], n)

    def _adapter_correctness(self, model, heads, task: str, seed: int, split: str, images: int | None):
        """Score one adapter of ``model`` with its head on a split, and save the result in the store."""
        right = adapter_correctness(model, heads[task], task, self.dataset(task, split, images), **self.eval_kwargs())
        store = self.single_store(task, seed, split, images)
        store.put((task,), SINGLE_ADAPTER, {task: pack(right)}, {task: len(right)})
        return right

    def single_store(self, task: str, seed: int = 0, split: str = "test", images: int | None = None) -> ScoreStore:
        """Where one adapter's own results are kept (beside the merges' in ``results/scores``): valid for that
        adapter's contents and this scoring code only."""
        digest = hashlib.sha256()
        for name in ("adapter_model.safetensors", "adapter_config.json", "head.safetensors"):
            digest.update((self.store.adapter_dir(task, seed) / name).read_bytes())
        context = json.dumps(["single", split, images, digest.hexdigest()[:16], code_version()])
        return ScoreStore(self.store.results_dir / "scores", context, self.store.key())

    def merge_inputs(self, specs: list[MergeSpec]) -> MergeInputs:
        """The images some specs need: unlabeled training images for AdaMerging (not the validation images it is chosen
        on, nor the test images it is scored on), labelled training images for refitted heads (as many as the
        profile's budget allows) with each baseline head's validated L2 penalty."""
        inputs = MergeInputs(
            num_classes={t: self.task(t).num_classes for t in self.profile.tasks}, settings=self.profile.train
        )
        budget = self.profile.budget
        if any(get_merge_method(s.method).data != "none" for s in specs):
            # Training images without their labels: the paper adapts on the unlabeled test set (test-time adaptation);
            # here validation images choose among methods and test images score them, so both stay unseen.
            inputs.unlabeled = {t: self.images(t, "train", budget.tuning_images) for t in self.profile.tasks}
        if any(s.refit_heads for s in specs):
            inputs.refit_sets = {t: self.dataset(t, "train", budget.refit_images) for t in self.profile.tasks}
            baselines = {t: self.ensure_head(t)[1] for t in self.profile.tasks}
            inputs.refit_l2 = {t: m["l2"] for t, m in baselines.items() if "l2" in m}
        return inputs

    def merges_table(
        self,
        singles: pd.DataFrame,
        methods=DEFAULT_METHODS,
        sizes=(2, 3),
        model=None,
        heads=None,
        split: str = "test",
        cache: bool = False,
        combos=None,
        images: int | None = None,
        seeds: int | list[int] | None = None,
    ) -> pd.DataFrame:
        """Every merge of ``sizes`` adapters (or the merges in ``combos``) with every method, for every training
        seed in ``singles``, each member task scored on ``split`` (or on the sample of ``images`` images per task that
        :meth:`dataset` gives) against the ``singles`` table of the same images (see
        :func:`~lora_merge_utils.evaluation.evaluate_merges`). A seed's merges combine that seed's adapters.

        With ``cache=True`` each merge's result is saved under ``results/scores``, keyed by the split and images, the
        merge, the method and its hyperparameters, the adapters' contents and the scoring code's version, and
        reused by any later request that contains the same merge (so chapters share evaluations, and an edit of the
        merging code is never served stale scores).
        """
        specs = [MergeSpec.of(m) for m in methods]
        combos = [tuple(c) for c in combos] if combos is not None else merge_combinations(self.profile.tasks, sizes)
        wanted = sorted(set(singles["seed"])) if seeds is None else self._seeds(seeds)
        inputs = None
        tables = []
        for seed in wanted:
            scores = self.score_store(seed, split, images) if cache else None
            counts = singles[singles["seed"] == seed].set_index("task")["num_images"].to_dict()
            missing = scores is None or any(scores.get(c, s, counts) is None for c in combos for s in specs)
            seed_model, seed_heads = (model, heads) if len(wanted) == 1 else (None, None)
            if seed_model is None and missing:
                seed_model, seed_heads = self.load_all_adapters(list(dict.fromkeys(t for c in combos for t in c)), seed)
            if seed_heads is None:
                seed_heads = {
                    task: self.adapter_head(task, seed) for task in dict.fromkeys(t for c in combos for t in c)
                }
            if missing and inputs is None:
                inputs = self.merge_inputs(specs)
            eval_sets = {t: self.dataset(t, split, images) for t in {t for c in combos for t in c}} if missing else {}
            e = self.eval_kwargs()
            tables.append(
                evaluate_merges(
                    seed_model,
                    seed_heads,
                    eval_sets,
                    singles[singles["seed"] == seed],
                    methods=specs,
                    combos=combos,
                    device=e["device"],
                    batch_size=e["batch_size"],
                    amp=e["amp"],
                    num_workers=e["num_workers"],
                    progress=self.progress,
                    scores=scores,
                    inputs=inputs,
                    seed=seed,
                )
            )
        return pd.concat(tables, ignore_index=True)

    def score_store(self, seed: int = 0, split: str = "test", images: int | None = None) -> ScoreStore:
        """Where :meth:`merges_table` caches the merges of one seed's adapters scored on ``split``/``images``: valid
        for these adapters' contents and this scoring code only."""
        context = json.dumps([split, images, self.adapters_fingerprint(seed), code_version()])
        return ScoreStore(self.store.results_dir / "scores", context, self.store.key())

    def bootstrap(
        self,
        split: str = "test",
        images: int | None = None,
        replicates: int = 1000,
        seed: int = 0,
        resample_tasks: bool = True,
        tasks: list[str] | None = None,
    ) -> Bootstrap:
        """Bootstrap replicates over this study's test images (of ``split``/``images``), training seeds and (unless
        ``resample_tasks=False``, for one task's own interval) tasks, for intervals on any table of its merges (see
        :mod:`lora_merge_utils.stats`)."""
        sizes = {t: len(self.dataset(t, split, images)) for t in (tasks or self.profile.tasks)}
        return Bootstrap(sizes, self.seeds, replicates=replicates, seed=seed, resample_tasks=resample_tasks)

    def adapters_fingerprint(self, seed: int = 0) -> str:
        """A hash of every saved adapter's weights and head for one seed index: cached evaluations are valid only
        for these."""
        digest = hashlib.sha256()
        for task in all_tasks(self.profile):
            for name in ("adapter_model.safetensors", "adapter_config.json", "head.safetensors"):
                file = self.store.adapter_dir(task, seed) / name
                digest.update(file.read_bytes() if file.is_file() else b"missing")
        return digest.hexdigest()[:16]


def _same_record(saved: dict, record: dict) -> bool:
    """Whether a saved joint adapter was made as ``record`` says: every field it records agrees (a save older than
    the ``made_with`` field is compared on the rest, as :func:`~lora_merge_utils.artifacts.check_reuse` does)."""
    return all(saved.get(k) == v for k, v in record.items() if k != "made_with" or k in saved)


_WORKER_STUDY: Study | None = None
"""In a worker process of :meth:`Study.ensure_adapters`: the study it trains for."""


@functools.cache
def trainer_code_version() -> str:
    """A hash of the code that makes a head or an adapter from a profile (training and batching, and the code that
    draws, samples and relabels the tasks' images; its syntax, not its comments or docstrings), recorded in every
    saved head's and adapter's ``made_with``: one made by other code is not reused as if this code had made it."""
    import importlib
    import inspect

    digest = hashlib.sha256()
    for name in ("training", "batches", "data.tasks", "data.splits", "data.generated", "data.synthetic", "data.hub"):
        digest.update(_code_only(inspect.getsource(importlib.import_module(f"{__package__}.{name}"))).encode())
    return digest.hexdigest()[:16]


def _code_only(source: str) -> str:
    """``source`` as its syntax tree, without comments or docstrings: editing prose does not change what trains."""
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _start_worker(profile: Profile, root: str) -> None:
    global _WORKER_STUDY
    _WORKER_STUDY = Study(profile, Path(root), create_backbone(profile), torch.device("cpu"), progress=False)


def _train_in_worker(job: tuple) -> None:
    with lock_held_by_launch(_WORKER_STUDY.root):  # the caller holds the folder's training lock for its workers
        _WORKER_STUDY._train_job(job)


def save_table(table: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically (without the packed-correctness columns)."""
    write_atomic(Path(path), lambda tmp: without_bits(table).to_csv(tmp, index=False))


def check_grid_methods(methods) -> None:
    """Refuse, before any work, a grid's methods named twice (their rows would be written twice and weigh twice in
    every mean) or that cannot run on pairs and triples as given (ties without its ``density``)."""
    repeated = sorted({str(m) for m in methods if list(methods).count(m) > 1})
    if repeated:
        raise ValueError(f"methods name {', '.join(repeated)} more than once; give each method once.")
    for method in methods:
        for size in (2, 3):
            MergeSpec.of(method).check(size)


def run_study(
    profile: Profile | str | None = "tiny",
    out: Path | str | None = None,
    methods=DEFAULT_METHODS,
    device: str | None = None,
    progress: bool | None = None,
) -> dict[str, pd.DataFrame]:
    """The whole grid headless: baselines, adapters (every seed), singles, all pairs and triples, tables and heatmap.

    Returns ``{"singles": ..., "merges": ..., "summary": ...}``; writes them under ``<out>/results``. Methods are
    checked before any work (:func:`check_grid_methods`).
    """
    check_grid_methods(methods)
    study = Study.open(profile, out, device=device, progress=progress)
    for task in tqdm(study.profile.tasks, desc="baselines", disable=not study.progress):
        study.ensure_head(task)
    study.ensure_adapters(list(study.profile.tasks))
    singles = study.singles_table()
    # Through the per-merge score cache, as a launch and the chapters read and write it: a warm run reads it back.
    merges = study.merges_table(singles, methods=methods, cache=True)
    return write_results(study, singles, merges, methods)


def write_results(
    study: Study, singles: pd.DataFrame, merges: pd.DataFrame, methods=DEFAULT_METHODS
) -> dict[str, pd.DataFrame]:
    """Summarise the grid and write ``singles.csv``, ``merges.csv``, ``summary.csv`` and one heatmap per method
    under ``<root>/results``, each atomically: the one writer of the study's tables, whether one process computed
    them or several (:mod:`lora_merge_utils.distributed`)."""
    from .plots import pairwise_heatmap

    summary = summarize_merges(merges)
    results = study.store.results_dir
    save_table(singles, results / "singles.csv")
    save_table(merges, results / "merges.csv")
    save_table(summary, results / "summary.csv")
    for method in methods:
        figure = pairwise_heatmap(merges, method, study.profile.tasks)
        write_atomic(
            results / f"pairwise_heatmap_{method}.png",
            lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=120, bbox_inches="tight"),
        )
    return {"singles": singles, "merges": merges, "summary": summary}
