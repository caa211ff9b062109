"""How long each chapter takes, before running it: one cost model, fed by what each chapter does.

Every chapter is written down here as the sequence of library calls it makes (train these adapters, score these
merges on so many images, ...). :class:`Session` replays that sequence the way :class:`~lora_merge_utils.study.Study`
executes it (what is saved is loaded, what a session has decoded is decoded once, cached merge scores are reused)
and counts the work: images downloaded, decoded, trained on, evaluated, timed, and merges built. Multiplied by a
machine's throughput (:data:`T4`), that gives minutes.

    python -m lora_merge_utils plan --profile full

The counts are checked against a real run: the full-profile smoke test executes every chapter and compares the
tallies of :mod:`lora_merge_utils.instrumentation.workload` with this module's prediction, so the plan follows the
chapters.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from ..data.hub_sources import HUB_SOURCES
from ..evaluation import merge_combinations
from ..instrumentation.workload import KINDS
from ..methods import ADAMERGING_PAPER, ADAMERGING_SHORT, DEFAULT_METHODS, get_merge_method
from ..profiles import GeneratedData, HubData, Profile, get_profile
from .chapters import CHAPTERS as BOOK_CHAPTERS
from .chapters import RANK_SWEEP


@dataclass(frozen=True)
class Throughput:
    """What one machine does per second. Sources are in the field comments of :data:`T4`."""

    name: str
    train: float
    """Images per second through a LoRA training step (forward and backward, mixed precision)."""
    adapt: float
    """Images per second through an AdaMerging step (mixed precision; the backward pass also forms each target
    layer's weight gradient, to project it on the adapters' updates)."""
    evaluate: float
    """Images per second through the backbone for evaluation (mixed precision, large batches)."""
    timed: float
    """Images per second in chapter 7's timing loops (full precision, batch 64)."""
    pass_overhead: float
    """Seconds per forward pass regardless of batch size (kernel launches; dominates batch-1 timings)."""
    decode: dict
    """Images per second decoded and resized per task, with the profile's workers."""
    merge: float
    """Seconds to build one merged backbone."""
    head_fit: float
    """Seconds of one logistic-regression fit of a head on cached features (on the CPU)."""
    exactness_check: float
    """Seconds of one float64 exactness check (:func:`lora_merge_utils.merging.update_error`)."""
    download: float
    """Megabytes per second from the Hugging Face Hub, preparation of the parquet files included."""
    setup: float
    """Seconds per chapter before any work (install, imports, backbone weights)."""
    float64: float = 64e9
    """Floating-point operations per second a dense float64 SVD reaches (the merges over the Iso papers' dense
    space, :func:`dense_svd_seconds`)."""


T4 = Throughput(
    name="Colab T4",
    # GPU rates derived from published figures, not measured on a T4 (none publishes plain PyTorch AMP for ViT-B/16):
    # * evaluation: NVIDIA's FasterTransformer guide (docs/vit_guide.md, "INT8 vs. FP16 speedup on ViT", B_16-224,
    #   batch 32) runs ViT-B/16 on a T4 in fp16 in 57.22 ms, 559 images/s, with its own fused kernels; the same guide's
    #   fp16 table at 384 px puts plain PyTorch at 684 ms against its 263 ms (0.38). At 0.4-0.5 of the fused kernels,
    #   plain PyTorch AMP gives 224-280 images/s on a 70 W T4: we plan with 250.
    # * training: timm's benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv trains vit_base_patch16_224 at 391 images/s
    #   (full fine-tuning, AMP, batch 192); ResNet-50 AMP runs 3.1 times faster on that RTX 3090 (timm, 3,669 images/s)
    #   than on a T4 (NVIDIA DeepLearningExamples, ResNet-50 v1.5, T4, AMP: 1,165-1,198), so 391 / 3.1 = 126 at full
    #   clocks and four times timm's batch. LoRA skips the frozen weights' gradients, but a T4 held at Colab's 70 W
    #   cap does not keep its boost clock (Jia et al. 2019, "Dissecting the NVidia Turing T4 GPU via
    #   Microbenchmarking", arXiv:1903.07486): we plan with 105.
    # * AdaMerging: a step costs a forward pass, the activations' gradients and the weight gradients of every target
    #   layer (three passes' worth of matrix products, where LoRA training needs about two): 105 * 2 / 3 = 70.
    # * chapter 7's full-precision timings: Hugging Face's "Optimize inference using torch.compile()" measures
    #   google/vit-base-patch16-224 on a T4 in fp32 at batch 16 in 163.9 ms (transformers
    #   docs/source/en/perf_torch_compile.md): 98 images/s.
    train=105.0,
    adapt=70.0,
    evaluate=250.0,
    timed=98.0,
    pass_overhead=0.012,
    # Measured on a 2-core machine like Colab's 2 vCPUs, with 2 workers, on stand-ins of each dataset's image format
    # and size (benchmarks/benchmark_full_profile.py).
    decode={"mnist": 306.0, "svhn": 300.0, "eurosat": 268.0, "resisc45": 355.0, "gtsrb": 363.0, "dtd": 179.0},
    # Measured on a 2-core CPU for ViT-B/16 with six rank-8 adapters (0.4-1.3 s; a GPU does the arithmetic faster,
    # the copying of the model about as fast); the float64 check runs on the CPU on Colab too.
    merge=0.6,
    # One L-BFGS logistic-regression fit at the full profile's sizes (2,000 x 768 features, 10-47 classes, up to 500
    # iterations) took 0.3-0.45 s on this project's 2-core CPU; Colab's two vCPUs are the two threads of one core
    # (googlecolab/colabtools#1937), about half of that machine: 0.6-0.9 s, and we plan with 1.0.
    head_fit=1.0,
    exactness_check=6.0,
    download=40.0,
    # Every package the book needs is in Colab's image (requirements/colab.txt), so the setup cell installs this
    # package's wheel alone (pip resolving against the image: ~15 s), imports torch, timm, PEFT and datasets and builds
    # ViT-B/16 (8 s on this project's 2-core CPU, ~20 s on Colab's one core of two threads), mounts Drive (~5 s) and
    # reads the backbone's 346 MB from the hub at the download rate above (~9 s).
    setup=50.0,
    # A T4 runs float64 at 1/32 of its 8.1 float32 TFLOPS: 254 GFLOPS (TechPowerUp's GPU database, Tesla T4); a dense
    # SVD, bound by its bidiagonalisation's memory traffic, reaches about a quarter of that (our assumption).
    float64=64e9,
)
"""A Colab T4 runtime (free tier, one T4 held at 70 W, 2 vCPUs). The GPU figures are estimates from published
benchmarks (each cited above); the CPU figures are measurements on a comparable CPU."""


