"""How long each chapter takes, before running it: one cost model, fed by what each chapter does.

Every chapter is written down here as the sequence of library calls it makes (train these adapters, score these
merges on so many images, ...). :class:`Session` replays that sequence the way :class:`~lora_merge_utils.Study`
executes it (what is saved is loaded, what a session has decoded is decoded once, cached merge scores are reused)
and counts the work: images downloaded, decoded, trained on, evaluated, timed, and merges built. Multiplied by a
machine's throughput (:data:`T4`), that gives minutes.

    python -m lora_merge_utils plan --profile full

The counts are checked against a real run: the full-profile smoke test executes every chapter and compares the
tallies of :mod:`lora_merge_utils.workload` with this module's prediction, so the plan follows the chapters.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from .profiles import GeneratedData, HubData, Profile, get_profile
from .tasks import HUB_SOURCES


@dataclass(frozen=True)
class Throughput:
    """What one machine does per second. Sources are in the field comments of :data:`T4`."""

    name: str
    train: float
    """Images per second through a LoRA training step (forward and backward, mixed precision)."""
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
    exactness_check: float
    """Seconds of one float64 exactness check (:func:`lora_merge_utils.merging.update_error`)."""
    download: float
    """Megabytes per second from the Hugging Face Hub, preparation of the parquet files included."""
    setup: float
    """Seconds per chapter before any work: install, imports, backbone weights."""


T4 = Throughput(
    name="Colab T4",
    # Derived, not measured on a T4: NVIDIA's FasterTransformer guide measures ViT-B/16 at 224 px on a T4 at ~559
    # images/s in fp16 with its own fused kernels; timm's 3090 benchmarks put plain PyTorch AMP at 0.4-0.5 of
    # tuned kernels' level and training at ~0.35 of inference. We plan with 300 (inference) and 130 (LoRA
    # training, which skips the frozen weights' gradients), and ~85 images/s for fp32 inference.
    train=130.0,
    evaluate=300.0,
    timed=85.0,
    pass_overhead=0.012,
    # Measured on a 2-core machine like Colab's 2 vCPUs, with 2 workers, on stand-ins of each dataset's image format
    # and size (benchmarks/benchmark_full_profile.py).
    decode={"mnist": 306.0, "svhn": 300.0, "eurosat": 268.0, "resisc45": 355.0, "gtsrb": 363.0, "dtd": 179.0},
    # Measured on a 2-core CPU for ViT-B/16 with six rank-8 adapters (0.4-1.3 s; a GPU does the arithmetic faster,
    # the copying of the model about as fast); the float64 check runs on the CPU on Colab too.
    merge=0.6,
    exactness_check=6.0,
    download=40.0,
    setup=75.0,
)
"""A Colab T4 runtime (free tier: one T4, 2 vCPUs). The GPU figures are estimates; the CPU figures are
measurements on a comparable CPU."""

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
        """Images :meth:`Study.dataset` gives for ``(task, split, images)``: a class-balanced sample of
        ``images // classes`` per class (at least one), or the whole split."""
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

        return Sizes({t: sample(profile.data.train_size, t) for t in profile.tasks},
                     {t: sample(profile.data.val_size, t) for t in profile.tasks},
                     {t: sample(profile.data.test_size, t) for t in profile.tasks}, classes)
    if isinstance(profile.data, GeneratedData):
        from .tasks import load_task

        tasks = {t: load_task(profile, t) for t in profile.tasks}
        return Sizes({t: len(x.train) for t, x in tasks.items()}, {t: len(x.val) for t, x in tasks.items()},
                     {t: len(x.test) for t, x in tasks.items()}, {t: x.num_classes for t, x in tasks.items()})
    raise TypeError(f"No plan for data of type {type(profile.data).__name__}.")


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
    """Time not proportional to tallied work (timing loops, float64 checks)."""
    decoded_by_task: Counter = field(default_factory=Counter)
    _decoded: set = field(default_factory=set)
    _features: set = field(default_factory=set)

    def data(self, task: str) -> None:
        if ("data", task) not in self.saved:
            self.downloaded_mb += DOWNLOAD_MB.get(task, 0.0) if isinstance(self.profile.data, HubData) else 0.0
            self.saved.add(("data", task))

    def dataset(self, task: str, split: str, images: int | None = None) -> int:
        self.data(task)
        n = self.sizes.of(task, split, images)
        key = (task, split, n)
        if key not in self._decoded:
            whole = (task, split, self.sizes.of(task, split))
            if whole not in self._decoded:  # a sample of an already decoded split is picked, not decoded
                self.work["decoded"] += n
                self.decoded_by_task[task] += n
            self._decoded.add(key)
        return n

    def features(self, task: str, split: str, images: int | None = None) -> None:
        n = self.dataset(task, split, images)
        if (task, split, n) not in self._features:
            self.work["evaluated"] += n
            self._features.add((task, split, n))

    def evaluate(self, task: str, split: str, images: int | None = None) -> None:
        self.work["evaluated"] += self.dataset(task, split, images)

    def ensure_head(self, task: str) -> None:
        if ("head", task) not in self.saved:
            self.features(task, "train")
            self.features(task, "test")
            self.saved.add(("head", task))

    def train_adapter(self, task: str) -> None:
        self.work["trained"] += self.profile.train.adapter_epochs * self.dataset(task, "train")

    def ensure_adapter(self, task: str) -> None:
        if ("adapter", task) not in self.saved:
            self.ensure_head(task)
            self.train_adapter(task)
            self.evaluate(task, "test")
            self.saved.add(("adapter", task))

    def load_adapters(self, tasks=None) -> None:
        for task in tasks or self.profile.tasks:
            self.ensure_adapter(task)

    def singles(self, split: str = "test", images: int | None = None) -> None:
        self.load_adapters()
        for task in self.profile.tasks:
            self.ensure_head(task)
            self.features(task, split, images)
            self.evaluate(task, split, images)

    def merges(self, combos, specs: list, split: str = "test", images: int | None = None,
               cache: bool = False) -> None:
        """``specs`` are hashable stand-ins for merge requests (same spec on the same images: cached)."""
        jobs = [(tuple(c), s) for c in combos for s in specs]
        todo = [job for job in jobs if not cache or ("scores", split, images, job) not in self.saved]
        if todo:
            for task in {t for combo, _ in jobs for t in combo}:
                self.dataset(task, split, images)
        for combo, spec in todo:
            self.work["merges"] += 1
            self.work["evaluated"] += sum(self.sizes.of(t, split, images) for t in combo)
            if cache:
                self.saved.add(("scores", split, images, (combo, spec)))

    def merge_and_score(self, tasks, split: str = "test") -> None:
        self.work["merges"] += 1
        for task in tasks:
            self.evaluate(task, split)

    def exactness_checks(self, count: int, throughput: Throughput) -> None:
        self.work["merges"] += count
        self.seconds += count * throughput.exactness_check

    def timing(self, strategies_passes: list[int], batch_sizes, warmup: int, repeats: int,
               throughput: Throughput, tallied: bool = True) -> None:
        for passes, batch in itertools.product(strategies_passes, batch_sizes):
            calls = warmup + repeats
            if tallied:
                self.work["timed"] += calls * batch * passes
            else:
                self.seconds += calls * batch * passes / throughput.timed
            self.seconds += calls * passes * throughput.pass_overhead


