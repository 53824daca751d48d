"""Labelled image datasets for transfer recipes, as batched `tf.data` pipelines.

Images stay raw (float32 pixel values in [0, 255]): the model holds its own
preprocessing, so that a saved model takes raw images too. Every source is read
into memory through `workbench.data.sources`; folder and synthetic sources are
split per class by fraction, with the recipe's seed, TFDS ones by its split names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

import numpy as np

from workbench.data.domain_pairs import textured_target
from workbench.data.episodes import rotate_classes, rotated_names
from workbench.data.images import ImageFolder
from workbench.data.sources import MIN_CLASSES, ClassImages, folder_classes, glyph_classes, glyph_names, require_classes, tfds_classes
from workbench.errors import DataError

_MOST_IMAGES_NEEDED = 10_000  # fractions that need more leave (almost) nothing to train on


@dataclasses.dataclass
class ImageSplits:
    """The train / validation / test pipelines of one recipe, and what they hold.

    `shuffle_epoch` is a variable that picks the training order: each
    value gives one fixed permutation, so a resumed run sees the same batches as an
    uninterrupted one.
    """

    train: object
    validation: object | None
    test: object | None
    class_names: list[str]
    image_shape: tuple[int, int, int]
    counts: dict[str, int]
    shuffle_epoch: object | None = None
    class_groups: list[str] | None = None  # the group of each class (e.g. its alphabet), where the source has groups


def split_per_class(
    labels: np.ndarray, validation: float, test: float, per_class: int | None, seed: int, class_names: Sequence[str] | None = None
):
    """Indices of a stratified train / validation / test split of `labels`.

    Each class is shuffled with the seed; its first `test` fraction (at least one
    example when the fraction is > 0) goes to test, the next `validation` fraction
    to validation, and at most `per_class` of the rest to train. `class_names`
    (indexed by label) name the classes in errors.
    """
    rng = np.random.default_rng(seed)
    train, valid, held = [], [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        name = class_names[label] if class_names is not None else str(label)
        n_test, n_valid = held_out_sizes(name, len(members), validation, test)
        held.extend(members[:n_test])
        valid.extend(members[n_test : n_test + n_valid])
        rest = members[n_test + n_valid :]
        train.extend(rest[:per_class] if per_class else rest)
    return tuple(np.sort(np.asarray(indices, dtype=np.int64)) for indices in (train, valid, held))  # int even when empty


def held_out_sizes(name: str, count: int, validation: float, test: float) -> tuple[int, int]:
    """How many of a class's `count` images go to test and to validation, keeping at least one to train on.

    Raises:
        DataError: naming the class when it has too few images for the fractions.
    """
    n_test, n_valid = _held_out(count, validation, test)
    if n_test + n_valid >= count:
        needed = next((n for n in range(count + 1, _MOST_IMAGES_NEEDED) if sum(_held_out(n, validation, test)) < n), None)
        raise DataError(
            f"Class {name!r} has {count} image{'' if count == 1 else 's'}, too few to hold out validation={validation:g} "
            f"and test={test:g} and keep one to train on"
            + (f": each class needs at least {needed}" if needed else "")
            + f". Add images to it, remove it, or lower the fractions. Received: class={name!r}, images={count}"
        )
    return n_test, n_valid


def _held_out(count: int, validation: float, test: float) -> tuple[int, int]:
    return (max(1, round(test * count)) if test else 0), (max(1, round(validation * count)) if validation else 0)


def check_held_out(counts: Mapping[str, int], validation: float, test: float) -> None:
    """Refuses, by name, the first class of `counts` (images per class) too small for the fractions."""
    for name, count in counts.items():
        held_out_sizes(name, count, validation, test)


def select_classes(folder: ImageFolder, include: str | None) -> tuple[str, ...]:
    """The classes of a folder that `include` (a regex, or None for all) keeps; at least two.

    Raises:
        DataError: when fewer than two classes are left.
    """
    classes = folder.classes
    if include is not None:
        classes = tuple(name for name in classes if re.search(include, name))
        if len(classes) < MIN_CLASSES:
            raise DataError(
                f"include {include!r} keeps {len(classes)} of the {len(folder.classes)} classes of {folder.path}; "
                f"a classifier needs {MIN_CLASSES} or more. Loosen the pattern. Received: include={include!r}"
            )
    require_classes(classes, f"path={str(folder.path)!r}")
    return classes


def listed_class_counts(data) -> dict[str, int] | None:
    """Images per class that a folder or synthetic `data` section will load, from file listings alone.

    Nothing is decoded (damaged files count too) and TensorFlow is not imported:
    for checks before a run, such as `workbench validate --plan`. None for TFDS,
    whose classes are known only once the dataset is prepared.
    """
    if data.source == "tfds":
        return None
    if data.source == "synthetic":
        return dict.fromkeys(glyph_names(_glyph_range(data)), data.samples)
    folder = ImageFolder.open(data.path)
    return folder.counts(select_classes(folder, data.include))


def load_image_splits(data, seed: int) -> ImageSplits:
    """Build the pipelines of a recipe's `data` section."""
    if data.source == "tfds":
        return _tfds_splits(data, seed)
    classes = _in_memory_source(data, seed)
    train, valid, held = split_per_class(classes.labels, data.validation, data.test, data.per_class, seed, classes.names)
    splits = [_rotated(classes.images[indices], classes.labels[indices], data.rotations) for indices in (train, valid, held)]
    (train_images, train_labels), (valid_images, valid_labels), (held_images, held_labels) = splits
    train_pipeline, shuffle_epoch = _shuffled_pipeline(train_images, train_labels, data.batch_size, seed)
    return ImageSplits(
        train=train_pipeline,
        validation=_pipeline(valid_images, valid_labels, data.batch_size) if len(valid) else None,
        test=_pipeline(held_images, held_labels, data.batch_size) if len(held) else None,
        class_names=rotated_names(classes.names, data.rotations),
        image_shape=tuple(classes.images.shape[1:]),
        counts={"train": len(train_labels), "validation": len(valid_labels), "test": len(held_labels)},
        shuffle_epoch=shuffle_epoch,
        class_groups=None if classes.groups is None else [group for group in classes.groups for _ in data.rotations],
    )


