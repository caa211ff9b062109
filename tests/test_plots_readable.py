"""Every figure of :mod:`lora_merge_utils.plots` is readable on the book's page: no text below 9 pt at the size the
browser shows it (figures wider than the content column are shrunk, their text with them), compared heatmaps share
one colour scale, bars are not near-white, value axes start where a reader expects, scatter labels do not overlap.
Fast: no browser, no model; the column width is the constant measured in Chromium (plots.CONTENT_WIDTH_PX)."""

from __future__ import annotations

import inspect

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from lora_merge_utils import plots
from lora_merge_utils.course.expectations import PUBLISHED_LORA_MERGES  # noqa: E402

TASKS = ["digits", "mnist", "letters", "shapes", "textures", "gratings"]
PAIRS = [f"{a}+{b}" for i, a in enumerate(TASKS) for b in TASKS[i + 1 :]]
HELPERS = {"rendered_scale", "rendered_font_sizes"}  # public functions that measure figures rather than draw them


def _merges(rng) -> pd.DataFrame:
    rows = [
        {
            "size": 2,
            "method": method,
            "members": pair,
            "task": task,
            "seed": seed,
            "normalized_accuracy": 0.95 - shift + rng.normal(0, 0.02),
        }
        for method, shift in (("task_arithmetic", 0.0), ("linear", 0.06))
        for pair in PAIRS
        for task in pair.split("+")
        for seed in range(3)
    ]
    return pd.DataFrame(rows)


def _intervals(lowest: float) -> pd.DataFrame:
    families = [
        "each task its own adapter",
        "AdaMerging",
        "magnitude pruning on factors (PEFT)",
        "TIES on factors (PEFT)",
        "frozen backbone + K heads",
    ]
    rows = []
    for i, family in enumerate(families):
        for merges in ("pairs", "triples"):
            value = lowest + 0.03 if family.startswith("TIES") else 1.0 - 0.02 * i
            rows.append(
                {
                    "family": family,
                    "merges": merges,
                    "normalized": value,
                    "normalized_low": value - 0.03,
                    "normalized_high": value + 0.02,
                }
            )
    return pd.DataFrame(rows)


def _timings() -> pd.DataFrame:
    rows = []
    for k in (2, 3):
        for batch in (1, 64):
            for i, strategy in enumerate(["frozen + K heads", "merged", "mixed batch", "switching", "separate"]):
                ms = (2.7 + 4 * i * (k - 1)) * (1 if batch == 1 else 5)
                rows.append(
                    {
                        "K": k,
                        "batch": batch,
                        "strategy": strategy,
                        "median_ms": ms,
                        "low_ms": ms * 0.98,
                        "high_ms": ms * 1.02,
                        "images_per_s": batch * k * 1000 / ms,
                    }
                )
    return pd.DataFrame(rows)


def _similarity(rng):
    retention = pd.Series(rng.uniform(0.94, 0.98, len(PAIRS)), index=PAIRS)
    # Clustered points, as chapter 6 has them: the labels of near neighbours must still not overlap.
    measures = {
        "data similarity (-Frechet distance)": pd.Series(rng.uniform(-240, -70, len(PAIRS)), index=PAIRS),
        "weight similarity (cosine of updates)": pd.Series(rng.normal(0.002, 0.0005, len(PAIRS)), index=PAIRS),
        "adapted-feature CKA": pd.Series(rng.uniform(0.65, 0.76, len(PAIRS)), index=PAIRS),
    }
    return measures, retention


