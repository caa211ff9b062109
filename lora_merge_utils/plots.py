"""seaborn figures of the study: pairwise heatmap, per-task bars, accuracy against merge size, estimates with their
intervals, sample grids, similarity scatter, per-layer cosine heatmap, inference cost bars, tuning curves. Every
figure's title says what is drawn.

Every figure is drawn for the book's page: at most :data:`MAX_WIDTH_IN` wide, so the browser shows it at its own
size and its text at the size set here (never below :data:`MIN_FONT_PT`); :func:`rendered_font_sizes` checks that.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.text import Text

from .evaluation import pairwise_matrix

FONT = 10
"""Body text of figures: tick labels, legends, annotations (points)."""
MIN_FONT_PT = 9
"""No text in a figure may be smaller than this at the size the book shows it."""
DPI = 100
"""Pixels per inch of the stored notebook outputs: matplotlib's ``figure.dpi``, which the inline backend saves at."""
CONTENT_WIDTH_PX = 688
"""Width of the book's content column in CSS px at a 1280-px browser window (sphinx-book-theme, both sidebars shown).
Measured with ``scripts/check_rendered_pages.py`` in headless Chromium (the ``<article>`` element's width less its
padding); a wider image is shrunk to it, and its text with it."""
MAX_WIDTH_IN = 6.8
"""Widest figure we draw (inches): 680 px at :data:`DPI`, just inside :data:`CONTENT_WIDTH_PX`, so no figure is shrunk
even after ``bbox_inches="tight"`` lets long tick labels stick out a little."""
K_PALETTE = "colorblind"
"""Categorical colours for the number of merged adapters (K): dark enough to read as bars on white, colour-blind safe
(a sequential palette would start near white)."""


def _finish(ax, own: bool):
    """A figure we created is laid out and closed (so notebooks show it once, via its return value); a caller's axes
    are left for the caller to finish."""
    if own:
        ax.figure.tight_layout()
        plt.close(ax.figure)
    return ax.figure


