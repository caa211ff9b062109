"""The book's answer for a practitioner's own adapters: each adapter against its frozen-backbone floor, every merge
tuned on validation and scored on test, with the book's intervals, and a recommendation in plain words.

The same code as the chapters: :func:`~lora_merge_utils.training.train_head` fits the floor (a head on the base
model's features, its L2 penalty chosen on validation, as chapter 1 does);
:func:`~lora_merge_utils.evaluation.evaluate_merges` merges and scores; the hyperparameters of each family are chosen
on the validation split (the highest mean accuracy kept, as :func:`~lora_merge_utils.tuning.select_on_validation`
chooses), then scored once on the test split; :mod:`~lora_merge_utils.stats` gives the intervals.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..backbone import state_dict_fingerprint
from ..evaluation import MergeInputs, ScoreStore, code_version, evaluate_merges
from ..methods import MergeSpec
from ..profiles import TrainSettings
from ..scoring import adapter_correctness, head_correctness
from ..stats import LEVEL, Bootstrap, difference, estimate, holm_p_values, pack
from ..training import extract_features, train_head
from ..tuning import COMPACT_DENSITIES, COMPACT_LAMBDAS, grid
from .data import OwnTask, normalised
from .models import OwnAdapter, OwnBase, load_onto

FAMILIES = {
    "task arithmetic": "data-free",
    "magnitude pruning": "data-free",
    "AdaMerging, short schedule": "data-light",
}
"""The families the report tunes and compares, task arithmetic (the sum with one weight λ), and the best data-free and
the best data-light family of chapter 5, as the book's tiny world chose them on validation: magnitude pruning (each
update's smallest entries dropped, then the scaled sum) and AdaMerging on its short schedule (per-layer coefficients
learned from unlabeled training images). Chapter 5 finds neither resolved against plain averaging there, which is
why the report, which recommends the family that keeps the most on validation, says when that family's difference
from task arithmetic is not resolved on the test split, and that task arithmetic then does as well."""
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
"""What an adapter's name may be (it names a PEFT adapter and a file)."""
MAX_COMBINATIONS = 20
"""Merges per size scored at most; beyond it, a seeded sample of that many (said in the report)."""


def candidates(family: str) -> list[MergeSpec]:
    """The family's settings tried on validation: the book's compact grid (:data:`~lora_merge_utils.tuning.GRIDS`)."""
    if family == "task arithmetic":
        return grid("task_arithmetic", scale=COMPACT_LAMBDAS)
    if family == "magnitude pruning":
        return grid("magnitude_prune", scale=COMPACT_LAMBDAS, density=COMPACT_DENSITIES)
    if family == "AdaMerging, short schedule":  # one setting: its coefficients are what it learns (as in chapter 5)
        return [MergeSpec("adamerging_short", "adamerging_short", {})]
    raise ValueError(f"Unknown family {family!r}; use one of {', '.join(FAMILIES)}.")


def check_names(adapters: list[str], data: list[str]) -> None:
    """The names alone, checked before anything is read: at least two adapters, each a usable name, and every
    adapter with its task's data under the same name (a name given twice is the command line's to refuse)."""
    if len(adapters) < 2:
        raise ValueError(f"A merge needs at least two adapters; got {len(adapters)}. Give --adapter NAME=DIR twice.")
    for name in adapters:
        if not NAME.fullmatch(name):
            raise ValueError(
                f"Adapter name {name!r}: use a letter, then letters, digits, '-' or '_' (at most 64 characters)."
            )
        if name in "lora_":  # PEFT reads a name inside its own prefix as part of it, and re-initialises the weights
            raise ValueError(f"Adapter name {name!r} is part of PEFT's prefix 'lora_': give it a longer name.")
        if hasattr(nn.ModuleDict(), name):  # PEFT keeps adapters in ModuleDicts, whose own attributes it would shadow
            raise ValueError(f"Adapter name {name!r} is a name PyTorch's modules use themselves: give another.")
    without_data = sorted(set(adapters) - set(data))
    without_adapter = sorted(set(data) - set(adapters))
    if without_data or without_adapter:
        said = [f"no data for {', '.join(without_data)}" if without_data else ""]
        said.append(f"no adapter for {', '.join(without_adapter)}" if without_adapter else "")
        raise ValueError(
            "Every adapter needs its task's data under the same name (--data NAME=DIR), and every data an adapter: "
            + "; ".join(s for s in said if s)
            + "."
        )