# ------------------------------------------------------------------------------------------------ the chapters
def _chapter0(s: Session, t: Throughput) -> None:
    for task in s.profile.tasks:
        s.data(task)


def _chapter1(s: Session, t: Throughput) -> None:
    tasks = s.profile.tasks
    for task in tasks:
        s.ensure_head(task)
    for task in tasks:  # the randomly initialised backbone's features
        s.evaluate(task, "train")
        s.evaluate(task, "test")
    for task in tasks:  # solutions 2 and 3 read the pretrained features
        s.features(task, "train")
        s.features(task, "test")


def _chapter2(s: Session, t: Throughput) -> None:
    tasks = s.profile.tasks
    s.load_adapters()
    s.singles()
    s.ensure_head(tasks[3])  # solution 3: a rank-2 adapter of the fourth task
    s.train_adapter(tasks[3])
    s.evaluate(tasks[3], "test")


PAIRS = "pairs"
BASELINE = ("task_arithmetic", "linear")


def _grid(profile: Profile, sizes=(2, 3)) -> list[tuple[str, ...]]:
    return [c for k in sizes for c in itertools.combinations(profile.tasks, k)]


def _chapter3(s: Session, t: Throughput) -> None:
    s.load_adapters()
    s.exactness_checks(2, t)
    s.singles()
    s.merges(_grid(s.profile, (2,)), list(BASELINE), cache=True)
    s.merge_and_score(s.profile.similar_pairs[0])  # solution 3


