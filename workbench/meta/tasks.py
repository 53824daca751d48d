"""The task distribution of a meta recipe: meta-train, meta-validation and meta-test samplers.

Classification sources are split by class (by group, such as an Omniglot
alphabet, where the source has groups), never by sample, so no class is seen
in two splits. Rotations make new classes after the split.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np

from workbench.data.episodes import EpisodeSampler, rotate_classes, split_classes
from workbench.data.episodes_types import Episodes
from workbench.data.sinusoid import SinusoidTasks
from workbench.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


class SinusoidSampler:
    """Sinusoid tasks behind the interface of `EpisodeSampler`."""

    def __init__(self, shots: int, queries: int, seed: int):
        self._tasks = SinusoidTasks(shots, queries, seed=seed)

    def sample(self, batch_size: int) -> Episodes:
        return self._tasks.sample(batch_size)

    @property
    def rng_state(self) -> dict:
        return self._tasks.rng_state

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        self._tasks.rng_state = state

    def fixed_tasks(self, count: int, seed: int = 0, chunk_size: int = 100) -> Iterator[Episodes]:
        for index, start in enumerate(range(0, count, chunk_size)):
            yield self._tasks.sample(min(chunk_size, count - start), seed=[seed, index])


@dataclasses.dataclass
class TaskDistribution:
    """Samplers for the three splits and what a model for them needs."""

    samplers: dict[str, object]
    input_shape: tuple[int, ...]
    outputs: int
    loss: str
    metric: str
    classes: dict[str, int]

    @property
    def regression(self) -> bool:
        return self.metric == "mse"


def build_tasks(tasks, seed: int) -> TaskDistribution:
    """The samplers of a recipe's `tasks` section, deterministic from `seed`."""
    if tasks.source == "sinusoid":
        samplers = {name: SinusoidSampler(tasks.shots, tasks.queries, seed=[seed, index]) for index, name in enumerate(SPLITS)}
        return TaskDistribution(samplers, (1,), 1, "mse", "mse", {})
    by_split = _class_images(tasks, seed)
    samplers = {}
    for index, name in enumerate(SPLITS):
        images, names = by_split[name]
        if tasks.rotations != [0]:
            images = rotate_classes(images, tasks.rotations)
            names = [f"{n}@{angle}" for n in names for angle in tasks.rotations]
        samplers[name] = EpisodeSampler(images, tasks.ways, tasks.shots, tasks.queries, seed=seed * 3 + index, class_names=names)
    counts = {name: sampler.num_classes for name, sampler in samplers.items()}
    log.info("classes per split (rotations included): %s", counts)
    shape = (*tasks.image_size, tasks.channels)
    return TaskDistribution(samplers, shape, tasks.ways, "sparse_categorical_crossentropy", "accuracy", counts)


def _class_images(tasks, seed: int) -> dict[str, tuple[list[np.ndarray], list[str]]]:
    """Per split, one uint8 image array per class, and the class names."""
    if tasks.source == "folder":
        return _folder_classes(tasks, seed)
    if tasks.source == "synthetic":
        from workbench.data.glyphs import draw_glyphs

        images, labels = draw_glyphs(range(tasks.classes), tasks.samples, tuple(tasks.image_size), seed=seed)
        names = [f"glyph-{index}" for index in range(tasks.classes)]
        by_class = [images[labels == label] for label in range(tasks.classes)]
    else:
        by_class, names = _tfds_classes(tasks)
    _check_fractions(tasks)
    split = split_classes(names, None, tasks.validation, tasks.test, seed)
    index = {name: position for position, name in enumerate(names)}
    return {name: ([by_class[index[c]] for c in getattr(split, name)], list(getattr(split, name))) for name in SPLITS}


def _check_fractions(tasks) -> None:
    if isinstance(tasks.validation, str) or isinstance(tasks.test, str):
        raise DataError(
            f"tasks.validation and tasks.test can name other folders only with source: folder; give fractions for {tasks.source}"
        )


def _folder_classes(tasks, seed: int):
    """Classes of `tasks.path`; validation and test are fractions of it, or other folders.

    When validation and test name the same folder, its classes (by group) are
    split in half between them. Classes that the training folder also holds are
    left out of the other folders.
    """
    from workbench.data.images import ImageFolder

    def load(folder, classes):
        loaded = folder.load(classes, image_size=tuple(tasks.image_size), channels=tasks.channels)
        if loaded.stats.skipped:
            log.warning("skipped %d unreadable images in %s, e.g. %s", loaded.stats.skipped, folder.path, loaded.stats.skipped_files[0])
        return loaded.by_class(), list(loaded.class_names)

    main = ImageFolder.open(tasks.path)
    validation = tasks.validation if isinstance(tasks.validation, float) else 0.0
    test = tasks.test if isinstance(tasks.test, float) else 0.0
    split = split_classes(main.classes, main.groups, validation, test, seed)
    result = {name: load(main, getattr(split, name)) for name in SPLITS if getattr(split, name)}
    others = {name: getattr(tasks, name) for name in ("validation", "test") if isinstance(getattr(tasks, name), str)}
    for path in set(others.values()):
        other = ImageFolder.open(path)
        # Archives can share classes (Omniglot's small1 and small2 both hold Greek and
        # Latin): a class meta-trained on must never be meta-tested.
        kept = [i for i, name in enumerate(other.classes) if name not in set(main.classes)]
        if len(kept) < len(other.classes):
            log.info("%s: left out %d classes that %s also holds", path, len(other.classes) - len(kept), tasks.path)
        classes = [other.classes[i] for i in kept]
        groups = [other.groups[i] for i in kept]
        users = [name for name, named in others.items() if named == path]
        if len(users) == 2:  # validation and test share the folder: half its classes each
            halves = split_classes(classes, groups, 0.5, 0.0, seed)
            result["test"], result["validation"] = load(other, halves.train), load(other, halves.validation)
        else:
            result[users[0]] = load(other, classes)
    for name in SPLITS:
        if name not in result:
            raise DataError(f"tasks.{name}: no classes left for meta-{name}; give a fraction > 0 or another folder")
    return result


def _tfds_classes(tasks):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        dataset, info = tfds.load(tasks.name, split=tasks.split, as_supervised=True, with_info=True, data_dir=tasks.data_dir)
    except Exception as error:  # TFDS raises many kinds: unknown name, no network, bad data_dir
        raise DataError(f"tfds dataset {tasks.name!r} could not be loaded ({type(error).__name__}: {error})") from None
    height, width = tasks.image_size
    images: dict[int, list[np.ndarray]] = {}
    for image, label in tfds.as_numpy(dataset.map(lambda x, y: (tf.cast(tf.image.resize(x, (height, width)), tf.uint8), y))):
        if image.shape[-1] != tasks.channels:
            image = image.mean(-1, keepdims=True).astype(np.uint8) if tasks.channels == 1 else np.repeat(image, 3, -1)
        images.setdefault(int(label), []).append(image)
    names = info.features["label"].names
    labels = sorted(images)
    return [np.stack(images[label]) for label in labels], [names[label] for label in labels]