def rendered_scale(figure: Figure, dpi: float = DPI, column_px: float = CONTENT_WIDTH_PX) -> float:
    """How much the book shrinks ``figure``: the content column's width over the figure's saved width (as the inline
    backend saves it, ``bbox_inches="tight"``), capped at 1 (narrower figures are shown at their own size)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    width_px = int.from_bytes(buffer.getvalue()[16:20], "big")  # the PNG header's IHDR width
    return min(1.0, column_px / width_px)


def rendered_font_sizes(
    figure: Figure, dpi: float = DPI, column_px: float = CONTENT_WIDTH_PX
) -> list[tuple[float, str]]:
    """Every visible, non-empty text of ``figure`` as ``(points at the size the book shows it, text)``, smallest
    first: its font size times :func:`rendered_scale`."""
    scale = rendered_scale(figure, dpi, column_px)
    texts = {id(t): t for t in figure.findobj(Text) if t.get_visible() and t.get_text().strip()}
    return sorted((t.get_fontsize() * scale, t.get_text()) for t in texts.values())


def _value_limits(low: float, high: float, pad: float = 0.04) -> tuple[float, float]:
    """Axis limits for accuracies and accuracy ratios (values >= 0). From 0 when a zoomed axis would begin in the
    lower half of [0, high] anyway: an axis from 0.3 makes 0.35 look like nothing, and a reader expects such a wide
    range to start at 0. Otherwise zoomed to the data with a margin, so differences between methods stay visible."""
    span = max(high - low, 1e-9)
    if low < 0:
        return low - pad * span, high + pad * span
    if low < high / 2:
        return 0.0, high + pad * high
    return low - pad * span, high + pad * span


def _pairwise_limits(merges: pd.DataFrame, tasks: Sequence[str]) -> tuple[float, float]:
    """One colour scale for every method in ``merges``, so heatmaps of different methods drawn from the same table
    share it without the caller passing ``vmin``/``vmax``: from a little below the lowest cell to at least 1."""
    values = np.concatenate(
        [
            pairwise_matrix(merges, m, tasks).to_numpy().ravel()
            for m in merges.loc[merges["size"] == 2, "method"].unique()
        ]
        or [np.array([np.nan])]
    )
    if np.all(np.isnan(values)):
        return 0.0, 1.0
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    return max(0.0, np.floor((low - 0.02) * 50) / 50), max(1.0, high)


def pairwise_heatmap(
    merges: pd.DataFrame,
    method: str,
    tasks: Sequence[str],
    ax=None,
    vmin: float | None = None,
    vmax: float | None = None,
):
    """Heatmap of normalized accuracy in pair merges (mean over seeds): row = task scored, column = the adapter
    merged with it. The colour scale is shared by every method in ``merges`` (so two heatmaps drawn from one table
    compare by colour); ``vmin``/``vmax`` override it."""
    matrix = pairwise_matrix(merges, method, tasks)
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(6.4, 5.2))
    shared_low, shared_high = _pairwise_limits(merges, tasks)
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".2f",
        vmin=shared_low if vmin is None else vmin,
        vmax=shared_high if vmax is None else vmax,
        cmap="viridis",
        mask=matrix.isna(),
        square=True,
        annot_kws={"fontsize": FONT},
        cbar_kws={"label": "merged / single-adapter accuracy"},
        ax=ax,
    )
    ax.set_xlabel("merged with the adapter of", fontsize=FONT + 1)
    ax.set_ylabel("task scored", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    colorbar = ax.collections[0].colorbar
    if colorbar is not None:
        colorbar.ax.tick_params(labelsize=FONT)
        colorbar.ax.yaxis.label.set_size(FONT)
    ax.set_title(f"Pair merges, {method}: accuracy kept (mean over seeds)", fontsize=FONT + 2)
    return _finish(ax, own)


def accuracy_bars(singles: pd.DataFrame, ax=None):
    """Grouped bars: head-only baseline against single LoRA adapter, per task (mean over seeds; the black lines
    span the seeds' range)."""
    data = singles.melt(
        id_vars=["task", "seed"],
        value_vars=["head_accuracy", "adapter_accuracy"],
        var_name="model",
        value_name="accuracy",
    )
    data["model"] = data["model"].map(
        {"head_accuracy": "head only (frozen backbone)", "adapter_accuracy": "LoRA adapter"}
    )
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 3.8))
    sns.barplot(data=data, x="task", y="accuracy", hue="model", errorbar=("pi", 100), err_kws={"linewidth": 1.5}, ax=ax)
    ax.set_ylim(0, 1.05)  # bars: their length is the value, so the axis starts at 0
    ax.set_xlabel("")
    ax.set_ylabel("accuracy", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.legend(loc="lower right", title=None, fontsize=FONT)
    ax.set_title("Test accuracy per task\n(bars: mean over training seeds; lines: min-max)", fontsize=FONT + 1)
    return _finish(ax, own)


def interval_plot(
    table: pd.DataFrame,
    label: str,
    value: str,
    ax=None,
    hue: str | None = None,
    reference: float | None = None,
    title: str = "",
    xlabel: str = "",
    xlim: tuple[float, float] | None = None,
):
    """A point per row of ``table`` (``value`` with ``<value>_low``/``<value>_high`` from
    :func:`~lora_merge_utils.stats.summary_with_intervals`) and its 95% interval, labelled by ``label``. The value
    axis starts at 0 when the intervals reach into the lower half of the range anyway, else it is zoomed to them
    (see :func:`_value_limits`); ``xlim`` overrides it."""
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(MAX_WIDTH_IN, 0.42 * len(table) + 1.4))
    groups = [None] if hue is None else list(dict.fromkeys(table[hue]))
    offsets = np.linspace(-0.18, 0.18, len(groups)) if len(groups) > 1 else [0.0]
    labels = list(dict.fromkeys(table[label]))
    palette = sns.color_palette("deep", len(groups))
    for offset, group, colour in zip(offsets, groups, palette):
        rows = table if group is None else table[table[hue] == group]
        y = np.array([labels.index(v) for v in rows[label]]) + offset
        ax.errorbar(
            rows[value],
            y,
            xerr=[rows[value] - rows[f"{value}_low"], rows[f"{value}_high"] - rows[value]],
            fmt="o",
            color=colour,
            capsize=3,
            label=None if group is None else str(group),
        )
    ax.set_yticks(range(len(labels)), labels, fontsize=FONT)
    ax.invert_yaxis()
    if reference is not None:
        ax.axvline(reference, color="gray", ls=":")
    if hue is not None:
        ax.legend(fontsize=FONT, title=hue, title_fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    lows = list(table[f"{value}_low"]) + ([reference] if reference is not None else [])
    highs = list(table[f"{value}_high"]) + ([reference] if reference is not None else [])
    ax.set_xlim(xlim or _value_limits(float(np.nanmin(lows)), float(np.nanmax(highs))))
    ax.set_xlabel(xlabel or value, fontsize=FONT + 1)
    # A long title is wrapped to the axes' width (the labels take the figure's left third) instead of sticking out
    # past the figure, which would make the saved image wider than the column and shrink everything.
    ax.set_title(textwrap.fill(title, 55), fontsize=FONT + 1)
    return _finish(ax, own)


def accuracy_by_size(summary: pd.DataFrame, ax=None):
    """Mean normalized accuracy with its 95% interval against the number of merged adapters (1 = single adapter),
    per method; ``summary`` has ``method``, ``size``, ``normalized``, ``normalized_low``, ``normalized_high``."""
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(6.4, 4))
    for (method, rows), colour in zip(summary.groupby("method", sort=False), sns.color_palette("deep")):
        rows = rows.sort_values("size")
        sizes = [1] + list(rows["size"])
        means = [1.0] + list(rows["normalized"])
        ax.plot(sizes, means, "o-", color=colour, label=method)
        ax.fill_between(rows["size"], rows["normalized_low"], rows["normalized_high"], color=colour, alpha=0.2)
    ax.set_xticks([1, *sorted(summary["size"].unique())])
    ax.set_ylim(
        _value_limits(
            float(min(summary["normalized_low"].min(), 1.0)), float(max(summary["normalized_high"].max(), 1.0))
        )
    )
    ax.set_xlabel("adapters merged (K)", fontsize=FONT + 1)
    ax.set_ylabel("merged / single accuracy", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.legend(fontsize=FONT)
    ax.set_title("Accuracy kept as K grows (mean and 95% interval)", fontsize=FONT + 2)
    return _finish(ax, own)


def kept_by_k(ours: pd.DataFrame, published: pd.DataFrame, lora: pd.DataFrame | None = None):
    """Two panels. Left: what our merges keep as K grows (``ours``: ``K``, ``metric``, ``value``, ``low``,
    ``high``, with metric ``normalized`` and ``gain_kept``) and, if given, published LoRA merges' accuracy kept
    (``lora``: ``model``, ``tasks``, ``accuracy kept``; open markers at their task count). Right: published task
    arithmetic on 8, 14 and 20 tasks (``published``: ``model``, ``tasks``, ``gap kept``), the share of the gap between
    zero-shot and per-task models it keeps, the counterpart of our share of the gain kept."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(MAX_WIDTH_IN, 3.9))
    names = {"normalized": "accuracy kept (merged / single)", "gain_kept": "share of the gain kept"}
    for (metric, rows), colour in zip(ours.groupby("metric", sort=False), sns.color_palette("deep")):
        rows = rows.sort_values("K")
        left.plot(rows["K"], rows["value"], "o-", color=colour, label=names.get(metric, metric))
        left.fill_between(rows["K"], rows["low"], rows["high"], color=colour, alpha=0.2)
    ticks = set(ours["K"].unique())
    if lora is not None and lora.duplicated(["model", "tasks"]).any():
        raise ValueError(
            "kept_by_k draws one published point per model and task count; pass one method's rows, e.g. "
            "lora[lora['method'] == 'task arithmetic']."
        )
    if lora is not None:
        markers = iter("^vDP")
        for model, rows in lora.groupby("model", sort=False):
            label = f"{model}, LoRA (published)"
            left.plot(rows["tasks"], rows["accuracy kept"], next(markers, "o"), mfc="none", color="black", label=label)
        ticks |= set(lora["tasks"].unique())
    left.axhline(1.0, color="grey", lw=0.8, ls=":")
    left.axhline(0.0, color="grey", lw=0.8, ls=":")
    left.set_xticks(sorted(ticks))
    left.set_xlabel("adapters merged (K)", fontsize=FONT + 1)
    title = "This book's tiny world (95% intervals)"
    left.set_title(title if lora is None else f"{title},\nbeside published LoRA merges", fontsize=FONT + 1)
    # Below the panel: the curves span its height once the published points sit at K = 8.
    left.legend(fontsize=FONT - 1, loc="upper center", bbox_to_anchor=(0.5, -0.27), ncol=1, frameon=False)
    for (model, rows), colour in zip(published.groupby("model", sort=False), sns.color_palette("dark")):
        rows = rows.sort_values("tasks")
        right.plot(rows["tasks"], rows["gap kept"], "s--", color=colour, label=model)
    right.set_ylim(0, 1)
    right.set_xticks(sorted(published["tasks"].unique()))
    right.set_xlabel("tasks merged", fontsize=FONT + 1)
    right.set_title("Published: task arithmetic, fully\nfine-tuned CLIP, share of the gap kept", fontsize=FONT + 1)
    right.legend(fontsize=FONT - 1)
    for ax in (left, right):
        ax.tick_params(labelsize=FONT)
    figure.tight_layout()
    plt.close(figure)
    return figure


def tuning_curves(table: pd.DataFrame, grids: Mapping[str, Sequence], columns: int = 3):
    """Small multiples of a tuning table (:func:`~lora_merge_utils.tuning.tuning_table`): for each family with a
    scale grid, the validation score against the scale (log axis), one line per density (darker: keeps more), the
    family's choice circled. ``grids`` maps each family to its candidates (``MergeSpec``s, in the table's labels)."""
    families = [f for f, candidates in grids.items() if any("scale" in c.params for c in candidates)]
    rows_count = math.ceil(len(families) / columns)
    figure, axes = plt.subplots(
        rows_count, columns, figsize=(MAX_WIDTH_IN, 2.0 * rows_count + 0.6), sharex=True, sharey=True, squeeze=False
    )
    score = table.set_index("method")["val_mean_normalized"]
    chosen = set(table.loc[table["chosen"], "method"])
    top = float(table.loc[table["family"].isin(families), "val_mean_normalized"].max())
    densities = sorted({c.params["density"] for f in families for c in grids[f] if "density" in c.params})
    colours = dict(zip(densities, sns.color_palette("viridis_r", len(densities)))) if densities else {}
    for ax, family in zip(axes.flat, families):
        lines: dict = {}
        for candidate in grids[family]:
            lines.setdefault(candidate.params.get("density"), []).append(candidate)
        for density, candidates in lines.items():
            candidates = sorted(candidates, key=lambda c: c.params["scale"])
            colour = colours.get(density, "black")
            ax.plot([c.params["scale"] for c in candidates], [score[c.label] for c in candidates], color=colour, lw=1.2)
            for c in candidates:
                if c.label in chosen:
                    ax.plot(c.params["scale"], score[c.label], "o", mfc="none", mec="crimson", ms=9, mew=1.8)
        ax.set_title(textwrap.shorten(family.replace("magnitude pruning on", "magnitude on"), 34), fontsize=FONT)
        ax.set_xscale("log")
        ax.tick_params(labelsize=MIN_FONT_PT)
    for ax in list(axes.flat)[len(families) :]:
        ax.set_visible(False)
    low = max(0.0, top - 0.35)
    axes[0, 0].set_ylim(low, top + 0.02)
    ticks = [0.1, 0.3, 1, 3]
    for ax in axes[-1]:
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("scale λ", fontsize=FONT)
    for ax in axes[:, 0]:
        ax.set_ylabel("val. kept", fontsize=FONT)
    if colours:
        handles = [plt.Line2D([], [], color=c, lw=2) for c in colours.values()]
        figure.legend(
            handles,
            [f"{d:g}" for d in colours],
            title="density",
            loc="lower right",
            ncol=len(colours),
            fontsize=MIN_FONT_PT,
            title_fontsize=MIN_FONT_PT,
            frameon=False,
        )
    figure.suptitle("Validation score of every candidate (the choice circled)", fontsize=FONT + 1)
    figure.tight_layout(rect=(0, 0.06 if colours else 0, 1, 1))
    plt.close(figure)
    return figure


def sample_grid(images: np.ndarray, labels: Sequence[str], columns: int = 8, title: str | None = None):
    """A grid of uint8 NHWC images with their class names (cut short with an ellipsis where a name is wider than
    its image), at most :data:`MAX_WIDTH_IN` wide."""
    rows = int(np.ceil(len(images) / columns))
    cell = min(1.05, MAX_WIDTH_IN / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * cell, rows * (cell + 0.3) + (0.35 if title else 0)))
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    # About 0.6 em per character: the most a label can hold and still fit over its image.
    room = max(3, int(cell * 72 / (0.6 * MIN_FONT_PT)))
    for ax, image, label in zip(np.atleast_1d(axes).flat, images, labels):
        ax.imshow(image)
        text = str(label)
        ax.set_title(text if len(text) <= room else text[: room - 1] + "\u2026", fontsize=MIN_FONT_PT)
    if title:
        figure.suptitle(textwrap.fill(title, 80), fontsize=FONT + 1)
    figure.tight_layout()
    plt.close(figure)
    return figure


def _place_labels(
    ax, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], fontsize: float = MIN_FONT_PT, **text_kw
) -> list:
    """Annotate each point with its label where the label overlaps no other label, no marker and stays inside the
    axes: the first free spot among eight around the point, then further out; the least-crowded spot otherwise.
    (Labels at a fixed offset pile up on clustered points, as chapter 6's pair names did.)"""
    figure = ax.figure
    # Extents without a renderer argument: matplotlib makes one for any backend (not every canvas has get_renderer).
    figure.draw_without_rendering()
    frame = ax.get_window_extent()
    points = ax.transData.transform(np.column_stack([xs, ys]))
    marker = 5 * figure.dpi / 72  # half a marker's width in pixels (markers of s=70 are about 8 points wide)
    obstacles = [(x - marker, y - marker, x + marker, y + marker) for x, y in points]
    if ax.get_legend() is not None:
        legend = ax.get_legend().get_window_extent()
        obstacles.append((legend.x0, legend.y0, legend.x1, legend.y1))
    placed = []
    spots = [
        (dx * r, dy * r, ha, va)
        for r in (1, 2.2, 3.6)
        for dx, dy, ha, va in (
            (4, 2, "left", "bottom"),
            (4, -2, "left", "top"),
            (-4, 2, "right", "bottom"),
            (-4, -2, "right", "top"),
            (0, 6, "center", "bottom"),
            (0, -6, "center", "top"),
            (6, 0, "left", "center"),
            (-6, 0, "right", "center"),
        )
    ]

    def crowding(box) -> float:
        x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
        overlap = sum(
            max(0.0, min(x1, b[2]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[1])) for b in obstacles
        )
        outside = box.width * box.height - max(0.0, min(x1, frame.x1) - max(x0, frame.x0)) * max(
            0.0, min(y1, frame.y1) - max(y0, frame.y0)
        )
        return overlap + 10 * outside  # a label cut off at the frame is worse than one touching another

    for x, y, label in zip(xs, ys, labels):
        best = None
        for dx, dy, ha, va in spots:
            text = ax.annotate(
                label, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=fontsize, **text_kw
            )
            box = text.get_window_extent().padded(1)
            cost = crowding(box)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, text, box)
            else:
                text.remove()
            if cost == 0:
                break
        placed.append(best[1])
        obstacles.append((best[2].x0, best[2].y0, best[2].x1, best[2].y1))
    return placed


