"""The report's files: ``summary.json`` (every number), ``report.md`` and ``report.html`` (the answer, its tables and
figures), and the recommended merge, saved so that plain PEFT (or plain timm / transformers) loads it.

Everything is written atomically under ``--out``, and nothing there that the report did not write is touched: a
second run reads back every merge the first one scored (``scores/``; a run stopped halfway resumes), replaces the
report's own files and leaves the rest.
"""

from __future__ import annotations

import copy
import html
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from ..artifacts import save_head, write_json
from ..merging import merge_adapters
from ..safe_io import atomic_dir, write_atomic
from .analysis import FAMILIES, Report, analyse, best_family, check_inputs, check_names, pair_matrix
from .data import read_tasks
from .models import OwnAdapter, OwnBase, load_base, load_onto, read_adapter

MERGED = "merged"
"""The folder, under ``--out``, of the recommended merge."""
MERGE_NAME = "__merged__"
"""The merge's adapter name while it is built: no adapter's name can be it (names start with a letter)."""
SCORES = "scores"
"""The folder, under ``--out``, of every merge's saved score: a second run on the same inputs reads them back."""


def check_out(out: str | Path) -> Path:
    """``out`` as a folder the report may write into (made if missing); refused when empty or a file."""
    if str(out).strip() == "":
        raise ValueError("--out is empty: give the folder to write the report into.")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file: give a folder (it is made if missing).")
    return folder