def svd_flops(rows: int, columns: int) -> float:
    """Floating-point operations of a thin SVD with both singular bases of a ``rows x columns`` matrix: the R-SVD's
    ``6 m n^2 + 20 n^3`` for ``m >= n`` (Golub and Van Loan, *Matrix Computations*, 4th ed., table 8.6.1).

    Example:
        >>> svd_flops(3072, 768) == svd_flops(768, 3072) == 6 * 3072 * 768**2 + 20 * 768**3
        True
    """
    m, n = max(rows, columns), min(rows, columns)
    return 6.0 * m * n**2 + 20.0 * n**3


def dense_svd_seconds(profile: Profile, sets: int, throughput: Throughput) -> float:
    """Seconds of ``sets`` dense float64 SVDs of every LoRA target layer of the profile's backbone: what
    ``iso_c_full`` (one set) and ``iso_cts_full`` (one for the sum, one per task) cost beyond a plain merge."""
    import re

    import timm
    import torch

    spec = profile.backbone
    with torch.device("meta"):  # shapes only, no weights
        model = timm.create_model(spec.model_name.split(".")[0], pretrained=False, num_classes=0, **spec.overrides)
    pattern = re.compile(profile.lora.target_modules)
    flops = sum(
        svd_flops(*module.weight.shape)
        for name, module in model.named_modules()
        if pattern.fullmatch(name) and hasattr(module, "weight")
    )
    return sets * flops / throughput.float64