def similarity_scatter(
    measures: Mapping[str, pd.Series],
    retention: pd.Series,
    similar_pairs: Iterable[Sequence[str]] = (),
    rho: Mapping[str, float] | None = None,
    p: Mapping[str, float] | None = None,
    title: str = "Similarity of two tasks against how well their adapters merge",
):
    """One panel per similarity measure, stacked: each pair of tasks (index ``"a+b"``) at (similarity, retention),
    pairs built to be similar in red, every point labelled without overlap. ``rho``/``p`` (by measure name) put the
    rank correlation and its p-value in each panel's title."""
    similar = {"+".join(pair) for pair in similar_pairs}
    figure, axes = plt.subplots(len(measures), 1, figsize=(MAX_WIDTH_IN, 3.4 * len(measures) + 0.5), squeeze=False)
    axes = axes[:, 0]
    frames = []
    for ax, (name, measure) in zip(axes, measures.items()):
        frame = pd.DataFrame({"similarity": measure.reindex(retention.index), "retention": retention})
        frame["built to be similar"] = frame.index.isin(similar)
        frames.append(frame)
        sns.scatterplot(
            data=frame,
            x="similarity",
            y="retention",
            hue="built to be similar",
            s=60,
            ax=ax,
            palette={True: "crimson", False: "steelblue"},
            legend=ax is axes[0],
        )
        ax.set_xlabel(name, fontsize=FONT + 1)
        ax.set_ylabel("retention\n(mean normalized accuracy)", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
        if rho is not None and name in rho:
            extra = f", permutation p = {p[name]:.2f}" if p is not None and name in p else ""
            ax.set_title(f"Spearman rho = {rho[name]:.2f}{extra}", fontsize=FONT + 1)
        if ax is axes[0] and ax.get_legend() is not None:
            ax.legend(title="built to be similar", fontsize=FONT, title_fontsize=FONT)
    figure.suptitle(textwrap.fill(title, 75), fontsize=FONT + 2)
    figure.tight_layout()  # labels are placed after the layout, which moves the points
    for ax, frame in zip(axes, frames):
        _place_labels(ax, frame["similarity"], frame["retention"], list(frame.index), alpha=0.85)
    plt.close(figure)
    return figure


def layer_cosine_heatmap(
    per_layer: pd.DataFrame, title: str = "Cosine of the two adapters' updates, per layer and pair (seed 0)"
):
    """Heatmap of a pair x layer table (columns named ``blocks.N.<module>``), layers in block order, centred at 0.
    Layer names are shortened to ``bN.<module>``; with more layers than fit at a readable size, every n-th is named."""

    def block(name: str) -> int:
        parts = name.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1

    order = sorted(per_layer.columns, key=lambda name: (block(name), name))
    figure, ax = plt.subplots(figsize=(MAX_WIDTH_IN, max(3.5, 0.28 * len(per_layer) + 2.6)))
    sns.heatmap(
        per_layer[order],
        cmap="coolwarm",
        center=0,
        ax=ax,
        cbar_kws={"label": "cosine of updates"},
        xticklabels=False,
        yticklabels=True,
    )
    figure.draw_without_rendering()  # the axes' final size decides how many layer names fit
    width_pt = ax.get_window_extent().width * 72 / figure.dpi
    step = max(1, int(np.ceil(len(order) * MIN_FONT_PT * 1.25 / width_pt)))
    ax.set_xticks([i + 0.5 for i in range(0, len(order), step)])
    ax.set_xticklabels(
        [order[i].replace("blocks.", "b") for i in range(0, len(order), step)], rotation=90, fontsize=MIN_FONT_PT
    )
    ax.tick_params(axis="y", labelsize=MIN_FONT_PT)
    ax.set_xlabel("layer" + (f" (one in {step} named)" if step > 1 else ""), fontsize=FONT)
    ax.set_ylabel("")
    colorbar = ax.collections[0].colorbar
    colorbar.ax.tick_params(labelsize=FONT)
    colorbar.ax.yaxis.label.set_size(FONT)
    ax.set_title(textwrap.fill(title, 70), fontsize=FONT + 1)
    figure.tight_layout()
    plt.close(figure)
    return figure


def inference_cost_bars(summary: pd.DataFrame, order: Sequence[str] | None = None):
    """Two panels from :func:`~lora_merge_utils.serving.timing_summary`: latency at batch 1 (median ms with the
    interval as a black line) and throughput at the largest batch (images/s), one bar per strategy and K. Bars start
    at 0; K takes distinct, saturated colours (:data:`K_PALETTE`)."""
    order = list(order) if order is not None else list(dict.fromkeys(summary["strategy"]))
    data = summary.assign(K=summary["K"].astype(str))
    ks = sorted(data["K"].unique(), key=int)
    palette = dict(zip(ks, sns.color_palette(K_PALETTE, len(ks))))
    big = int(summary["batch"].max())
    figure, axes = plt.subplots(2, 1, figsize=(MAX_WIDTH_IN, 7.2))
    panels = (
        (axes[0], 1, "median_ms", "ms per request of K tasks", "Latency at batch 1 (lower is better)"),
        (
            axes[1],
            big,
            "images_per_s",
            "images per second",
            f"Throughput at batch {big}, K tasks each (higher is better)",
        ),
    )
    for ax, batch, value, ylabel, title in panels:
        rows = data[data["batch"] == batch]
        sns.barplot(data=rows, x="strategy", y=value, hue="K", hue_order=ks, order=order, palette=palette, ax=ax)
        if {"low_ms", "high_ms"} <= set(rows.columns) and value == "median_ms":
            for container, k in zip(ax.containers, ks):
                by_strategy = rows[rows["K"] == k].set_index("strategy")
                for bar, strategy in zip(container, order):
                    if strategy in by_strategy.index:
                        x = bar.get_x() + bar.get_width() / 2
                        ax.plot([x, x], by_strategy.loc[strategy, ["low_ms", "high_ms"]], color="black", lw=1.5)
        ax.set_ylim(bottom=0)  # bars: their length is the value
        ax.set_title(title, fontsize=FONT + 1)
        ax.set_xlabel("")
        ax.set_ylabel(ylabel, fontsize=FONT)
        ax.set_xticks(range(len(order)), [textwrap.fill(s, 12) for s in order])
        ax.tick_params(labelsize=FONT)
        ax.legend(title="K", fontsize=FONT, title_fontsize=FONT)
    figure.tight_layout()
    plt.close(figure)
    return figure
