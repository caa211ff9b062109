"""Two more formula-driven image families for pretraining the tiny backbone: radial contours and strokes.

Kataoka et al. (2022, "Replacing labeled real-image datasets with auto-generated contours") found that ViTs
pretrained on random contours (their RCDB) transfer as well as or better than on fractals: object outlines are what
vision models need most. We add two such families at 32 px, each category a random formula, its instances random
rotations, scales, positions, colours and backgrounds of it:

* **radial contours**: a closed curve ``r(t) = R (1 + sum_k a_k sin(f_k t + p_k))`` sampled at a category's number of
  vertices, drawn outlined or filled;
* **strokes**: one to three cubic Bezier curves through a category's control points, drawn with a pen of random
  width, like glyphs of an invented alphabet.

No image of the book's tasks is generated here: categories are random formulas, not letters, digits or the shapes
task's six shapes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 4


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random dark-to-mid colour with smooth clutter: ``size x size x 3`` floats in [0, 1]."""
    base = rng.uniform(0.0, 0.6, size=3)
    clutter = rng.uniform(0.0, 0.2)
    coarse = rng.normal(0, 1, size=(max(2, size // 4), max(2, size // 4), 3))
    noise = (
        np.asarray(
            Image.fromarray(((coarse * 0.25 + 0.5).clip(0, 1) * 255).astype(np.uint8)).resize(
                (size, size), Image.BICUBIC
            ),
            dtype=np.float32,
        )
        / 255
        - 0.5
    )
    return np.clip(base + clutter * noise * 2, 0, 1)


def _paint(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint a [0, 1] mask in a colour that contrasts with a random background; add pixel noise; uint8 HWC."""
    size = mask.shape[0]
    background = _background(rng, size)
    colour = rng.uniform(0, 1, size=3)
    for _ in range(20):
        if np.abs(colour - background.mean(axis=(0, 1))).sum() >= 0.6:
            break
        colour = rng.uniform(0, 1, size=3)
    image = background * (1 - mask[..., None]) + colour * mask[..., None]
    image = image + rng.normal(0, rng.uniform(0.0, 0.05), size=image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ radial contours
def sample_contour(rng: np.random.Generator) -> dict:
    """One contour category: vertex count, harmonics (frequency, amplitude, phase) and whether it is filled."""
    harmonics = int(rng.integers(1, 4))
    return {
        "vertices": int(rng.choice([3, 4, 5, 6, 7, 8, 10, 12, 64])),
        "frequencies": rng.integers(2, 9, size=harmonics),
        "amplitudes": rng.uniform(0.05, 0.35, size=harmonics),
        "phases": rng.uniform(0, 2 * np.pi, size=harmonics),
        "filled": bool(rng.random() < 0.5),
    }


def render_contour(category: dict, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    big = size * SUPERSAMPLE
    radius = rng.uniform(0.22, 0.42) * big
    centre = rng.uniform(radius + 2, big - radius - 2, size=2)
    rotation = rng.uniform(0, 2 * np.pi)
    t = np.linspace(0, 2 * np.pi, category["vertices"], endpoint=False) + rotation
    jitter = rng.uniform(0.9, 1.1, size=len(category["amplitudes"]))
    wave = sum(
        a * j * np.sin(f * (t - rotation) + p)
        for a, j, f, p in zip(category["amplitudes"], jitter, category["frequencies"], category["phases"])
    )
    r = radius * (1 + wave) / (1 + category["amplitudes"].sum())
    points = [(float(centre[0] + ri * np.cos(ti)), float(centre[1] + ri * np.sin(ti))) for ri, ti in zip(r, t)]
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if category["filled"]:
        draw.polygon(points, fill=255)
    else:
        draw.line(points + points[:1], fill=255, width=int(rng.integers(SUPERSAMPLE, 3 * SUPERSAMPLE)))
    mask = np.asarray(canvas.resize((size, size), Image.LANCZOS), dtype=np.float32) / 255
    return _paint(mask, rng)


# --------------------------------------------------------------------------------------------------------- strokes
def sample_strokes(rng: np.random.Generator) -> np.ndarray:
    """One stroke category: 1-3 cubic Bezier curves, as control points in [0, 1]^2 (``[strokes, 4, 2]``)."""
    return rng.uniform(0.1, 0.9, size=(int(rng.integers(1, 4)), 4, 2))


def _bezier(control: np.ndarray, steps: int = 24) -> np.ndarray:
    t = np.linspace(0, 1, steps)[:, None]
    p0, p1, p2, p3 = control
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def render_strokes(category: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    big = size * SUPERSAMPLE
    angle = rng.uniform(-0.35, 0.35)
    scale = rng.uniform(0.7, 1.0)
    shift = rng.uniform(-0.08, 0.08, size=2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    width = int(rng.integers(2 * SUPERSAMPLE, 4 * SUPERSAMPLE))
    for control in category:
        jittered = control + rng.normal(0, 0.02, size=control.shape)
        curve = ((_bezier(jittered) - 0.5) @ rotation.T) * scale + 0.5 + shift
        draw.line([tuple(p) for p in (curve * big).tolist()], fill=255, width=width, joint="curve")
    canvas = canvas.filter(ImageFilter.GaussianBlur(SUPERSAMPLE / 2))
    mask = np.asarray(canvas.resize((size, size), Image.LANCZOS), dtype=np.float32) / 255
    return _paint(np.clip(mask * 1.5, 0, 1), rng)


def make_contour_dataset(
    num_classes: int, per_class: int, seed: int = 0, size: int = 32, kind: str = "contours"
) -> tuple[np.ndarray, np.ndarray]:
    """``num_classes`` categories of ``kind`` (``"contours"`` or ``"strokes"``) with ``per_class`` instances each:
    ``(images uint8 NHWC, labels)``."""
    if kind not in ("contours", "strokes"):
        raise ValueError(f"kind must be 'contours' or 'strokes', got {kind!r}.")
    rng = np.random.default_rng([seed, 0 if kind == "contours" else 1])
    sample, render = (sample_contour, render_contour) if kind == "contours" else (sample_strokes, render_strokes)
    categories = [sample(rng) for _ in range(num_classes)]
    images = np.empty((num_classes * per_class, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(num_classes), per_class)
    for i, label in enumerate(labels):
        images[i] = render(categories[label], rng, size=size)
    return images, labels
