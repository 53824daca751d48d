"""Synthetic glyphs: procedurally drawn stroke characters, the offline default dataset.

A glyph class is a small set of 2-5 pen strokes (straight lines, arcs and short
polylines), drawn from a random generator seeded by `(alphabet, class index)` only,
so class 7 is the same glyph whether 10 or 1000 classes are requested. Each sample
is a new "handwritten" drawing of its class: the strokes' control points wobble, the
whole glyph is shifted, scaled, sheared and rotated a few degrees, and the pen width
changes, all drawn from a generator seeded by `(seed, class index, sample index)`.

Images are white strokes on a black background (like MNIST; Omniglot is the
reverse, `255 - images` converts), grayscale uint8 of shape `[N, H, W, 1]`. They are
drawn at twice the size and averaged down 2x2, which smooths the stroke edges.

No TensorFlow here: the data package wraps this into `tf.data`.
"""

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from workbench.data.images import check_image_size, check_positive_int
from workbench.errors import DataError

# Tags keep the class-shape and sample-jitter random streams apart even when the
# alphabet and the seed are the same number.
_CLASS_STREAM = 0x6C7970
_SAMPLE_STREAM = 0x6A6974
_POOL_STREAM = 0x706F6F6C
_POOL_SIZE = 8

_SUPERSAMPLE = 2
# Glyphs are drawn in unit coordinates [-1, 1] and fitted into this half-extent, which
# leaves room for the sample jitter to move them without leaving the canvas.
_GLYPH_EXTENT = 0.7
# Pen width as a fraction of the smaller image side.
_PEN_WIDTH = 0.085
# Handwriting jitter of each sample, in unit coordinates (the image spans 2).
_ROTATION_DEGREES = 10.0
_SHIFT = 0.15
_STROKE_OFFSET = 0.06
_WOBBLE = 0.06