def _chapter4(s: Session, t: Throughput) -> None:
    s.load_adapters()
    s.singles()
    s.merges(_grid(s.profile), list(BASELINE), cache=True)
    s.merge_and_score(s.profile.tasks[:3])  # solution 3 (the worst triple; any three tasks cost about the same)


TUNING_CANDIDATES = {"task_arithmetic sum": 3, "ties": 4, "dare_linear": 2, "dare_ties": 2, "magnitude_prune": 2,
                     "knots_ties": 4}


def tuning_merges(profile: Profile) -> list[tuple[str, ...]]:
    """The two pairs and two triples on which chapter 5 chooses hyperparameters."""
    t = profile.tasks
    return [(t[0], t[3]), (t[1], t[4]), (t[0], t[2], t[5]), (t[1], t[3], t[4])]


def _chapter5(s: Session, t: Throughput) -> None:
    budget = s.profile.budget
    tuning = tuning_merges(s.profile)
    s.load_adapters()
    s.singles("val", budget.tuning_images)
    for family, candidates in TUNING_CANDIDATES.items():
        s.merges(tuning, [(family, i) for i in range(candidates)], "val", budget.tuning_images)
    sample = budget.comparison_images
    s.singles("test", sample)
    s.merges(_grid(s.profile), list(BASELINE), "test", sample, cache=True)
    s.merges(_grid(s.profile), ["svd"] + [(family, "chosen") for family in TUNING_CANDIDATES], "test", sample,
             cache=True)
    for family, seed in itertools.product(("dare_linear", "dare_ties"), (1, 2)):
        s.merges(_grid(s.profile, (2,)), [(family, "seed", seed)], "test", sample, cache=True)
    s.merges(tuning, [("svd rank", r) for r in (4, 8, 16)], "val", budget.tuning_images)  # solution 3
    s.merges(tuning[:2], [("sum", i) for i in range(3)], "val", budget.tuning_images)  # solution 4
    s.merges(tuning[2:], [("sum", i) for i in range(3)], "val", budget.tuning_images)


def _chapter6(s: Session, t: Throughput) -> None:
    s.load_adapters()
    s.singles()
    s.merges(_grid(s.profile), list(BASELINE), cache=True)
    for task in s.profile.tasks:
        s.features(task, "train")
    probe = sum(min(64, s.sizes.test[task]) for task in s.profile.tasks)  # adapted-feature CKA, full precision
    s.seconds += probe * len(s.profile.tasks) / t.timed


def _chapter7(s: Session, t: Throughput) -> None:
    tasks = s.profile.tasks
    for k, chosen in ((2, [tasks[0], tasks[3]]), (3, [tasks[0], tasks[3], tasks[5]])):
        s.load_adapters(chosen)
        s.work["merges"] += k + 1  # K separate models and one merged model
        s.timing([1, k, 1, k], (1, 64), 5, 20, t)  # base, switching, merged, separate
    four = [tasks[0], tasks[3], tasks[5], tasks[4]]
    s.load_adapters(four)  # solution 2: K = 4
    s.work["merges"] += 5
    s.timing([1, 4, 1, 4], (64,), 3, 10, t)
    s.timing([3], (64,), 2, 10, t, tallied=False)  # solution 3: merge and unmerge per task