def measured_throughput(path, base: Throughput = T4) -> Throughput:
    """``base`` with the GPU rates that ``scripts/gpu_check.py`` measured (``make gpu-check``): training, AdaMerging
    and evaluation under autocast, chapter 7's full-precision timings at the evaluation rate without it, and, where
    the file has them, the slowest measured merge's seconds and the dense float64 SVDs' rate."""
    import json
    import math
    from dataclasses import replace
    from pathlib import Path

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not a gpu_check.py measurement file ({error}); run make gpu-check.") from None
    try:
        rates = {kind: record[f"{kind}_images_per_second"] for kind in ("train", "adapt", "evaluate")}
        measured = replace(
            base,
            name=f"{record['device']} (measured by scripts/gpu_check.py)",
            train=float(rates["train"]["amp"]),
            adapt=float(rates["adapt"]["amp"]),
            evaluate=float(rates["evaluate"]["amp"]),
            timed=float(rates["evaluate"]["fp32"]),
            # Files written before gpu_check.py timed merges keep the base's merge and float64 figures.
            merge=max(map(float, record["merge_seconds"].values())) if "merge_seconds" in record else base.merge,
            float64=float(record.get("float64_flops", base.float64)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{path} is not a gpu_check.py measurement file ({error!r}); run make gpu-check.") from None
    for name in ("train", "adapt", "evaluate", "timed", "merge", "float64"):
        value = getattr(measured, name)
        if not (math.isfinite(value) and value > 0):  # a rate of 0, -5 or nan would price a chapter at inf, -137 or nan
            raise ValueError(f"{path}: its {name} figure is {value}, not a positive number; run make gpu-check again.")
    return measured


DOWNLOAD_MB = {"mnist": 18.2, "svhn": 183.0, "eurosat": 82.6, "resisc45": 340.1, "gtsrb": 333.0, "dtd": 629.0}
"""Megabytes of the hub's ``train`` and ``test`` parquet files per full-profile task (file sizes listed on the hub)."""


@dataclass
class Sizes:
    """Images per split and classes per task of a profile, as the loaders will produce them."""

    train: dict[str, int]
    val: dict[str, int]
    test: dict[str, int]
    classes: dict[str, int]

    def of(self, task: str, split: str, images: int | None = None) -> int:
        """Images :meth:`~lora_merge_utils.study.Study.dataset` gives for ``(task, split, images)``: a class-balanced
        sample of ``images // classes`` per class (at least one), or the whole split."""
        whole = getattr(self, split)[task]
        if images is None or images >= whole:
            return whole
        return min(whole, max(1, images // self.classes[task]) * self.classes[task])


def sizes_of(profile: Profile) -> Sizes:
    """The split sizes of a profile's tasks: computed for hub data (class-balanced samples), read from the
    generated tasks (offline and cheap) for the tiny profile."""
    if isinstance(profile.data, HubData):
        classes = {t: len(HUB_SOURCES[t].class_names) for t in profile.tasks}

        def sample(size: int | None, task: str) -> int:
            if size is None:
                raise ValueError("The plan needs bounded sample sizes; data sizes of None depend on the dataset.")
            return max(1, size // classes[task]) * classes[task]

        sizes = Sizes(
            {t: sample(profile.data.train_size, t) for t in profile.tasks},
            {t: sample(profile.data.val_size, t) for t in profile.tasks},
            {t: sample(profile.data.test_size, t) for t in profile.tasks},
            classes,
        )
        return _with_related(profile, sizes)
    if isinstance(profile.data, GeneratedData):
        from ..data.tasks import load_task

        tasks = {t: load_task(profile, t) for t in profile.tasks}
        sizes = Sizes(
            {t: len(x.train) for t, x in tasks.items()},
            {t: len(x.val) for t, x in tasks.items()},
            {t: len(x.test) for t, x in tasks.items()},
            {t: x.num_classes for t, x in tasks.items()},
        )
        return _with_related(profile, sizes)
    raise TypeError(f"No plan for data of type {type(profile.data).__name__}.")


def _with_related(profile: Profile, sizes: Sizes) -> Sizes:
    """``sizes`` with the profile's relabelled tasks: their base task's images, their own classes."""
    from ..data.tasks import relabelling_of

    for task in profile.related_tasks:
        spec = relabelling_of(task)
        for split in ("train", "val", "test"):
            getattr(sizes, split)[task] = getattr(sizes, split)[spec.base]
        sizes.classes[task] = len(spec.class_names)
    return sizes


@dataclass(frozen=True)
class Spec:
    """A stand-in for a merge request in the replay: its identity (for the score cache) and what it costs beyond a
    plain merge: ``"plain"``, ``"refit"`` (heads refitted on labelled training images), ``"adamerging"`` (the short
    schedule) or ``"adamerging_paper"`` (the paper's schedule); and how many sets of dense float64 SVDs of every
    target layer it runs per member task and for the sum (``svd_sets``: Iso-C over the paper's space, ``(0, 1)``;
    Iso-CTS, ``(1, 1)``)."""

    name: object
    kind: str = "plain"
    svd_sets: tuple[int, int] = (0, 0)


@dataclass
class Session:
    """One chapter's session replayed: what it decodes, trains, evaluates and merges, given what is ``saved``
    (carried from chapter to chapter when artifacts are kept, e.g. on Google Drive)."""

    profile: Profile
    sizes: Sizes
    saved: set = field(default_factory=set)
    work: Counter = field(default_factory=Counter)
    downloaded_mb: float = 0.0
    seconds: float = 0.0
    """Time not proportional to tallied work (timing loops, float64 checks, logistic-regression fits)."""
    fits: int = 0
    """Logistic-regression head fits (on cached features)."""
    svd_sets: int = 0
    """Sets of dense float64 SVDs of every target layer (:func:`dense_svd_seconds`)."""
    chapter5_choices: tuple[str, str] = ()
    """The best data-free and data-light families chapter 5 chose (default :data:`CHAPTER5_CHOICES`)."""
    decoded_by_task: Counter = field(default_factory=Counter)
    _decoded: set = field(default_factory=set)
    _features: set = field(default_factory=set)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.profile.seeds))

    def data(self, task: str) -> None:
        if ("data", task) not in self.saved:
            self.downloaded_mb += DOWNLOAD_MB.get(task, 0.0) if isinstance(self.profile.data, HubData) else 0.0
            self.saved.add(("data", task))

    def dataset(self, task: str, split: str, images: int | None = None) -> int:
        from ..data.tasks import relabelling_of

        self.data(task)
        n = self.sizes.of(task, split, images)
        key = (task, split, n)
        spec = relabelling_of(task)
        if key not in self._decoded and spec is not None and n == self.sizes.of(task, split):
            self.dataset(spec.base, split)  # its images' task's split, decoded once for both
            self._decoded.add(key)
        if key not in self._decoded:
            whole = (task, split, self.sizes.of(task, split))
            if whole not in self._decoded:  # a sample of an already decoded split is picked, not decoded
                self.work["decoded"] += n
                self.decoded_by_task[task] += n
            self._decoded.add(key)
        return n

    def features(self, task: str, split: str, images: int | None = None) -> None:
        """Computed once and saved (``Study.features``): a later chapter reads them when artifacts are kept."""
        n = self.sizes.of(task, split, images)
        if (task, split, n) not in self._features and ("features", task, split, n) not in self.saved:
            self.work["evaluated"] += self.dataset(task, split, images)
            self.saved.add(("features", task, split, n))
        self._features.add((task, split, n))

    def single(self, task: str, seed: int, split: str = "test", images: int | None = None) -> None:
        """One adapter scored on a split, once: its training saves its test split's result (``Study.singles_table``
        reads it back)."""
        n = self.sizes.of(task, split, images)
        if ("single", task, seed, split, n) not in self.saved:
            self.evaluate(task, split, images)
            self.saved.add(("single", task, seed, split, n))

    def evaluate(self, task: str, split: str, images: int | None = None) -> None:
        self.work["evaluated"] += self.dataset(task, split, images)

    def fit_head(self, candidates: int) -> None:
        self.fits += candidates

    def ensure_head(self, task: str) -> None:
        if ("head", task) not in self.saved:
            for split in ("train", "val", "test"):
                self.features(task, split)
            self.fit_head(len(self.profile.train.head_l2))
            self.saved.add(("head", task))

    def train_adapter(self, task: str) -> None:
        self.work["trained"] += self.profile.train.adapter_epochs * self.dataset(task, "train")

    def ensure_adapter(self, task: str, seed: int = 0) -> None:
        if ("adapter", task, seed) not in self.saved:
            self.ensure_head(task)
            self.train_adapter(task)
            self.single(task, seed)  # its test accuracy, saved with it
            self.saved.add(("adapter", task, seed))

    def ensure_joint(self) -> None:
        """The adapters trained on all six tasks at once (one per training seed), from their head-only baselines."""
        for seed in self.seeds:
            if ("joint", seed) not in self.saved:
                sizes = {task: self.dataset(task, "train") for task in self.profile.tasks}
                for task, images in joint_images_per_epoch(sizes, self.profile.train.batch_size).items():
                    self.ensure_head(task)
                    self.work["trained"] += self.profile.train.adapter_epochs * images
                self.saved.add(("joint", seed))

    def load_adapters(self, tasks=None, seed: int = 0) -> None:
        for task in tasks or self.profile.tasks:
            self.ensure_adapter(task, seed)

    def singles(self, split: str = "test", images: int | None = None, seeds=None, tasks=None) -> None:
        for seed in self.seeds if seeds is None else seeds:
            self.load_adapters(tasks, seed=seed)
            for task in tasks or self.profile.tasks:
                self.ensure_head(task)
                self.features(task, split, images)
                self.single(task, seed, split, images)

    def merges(
        self, combos, specs: list, split: str = "test", images: int | None = None, cache: bool = False, seeds=None
    ) -> None:
        """Every combo x spec for every seed (specs are :class:`Spec` or hashable names), as
        :meth:`~lora_merge_utils.study.Study.merges_table` runs them: cached scores are reused, inputs are prepared once
        when needed."""
        specs = [s if isinstance(s, Spec) else Spec(s) for s in specs]
        budget = self.profile.budget
        prepared = False
        for seed in self.seeds if seeds is None else seeds:
            jobs = [(tuple(c), s) for c in combos for s in specs]
            todo = [job for job in jobs if not cache or ("scores", split, images, seed, job) not in self.saved]
            if not todo:
                continue
            self.load_adapters(list(dict.fromkeys(t for combo, _ in jobs for t in combo)), seed=seed)
            if not prepared:
                prepared = True
                if any(s.kind in ADAMERGING_KINDS for s in specs):
                    for task in self.profile.tasks:
                        self.dataset(task, "train", budget.tuning_images)
                if any(s.kind == "refit" for s in specs):
                    for task in self.profile.tasks:
                        self.dataset(task, "train", budget.refit_images)
                        self.ensure_head(task)  # its validated L2 penalty
            for task in {t for combo, _ in jobs for t in combo}:
                self.dataset(task, split, images)
            for combo, spec in todo:
                self.work["merges"] += 1
                self.svd_sets += spec.svd_sets[0] * len(combo) + spec.svd_sets[1]
                self.work["evaluated"] += sum(self.sizes.of(t, split, images) for t in combo)
                if spec.kind == "refit":
                    for task in combo:
                        self.work["evaluated"] += self.sizes.of(task, "train", budget.refit_images)
                        self.fit_head(1)
                if spec.kind in ADAMERGING_KINDS:
                    steps, batch = ADAMERGING_KINDS[spec.kind]
                    self.work["adapted"] += steps * sum(
                        min(batch, self.sizes.of(t, "train", budget.tuning_images)) for t in combo
                    )
                if cache:
                    self.saved.add(("scores", split, images, seed, (combo, spec)))

    def merge_and_score(self, tasks, split: str = "test") -> None:
        self.work["merges"] += 1
        for task in tasks:
            self.evaluate(task, split)

    def exactness_checks(self, count: int, throughput: Throughput) -> None:
        self.work["merges"] += count
        self.seconds += count * throughput.exactness_check

    def timing(
        self,
        strategies_passes: list[int],
        batch_sizes,
        warmup: int,
        rounds: int,
        throughput: Throughput,
        tallied: bool = True,
    ) -> None:
        for passes, batch in itertools.product(strategies_passes, batch_sizes):
            calls = warmup + rounds
            if tallied:
                self.work["timed"] += calls * batch * passes
            else:
                self.seconds += calls * batch * passes / throughput.timed
            self.seconds += calls * passes * throughput.pass_overhead


ADAMERGING_KINDS = {
    "adamerging": (ADAMERGING_SHORT["steps"], ADAMERGING_SHORT["batch_size"]),
    "adamerging_paper": (ADAMERGING_PAPER["steps"], ADAMERGING_PAPER["batch_size"]),
}
"""AdaMerging's steps and images per task and step, by :class:`Spec` kind: the short schedule (``adamerging``) and
the paper's (``adamerging_paper``)."""


# ------------------------------------------------------------------------------------------------ the chapters
def _chapter0(s: Session, t: Throughput) -> None:
    for task in s.profile.tasks:
        s.data(task)


def _chapter1(s: Session, t: Throughput) -> None:
    tasks = s.profile.tasks
    for task in tasks:
        s.ensure_head(task)
    for task in tasks:  # the scikit-learn comparison reads the cached features; it fits five models per task
        for split in ("train", "val", "test"):
            s.features(task, split)
        s.fit_head(5)
    for task in tasks:  # the randomly initialised backbone's features and heads
        for split in ("train", "val", "test"):
            s.evaluate(task, split)
        s.fit_head(len(s.profile.train.head_l2))
    s.fit_head(len(s.profile.train.head_l2) + 1)  # solutions 2 and 3


def _chapter2(s: Session, t: Throughput) -> None:
    tasks = s.profile.tasks
    s.ensure_head(tasks[3])  # one adapter by hand
    s.train_adapter(tasks[3])
    s.evaluate(tasks[3], "test")
    for seed in s.seeds:
        for task in tasks:
            s.ensure_adapter(task, seed)
    for seed in s.seeds:  # the relabelled tasks of chapter 6
        for task in s.profile.related_tasks:
            s.ensure_adapter(task, seed)
    s.ensure_joint()  # chapter 4's adapter trained on all six tasks at once, in the same batch of jobs
    s.singles()
    s.train_adapter(tasks[3])  # solution 3: a rank-2 adapter of the fourth task
    s.evaluate(tasks[3], "test")


BASELINE = DEFAULT_METHODS


def _grid(profile: Profile, sizes=(2, 3)) -> list[tuple[str, ...]]:
    return merge_combinations(profile.tasks, sizes)


def _chapter3(s: Session, t: Throughput) -> None:
    s.load_adapters(seed=0)
    s.work["merges"] += 2  # lmu.merge_adapters beside PEFT's add_weighted_adapter, for linear and cat
    s.exactness_checks(2, t)
    s.singles()
    s.merges(_grid(s.profile, (2,)), list(BASELINE), cache=True)
    for task in s.profile.tasks:  # measured data similarity
        s.features(task, "train")
    s.merge_and_score(s.profile.similar_pairs[0])  # solution 3


def joint_images_per_epoch(sizes: dict[str, int], batch_size: int) -> dict[str, int]:
    """Images of each task that one epoch of :func:`~lora_merge_utils.training.train_joint_adapter` trains on: as many
    batches of every task as the largest task has, smaller tasks starting over when they run out.

    Example:
        >>> joint_images_per_epoch({"a": 100, "b": 70}, batch_size=32)  # 4 steps; b: all 70, then one batch again
        {'a': 100, 'b': 102}
    """
    batches = {task: math.ceil(n / batch_size) for task, n in sizes.items()}
    steps = max(batches.values())
    return {task: steps // batches[task] * n + steps % batches[task] * batch_size for task, n in sizes.items()}


def _chapter4(s: Session, t: Throughput) -> None:
    s.singles()
    s.merges(_grid(s.profile), list(BASELINE), cache=True)
    for task in s.profile.tasks:
        s.features(task, "train")
    sizes = tuple(range(2, len(s.profile.tasks) + 1))  # K = 2 ... 6 by task arithmetic (pairs, triples cached)
    s.merges(_grid(s.profile, sizes), ["task_arithmetic"], cache=True)
    s.ensure_joint()  # trained by chapter 2 when its artifacts are kept
    for _ in s.seeds:  # each seed's joint adapter on every task's test split
        for task in s.profile.tasks:
            s.evaluate(task, "test")
    s.load_adapters(seed=0)
    s.merge_and_score(s.profile.tasks[:3])  # solution 3 (the worst triple; any three tasks cost about the same)


DATA_LIGHT_KINDS = {"refitted heads": "refit", "AdaMerging, short schedule": "adamerging"}
"""Chapter 5's data-light families and what each costs beyond a plain merge."""


def _family_spec(family: str, which) -> Spec:
    """A data-free family's candidate ``which`` (an index, or ``"chosen"``), priced with its method's dense SVDs."""
    from ..tuning import DATA_FREE

    return Spec((family, which), svd_sets=get_merge_method(DATA_FREE[family]).dense_svd_sets)


CHAPTER5_CHOICES = ("magnitude pruning", "AdaMerging, short schedule")
"""The best data-free and data-light families the stored run of chapter 5 chose on validation data (the replay
cannot know them in advance; they decide which families run with every seed). Chapter 5 prints its choices."""
CHECKED_FAMILIES = 3
"""How many families' choices chapter 5 scores again to check a tuning table it read."""


def _tuning_table(s: Session) -> bool:
    """Chapter 5's tuning table, as :func:`~lora_merge_utils.tuning.tuning_table` gets it: computed where no table
    ships with the package (its scores cached, so a later chapter that reads the table reuses them when artifacts are
    kept). Whether it was computed."""
    from ..tuning import shipped_table, tuning_grids, tuning_merges

    if shipped_table(s.profile.label) is not None:
        return False
    budget = s.profile.budget
    tuning = tuning_merges(s.profile.tasks, budget.tuning_pairs)
    grids = tuning_grids(budget.tuning_grid)
    s.singles("val", budget.tuning_images, seeds=[0])
    for family in grids:
        if family in DATA_LIGHT_KINDS:
            s.merges(
                tuning, [Spec(family, DATA_LIGHT_KINDS[family])], "val", budget.tuning_images, cache=True, seeds=[0]
            )
        else:
            specs = [_family_spec(family, i) for i in range(len(grids[family]))]
            s.merges(tuning, specs, "val", budget.tuning_images, cache=True, seeds=[0])
    return True


def _chapter5(s: Session, t: Throughput) -> None:
    from ..tuning import GRIDS, cover_merges, exercise_merges, schedule_pairs, tuning_grids, tuning_merges

    budget = s.profile.budget
    tuning = tuning_merges(s.profile.tasks, budget.tuning_pairs)
    grids = tuning_grids(budget.tuning_grid)
    data_free = [family for family in grids if family not in DATA_LIGHT_KINDS]
    s.load_adapters(seed=0)
    if not _tuning_table(s):  # read, and a few families' choices scored again to check it
        s.singles("val", budget.tuning_images, seeds=[0])
        checked = [_family_spec(family, "chosen") for family in data_free[:CHECKED_FAMILIES]]
        s.merges(tuning, checked, "val", budget.tuning_images, cache=True, seeds=[0])
    sample = budget.comparison_images
    s.singles("test", sample, seeds=[0])  # how a validation choice transfers: the scaled sum on the test split
    scaled_sum = grids["task arithmetic, scaled sum"]
    s.merges(
        tuning,
        [Spec(("task arithmetic, scaled sum", i)) for i in range(len(scaled_sum))],
        "test",
        sample,
        cache=True,
        seeds=[0],
    )
    survey = (
        [Spec("task_arithmetic"), Spec("linear")]
        + [_family_spec(family, "chosen") for family in data_free]
        + [Spec(family, kind) for family, kind in DATA_LIGHT_KINDS.items()]
    )
    for spec in survey:
        s.merges(_grid(s.profile, budget.survey_sizes), [spec], "test", sample, cache=True, seeds=[0])
    cost_merge = [tuple(s.profile.tasks[: max(budget.survey_sizes)])]
    for spec in survey:  # each method's cost, timed on one merge of the largest size with the cache off
        s.merges(cost_merge, [spec], "test", sample, seeds=[0])
    # TSV-Merge, Iso-C and Iso-CTS over the updates' span and over the paper's space, on one pair; tsv_full
    # decomposes each task's update and then both concatenated bases, about one dense set each
    iso_spaces = [
        Spec(("iso space", i), svd_sets=get_merge_method(method).dense_svd_sets)
        for i, method in enumerate(("tsv", "tsv_full", "iso_c", "iso_c_full", "iso_cts", "iso_cts_full"))
    ]
    s.merges(tuning[:1], iso_spaces, "test", sample, seeds=[0])
    # AdaMerging on the paper's schedule beside the short one (whose scores the survey cached)
    schedules = [Spec("AdaMerging, short schedule", "adamerging"), Spec("AdaMerging, paper's", "adamerging_paper")]
    s.merges(
        schedule_pairs(s.profile.tasks, budget.paper_schedule_pairs), schedules, "test", sample, cache=True, seeds=[0]
    )
    s.singles("test", sample)
    best_free, best_light = s.chapter5_choices or CHAPTER5_CHOICES
    light = Spec(best_light, DATA_LIGHT_KINDS[best_light])
    for spec in (Spec("task_arithmetic"), _family_spec(best_free, "chosen"), light):
        s.merges(_grid(s.profile), [spec], "test", sample, cache=True)
    # the K curve on seed 0: each tuned family's scale chosen again on validation for every size but pairs (whose
    # choice is the table's), on an even cover of that size's merges, then every merge of that size
    sizes = sorted({k for k in budget.curve_sizes if k <= len(s.profile.tasks)})
    if sizes:
        s.singles("val", sample, seeds=[0])
    scales = len(GRIDS[budget.tuning_grid][0])
    for k in sizes:
        specs = [Spec("task_arithmetic"), light]
        for family in dict.fromkeys(["task arithmetic, scaled sum", best_free]):
            if k == 2:
                specs.append(_family_spec(family, "chosen"))
                continue
            candidates = [_family_spec(family, ("K", k, i)) for i in range(scales)]
            s.merges(cover_merges(s.profile.tasks, k), candidates, "val", sample, cache=True, seeds=[0])
            specs.append(_family_spec(family, ("K", k)))
        s.merges(_grid(s.profile, (k,)), specs, "test", sample, cache=True, seeds=[0])
    few = exercise_merges(s.profile.tasks)
    s.merges(few, [Spec(("svd", r)) for r in (4, 8, 16)], "val", budget.tuning_images, seeds=[0])  # solution 3
    s.merges(few, [Spec(("sum", i)) for i in range(len(scaled_sum))], "val", budget.tuning_images, seeds=[0])  # 4


def _chapter6(s: Session, t: Throughput) -> None:
    from ..data.tasks import related_combos  # torch: loaded only when a plan is measured

    s.singles()
    s.merges(_grid(s.profile, (2,)), ["task_arithmetic"], cache=True)
    everything = list(s.profile.tasks) + list(s.profile.related_tasks)
    s.singles(tasks=everything)
    s.merges(related_combos(s.profile), ["task_arithmetic"], cache=True)
    for seed in s.seeds:
        s.load_adapters(everything, seed=seed)
    for task in s.profile.tasks:
        s.features(task, "train")
    for seed in s.seeds:
        s.load_adapters(seed=seed)
    probe = sum(min(64, s.sizes.test[task]) for task in s.profile.tasks)  # adapted-feature CKA, full precision
    s.seconds += probe * len(s.profile.tasks) / t.timed
    sweep_seeds = s.seeds[: s.profile.budget.rank_sweep_seeds]
    for rank in RANK_SWEEP:  # variants at other ranks: their own adapters, this study's heads and features
        if rank == s.profile.lora.rank:
            continue
        for _seed in sweep_seeds:
            for task in s.profile.tasks:
                s.ensure_head(task)
                s.train_adapter(task)
                s.evaluate(task, "test")  # the new adapter's test accuracy, saved with it (the singles table reads it)
            for combo in _grid(s.profile, (2,)):
                s.work["merges"] += 1
                for task in combo:
                    s.evaluate(task, "test")
    if s.profile.budget.rank_sweep_leaders:  # chapter 5's leaders at every rank, on chapter 5's sample of test images
        _tuning_table(s)
        sample = s.profile.budget.comparison_images
        best_free, best_light = s.chapter5_choices or CHAPTER5_CHOICES
        kind = DATA_LIGHT_KINDS[best_light]
        s.singles("test", sample, seeds=sweep_seeds)  # the rank-8 adapters, and the heads' features, on the sample
        for rank in RANK_SWEEP:
            if rank == s.profile.lora.rank:  # the book's own adapters: chapter 5's headline scored these pairs
                leaders = [Spec("task_arithmetic"), _family_spec(best_free, "chosen"), Spec(best_light, kind)]
            else:
                leaders = [
                    Spec((rank, "sum")),
                    _family_spec(best_free, (rank, "chosen")),
                    Spec((rank, best_light), kind),
                ]
                for _ in sweep_seeds:  # the other rank's adapters on the sample
                    for task in s.profile.tasks:
                        s.evaluate(task, "test", sample)
            s.merges(_grid(s.profile, (2,)), leaders, "test", sample, cache=True, seeds=sweep_seeds)


def _chapter7(s: Session, t: Throughput) -> None:
    tasks = s.profile.tasks
    for task in tasks:
        s.ensure_head(task)
    for k, chosen in ((2, [tasks[0], tasks[3]]), (3, [tasks[0], tasks[3], tasks[5]])):
        s.load_adapters(chosen, seed=0)
        s.work["merges"] += k + 1  # K separate models and one merged model
        rounds = s.profile.budget.timing_rounds  # frozen + K heads, merged, mixed batch, switching, separate:
        s.timing([1, 1, k, k, k], (1, 64), 3, rounds, t)
    four = [tasks[0], tasks[3], tasks[5], tasks[4]]
    s.load_adapters(four, seed=0)  # solution 2: K = 4
    s.work["merges"] += 5
    half = max(3, s.profile.budget.timing_rounds // 2)  # the solutions time half as many rounds
    s.timing([1, 1, 4, 4, 4], (64,), 2, half, t)
    s.timing([3], (64,), 2, half, t, tallied=False)  # solution 3: merge and unmerge per task


REPLAYS: dict[int, Callable[[Session, Throughput], None]] = {
    0: _chapter0,
    1: _chapter1,
    2: _chapter2,
    3: _chapter3,
    4: _chapter4,
    5: _chapter5,
    6: _chapter6,
    7: _chapter7,
}
"""The calls each chapter makes (solutions included), by its number, replayed to count its work."""

CHAPTERS: dict[str, tuple[str, Callable[[Session, Throughput], None]]] = {
    chapter.file: (chapter.title, REPLAYS[chapter.number]) for chapter in BOOK_CHAPTERS
}
"""Each chapter notebook (:data:`~lora_merge_utils.course.chapters.CHAPTERS`), its title, and the calls it makes."""


def seconds(session: Session, throughput: Throughput) -> float:
    """The time a replayed session takes on a machine."""
    work = session.work
    decode = sum(
        n / throughput.decode.get(task, min(throughput.decode.values())) for task, n in session.decoded_by_task.items()
    )
    return (
        throughput.setup
        + session.downloaded_mb / throughput.download
        + decode
        + work["trained"] / throughput.train
        + work["adapted"] / throughput.adapt
        + work["evaluated"] / throughput.evaluate
        + work["timed"] / throughput.timed
        + work["merges"] * throughput.merge
        + session.fits * throughput.head_fit
        + (dense_svd_seconds(session.profile, session.svd_sets, throughput) if session.svd_sets else 0.0)
        + session.seconds
    )


def chapter_plan(
    profile: Profile | str | None = "full",
    throughput: Throughput = T4,
    chapter5_choices: tuple[str, str] = CHAPTER5_CHOICES,
) -> pd.DataFrame:
    """Per chapter: the work and the minutes it takes on ``throughput``'s machine, two ways.

    * ``warm``: the chapters run in order with artifacts kept (Google Drive), so each one finds what earlier ones
      trained and downloaded; the first chapter pays the downloads.
    * ``alone``: the chapter opened on a fresh runtime with nothing saved: it downloads and trains what it needs.

    The work columns (``decoded``, ``trained``, ``adapted``, ``evaluated``, ``timed``, ``merges``, ``download_mb``)
    are those of the warm run; ``peak_gpu_gb`` is the chapter's estimated peak GPU memory
    (:func:`lora_merge_utils.course.memory.chapter_memory`). ``chapter5_choices``: the families chapter 5 chose on
    validation data (see :data:`CHAPTER5_CHOICES`).
    """
    from .memory import chapter_memory

    profile = get_profile(profile)
    sizes = sizes_of(profile)
    memory = chapter_memory(profile)
    saved: set = set()
    rows = []
    for notebook, (title, replay) in CHAPTERS.items():
        warm = Session(profile, sizes, saved, chapter5_choices=chapter5_choices)
        replay(warm, throughput)
        alone = Session(profile, sizes, chapter5_choices=chapter5_choices)
        replay(alone, throughput)
        rows.append(
            {
                "notebook": notebook,
                "chapter": title,
                **{k: warm.work[k] for k in KINDS},
                "download_mb": round(warm.downloaded_mb, 1),
                "warm_minutes": seconds(warm, throughput) / 60,
                "alone_minutes": seconds(alone, throughput) / 60,
                "peak_gpu_gb": memory[notebook],
            }
        )
    return pd.DataFrame(rows)


def format_plan(plan: pd.DataFrame, profile: Profile, throughput: Throughput) -> str:
    """The plan as the CLI prints it."""
    table = plan.drop(columns=["notebook"]).copy()
    table["warm_minutes"] = table["warm_minutes"].map(lambda m: f"{m:5.1f}")
    table["alone_minutes"] = table["alone_minutes"].map(lambda m: f"{m:5.1f}")
    total = plan["warm_minutes"].sum()
    return (
        f"Time plan of the {profile.label} profile on a {throughput.name} (minutes; estimates from its throughput "
        f"figures, lora_merge_utils.course.plan)\n\n{table.to_string(index=False)}\n\n"
        f"whole book in order, artifacts kept on Drive: {total:.0f} min ({math.ceil(total / 6) / 10:.1f} h), "
        f"first downloads included; longest chapter {plan['warm_minutes'].max():.0f} min warm, "
        f"{plan['alone_minutes'].max():.0f} min alone on a fresh runtime; peak GPU memory "
        f"{plan['peak_gpu_gb'].max():.1f} GB (lora_merge_utils.course.memory)"
    )