def _figures() -> dict:
    """One figure per plot function (and its harder variants), drawn on stand-in data of the book's shapes."""
    rng = np.random.default_rng(0)
    merges = _merges(rng)
    singles = pd.DataFrame(
        [{"task": t, "seed": s, "head_accuracy": 0.8, "adapter_accuracy": 0.9} for t in TASKS for s in range(3)]
    )
    by_size = pd.DataFrame(
        [
            {
                "method": m,
                "size": k,
                "normalized": 0.96 - 0.02 * k,
                "normalized_low": 0.93 - 0.02 * k,
                "normalized_high": 0.98 - 0.02 * k,
            }
            for m in ("task_arithmetic", "linear")
            for k in (2, 3)
        ]
    )
    measures, retention = _similarity(rng)
    blocks = {
        n: [f"blocks.{b}.{m}" for b in range(n) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
        for n in (6, 12)
    }
    long_title = "Merge methods on every merge of pairs and triples (test split, seed 0; 95% intervals)"
    return {
        "pairwise_heatmap": plots.pairwise_heatmap(merges, "task_arithmetic", TASKS),
        "accuracy_bars": plots.accuracy_bars(singles),
        "interval_plot": plots.interval_plot(
            _intervals(0.88), "family", "normalized", hue="merges", reference=0.9, title=long_title
        ),
        "accuracy_by_size": plots.accuracy_by_size(by_size),
        "kept_by_k": plots.kept_by_k(
            pd.DataFrame(
                [
                    {"K": k, "metric": m, "value": v - 0.1 * k, "low": v - 0.1 * k - 0.2, "high": v - 0.1 * k + 0.2}
                    for k in range(2, 7)
                    for m, v in (("normalized", 1.0), ("gain_kept", 0.8))
                ]
            ),
            pd.DataFrame([{"model": "CLIP ViT-B/32", "tasks": t, "gap kept": 0.5 / (t / 8)} for t in (8, 14, 20)]),
            lora=pd.DataFrame(PUBLISHED_LORA_MERGES).query("method == 'task arithmetic'"),
        ),
        "sample_grid": plots.sample_grid(
            rng.integers(0, 255, (10, 16, 16, 3), dtype=np.uint8),
            ["horizontal stripes", "checkerboard"] * 5,
            columns=10,
            title="textures: generated texture patches, one class per pattern family",
        ),
        "similarity_scatter": plots.similarity_scatter(
            measures, retention, [("digits", "mnist")], rho=dict.fromkeys(measures, 0.1), p=dict.fromkeys(measures, 0.5)
        ),
        "layer_cosine_heatmap": plots.layer_cosine_heatmap(
            pd.DataFrame(rng.normal(0, 0.01, (len(PAIRS), 24)), index=PAIRS, columns=blocks[6])
        ),
        "layer_cosine_heatmap (ViT-B, 48 layers)": plots.layer_cosine_heatmap(
            pd.DataFrame(rng.normal(0, 0.01, (len(PAIRS), 48)), index=PAIRS, columns=blocks[12])
        ),
        "inference_cost_bars": plots.inference_cost_bars(_timings()),
        "tuning_curves": plots.tuning_curves(*_tuning(rng)),
    }


def _tuning(rng):
    """A tuning table of the shared grid with made-up scores that peak at a scale near 0.5."""
    from lora_merge_utils.tuning import tuning_grids

    grids = tuning_grids("shared")
    rows = [
        {
            "family": family,
            "method": c.label,
            "val_mean_normalized": 0.95 - 0.3 * np.log(c.params.get("scale", 0.5) / 0.5) ** 2 + rng.normal(0, 0.01),
        }
        for family, candidates in grids.items()
        for c in candidates
    ]
    table = pd.DataFrame(rows)
    best = table.groupby("family")["val_mean_normalized"].transform("max")
    return table.assign(chosen=table["val_mean_normalized"] == best), grids


FIGURES = _figures()


def test_every_plot_function_is_checked():
    drawing = {
        name
        for name, f in inspect.getmembers(plots, inspect.isfunction)
        if f.__module__ == plots.__name__ and not name.startswith("_")
    } - HELPERS
    checked = {name.split(" ")[0] for name in FIGURES}
    assert drawing <= checked, f"add a case for {sorted(drawing - checked)} to _figures()"


@pytest.mark.parametrize("name", list(FIGURES))
def test_text_is_at_least_9_pt_at_rendered_size(name):
    figure = FIGURES[name]
    smallest, text = plots.rendered_font_sizes(figure)[0]
    assert smallest >= plots.MIN_FONT_PT - 1e-6, (
        f"{name}: {text!r} is {smallest:.1f} pt as shown (scale {plots.rendered_scale(figure):.2f})"
    )


@pytest.mark.parametrize("name", list(FIGURES))
def test_figures_are_not_shrunk_by_the_page(name):
    assert plots.rendered_scale(FIGURES[name]) > 0.97, f"{name} is wider than the content column"


def test_the_measure_sees_a_figure_shrunk_by_the_page():
    figure, ax = plt.subplots(figsize=(10, 3))  # like chapter 6's old per-layer heatmap: 10 inches, 9-pt labels
    ax.tick_params(labelsize=9)
    plt.close(figure)
    assert plots.rendered_scale(figure) < 0.85
    assert plots.rendered_font_sizes(figure)[0][0] < plots.MIN_FONT_PT


def test_heatmaps_of_two_methods_share_one_colour_scale_by_default():
    merges = _merges(np.random.default_rng(1))
    limits = []
    for method in ("task_arithmetic", "linear"):
        figure = plots.pairwise_heatmap(merges, method, TASKS)
        mesh = next(c for c in figure.axes[0].collections if isinstance(c, QuadMesh))
        limits.append(mesh.get_clim())
    assert limits[0] == limits[1]
    lowest = merges.groupby(["method", "members", "task"])["normalized_accuracy"].mean().min()
    assert limits[0][0] <= lowest and limits[0][1] >= 1.0


def test_explicit_heatmap_limits_still_win():
    figure = plots.pairwise_heatmap(_merges(np.random.default_rng(2)), "linear", TASKS, vmin=0.8, vmax=1.02)
    mesh = next(c for c in figure.axes[0].collections if isinstance(c, QuadMesh))
    assert mesh.get_clim() == (0.8, 1.02)


def test_cost_bars_are_not_near_white_and_start_at_zero():
    figure = FIGURES["inference_cost_bars"]
    for ax in figure.axes:
        assert ax.get_ylim()[0] == 0
        bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]
        assert bars
        for bar in bars:
            r, g, b = to_rgb(bar.get_facecolor())
            assert 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.75, f"a bar is too pale to see: {(r, g, b)}"