CHAPTERS: dict[str, tuple[str, Callable[[Session, Throughput], None]]] = {
    "00_introduction_and_data.ipynb": ("Introduction and data", _chapter0),
    "01_head_finetuning_baseline.ipynb": ("Head finetuning baseline", _chapter1),
    "02_training_the_adapters.ipynb": ("Training the six adapters", _chapter2),
    "03_pairwise_merges.ipynb": ("Pairwise merges", _chapter3),
    "04_triple_merges.ipynb": ("Triple merges", _chapter4),
    "05_merge_methods.ipynb": ("Merge methods side by side", _chapter5),
    "06_task_similarity.ipynb": ("Does similarity predict interference?", _chapter6),
    "07_inference_cost.ipynb": ("What does merging buy at inference?", _chapter7),
}
"""Each chapter notebook, its title, and the calls it makes (solutions included)."""


def seconds(session: Session, throughput: Throughput) -> float:
    """The time a replayed session takes on a machine."""
    work = session.work
    decode = sum(n / throughput.decode.get(task, min(throughput.decode.values()))
                 for task, n in session.decoded_by_task.items())
    return (throughput.setup + session.downloaded_mb / throughput.download + decode
            + work["trained"] / throughput.train + work["evaluated"] / throughput.evaluate
            + work["timed"] / throughput.timed + work["merges"] * throughput.merge + session.seconds)


def chapter_plan(profile: Profile | str | None = "full", throughput: Throughput = T4) -> pd.DataFrame:
    """Per chapter: the work and the minutes it takes on ``throughput``'s machine, two ways.

    * ``warm``: the chapters run in order with artifacts kept (Google Drive), so each one finds what earlier ones
      trained and downloaded; the first chapter pays the downloads.
    * ``alone``: the chapter opened on a fresh runtime with nothing saved: it downloads and trains what it needs.

    The work columns (``decoded``, ``trained``, ``evaluated``, ``timed``, ``merges``, ``download_mb``) are those of
    the warm run.
    """
    profile = get_profile(profile)
    sizes = sizes_of(profile)
    saved: set = set()
    rows = []
    for notebook, (title, replay) in CHAPTERS.items():
        warm = Session(profile, sizes, saved)
        replay(warm, throughput)
        alone = Session(profile, sizes)
        replay(alone, throughput)
        rows.append({"notebook": notebook, "chapter": title, **{k: warm.work[k] for k in
                                                                 ("decoded", "trained", "evaluated", "timed",
                                                                  "merges")},
                     "download_mb": round(warm.downloaded_mb, 1),
                     "warm_minutes": seconds(warm, throughput) / 60, "alone_minutes": seconds(alone, throughput) / 60})
    return pd.DataFrame(rows)


def format_plan(plan: pd.DataFrame, profile: Profile, throughput: Throughput) -> str:
    """The plan as the CLI prints it."""
    table = plan.drop(columns=["notebook"]).copy()
    table["warm_minutes"] = table["warm_minutes"].map(lambda m: f"{m:5.1f}")
    table["alone_minutes"] = table["alone_minutes"].map(lambda m: f"{m:5.1f}")
    total = plan["warm_minutes"].sum()
    return (f"Time plan of the {profile.label} profile on a {throughput.name} (minutes; estimates from the throughput "
            f"figures in lora_merge_utils.plan.T4)\n\n{table.to_string(index=False)}\n\n"
            f"whole book in order, artifacts kept on Drive: {total:.0f} min ({math.ceil(total / 6) / 10:.1f} h), "
            f"first downloads included; longest chapter {plan['warm_minutes'].max():.0f} min warm, "
            f"{plan['alone_minutes'].max():.0f} min alone on a fresh runtime")