def check_inputs(base: OwnBase, adapters: dict[str, OwnAdapter], tasks: dict[str, OwnTask]) -> None:
    """Every problem of the inputs that would stop the report later, found now, in one ``ValueError`` per problem."""
    check_names(list(adapters), list(tasks))
    for name, adapter in adapters.items():
        if adapter.head.in_features != base.num_features:
            raise ValueError(
                f"Adapter {name!r}'s head reads {adapter.head.in_features} features, but {base.description} gives "
                f"{base.num_features}: the adapter was trained on another base model."
            )
        classes = tasks[name].num_classes
        if adapter.head.out_features != classes:
            raise ValueError(
                f"Adapter {name!r}'s head has {adapter.head.out_features} classes, but its data has {classes} "
                f"({', '.join(tasks[name].class_names[:6])}{' ...' if classes > 6 else ''}): give the data it was "
                "trained on, or its own head with --head."
            )
    modules = {name for name, _ in base.backbone.named_modules()}
    for name, adapter in adapters.items():
        foreign = sorted(layer.removeprefix("base_model.model.") for layer in adapter.layers)
        foreign = [layer for layer in foreign if layer not in modules]
        if foreign:
            raise ValueError(
                f"Adapter {name!r} adapts layers {base.description} does not have ({', '.join(foreign[:3])}"
                f"{' ...' if len(foreign) > 3 else ''}): it does not fit this base; it was trained on another."
            )
    layers = {name: adapter.layers for name, adapter in adapters.items()}
    first = next(iter(layers))
    for name, own in layers.items():
        if own != layers[first]:
            only = sorted(own ^ layers[first])[:3]
            raise ValueError(
                f"Adapters {first!r} and {name!r} adapt different layers (e.g. {', '.join(only)}): a merge adds "
                "updates layer by layer, so every adapter must target the same layers of the same base."
            )


def combinations(names: list[str], size: int, most: int = MAX_COMBINATIONS, seed: int = 0) -> tuple[list, bool]:
    """Every merge of ``size`` of ``names``, or a seeded sample of ``most`` of them; and whether it is a sample."""
    every = list(itertools.combinations(names, size))
    if len(every) <= most:
        return every, False
    return sorted(random.Random(seed).sample(every, most)), True


@dataclass
class Report:
    """Everything the report says, as numbers: the files (:mod:`~lora_merge_utils.own_adapters.report`) are views
    of it."""

    singles: pd.DataFrame
    """Per task, the adapter's test accuracy, the floor's, and their packed correctness."""
    merges: pd.DataFrame
    """One row per merge x family x member task, on the test split, each family's setting chosen on validation."""
    chosen: dict[int, dict[str, MergeSpec]]
    """The setting validation chose, per merge size and family."""
    summary: pd.DataFrame
    """Accuracy kept and share of the gain kept with their intervals, and the difference from task arithmetic, per
    size and family."""
    sampled: dict[int, bool] = field(default_factory=dict)
    """Whether each size's merges are a sample (:data:`MAX_COMBINATIONS`)."""
    recommendation: list[str] = field(default_factory=list)
    """The report's answer in plain sentences."""
    unlabeled: dict | None = field(default=None, repr=False)
    """Per task, the unlabeled training images AdaMerging learns from (to merge again for the saved merge)."""
    validation: dict[int, dict[str, float]] = field(default_factory=dict)
    """The mean accuracy kept on the validation split by each family's chosen setting, per size (which family the
    report recommends is chosen on these, never on the test split)."""
    device: str = "cpu"
    amp: bool = False
    penalties: dict[str, float] = field(default_factory=dict)
    """Per task, the L2 penalty validation chose for its floor's head (shown in ``summary.json``)."""
    pairs: pd.DataFrame | None = None
    """Chapter 6's measures for each pair, the cosine of the two adapters' updates, the Fréchet distance between their
    tasks' images as the base model sees them, and the accuracy each task keeps in their task-arithmetic merge."""
    similarity: dict = field(default_factory=dict)
    """Whether each measure predicts how well a pair merges, by Spearman's rho with a permutation p-value over task
    relabellings (4 tasks or more; fewer leave too few pairs to tell)."""