def test_interval_axis_starts_at_zero_when_the_data_reach_the_lower_half():
    wide = plots.interval_plot(_intervals(0.3), "family", "normalized", hue="merges")
    assert wide.axes[0].get_xlim()[0] == 0
    narrow = plots.interval_plot(_intervals(0.88), "family", "normalized", hue="merges")
    assert 0.8 < narrow.axes[0].get_xlim()[0] < 0.88, "close values are shown zoomed, not squeezed against 1"
    assert plots.interval_plot(_intervals(0.88), "family", "normalized", xlim=(0, 1)).axes[0].get_xlim() == (0, 1)


def test_scatter_labels_do_not_overlap():
    figure = FIGURES["similarity_scatter"]
    for ax in figure.axes:
        boxes = [t.get_window_extent() for t in ax.texts]
        assert len(boxes) == len(PAIRS)
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b.shrunk(0.9, 0.9)), "two pair labels overlap"


def test_kept_by_k_refuses_several_published_methods_at_one_point():
    ours = pd.DataFrame([{"K": 2, "metric": "normalized", "value": 0.9, "low": 0.8, "high": 1.0}])
    published = pd.DataFrame([{"model": "CLIP ViT-B/32", "tasks": 8, "gap kept": 0.5}])
    with pytest.raises(ValueError, match="one method's rows"):
        plots.kept_by_k(ours, published, lora=pd.DataFrame(PUBLISHED_LORA_MERGES))
