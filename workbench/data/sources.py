"""Image sources as classes of images: class folders (directories or `.zip`), TFDS datasets, synthetic glyphs.

Transfer datasets and meta-learning tasks both read their images through here, so
every source gives the same `ClassImages`: uint8 images `[N, H, W, C]`, class-major,
with their class names (and groups, where the source has them). Pixels go through
one conversion, `workbench.data.images`' (grayscale is the ITU-R 601-2 luma, as
Pillow and `tf.image` compute it), whichever source they come from.

Nothing here imports TensorFlow except reading a TFDS dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.data.images import ImageFolder, convert_pixels
from workbench.errors import DataError

log = logging.getLogger(__name__)

MIN_CLASSES = 2  # a classifier with fewer has nothing to tell apart
_SKIPPED_SHOWN = 3  # damaged files named in the warning


@dataclass(frozen=True)
class ClassImages:
    """The images of a class-labelled source, class-major: all of class 0, then class 1, ...

    `labels[i]` is the position in `names` of `images[i]`; `groups[i]` the group of
    `names[i]` (e.g. the Omniglot alphabet), or None where the source has none.
    """

    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int32 [N], ascending
    names: tuple[str, ...]
    groups: tuple[str, ...] | None = None

    @classmethod
    def from_classes(cls, per_class: Sequence[np.ndarray], names: Sequence[str], groups: Sequence[str] | None = None) -> ClassImages:
        """Joins one uint8 array `[n_i, H, W, C]` per class (empty ones too) into class-major arrays."""
        labels = np.repeat(np.arange(len(per_class), dtype=np.int32), [len(images) for images in per_class])
        return cls(np.concatenate(per_class), labels, tuple(names), None if groups is None else tuple(groups))

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        return dict(zip(self.names, np.bincount(self.labels, minlength=len(self.names)).tolist(), strict=True))

    def by_class(self) -> list[np.ndarray]:
        """One array per class, in class order (views, not copies)."""
        return np.split(self.images, np.cumsum(list(self.counts().values()))[:-1])

    def images_of(self, names: Sequence[str]) -> list[np.ndarray]:
        """The images of each class of `names`, in that order."""
        by_class = dict(zip(self.names, self.by_class(), strict=True))
        return [by_class[name] for name in names]


def require_classes(names: Sequence[str], received: str) -> None:
    """Refuses training data with fewer than two classes: a classifier of one class learns nothing.

    `received` says which data, e.g. `path='/data/letters'`.
    """
    if len(names) < MIN_CLASSES:
        shown = f" ({', '.join(repr(name) for name in names)})" if names else ""
        raise DataError(
            f"The data hold {len(names)} class{'' if len(names) == 1 else 'es'}{shown}, but a classifier needs at least "
            f"{MIN_CLASSES} to tell apart. Add a sub-folder of images for each class, or choose data with more classes. "
            f"Received: {received}"
        )


def folder_classes(folder: ImageFolder, classes: Sequence[str], image_size: tuple[int, int], channels: int) -> ClassImages:
    """Decodes `classes` of a class folder; damaged files are skipped with a warning that names them."""
    loaded = folder.load(classes, image_size=image_size, channels=channels)
    skipped = loaded.stats.skipped_files
    if skipped:
        more = f" and {len(skipped) - _SKIPPED_SHOWN} more" if len(skipped) > _SKIPPED_SHOWN else ""
        log.warning(
            "skipped %d unreadable image file%s in %s: %s%s",
            len(skipped),
            "" if len(skipped) == 1 else "s",
            folder.path,
            "; ".join(skipped[:_SKIPPED_SHOWN]),
            more,
        )
    index = dict(zip(folder.classes, folder.groups, strict=True))
    return ClassImages(loaded.images, loaded.labels, loaded.class_names, tuple(index[name] for name in loaded.class_names))


def glyph_names(classes: Sequence[int]) -> list[str]:
    """The class names of synthetic glyph classes."""
    return [f"glyph-{index}" for index in classes]


def glyph_classes(classes: Sequence[int], samples: int, image_size: tuple[int, int], channels: int, seed: int) -> ClassImages:
    """`samples` drawings of each glyph class of `classes` (indices), grayscale or repeated to RGB."""
    from workbench.data.glyphs import draw_glyphs

    images, labels = draw_glyphs(classes, samples, image_size, seed=seed)
    if channels != images.shape[-1]:
        images = np.repeat(images, channels, axis=-1)
    return ClassImages(images, labels, tuple(glyph_names(classes)))


def tfds_classes(name: str, split: str, data_dir: str | None, image_size: tuple[int, int], channels: int) -> ClassImages:
    """The images of one split of a TFDS dataset, by its `label` feature.

    Every class of the dataset is listed, in label order, also those that the split
    lacks (empty), so that labels are the dataset's own.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
        dataset = builder.as_dataset(split=split, as_supervised=True)
        names = list(builder.info.features["label"].names)
    except Exception as error:  # TFDS raises many kinds: unknown name or split, no network, bad data_dir
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DataError(
            f"The TFDS dataset could not be prepared ({type(error).__name__}: {reason}). Check its name and split, "
            f"or download it first. Received: name={name!r}, split={split!r}"
        ) from None
    height, width = image_size
    per_class: list[list[np.ndarray]] = [[] for _ in names]
    for image, label in tfds.as_numpy(dataset):
        per_class[int(label)].append(convert_pixels(image, image_size, channels))
    empty = np.empty((0, height, width, channels), np.uint8)
    return ClassImages.from_classes([np.stack(images) if images else empty for images in per_class], names)