def draw_glyphs(
    classes: Sequence[int] | range,
    per_class: int,
    image_size: tuple[int, int] = (28, 28),
    seed: int = 0,
    alphabet: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draws `per_class` samples of each glyph class in `classes`.

    Args:
        classes: class indices (non-negative integers); each names one glyph of the
            alphabet, independently of the other indices requested.
        per_class: samples per class. Sample `i` of class `k` is the same image for
            any `per_class > i`.
        image_size: `(height, width)` of the images in pixels.
        seed: seed of the per-sample jitter (handwriting); different seeds give
            different drawings of the same classes.
        alphabet: seed of the class shapes; different alphabets are different
            sets of glyphs.

    Returns:
        `(images, labels)`: uint8 `[len(classes) * per_class, H, W, 1]`, class-major
        (all samples of `classes[0]` first), and int32 labels giving each image's
        position in `classes` (0..len(classes)-1), ready as training targets.
    """
    classes = _check_classes(classes)
    height, width = check_image_size(image_size)
    per_class = check_positive_int("per_class", per_class)
    images = np.empty((len(classes) * per_class, height, width, 1), dtype=np.uint8)
    for position, class_index in enumerate(classes):
        strokes = glyph_strokes(class_index, alphabet)
        for sample_index in range(per_class):
            rng = np.random.default_rng([_SAMPLE_STREAM, seed, class_index, sample_index])
            images[position * per_class + sample_index, :, :, 0] = _render(strokes, rng, height, width)
    labels = np.repeat(np.arange(len(classes), dtype=np.int32), per_class)
    return images, labels


def glyph_strokes(class_index: int, alphabet: int = 0) -> list[np.ndarray]:
    """Returns the strokes of one glyph class: float arrays `[points, 2]` of (x, y).

    The classes of one alphabet combine strokes from a shared pool, as real scripts
    reuse a few pen movements, so that they look alike and are not trivial to tell
    apart. Coordinates are in [-1, 1] with y pointing down; the glyph is centred and
    scaled so that its longer side spans `2 * _GLYPH_EXTENT`.
    """
    pool = _stroke_pool(alphabet)
    rng = np.random.default_rng([_CLASS_STREAM, alphabet, class_index])
    strokes: list[np.ndarray] = []
    for _ in range(rng.integers(2, 6)):
        # Strokes of real characters touch: most start on an earlier stroke.
        if strokes and rng.random() < 0.6:
            anchor = strokes[rng.integers(len(strokes))]
            start = anchor[rng.integers(len(anchor))]
        else:
            start = rng.uniform(-0.6, 0.6, size=2)
        shape = pool[rng.integers(len(pool))]
        rotation = _rotation(rng.integers(8) * np.pi / 4)
        strokes.append(start + rng.uniform(0.7, 1.3) * shape @ rotation.T)
    return _fit(strokes)


@lru_cache(maxsize=16)
def _stroke_pool(alphabet: int) -> tuple[np.ndarray, ...]:
    """The alphabet's pen movements: strokes starting at the origin."""
    rng = np.random.default_rng([_POOL_STREAM, alphabet])
    makers = (_line, _arc, _polyline)
    return tuple(makers[rng.integers(len(makers))](rng, np.zeros(2)) for _ in range(_POOL_SIZE))


def _line(rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi)
    length = rng.uniform(0.5, 1.3)
    # A midpoint lets the per-sample jitter bend the line slightly.
    steps = np.linspace(0.0, length, 3)[:, None]
    return start + steps * np.array([np.cos(angle), np.sin(angle)])


def _arc(rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
    radius = rng.uniform(0.2, 0.55)
    sweep = rng.uniform(0.5 * np.pi, 1.8 * np.pi) * rng.choice([-1.0, 1.0])
    first = rng.uniform(0.0, 2.0 * np.pi)
    centre = start - radius * np.array([np.cos(first), np.sin(first)])
    angles = first + np.linspace(0.0, sweep, 2 + int(abs(sweep) / (np.pi / 5)))
    return centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _polyline(rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
    points = [start]
    angle = rng.uniform(0.0, 2.0 * np.pi)
    for _ in range(rng.integers(2, 4)):
        length = rng.uniform(0.3, 0.7)
        points.append(points[-1] + length * np.array([np.cos(angle), np.sin(angle)]))
        angle += rng.uniform(0.4 * np.pi, 0.9 * np.pi) * rng.choice([-1.0, 1.0])
    return np.stack(points)


def _fit(strokes: list[np.ndarray]) -> list[np.ndarray]:
    """Centres the glyph and scales its longer side to the glyph extent."""
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    centre = (low + high) / 2.0
    scale = 2.0 * _GLYPH_EXTENT / max(float((high - low).max()), 1e-6)
    return [(stroke - centre) * scale for stroke in strokes]


def _render(strokes: list[np.ndarray], rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Draws one jittered sample of a glyph and returns it as uint8 `[height, width]`."""
    angle = np.deg2rad(rng.normal(0.0, _ROTATION_DEGREES))
    scale = rng.uniform(0.75, 1.15) * np.exp(rng.normal(0.0, 0.1, size=2))
    shear = np.array([[1.0, rng.normal(0.0, 0.15)], [0.0, 1.0]])
    affine = _rotation(angle) @ shear @ np.diag(scale)
    shift = rng.uniform(-_SHIFT, _SHIFT, size=2)
    canvas_w, canvas_h = width * _SUPERSAMPLE, height * _SUPERSAMPLE
    to_pixels = np.array([canvas_w / 2.0, canvas_h / 2.0])
    pen = max(1, round(_PEN_WIDTH * min(canvas_w, canvas_h) * rng.uniform(0.7, 1.35)))
    radius = pen / 2.0

    canvas = Image.new("L", (canvas_w, canvas_h), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        # Each stroke lands a little off its place, and each of its points wobbles.
        wobbly = stroke + rng.normal(0.0, _STROKE_OFFSET, size=2) + rng.normal(0.0, _WOBBLE, size=stroke.shape)
        pixels = ((wobbly @ affine.T + shift) + 1.0) * to_pixels
        points = [tuple(point) for point in pixels.tolist()]
        draw.line(points, fill=255, width=pen, joint="curve")
        # Round pen tips: ImageDraw ends lines square.
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(canvas.reduce(_SUPERSAMPLE))


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _check_classes(classes: Sequence[int] | range) -> list[int]:
    checked = []
    for value in classes:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"Glyph classes are non-negative integer indices. Pass e.g. `range(10)`. Received: classes={list(classes)!r}")
        checked.append(int(value))
    if not checked:
        raise DataError(f"At least one glyph class is needed. Received: classes={list(classes)!r}")
    return checked