def _rotated(images: np.ndarray, labels: np.ndarray, rotations: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each rotation of a class as a new class, numbered as `rotated_names` names them: class i at rotations[j] is i * R + j.

    Rotating after the split keeps every rotation of an image in that image's split.
    """
    if list(rotations) == [0]:
        return images, labels
    turned = rotate_classes([images], rotations)  # one "class" of these images per rotation
    count = len(rotations)
    return np.concatenate(turned), np.concatenate([labels * count + index for index in range(count)]).astype(labels.dtype)


def _in_memory_source(data, seed: int) -> ClassImages:
    """The classes of a folder or synthetic `data` section, drawn on colour textures where its style asks."""
    image_size = tuple(data.image_size)
    channels = 1 if data.style == "textured" else data.channels  # textures are blended under grayscale strokes
    if data.source == "synthetic":
        classes = glyph_classes(_glyph_range(data), data.samples, image_size, channels, seed)
    else:
        folder = ImageFolder.open(data.path)
        classes = folder_classes(folder, select_classes(folder, data.include), image_size, channels)
    return textured_target(classes, seed) if data.style == "textured" else classes


def _glyph_range(data) -> range:
    return range(data.first_class, data.first_class + data.classes)


def _pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return _split_by_batch(dataset.batch(batch_size).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def _shuffled_pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """Batches in an order that depends only on (seed, the epoch variable's value)."""
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="shuffle_epoch")
    images, labels = tf.constant(images), tf.constant(labels)

    def permutation(_):
        order = tf.range(tf.shape(labels, out_type=tf.int64)[0])
        return tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), epoch.read_value()]))

    dataset = tf.data.Dataset.from_tensors(0).map(permutation).unbatch().batch(batch_size)
    dataset = dataset.map(lambda index: (tf.gather(images, index), tf.gather(labels, index)), num_parallel_calls=tf.data.AUTOTUNE)
    return _split_by_batch(dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)), epoch


def _split_by_batch(dataset):
    """Under `multi_worker`, every worker reads the same batches and keeps its share of each.

    tf.data's DATA sharding: the global batch stays the recipe's `batch_size`
    and the order the one of a single device, whatever the source's files.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _to_float(images, labels):
    import tensorflow as tf

    return tf.cast(images, tf.float32), labels


def _tfds_splits(data, seed: int) -> ImageSplits:
    """TFDS splits, read into memory through the same conversion as folders, and batched as they are."""
    image_size = tuple(data.image_size)
    splits = {
        role: tfds_classes(data.name, split, data.data_dir, image_size, data.channels)
        for role, split in (("train", data.splits.train), ("validation", data.splits.validation), ("test", data.splits.test))
        if split is not None
    }
    train = splits["train"]
    present = [name for name, count in train.counts().items() if count]
    require_classes(present, f"name={data.name!r}, split={data.splits.train!r}")
    train_pipeline, shuffle_epoch = _shuffled_pipeline(train.images, train.labels, data.batch_size, seed)
    held = {role: _pipeline(classes.images, classes.labels, data.batch_size) for role, classes in splits.items() if role != "train"}
    return ImageSplits(
        train=train_pipeline,
        validation=held.get("validation"),
        test=held.get("test"),
        class_names=list(train.names),
        image_shape=(*image_size, data.channels),
        counts={role: len(splits[role].labels) if role in splits else 0 for role in ("train", "validation", "test")},
        shuffle_epoch=shuffle_epoch,
    )