def _features(base: OwnBase, dataset, device: torch.device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return extract_features(base.backbone.to(device), dataset, batch_size, device, amp=device.type == "cuda")


def single_rows(
    base: OwnBase,
    model,
    adapters: dict[str, OwnAdapter],
    tasks: dict[str, OwnTask],
    split: str,
    floors: dict,
    device: torch.device,
    batch_size: int,
) -> pd.DataFrame:
    """Per task, on ``split``: the adapter's correctness with its own head, and the floor's (``floors[task]``, a head
    on the frozen base's features); in the columns :func:`~lora_merge_utils.evaluation.evaluate_merges` reads."""
    rows = []
    for name, task in tasks.items():
        dataset = task.dataset(split, base.mean, base.std)
        own = adapter_correctness(model, adapters[name].head, name, dataset, device=device, batch_size=batch_size)
        x, y = _features(base, dataset, device, batch_size)
        floor = head_correctness(floors[name], x, y)
        rows.append(
            {
                "task": name,
                "seed": 0,
                "num_classes": task.num_classes,
                "num_train": len(task.labels["train"]),
                "num_images": len(own),
                "head_accuracy": round(float(floor.mean()), 6),
                "adapter_accuracy": round(float(own.mean()), 6),
                "head_correct": pack(floor),
                "adapter_correct": pack(own),
            }
        )
    table = pd.DataFrame(rows)
    table["adapter_gain"] = (table["adapter_accuracy"] - table["head_accuracy"]).round(6)
    return table


def fit_floors(
    base: OwnBase, tasks: dict[str, OwnTask], device: torch.device, batch_size: int
) -> tuple[dict, dict[str, float], dict[str, torch.Tensor]]:
    """Per task, the frozen-backbone floor: a logistic-regression head on the base's features of the training split,
    its L2 penalty chosen on validation (chapter 1's baseline); the penalty chosen; and the training features."""
    heads, penalties, features = {}, {}, {}
    settings = TrainSettings()
    for name, task in tasks.items():
        train = _features(base, task.dataset("train", base.mean, base.std), device, batch_size)
        val = _features(base, task.dataset("val", base.mean, base.std), device, batch_size)
        heads[name], result = train_head(*train, task.num_classes, settings, val=val)
        penalties[name] = float(result.l2)
        features[name] = train[0]
    return heads, penalties, features


def pair_measures(model, names: list[str], features: dict[str, torch.Tensor], merges: pd.DataFrame) -> pd.DataFrame:
    """Chapter 6's measures for every pair: the cosine of the adapters' updates (all layers flattened together), the
    Fréchet distance between the tasks' training images in the base model's features (small: similar data), and the
    accuracy kept in the pair's task-arithmetic merge (each member's, and their mean)."""
    from ..merging import delta_weights
    from ..similarity import weight_cosine

    deltas = {name: delta_weights(model, name) for name in names}
    pairs = merges[(merges["size"] == 2) & (merges["family"] == "task arithmetic")]
    rows = []
    for a, b in itertools.combinations(names, 2):
        members = pairs[pairs["members"].isin([f"{a}+{b}", f"{b}+{a}"])].set_index("task")["normalized_accuracy"]
        rows.append(
            {
                "pair": f"{a}+{b}",
                "update cosine": weight_cosine(deltas[a], deltas[b])["overall"],
                "Fréchet distance": _frechet(features[a], features[b]),
                f"{a} keeps": float(members.get(a, np.nan)),
                f"{b} keeps": float(members.get(b, np.nan)),
                "mean kept": float(members.mean()) if len(members) else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    kept_columns = [c for c in table.columns if c.endswith(" keeps")]
    table["kept by"] = [  # one column per task would be mostly empty: each pair's two tasks, as text
        ", ".join(f"{c.removesuffix(' keeps')} {row[c]:.3f}" for c in kept_columns if pd.notna(row[c]))
        for _, row in table.iterrows()
    ]
    return table[["pair", "update cosine", "Fréchet distance", "kept by", "mean kept"]]


def _frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """:func:`~lora_merge_utils.similarity.frechet_distance`, or NaN where too few images give no covariance."""
    from ..similarity import frechet_distance

    if min(len(a), len(b)) < 2:
        return float("nan")
    try:
        return frechet_distance(a, b)
    except (ValueError, np.linalg.LinAlgError):
        return float("nan")


MOST_TASKS_TESTED = 7
"""The similarity test relabels the tasks every way (7! = 5,040 ways); beyond this many tasks it is left out."""


def similarity_tests(pairs: pd.DataFrame, names: list[str]) -> dict[str, dict]:
    """Whether each measure predicts the pairs' mean accuracy kept (chapter 6's test: Spearman's rho, its p-value by
    relabelling the tasks, since pairs that share a task are not independent), on the pairs scored; nothing below 4
    tasks or above :data:`MOST_TASKS_TESTED`."""
    from ..similarity import permutation_test

    if not 4 <= len(names) <= MOST_TASKS_TESTED:
        return {}
    kept = pairs.set_index("pair")["mean kept"].dropna()
    if len(kept) < 4 or pairs[["update cosine", "Fréchet distance"]].isna().any().any():
        return {}
    found = {}
    for measure, sign in (("update cosine", 1.0), ("Fréchet distance", -1.0)):
        similarity = sign * pairs.set_index("pair")[measure]  # larger = more similar, for both
        test = permutation_test(similarity, kept, names)
        found[measure] = {
            "rho": float(test["rho"]),
            "p": min(1.0, 2 * float(test["p"])),  # Bonferroni: two measures read at once
            "permutations": int(test["permutations"]),
        }
    return found


UNLABELED = 256
"""How many unlabeled training images per task AdaMerging learns from (a seeded sample; its short schedule reads
160)."""


def unlabeled_images(base: OwnBase, task: OwnTask, most: int = UNLABELED) -> torch.Tensor:
    """A seeded sample of ``most`` of the task's training images, normalised for ``base``, without their labels."""
    images = task.images["train"]
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:most].sort().values
    return normalised(images[keep], base.mean, base.std)


def fingerprint(base: OwnBase, adapters: dict[str, OwnAdapter], tasks: dict[str, OwnTask]) -> str:
    """A short hash of everything a merge's score depends on: the base's weights and preprocessing, every adapter's
    LoRA weights and head, every task's images and labels, and the code that merges and scores. Saved scores are
    reused only under the same hash."""
    digest = hashlib.sha256(state_dict_fingerprint(base.backbone).encode())
    digest.update(json.dumps([base.image_size, list(base.mean), list(base.std), code_version()]).encode())
    for name in sorted(adapters):
        config = adapters[name].config.to_dict()
        digest.update(
            json.dumps(config, sort_keys=True, default=lambda o: sorted(o) if isinstance(o, set) else str(o)).encode()
        )
        tensors = {**adapters[name].lora, **{f"head.{k}": v for k, v in adapters[name].head.state_dict().items()}}
        for key in sorted(tensors):
            digest.update(f"{name}/{key} {tensors[key].dtype}".encode())
            digest.update(tensors[key].detach().cpu().float().contiguous().numpy().tobytes())
    for name in sorted(tasks):
        for split in sorted(tasks[name].images):
            digest.update(f"{name}/{split}".encode())
            digest.update(tasks[name].images[split].numpy().tobytes())
            digest.update(tasks[name].labels[split].numpy().tobytes())
    return digest.hexdigest()[:20]


def analyse(
    base: OwnBase,
    adapters: dict[str, OwnAdapter],
    tasks: dict[str, OwnTask],
    device: torch.device | None = None,
    batch_size: int = 128,
    families: tuple[str, ...] = tuple(FAMILIES),
    most: int = MAX_COMBINATIONS,
    progress: bool = True,
    scores: Path | str | None = None,
    model=None,
) -> Report:
    """Score the adapters, their floors and every merge (sizes 2 to the number of adapters), each family tuned on
    validation; see the module docstring. With ``scores`` (a folder), every merge's score is saved there as it is
    made and read back by a later run on the same inputs
    (:func:`~lora_merge_utils.own_adapters.analysis.fingerprint`), so a run stopped halfway resumes.
    ``model``: the adapters already loaded onto the base (:func:`~lora_merge_utils.own_adapters.models.load_onto`)."""
    check_inputs(base, adapters, tasks)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = list(adapters)
    model = (model if model is not None else load_onto(base, list(adapters.values()))).to(device)
    heads = {name: adapter.head.to(device) for name, adapter in adapters.items()}
    floors, penalties, features = fit_floors(base, tasks, device, batch_size)
    singles = {
        split: single_rows(base, model, adapters, tasks, split, floors, device, batch_size) for split in ("val", "test")
    }
    sets = {split: {n: t.dataset(split, base.mean, base.std) for n, t in tasks.items()} for split in ("val", "test")}
    inputs = MergeInputs(unlabeled={n: unlabeled_images(base, t) for n, t in tasks.items()})
    amp = device.type == "cuda"
    common = dict(device=device, batch_size=batch_size, amp=amp, progress=progress, inputs=inputs)
    stores = {split: None for split in ("val", "test")}
    if scores is not None:
        context = fingerprint(base, adapters, tasks)
        stores = {split: ScoreStore(Path(scores), f"{split}:{context}") for split in stores}
    chosen, sampled, tested, validation = {}, {}, [], {}
    for size in range(2, len(names) + 1):
        combos, sampled[size] = combinations(names, size, most)
        chosen[size] = {}
        for family in families:
            options = candidates(family)
            val_rows = evaluate_merges(
                model, heads, sets["val"], singles["val"], options, combos=combos, scores=stores["val"], **common
            )
            means = val_rows.groupby("method", sort=False)["normalized_accuracy"].mean()
            best = max(options, key=lambda spec: (means[spec.label], -options.index(spec)))
            chosen[size][family] = best
            validation.setdefault(size, {})[family] = float(means[best.label])
            rows = evaluate_merges(
                model, heads, sets["test"], singles["test"], [best], combos=combos, scores=stores["test"], **common
            )
            tested.append(rows.assign(family=family))
    merges = pd.concat(tested, ignore_index=True)
    summary = summarise(merges, singles["test"])
    pairs = pair_measures(model, names, features, merges)
    report = Report(
        singles["test"],
        merges,
        chosen,
        summary,
        sampled,
        unlabeled=inputs.unlabeled,
        penalties=penalties,
        pairs=pairs,
        similarity=similarity_tests(pairs, names),
        validation=validation,
        device=str(device),
        amp=amp,
    )
    report.recommendation = recommend(report)
    return report


def summarise(merges: pd.DataFrame, singles: pd.DataFrame) -> pd.DataFrame:
    """Per merge size and family: the mean accuracy kept (merged over the adapter's own accuracy) and share of the
    gain kept over the floor, each with its 95% interval; and the difference of accuracy kept from task arithmetic
    on the same merges and images, with its interval."""
    boot = Bootstrap(dict(zip(singles["task"], singles["num_images"].astype(int))), seeds=[0], replicates=1000)
    records = []
    for (size, family), rows in merges.groupby(["size", "family"], sort=False):
        kept = estimate(rows, "normalized", boot)
        gain = _gain_kept(rows, boot)
        record = {
            "size": int(size),
            "family": family,
            "setting": rows["method"].iloc[0],
            "merges": int(rows["members"].nunique()),
            "accuracy kept": kept.value,
            "accuracy kept low": kept.low,
            "accuracy kept high": kept.high,
            "gain kept": gain.value,
            "gain kept low": gain.low,
            "gain kept high": gain.high,
        }
        reference = merges[(merges["size"] == size) & (merges["family"] == "task arithmetic")]
        if family != "task arithmetic" and len(reference):
            both = rows.merge(reference[["members", "task"]], on=["members", "task"])
            same = reference.merge(rows[["members", "task"]], on=["members", "task"])
            e = difference(
                both.sort_values(["members", "task"]), same.sort_values(["members", "task"]), "normalized", boot
            )
            record |= {"vs task arithmetic": e.value, "vs low": e.low, "vs high": e.high, "p": e.p_value}
        records.append(record)
    table = pd.DataFrame(records)
    if "p" in table:  # every difference from task arithmetic is read at once: Holm-corrected as one family
        tested = table["p"].notna()
        stands = holm_p_values(dict(zip(table.index[tested], table.loc[tested, "p"])))
        table["resolved"] = [bool(stands.get(i, False)) for i in table.index]
    return table


MEANINGFUL_GAIN = 0.02
"""The share of the gain kept averages, over tasks, a ratio whose denominator is the adapter's gain above its floor. A
task whose adapter adds less than this (two points of accuracy) makes its ratio noise that swamps the average, so the
share is then left out (NaN), and the report names the tasks."""


def small_gains(rows: pd.DataFrame) -> list[str]:
    """The tasks whose adapters add less than :data:`MEANINGFUL_GAIN` over their floor, in order."""
    gains = (rows["adapter_accuracy"] - rows["head_accuracy"]).groupby(rows["task"], sort=False).mean()
    return [str(task) for task, gain in gains.items() if gain < MEANINGFUL_GAIN]


def _gain_kept(rows: pd.DataFrame, boot: Bootstrap):
    """The share of the gain kept with its interval, or NaNs where a task's adapter adds less than
    :data:`MEANINGFUL_GAIN` over its floor (:func:`small_gains`: its ratio's denominator would be noise)."""
    from ..stats import Estimate

    if small_gains(rows):
        return Estimate(float("nan"), float("nan"), float("nan"))
    with np.errstate(divide="ignore", invalid="ignore"):  # a jackknife subset of tasks whose adapters add nothing
        return estimate(rows, "gain_kept", boot)


def pair_matrix(report: Report, family: str = "task arithmetic") -> pd.DataFrame:
    """Accuracy kept by each task (rows) when merged with each other (columns), for ``family``'s pairs."""
    pairs = report.merges[(report.merges["size"] == 2) & (report.merges["family"] == family)]
    names = list(report.singles["task"])
    table = pd.DataFrame(np.nan, index=names, columns=names)
    for row in pairs.itertuples(index=False):
        other = [m for m in row.members.split("+") if m != row.task][0]
        table.loc[row.task, other] = row.normalized_accuracy
    return table


def best_family(report: Report, size: int) -> pd.Series:
    """The family the report recommends at ``size``, chosen on the validation split: the highest mean accuracy kept
    there by its chosen setting (task arithmetic where they tie: the simplest wins a tie); its row of the test
    summary, named by the family."""
    scores = report.validation[size]
    family = max(scores, key=lambda f: (scores[f], f == "task arithmetic"))
    row = report.summary[(report.summary["size"] == size) & (report.summary["family"] == family)].iloc[0]
    return row.rename(family)


def recommend(report: Report, interferes: float = 0.9) -> list[str]:
    """The answer in plain sentences: which merge, by which family and setting, what to expect, which pairs
    interfere (a task keeps less than ``interferes`` of its adapter's accuracy), and when to keep adapters apart."""
    sizes = sorted(report.chosen)
    largest = sizes[-1]
    lines = []
    best = best_family(report, largest)
    spec = report.chosen[largest][best.name]
    if np.isfinite(best["gain kept"]):
        gain = (
            f", and {best['gain kept']:.0%} of what its adapter adds over the frozen backbone "
            f"[{best['gain kept low']:.0%}, {best['gain kept high']:.0%}]."
        )
    else:
        small = small_gains(report.merges[report.merges["size"] == largest])
        gain = (
            f" (the share of the gain over the frozen floor that it keeps is left out: {_listed(small)} "
            f"{'adds' if len(small) == 1 else 'add'} less than {MEANINGFUL_GAIN:.0%} of accuracy over "
            f"{'its floor' if len(small) == 1 else 'their floors'}, which makes that share noise)."
        )
    lines.append(
        f"Merging all {largest} adapters: use {best.name} ({spec.label}; the family and its setting chosen on the "
        f"validation split); on the test split each task keeps {best['accuracy kept']:.1%} of its adapter's accuracy "
        f"on average [{best['accuracy kept low']:.1%}, {best['accuracy kept high']:.1%}]{gain}"
    )
    compared_to_arithmetic = "task arithmetic" in report.chosen[largest] and pd.notna(best.get("vs task arithmetic"))
    if best.name != "task arithmetic" and compared_to_arithmetic and not bool(best.get("resolved", False)):
        arithmetic = report.chosen[largest]["task arithmetic"]
        lines.append(
            "Its difference from task arithmetic is not resolved on the test split "
            f"({best['vs task arithmetic']:+.1%} of accuracy kept [{best['vs low']:+.1%}, {best['vs high']:+.1%}]): "
            f"task arithmetic ({arithmetic.label}), "
            "the simplest merge, does as well within the intervals."
        )
    useless = report.singles[report.singles["adapter_accuracy"] <= report.singles["head_accuracy"]]["task"].tolist()
    if useless:
        lines.append(
            f"{', '.join(useless)}: the adapter does not beat its frozen floor on the test split (a head on the base "
            "model's features, fitted on the same training images; point estimates): for such a task a head alone "
            "may do as well, merged or not."
        )
    matrix = pair_matrix(report)
    bad = [
        (task, other, matrix.loc[task, other])
        for task in matrix.index
        for other in matrix.columns
        if task != other and matrix.loc[task, other] < interferes
    ]
    scored = int(matrix.notna().to_numpy().sum())
    if bad:
        shown = ", ".join(f"{t} with {o} ({v:.0%})" for t, o, v in sorted(bad, key=lambda b: b[2])[:5])
        lines.append(
            f"Pairs that interfere (a task keeps less than {interferes:.0%} of its accuracy; point estimates on the "
            f"test split): {shown}."
        )
    else:
        lines.append(
            f"No pair interferes: in each of the {scored // 2} pairs scored, every task keeps at least "
            f"{interferes:.0%} of its accuracy (point estimates on the test split)."
        )
    below = report.merges[
        (report.merges["size"] == largest)
        & (report.merges["family"] == best.name)
        & (report.merges["accuracy"] <= report.merges["head_accuracy"])
        & (report.merges["head_accuracy"] < report.merges["adapter_accuracy"])
    ]
    lines += floor_sentences(sorted(below["task"].unique()), len(report.singles), largest)
    compared = int(report.summary.get("p", pd.Series(dtype=float)).notna().sum())
    for size in sizes:
        sample = " (a sample)" if report.sampled.get(size) else ""
        for family, chosen in report.chosen[size].items():
            row = report.summary[(report.summary["size"] == size) & (report.summary["family"] == family)].iloc[0]
            if family != "task arithmetic" and bool(row.get("resolved", False)):
                side = "ahead of" if row["vs task arithmetic"] > 0 else "behind"
                lines.append(
                    f"{size} adapters{sample}: {family} ({chosen.label}) is {side} task arithmetic by "
                    f"{abs(row['vs task arithmetic']):.1%} of accuracy kept [{row['vs low']:+.1%}, "
                    f"{row['vs high']:+.1%}], resolved with Holm's correction over the {compared} comparisons."
                )
    lines.append(similarity_sentence(report))
    lines.append(
        f"How sure: {LEVEL:.0%} intervals. The merge of all {largest} is one merge, so its interval covers the test "
        "images only"
        + (
            "; where a size has several merges, the intervals leave each task out in turn too"
            if len(sizes) > 1 and largest > 2
            else ""
        )
        + ". One training seed per adapter: another training run of the same adapters may differ more."
    )
    return lines


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def floor_sentences(below: list[str], tasks: int, largest: int) -> list[str]:
    """What the report says of the tasks that fall to their frozen floor or below in the merge of all ``largest``
    adapters (among those whose adapter beats its floor)."""
    if not below:
        return []
    if len(below) == tasks:
        return [
            f"But in the merge of all {largest} every task falls to its frozen floor or below on the test split (point "
            "estimates): "
            "a head on the frozen base model does as well as the merge, so merging all of them does not pay here. "
            "Keep the adapters separate, or train one joint adapter on all the tasks' data."
        ]
    return [
        f"In the merge of all {largest}, {_listed(below)} {'falls' if len(below) == 1 else 'fall'} to "
        f"{'its' if len(below) == 1 else 'their'} frozen floor or below on the test split (a point estimate), losing "
        f"what {'its adapter adds' if len(below) == 1 else 'their adapters add'}: for such a task keep the separate "
        "adapter (or train one joint adapter on all the tasks' data)."
    ]


def similarity_sentence(report: Report) -> str:
    """Whether similar adapters (or data) merge better here, in words (chapter 6's question)."""
    tasks = len(report.singles)
    if not report.similarity:
        why = (
            "too few pairs to tell"
            if tasks < 4
            else "too many ways to relabel them for the test"
            if tasks > MOST_TASKS_TESTED
            else "too few pairs or images for the test"
        )
        return (
            f"With {tasks} tasks there are {why} whether more similar adapters or data merge better or worse; the "
            "pairs' cosines and data distances are in the table."
        )
    said = []
    for measure, test in report.similarity.items():
        what = "the cosine of their updates" if measure == "update cosine" else "how alike their data look"
        if test["p"] >= 1 - LEVEL:
            said.append(f"{what} does not reliably predict it (rho {test['rho']:+.2f}, p = {test['p']:.2f})")
        else:
            way = "better" if test["rho"] > 0 else "worse"
            said.append(f"pairs more alike in {what} merge {way} (rho {test['rho']:+.2f}, p = {test['p']:.2f})")
    return (
        "Which pairs merge well: "
        + "; ".join(said)
        + f" (p by relabelling the {tasks} tasks, Bonferroni-corrected for the two measures)."
    )