def write_report(
    base: str | Path,
    adapters: dict[str, str | Path],
    data: dict[str, str | Path],
    out: str | Path,
    heads: dict[str, str | Path] | None = None,
    weights: str | Path | None = None,
    base_args: dict | None = None,
    device: torch.device | None = None,
    max_images: int | None = None,
    progress: bool = True,
) -> Report:
    """Read everything, check it, analyse it (:func:`~lora_merge_utils.own_adapters.analysis.analyse`) and write the
    report under ``out``; return the :class:`~lora_merge_utils.own_adapters.analysis.Report`.

    Args:
        base: A timm model name (with ``weights``), or a local timm or transformers model folder.
        adapters: Task name -> PEFT adapter folder.
        data: Task name -> image folder or ``save_to_disk`` folder with ``train``, ``val`` and ``test`` splits.
        out: The folder to write into.
        heads: Task name -> head file, for adapters whose head is not in their ``modules_to_save``.
        weights, base_args: For a timm model name: its weights file and creation arguments.
        max_images: At most this many images per split and task (class-balanced), for a quick first look.
    """
    folder = check_out(out)
    check_names(list(adapters), list(data))
    heads = heads or {}
    unknown = sorted(set(heads) - set(adapters))
    if unknown:
        raise ValueError(f"--head names {', '.join(unknown)}, which no --adapter names.")
    own_base = load_base(base, weights, base_args)
    own = {name: read_adapter(name, directory, heads.get(name)) for name, directory in adapters.items()}
    tasks = read_tasks(data, own_base.image_size, max_images=max_images, progress=progress)
    check_inputs(own_base, own, tasks)  # before the folder is made: refused input leaves nothing behind
    model = load_onto(own_base, list(own.values()))  # an adapter that does not fit the base is refused here too
    folder.mkdir(parents=True, exist_ok=True)
    report = analyse(own_base, own, tasks, device=device, progress=progress, scores=folder / SCORES, model=model)
    saved = save_merge(report, own_base, own, folder / MERGED)
    figures = draw_figures(report, folder / "figures")
    write_json(folder / "summary.json", summary_json(report, own_base, saved))
    markdown = report_markdown(report, own_base, saved, figures)
    write_atomic(folder / "report.md", lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
    page = report_html(report, own_base, saved, figures)
    write_atomic(folder / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return report


_HOW_TO_LOAD = {
    ("peft", "timm"): "PeftModel.from_pretrained(timm.create_model(NAME, num_classes=0, ...) with the base weights, "
    "'merged'); then each task's head: nn.Linear loaded from heads/<task>.safetensors",
    ("peft", "transformers"): "PeftModel.from_pretrained(AutoModelForImageClassification.from_pretrained(BASE), "
    "'merged'); features: model.vit(pixel_values=x).last_hidden_state[:, 0]; then each task's head from "
    "heads/<task>.safetensors",
    ("backbone", "timm"): "timm.create_model(NAME, num_classes=0, ...).load_state_dict(load_file("
    "'merged/backbone.safetensors')); then each task's head from heads/<task>.safetensors",
    ("backbone", "transformers"): "AutoModelForImageClassification.from_pretrained(BASE).load_state_dict(load_file("
    "'merged/backbone.safetensors'), strict=False) (its keys start with 'vit.'); then each task's head from "
    "heads/<task>.safetensors on the first token's features",
}


def save_merge(report: Report, base: OwnBase, adapters: dict[str, OwnAdapter], folder: Path) -> dict:
    """Save the recommended merge of every adapter: its backbone and each task's head (``heads/<task>.safetensors``).

    Task arithmetic's merge is itself a LoRA adapter (the adapters' factors side by side, each B scaled by its
    weight: PEFT's ``cat`` combination, exact), saved as PEFT saves one, so that ``PeftModel.from_pretrained(base,
    folder)`` loads it; a method that changes the update (magnitude pruning, AdaMerging's per-layer coefficients)
    gives a dense update, saved as the merged backbone's weights (``backbone.safetensors``) that the base model loads
    with ``load_state_dict``. Returns what was saved."""
    size = max(report.chosen)
    family = best_family(report, size).name
    spec = report.chosen[size][family]
    names = list(adapters)
    model = load_onto(base, list(adapters.values())).to(report.device)
    with atomic_dir(folder) as building:  # a merge of another kind from an earlier run is replaced, not mixed in
        if spec.method == "task_arithmetic":
            scale = spec.params.get("scale")
            weights = [scale] * len(names) if scale is not None else [1.0 / len(names)] * len(names)
            model.add_weighted_adapter(names, weights, adapter_name=MERGE_NAME, combination_type="cat")
            state = {k: v.cpu() for k, v in get_peft_model_state_dict(model, adapter_name=MERGE_NAME).items()}
            config = copy.deepcopy(model.peft_config[MERGE_NAME])
            config.use_rslora = False  # the side-by-side factors carry each adapter's own scaling already
            fresh = get_peft_model(copy.deepcopy(base.backbone).cpu(), config)  # one adapter, "default": saved flat
            set_peft_model_state_dict(fresh, state)
            fresh.save_pretrained(str(building))
            kind = "peft"
        else:
            merged = merge_adapters(
                model, names, method=spec.method, **spec.params, **_data_for(spec, report, adapters)
            )
            state = {k: v.detach().cpu().contiguous() for k, v in merged.state_dict().items()}
            from safetensors.torch import save_file

            save_file(state, str(building / "backbone.safetensors"))
            kind = "backbone"
        for name, adapter in adapters.items():
            save_head(adapter.head.cpu(), building / "heads" / f"{name}.safetensors")
        saved = {
            "family": family,
            "setting": spec.label,
            "members": names,
            "format": kind,
            "folder": folder.name,
            "load": _HOW_TO_LOAD[kind, base.family],
        }
        write_json(building / "merge.json", saved)
    return saved


def _data_for(spec, report: Report, adapters: dict[str, OwnAdapter]) -> dict:
    """What a data-light method needs to merge again as the analysis did: unlabeled training images and the heads."""
    from ..methods import get_merge_method

    if get_merge_method(spec.method).data == "none":
        return {}
    return {
        "unlabeled": {name: images.to(report.device) for name, images in report.unlabeled.items()},
        "heads": {n: a.head.to(report.device) for n, a in adapters.items()},
        "amp": report.amp,  # as the analysis merged, so the saved merge is the merge it scored
    }


def summary_json(report: Report, base: OwnBase, saved: dict) -> dict:
    """Every number of the report, as plain JSON."""
    singles = report.singles.drop(columns=["head_correct", "adapter_correct"])
    merges = report.merges.drop(columns=["correct", "adapter_correct", "head_correct"])
    return {
        "base": base.description,
        "tasks": singles.rename(columns={"head_accuracy": "floor_accuracy"}).to_dict("records"),
        "chosen": {str(size): {f: asdict(spec) for f, spec in by.items()} for size, by in report.chosen.items()},
        "summary": json.loads(report.summary.to_json(orient="records")),
        "merges": json.loads(merges.to_json(orient="records")),
        "sampled": {str(k): v for k, v in report.sampled.items()},
        "validation": {str(k): v for k, v in report.validation.items()},
        "pairs": json.loads(report.pairs.to_json(orient="records")) if report.pairs is not None else [],
        "similarity": report.similarity,
        "recommendation": report.recommendation,
        "merge_saved": saved,
    }


def draw_figures(report: Report, folder: Path) -> dict[str, str]:
    """The pair matrix, accuracy kept along the number of adapters merged, each task's accuracy in the recommended
    merge beside its adapter's and its floor's, and gain kept by family (where it is not left out), as PNG files;
    their paths relative to the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    folder.mkdir(parents=True, exist_ok=True)
    drawn = {}
    matrix = pair_matrix(report)
    figure, ax = plt.subplots(figsize=(1.2 * len(matrix) + 2.5, 1.0 * len(matrix) + 1.5))
    sns.heatmap(matrix, annot=True, fmt=".2f", cmap="viridis", mask=matrix.isna(), square=True, ax=ax)
    ax.set(xlabel="merged with the adapter of", ylabel="task scored", title="Pairs, task arithmetic: accuracy kept")
    drawn["pairs"] = _save(figure, folder / "pairs.png")
    figure, ax = plt.subplots(figsize=(6, 4))
    for family, rows in report.summary.groupby("family", sort=False):
        ax.errorbar(
            rows["size"],
            rows["accuracy kept"],
            yerr=_error_bars(rows, "accuracy kept"),
            marker="o",
            capsize=3,
            label=family,
        )
    ax.set(xlabel="adapters merged (K)", ylabel="accuracy kept (merged / adapter)", title="Accuracy kept along K")
    ax.set_xticks(sorted(report.summary["size"].unique()))
    ax.legend()
    drawn["k_curve"] = _save(figure, folder / "k_curve.png")
    drawn["tasks"] = _save(_task_bars(report, plt), folder / "tasks.png")
    largest = report.summary[report.summary["size"] == report.summary["size"].max()]
    if largest["gain kept"].notna().any():  # left out where an adapter adds too little (analysis.small_gains)
        figure, ax = plt.subplots(figsize=(6, 4))
        ax.bar(
            largest["family"],
            largest["gain kept"],
            yerr=_error_bars(largest, "gain kept"),
            capsize=4,
        )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(ylabel="share of the adapters' gain kept", title=f"Merging all {int(largest['size'].max())}: gain kept")
        drawn["gain"] = _save(figure, folder / "gain.png")
    return {name: f"{folder.name}/{path}" for name, path in drawn.items()}


def _error_bars(rows: pd.DataFrame, column: str) -> list[pd.Series]:
    """Matplotlib's ``yerr`` for ``column`` from its ``low`` and ``high`` bounds: the distances below and above."""
    return [rows[column] - rows[f"{column} low"], rows[f"{column} high"] - rows[column]]


def _task_bars(report: Report, plt):
    """Each task's test accuracy in the recommended merge of all the adapters, beside its adapter's and its frozen
    floor's: where the merge sits between what a head alone gets and what the adapter gets."""
    size = max(report.chosen)
    family = best_family(report, size).name
    merged = report.merges[(report.merges["size"] == size) & (report.merges["family"] == family)].set_index("task")
    singles = report.singles.set_index("task")
    tasks = list(singles.index)
    bars = {
        "frozen floor (a head alone)": singles["head_accuracy"],
        f"merge of all {size} ({family})": merged["accuracy"].reindex(tasks),
        "adapter alone": singles["adapter_accuracy"],
    }
    figure, ax = plt.subplots(figsize=(1.6 * len(tasks) + 3, 4))
    width = 0.8 / len(bars)
    for index, (label, values) in enumerate(bars.items()):
        ax.bar([t + (index - 1) * width for t in range(len(tasks))], values.to_numpy(), width, label=label)
    low = float(min(values.min() for values in bars.values()))
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set(ylabel="test accuracy", title=f"Each task in the merge of all {size}")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    return figure


def _save(figure, path: Path) -> str:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
    return path.name


def _tables(report: Report) -> dict[str, pd.DataFrame]:
    tasks = report.singles[["task", "num_classes", "num_images", "adapter_accuracy", "head_accuracy", "adapter_gain"]]
    tasks = tasks.rename(columns={"head_accuracy": "floor_accuracy", "num_images": "test images"})
    shown = report.summary.copy()
    for column in ("accuracy kept", "gain kept"):
        shown[column] = [
            f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if pd.notna(v) else "— (an adapter adds under 2 points over its floor)"
            for v, lo, hi in zip(shown[column], shown[f"{column} low"], shown[f"{column} high"])
        ]
    if "vs task arithmetic" in shown:
        shown["vs task arithmetic"] = [
            "" if pd.isna(v) else f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            for v, lo, hi in zip(shown["vs task arithmetic"], shown["vs low"], shown["vs high"])
        ]
    shown["validation kept"] = [
        round(report.validation.get(size, {}).get(family, float("nan")), 3)
        for size, family in zip(shown["size"], shown["family"])
    ]
    keep = (
        "size",
        "family",
        "setting",
        "merges",
        "validation kept",
        "accuracy kept",
        "gain kept",
        "vs task arithmetic",
    )
    pairs = report.pairs.round(3) if report.pairs is not None else pd.DataFrame()
    return {"tasks": tasks.round(3), "merges": shown[[c for c in keep if c in shown]], "pairs": pairs}


def _markdown_table(table: pd.DataFrame) -> str:
    """A pipe table (pandas' ``to_markdown`` needs ``tabulate``, which this package does not require)."""

    def cell(value) -> str:
        return (f"{value:.3f}" if isinstance(value, float) else str(value)).replace("|", "\\|")

    rows = [[str(c) for c in table.columns], ["---"] * len(table.columns)]
    rows += [[cell(v) for v in record] for record in table.itertuples(index=False)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def report_markdown(report: Report, base: OwnBase, saved: dict, figures: dict[str, str]) -> str:
    """The report as Markdown."""
    tables = _tables(report)
    lines = [
        "# Will these adapters merge?",
        "",
        f"Base model: {base.description}. Adapters: {', '.join(report.singles['task'])}.",
        "",
        "## The answer",
        "",
        *[f"- {line}" for line in report.recommendation],
        "",
        "## Each adapter against its frozen-backbone floor (test split)",
        "",
        _markdown_table(tables["tasks"]),
        "",
        "## Merges, each family tuned on the validation split (test split, 95% intervals)",
        "",
        "Families: " + ", ".join(f"{f} ({kind})" for f, kind in FAMILIES.items()) + ".",
        "",
        _markdown_table(tables["merges"]),
        "",
        *[f"![{name}]({path})" for name, path in figures.items()],
        "",
        "## Pairs: how alike, and how well they merge (task arithmetic)",
        "",
        _markdown_table(tables["pairs"]),
        "",
        "## The saved merge",
        "",
        f"`{saved['folder']}/`: {saved['family']} ({saved['setting']}) of {', '.join(saved['members'])}, "
        + (
            "a PEFT adapter: `PeftModel.from_pretrained(base, folder)`, then each task's head from `heads/`."
            if saved["format"] == "peft"
            else "the merged backbone's weights (`backbone.safetensors`, loaded with `load_state_dict`) and each "
            "task's head in `heads/`."
        ),
        "",
    ]
    return "\n".join(lines)


_FORMATS = {"peft": "a PEFT adapter", "backbone": "merged backbone weights"}


def report_html(report: Report, base: OwnBase, saved: dict, figures: dict[str, str]) -> str:
    """The report as one HTML page (its figures beside it in ``figures/``)."""
    tables = _tables(report)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in report.recommendation)
    images = "".join(
        f'<figure><img src="{html.escape(p)}" alt="{html.escape(n)}"></figure>' for n, p in figures.items()
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Will these adapters merge?</title>"
        "<style>body{font-family:sans-serif;max-width:60rem;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2rem .5rem}img{max-width:100%}</style></head><body>"
        f"<h1>Will these adapters merge?</h1><p>Base model: {html.escape(base.description)}.</p>"
        f"<h2>The answer</h2><ul>{items}</ul>"
        "<h2>Each adapter against its frozen-backbone floor (test split)</h2>"
        + tables["tasks"].to_html(index=False)
        + "<h2>Merges, each family tuned on the validation split (test split, 95% intervals)</h2>"
        + tables["merges"].to_html(index=False)
        + images
        + "<h2>Pairs: how alike, and how well they merge (task arithmetic)</h2>"
        + tables["pairs"].to_html(index=False)
        + f"<h2>The saved merge</h2><p><code>{html.escape(saved['folder'])}/</code>: {html.escape(saved['family'])} "
        f"({html.escape(saved['setting'])}), saved as {_FORMATS[saved['format']]}"
        " with each task's head in <code>heads/</code>.</p></body></html>\n"
    )
