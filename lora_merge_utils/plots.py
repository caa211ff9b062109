"""seaborn figures of the study: pairwise heatmap, per-task bars, accuracy against merge size, estimates with their
intervals, sample grids. Every figure's title says what is drawn."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .evaluation import pairwise_matrix

FONT = 10
"""Smallest text size used in figures (points at the figure's size; the book shows figures at about that size)."""


def _finish(ax, own: bool):
    """A figure we created is laid out and closed (so notebooks show it once, via its return value); a caller's axes
    are left for the caller to finish."""
    if own:
        ax.figure.tight_layout()
        plt.close(ax.figure)
    return ax.figure


def pairwise_heatmap(merges: pd.DataFrame, method: str, tasks: Sequence[str], ax=None, vmin: float | None = None,
                     vmax: float | None = None):
    """Heatmap of normalized accuracy in pair merges (mean over seeds): row = task scored, column = the adapter
    merged with it. Pass the same ``vmin``/``vmax`` to heatmaps that are compared side by side."""
    matrix = pairwise_matrix(merges, method, tasks)
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(6.4, 5.2))
    low, high = float(np.nanmin(matrix.values)), float(np.nanmax(matrix.values))
    sns.heatmap(matrix, annot=True, fmt=".2f", vmin=vmin if vmin is not None else max(0.0, low - 0.05),
                vmax=vmax if vmax is not None else max(1.0, high), cmap="viridis", mask=matrix.isna(), square=True,
                annot_kws={"fontsize": FONT}, cbar_kws={"label": "merged / single-adapter accuracy"}, ax=ax)
    ax.set_xlabel("merged with the adapter of", fontsize=FONT + 1)
    ax.set_ylabel("task scored", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.set_title(f"Pair merges, {method}: accuracy kept (mean over seeds)", fontsize=FONT + 2)
    return _finish(ax, own)


def accuracy_bars(singles: pd.DataFrame, ax=None):
    """Grouped bars: head-only baseline against single LoRA adapter, per task (mean over seeds; the black lines
    span the seeds' range)."""
    data = singles.melt(id_vars=["task", "seed"], value_vars=["head_accuracy", "adapter_accuracy"], var_name="model",
                        value_name="accuracy")
    data["model"] = data["model"].map({"head_accuracy": "head only (frozen backbone)",
                                       "adapter_accuracy": "LoRA adapter"})
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(8, 3.8))
    sns.barplot(data=data, x="task", y="accuracy", hue="model", errorbar=("pi", 100), err_kws={"linewidth": 1.5},
                ax=ax)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("")
    ax.tick_params(labelsize=FONT)
    ax.legend(loc="lower right", title=None, fontsize=FONT)
    ax.set_title("Test accuracy per task (bars: mean over training seeds; lines: min-max)", fontsize=FONT + 2)
    return _finish(ax, own)


def interval_plot(table: pd.DataFrame, label: str, value: str, ax=None, hue: str | None = None,
                  reference: float | None = None, title: str = "", xlabel: str = ""):
    """A point per row of ``table`` (``value`` with ``<value>_low``/``<value>_high`` from
    :func:`~lora_merge_utils.stats.summary_with_intervals`) and its 95% interval, labelled by ``label``."""
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(8, 0.42 * len(table) + 1.4))
    groups = [None] if hue is None else list(dict.fromkeys(table[hue]))
    offsets = np.linspace(-0.18, 0.18, len(groups)) if len(groups) > 1 else [0.0]
    labels = list(dict.fromkeys(table[label]))
    palette = sns.color_palette("deep", len(groups))
    for offset, group, colour in zip(offsets, groups, palette):
        rows = table if group is None else table[table[hue] == group]
        y = np.array([labels.index(v) for v in rows[label]]) + offset
        ax.errorbar(rows[value], y, xerr=[rows[value] - rows[f"{value}_low"], rows[f"{value}_high"] - rows[value]],
                    fmt="o", color=colour, capsize=3, label=None if group is None else str(group))
    ax.set_yticks(range(len(labels)), labels, fontsize=FONT)
    ax.invert_yaxis()
    if reference is not None:
        ax.axvline(reference, color="gray", ls=":")
    if hue is not None:
        ax.legend(fontsize=FONT, title=hue, title_fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.set_xlabel(xlabel or value, fontsize=FONT + 1)
    ax.set_title(title, fontsize=FONT + 2)
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
    ax.set_xticks([1, 2, 3])
    ax.set_xlabel("adapters merged (K)", fontsize=FONT + 1)
    ax.set_ylabel("merged / single accuracy", fontsize=FONT + 1)
    ax.tick_params(labelsize=FONT)
    ax.legend(fontsize=FONT)
    ax.set_title("Accuracy kept as K grows (mean and 95% interval)", fontsize=FONT + 2)
    return _finish(ax, own)


def sample_grid(images: np.ndarray, labels: Sequence[str], columns: int = 8, title: str | None = None):
    """A grid of uint8 NHWC images with their class names."""
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.05, rows * 1.2))
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    for ax, image, label in zip(np.atleast_1d(axes).flat, images, labels):
        ax.imshow(image)
        ax.set_title(str(label), fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    plt.close(figure)
    return figure
