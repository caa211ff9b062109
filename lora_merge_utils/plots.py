"""seaborn figures of the study: pairwise heatmap, per-task bars, accuracy against merge size, sample grids."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .evaluation import pairwise_matrix


def _finish(ax, own: bool):
    """A figure we created is laid out and closed (so notebooks show it once, via its return value); a caller's axes
    are left for the caller to finish."""
    if own:
        ax.figure.tight_layout()
        plt.close(ax.figure)
    return ax.figure


def pairwise_heatmap(merges: pd.DataFrame, method: str, tasks: Sequence[str], ax=None):
    """Heatmap of normalized accuracy in pair merges: row = task scored, column = the adapter merged with it."""
    matrix = pairwise_matrix(merges, method, tasks)
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(6.2, 5))
    low, high = float(np.nanmin(matrix.values)), float(np.nanmax(matrix.values))
    sns.heatmap(matrix, annot=True, fmt=".2f", vmin=max(0.0, low - 0.05), vmax=max(1.0, high),
                cmap="viridis", mask=matrix.isna(), square=True, cbar_kws={"label": "merged / single-adapter accuracy"},
                ax=ax)
    ax.set_xlabel("merged with adapter of")
    ax.set_ylabel("task scored")
    ax.set_title(f"Pair merges, {method}: accuracy kept")
    return _finish(ax, own)


def accuracy_bars(singles: pd.DataFrame, ax=None):
    """Grouped bars: head-only baseline against single LoRA adapter, per task."""
    data = singles.melt(id_vars="task", value_vars=["head_accuracy", "adapter_accuracy"], var_name="model",
                        value_name="accuracy")
    data["model"] = data["model"].map({"head_accuracy": "head only", "adapter_accuracy": "LoRA adapter"})
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(7, 3.5))
    sns.barplot(data=data, x="task", y="accuracy", hue="model", ax=ax)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("")
    ax.legend(loc="lower right", title=None)
    ax.set_title("Test accuracy per task")
    return _finish(ax, own)


def accuracy_by_size(singles: pd.DataFrame, merges: pd.DataFrame, ax=None):
    """Mean normalized accuracy against the number of merged adapters (1 = single adapter), per method."""
    rows = [{"size": 1, "method": m, "normalized_accuracy": 1.0, "task": t}
            for m in merges["method"].unique() for t in singles["task"]]
    data = pd.concat([pd.DataFrame(rows), merges[["size", "method", "normalized_accuracy", "task"]]])
    own = ax is None
    if own:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    sns.pointplot(data=data, x="size", y="normalized_accuracy", hue="method", errorbar=("pi", 50), dodge=0.2, ax=ax)
    ax.set_xlabel("adapters merged (K)")
    ax.set_ylabel("merged / single accuracy")
    ax.set_title("Accuracy kept as K grows (median, 25-75%)")
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
