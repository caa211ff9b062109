"""Image generators for the tiny profile's tasks: rendered letters, shapes, photo-texture patches and gratings.

Every generator takes ``(per_class, rng, split)`` and returns ``(uint8 images N x 32 x 32 x 3, labels, class_names)``,
class-balanced and fully determined by ``rng``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..profiles import GENERATED_IMAGE_SIZE as SIZE


def resize_gray(images: np.ndarray, size: int = SIZE, pad: int = 0) -> np.ndarray:
    """Resize a stack of grayscale uint8 images to ``size`` (with a black border of ``pad`` pixels) as RGB."""
    inner = size - 2 * pad
    out = np.zeros((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        resized = np.asarray(Image.fromarray(image).resize((inner, inner), Image.BILINEAR))
        out[i, pad : pad + inner, pad : pad + inner] = resized[..., None]
    return out


def _background(rng: np.random.Generator, clutter: float = 0.15) -> np.ndarray:
    base = rng.uniform(0, 1, size=3) * 0.6
    noise = rng.normal(0, clutter, size=(SIZE // 4, SIZE // 4, 3))
    noise = np.asarray(
        Image.fromarray(((noise + 0.5).clip(0, 1) * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)
    )
    return np.clip(base + (noise / 255.0 - 0.5), 0, 1)


def _compose(mask: np.ndarray, rng: np.random.Generator, noise: float = 0.05, clutter: float = 0.15) -> np.ndarray:
    """Paint a [0,1] mask in a random colour that contrasts with a random cluttered background."""
    background = _background(rng, clutter)
    colour = rng.uniform(0, 1, size=3)
    while np.abs(colour - background.mean(axis=(0, 1))).sum() < 0.6:
        colour = rng.uniform(0, 1, size=3)
    image = background * (1 - mask[..., None]) + colour * mask[..., None]
    image = image + rng.normal(0, noise, size=image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------- letters
LETTERS = list("ABCDEFGHIJ")
_FONT_FILES = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
]


def _fonts_dir() -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def make_letters(per_class: int, rng: np.random.Generator, split: str = "train"):
    """Letters A-J in eight DejaVu faces (shipped by matplotlib), random size, rotation, position and colours.

    Train and test draw from the same faces with different random sizes, rotations, positions and colours.
    """
    fonts = {}
    images, labels = [], []
    for label, letter in enumerate(LETTERS):
        for _ in range(per_class):
            font_file = _FONT_FILES[rng.integers(len(_FONT_FILES))]
            size = int(rng.integers(20, 29))
            key = (font_file, size)
            if key not in fonts:
                fonts[key] = ImageFont.truetype(str(_fonts_dir() / font_file), size)
            canvas = Image.new("L", (SIZE * 2, SIZE * 2), 0)
            ImageDraw.Draw(canvas).text((SIZE, SIZE), letter, fill=255, font=fonts[key], anchor="mm")
            canvas = canvas.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR)
            dx, dy = rng.integers(-4, 5, size=2)
            left, top = SIZE // 2 + dx, SIZE // 2 + dy
            mask = np.asarray(canvas.crop((left, top, left + SIZE, top + SIZE)), dtype=np.float32) / 255
            images.append(_compose(mask, rng, noise=0.03, clutter=0.05))
            labels.append(label)
    return np.stack(images), np.asarray(labels), LETTERS


# -------------------------------------------------------------------------------------------------------- shapes
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]


def _polygon(n: int, radius: float, angle: float, centre: tuple[float, float], inner: float | None = None):
    points = []
    steps = n * 2 if inner else n
    for k in range(steps):
        r = radius if (inner is None or k % 2 == 0) else radius * inner
        theta = angle + 2 * np.pi * k / steps
        points.append((centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)))
    return points


def _shape_mask(shape: str, rng: np.random.Generator) -> np.ndarray:
    scale = 4
    canvas = Image.new("L", (SIZE * scale, SIZE * scale), 0)
    draw = ImageDraw.Draw(canvas)
    radius = rng.uniform(9, 13) * scale
    centre = tuple(rng.uniform(radius + scale, SIZE * scale - radius - scale, size=2))
    angle = rng.uniform(0, 2 * np.pi)
    cx, cy = centre
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    elif shape == "ring":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        inner = radius * rng.uniform(0.45, 0.65)
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif shape == "square":
        draw.polygon(_polygon(4, radius, angle, centre), fill=255)
    elif shape == "triangle":
        draw.polygon(_polygon(3, radius, angle, centre), fill=255)
    elif shape == "star":
        draw.polygon(_polygon(5, radius, angle, centre, inner=0.45), fill=255)
    elif shape == "cross":
        w = radius * 0.35
        arm = [(-radius, -w), (radius, -w), (radius, w), (-radius, w)]
        for rot in (angle, angle + np.pi / 2):
            c, s = np.cos(rot), np.sin(rot)
            draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in arm], fill=255)
    canvas = canvas.resize((SIZE, SIZE), Image.LANCZOS)
    return np.asarray(canvas, dtype=np.float32) / 255


def make_shapes(per_class: int, rng: np.random.Generator, split: str = "train"):
    """Six filled shapes of random size, rotation, position and colour on cluttered backgrounds."""
    images, labels = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(per_class):
            images.append(_compose(_shape_mask(shape, rng), rng, noise=0.04, clutter=0.08))
            labels.append(label)
    return np.stack(images), np.asarray(labels), SHAPES


# ------------------------------------------------------------------------------------------------------ textures
TEXTURE_SOURCES = ["brick", "grass", "gravel", "moon", "coins", "chelsea", "coffee", "immunohistochemistry"]
_TEST_FRACTION = 0.3
_VAL_FRACTION = 0.15


def _texture_image(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray

    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        image = (rgb2gray(image[..., :3]) * 255).astype(np.uint8)
    return image


def make_textures(per_class: int, rng: np.random.Generator, split: str = "train"):
    """Grayscale 32 px patches of eight scikit-image sample photographs; the class is the photograph.

    The test split is cut from the bottom 30% of each photograph, the validation split from the 15% above it and the
    train split from the top 55%, so no validation or test pixel was seen in training. Patches are cropped at a random
    scale (24-56 px) and jittered in contrast.
    """
    images, labels = [], []
    for label, name in enumerate(TEXTURE_SOURCES):
        source = _texture_image(name)
        height = source.shape[0]
        test_cut = int(height * (1 - _TEST_FRACTION))
        val_cut = int(height * (1 - _TEST_FRACTION - _VAL_FRACTION))
        region = {"train": source[:val_cut], "val": source[val_cut:test_cut], "test": source[test_cut:]}[split]
        for _ in range(per_class):
            crop = int(rng.integers(32, min(49, region.shape[0], region.shape[1])))
            top = int(rng.integers(0, region.shape[0] - crop + 1))
            left = int(rng.integers(0, region.shape[1] - crop + 1))
            patch = Image.fromarray(region[top : top + crop, left : left + crop]).resize((SIZE, SIZE), Image.BILINEAR)
            if rng.random() < 0.5:
                patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
            array = np.asarray(patch, dtype=np.float32) / 255
            array = np.clip((array - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.05, 0.05), 0, 1)
            images.append((np.repeat(array[..., None], 3, axis=2) * 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels), TEXTURE_SOURCES


# ------------------------------------------------------------------------------------------------------ gratings
ORIENTATIONS = [f"{angle:g} deg" for angle in np.arange(0, 180, 22.5)]


def make_gratings(per_class: int, rng: np.random.Generator, split: str = "train"):
    """Sinusoidal gratings at 8 orientations (0-157.5 deg), random frequency, phase, contrast, colour and noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images, labels = [], []
    for label in range(len(ORIENTATIONS)):
        theta = np.deg2rad(22.5 * label)
        for _ in range(per_class):
            jitter = np.deg2rad(rng.uniform(-4, 4))
            freq = rng.uniform(0.12, 0.45)
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(freq * (xx * np.cos(theta + jitter) + yy * np.sin(theta + jitter)) + phase)
            mask = 0.5 + 0.5 * wave * rng.uniform(0.6, 1.0)
            image = _compose(mask, rng, noise=0.06)
            image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8))))
            images.append(image)
            labels.append(label)
    return np.stack(images), np.asarray(labels), ORIENTATIONS
