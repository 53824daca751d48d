"""An offline domain pair with a real gap: grayscale characters (source) and the same characters on colour textures (target).

The MNIST -> MNIST-M construction of Ganin et al., "Domain-Adversarial Training of
Neural Networks", JMLR 2016, applied to any grayscale `ClassImages` (Omniglot,
synthetic glyphs): each target image is `|patch - strokes|`, a random patch of a
colour texture with the character's strokes inverting the colours under them.
MNIST-M cuts its patches from photographs (BSDS500); here the textures are drawn
procedurally (smooth colour noise over several scales), so that nothing is
downloaded and one seed gives one dataset.

Both domains are RGB, so that one model takes either: `rgb_source` copies the gray
channel three times, `textured_target` blends. Both keep class names, labels and
groups, so that target labels can score a model trained on the source.
"""

import dataclasses

import numpy as np
from PIL import Image

from workbench.data.sources import ClassImages
from workbench.errors import ArgumentError

__all__ = ["rgb_source", "textured_target", "colour_textures"]

TEXTURES = 32  # distinct textures the patches are cut from
TEXTURE_SCALE = 4  # a texture is this many times the image's height and width
_NOISE_CELLS = (2, 4, 8, 16)  # grid cells per texture side of each noise scale, coarse to fine
_NOISE_WEIGHTS = (1.0, 0.6, 0.35, 0.2)  # coarse colour blobs dominate, finer grain on top


def rgb_source(images: ClassImages) -> ClassImages:
    """The grayscale images in RGB (the gray value in each channel), everything else kept."""
    return dataclasses.replace(images, images=np.repeat(_grayscale(images), 3, axis=-1))


def textured_target(images: ClassImages, seed: int) -> ClassImages:
    """The grayscale images blended onto random patches of colour textures, everything else kept.

    A pixel's stroke strength is its distance from the image's background, the
    median gray value: `255 - gray` for Omniglot's black strokes on white, `gray`
    for the synthetic glyphs' white strokes on black. The target pixel is
    `|patch - stroke strength|` per channel, so the background shows the texture
    and the strokes its inverse colours, whichever way the source draws them.
    """
    gray = _grayscale(images)
    count, height, width, _ = gray.shape
    rng = np.random.default_rng(seed)
    textures = colour_textures(TEXTURES, (TEXTURE_SCALE * height, TEXTURE_SCALE * width), rng)
    chosen = rng.integers(len(textures), size=count)
    tops = rng.integers(textures.shape[1] - height + 1, size=count)
    lefts = rng.integers(textures.shape[2] - width + 1, size=count)
    background = np.median(gray.reshape(count, -1), axis=1).reshape(count, 1, 1, 1)
    strokes = np.abs(gray.astype(np.int16) - background.astype(np.int16))
    blended = np.empty((count, height, width, 3), np.uint8)
    for index in range(count):
        patch = textures[chosen[index], tops[index] : tops[index] + height, lefts[index] : lefts[index] + width]
        blended[index] = np.abs(patch.astype(np.int16) - strokes[index])
    return dataclasses.replace(images, images=blended)


def colour_textures(count: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """`count` smooth random colour textures, uint8 `[count, height, width, 3]`, spanning 0..255 in each channel.

    Each is a weighted sum of random colour grids at several scales, each grid
    enlarged to `size` with bicubic interpolation.
    """
    height, width = size
    textures = np.empty((count, height, width, 3), np.uint8)
    for index in range(count):
        texture = np.zeros((height, width, 3))
        for cells, weight in zip(_NOISE_CELLS, _NOISE_WEIGHTS, strict=True):
            grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
            texture += weight * np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC), np.float64)
        # Stretch each channel to the full range, so that colours stay vivid after the sum averages them out.
        low, high = texture.min(axis=(0, 1)), texture.max(axis=(0, 1))
        textures[index] = np.round(255 * (texture - low) / np.maximum(high - low, 1e-9))
    return textures


def _grayscale(images: ClassImages) -> np.ndarray:
    pixels = images.images
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 1:
        raise ArgumentError(
            "A domain pair is made from grayscale images, uint8 [N, height, width, 1]: load the source with channels=1. "
            f"Received: images of {pixels.dtype} {pixels.shape}"
        )
    return pixels
