"""Labelled image datasets for transfer recipes, as batched `tf.data` pipelines.

Images stay raw (float32 pixel values in [0, 255]): the model holds its own
preprocessing, so that a saved model takes raw images too. Folder and
synthetic sources are split per class by fraction, with the recipe's seed.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np

from workbench.errors import DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ImageSplits:
    """The train / validation / test pipelines of one recipe, and what they hold.

    `shuffle_epoch`, where set, is a variable that picks the training order: each
    value gives one fixed permutation, so a resumed run sees the same batches as an
    uninterrupted one. TFDS pipelines shuffle with a buffer instead and leave it None.
    """

    train: object
    validation: object | None
    test: object | None
    class_names: list[str]
    image_shape: tuple[int, int, int]
    counts: dict[str, int]
    shuffle_epoch: object | None = None


def split_per_class(labels: np.ndarray, validation: float, test: float, per_class: int | None, seed: int):
    """Indices of a stratified train / validation / test split of `labels`.

    Each class is shuffled with the seed; its first `test` fraction (at least one
    example when the fraction is > 0) goes to test, the next `validation` fraction
    to validation, and at most `per_class` of the rest to train.
    """
    rng = np.random.default_rng(seed)
    train, valid, held = [], [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, round(test * len(members))) if test else 0
        n_valid = max(1, round(validation * len(members))) if validation else 0
        if n_test + n_valid >= len(members):
            raise DataError(
                f"class {label} has {len(members)} examples, too few to hold out validation={validation} and test={test} "
                "and keep one to train on; lower the fractions or add examples"
            )
        held.extend(members[:n_test])
        valid.extend(members[n_test : n_test + n_valid])
        rest = members[n_test + n_valid :]
        train.extend(rest[:per_class] if per_class else rest)
    return np.sort(train), np.sort(valid), np.sort(held)


def load_image_splits(data, seed: int) -> ImageSplits:
    """Build the pipelines of a recipe's `data` section."""
    if data.source == "tfds":
        return _tfds_splits(data)
    images, labels, class_names = _in_memory_source(data, seed)
    train, valid, held = split_per_class(labels, data.validation, data.test, data.per_class, seed)
    train_pipeline, shuffle_epoch = _shuffled_pipeline(images[train], labels[train], data.batch_size, seed)
    return ImageSplits(
        train=train_pipeline,
        validation=_pipeline(images[valid], labels[valid], data.batch_size) if len(valid) else None,
        test=_pipeline(images[held], labels[held], data.batch_size) if len(held) else None,
        class_names=class_names,
        image_shape=tuple(images.shape[1:]),
        counts={"train": len(train), "validation": len(valid), "test": len(held)},
        shuffle_epoch=shuffle_epoch,
    )


def _in_memory_source(data, seed: int):
    if data.source == "synthetic":
        from workbench.data.glyphs import draw_glyphs

        classes = range(data.first_class, data.first_class + data.classes)
        images, labels = draw_glyphs(classes, data.samples, tuple(data.image_size), seed=seed)
        names = [f"glyph-{index}" for index in classes]
    else:
        from workbench.data.images import ImageFolder

        folder = ImageFolder.open(data.path)
        classes = folder.classes
        if data.include is not None:
            classes = [name for name in classes if re.search(data.include, name)]
            if len(classes) < 2:
                raise DataError(
                    f"include {data.include!r} keeps {len(classes)} of the {len(folder.classes)} classes of {data.path}; a classifier needs 2 or more"
                )
        loaded = folder.load(classes, image_size=tuple(data.image_size), channels=data.channels)
        if loaded.stats.skipped:
            log.warning("skipped %d unreadable image files in %s, e.g. %s", loaded.stats.skipped, data.path, loaded.stats.skipped_files[0])
        images, labels, names = loaded.images, loaded.labels, list(loaded.class_names)
    if images.shape[-1] != data.channels:
        images = np.repeat(images, data.channels, axis=-1)
    return images, labels, names


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


def _tfds_splits(data) -> ImageSplits:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(data.name, data_dir=data.data_dir)
        builder.download_and_prepare()
    except Exception as error:  # TFDS raises many kinds: unknown name, no network, bad data_dir
        raise DataError(f"tfds dataset {data.name!r} could not be prepared ({type(error).__name__}: {error})") from None
    label = builder.info.features["label"]
    height, width = data.image_size

    def prepare(image, label_value):
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width))
        if data.channels == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif data.channels == 1 and image.shape[-1] == 3:
            image = tf.image.rgb_to_grayscale(image)
        return image, label_value

    def split(name: str | None, shuffle: bool):
        if name is None:
            return None, 0
        dataset = builder.as_dataset(split=name, as_supervised=True).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).cache()
        count = int(dataset.reduce(0, lambda total, _: total + 1))
        if shuffle:
            dataset = dataset.shuffle(min(count, 10_000), reshuffle_each_iteration=True)
        return _split_by_batch(dataset.batch(data.batch_size).prefetch(tf.data.AUTOTUNE)), count

    (train, n_train), (valid, n_valid), (test, n_test) = (
        split(data.splits.train, True),
        split(data.splits.validation, False),
        split(data.splits.test, False),
    )
    return ImageSplits(
        train=train,
        validation=valid,
        test=test,
        class_names=list(label.names),
        image_shape=(height, width, data.channels),
        counts={"train": n_train, "validation": n_valid, "test": n_test},
    )
