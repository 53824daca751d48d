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

from workbench.data.episodes import EpisodeSampler, rotate_classes, rotated_names, split_classes
from workbench.data.episodes_types import Episodes
from workbench.data.images import ImageFolder
from workbench.data.sinusoid import SinusoidTasks
from workbench.data.sources import folder_classes, glyph_classes, glyph_names, require_classes, tfds_classes
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
            names = rotated_names(names, tasks.rotations)
        samplers[name] = EpisodeSampler(
            images, tasks.ways, tasks.shots, tasks.queries, seed=seed * 3 + index, class_names=names, split=f"meta-{name}"
        )
    counts = {name: sampler.num_classes for name, sampler in samplers.items()}
    log.info("classes per split (rotations included): %s", counts)
    shape = (*tasks.image_size, tasks.channels)
    return TaskDistribution(samplers, shape, tasks.ways, "sparse_categorical_crossentropy", "accuracy", counts)


def listed_task_classes(tasks, seed: int) -> dict[str, dict[str, int]]:
    """Per split, the classes `build_tasks` samples from (rotations included) and their images, from listings alone.

    Nothing is decoded (damaged files count too) and TensorFlow is not imported:
    for checks before a run, such as `workbench validate --plan`. Empty for
    sources whose classes are known only once loaded (sinusoid, TFDS).
    """
    if tasks.source == "folder":
        listed = {name: folder.counts(classes) for name, (folder, classes) in _folder_splits(tasks, seed).items()}
    elif tasks.source == "synthetic":
        split = split_classes(glyph_names(range(tasks.classes)), None, tasks.validation, tasks.test, seed)
        listed = {name: dict.fromkeys(getattr(split, name), tasks.samples) for name in SPLITS}
    else:
        return {}
    rotated = {}
    for name, counts in listed.items():
        repeated = [count for count in counts.values() for _ in tasks.rotations]
        rotated[name] = dict(zip(rotated_names(list(counts), tasks.rotations), repeated, strict=True))
    return rotated


def _class_images(tasks, seed: int) -> dict[str, tuple[list[np.ndarray], list[str]]]:
    """Per split, one uint8 image array per class, and the class names."""
    image_size = tuple(tasks.image_size)
    if tasks.source == "folder":
        return {name: _folder_classes(folder, classes, tasks) for name, (folder, classes) in _folder_splits(tasks, seed).items()}
    if tasks.source == "synthetic":
        classes = glyph_classes(range(tasks.classes), tasks.samples, image_size, tasks.channels, seed)
        names = list(classes.names)
    else:
        classes = tfds_classes(tasks.name, tasks.split, tasks.data_dir, image_size, tasks.channels)
        names = [name for name, count in classes.counts().items() if count]
        require_classes(names, f"name={tasks.name!r}, split={tasks.split!r}")
    split = split_classes(names, None, tasks.validation, tasks.test, seed)
    return {name: (classes.images_of(getattr(split, name)), list(getattr(split, name))) for name in SPLITS}


def _folder_splits(tasks, seed: int) -> dict[str, tuple[ImageFolder, tuple[str, ...]]]:
    """Per split, the folder and the classes of it that the split takes; nothing decoded.

    Classes come from `tasks.path`; validation and test are fractions of it, or
    other folders. When validation and test name the same folder, its classes (by
    group) are split in half between them. Classes that the training folder also
    holds are left out of the other folders.
    """
    main = ImageFolder.open(tasks.path)
    require_classes(main.classes, f"path={tasks.path!r}")
    validation = tasks.validation if isinstance(tasks.validation, float) else 0.0
    test = tasks.test if isinstance(tasks.test, float) else 0.0
    split = split_classes(main.classes, main.groups, validation, test, seed)
    result = {name: (main, getattr(split, name)) for name in SPLITS if getattr(split, name)}
    others = {name: getattr(tasks, name) for name in ("validation", "test") if isinstance(getattr(tasks, name), str)}
    for path in set(others.values()):
        other = ImageFolder.open(path)
        # Archives can share classes (Omniglot's small1 and small2 both hold Greek and
        # Latin): a class meta-trained on must never be meta-tested.
        kept = [i for i, name in enumerate(other.classes) if name not in set(main.classes)]
        if len(kept) < len(other.classes):
            log.info("%s: left out %d classes that %s also holds", path, len(other.classes) - len(kept), tasks.path)
        classes = tuple(other.classes[i] for i in kept)
        groups = [other.groups[i] for i in kept]
        users = [name for name, named in others.items() if named == path]
        if len(users) == 2:  # validation and test share the folder: half its classes each
            halves = split_classes(classes, groups, 0.5, 0.0, seed)
            result["test"], result["validation"] = (other, halves.train), (other, halves.validation)
        else:
            result[users[0]] = (other, classes)
    for name in SPLITS:
        if name not in result:
            raise DataError(f"tasks.{name}: no classes left for meta-{name}; give a fraction > 0 or another folder")
    return result


def _folder_classes(folder: ImageFolder, classes: tuple[str, ...], tasks) -> tuple[list[np.ndarray], list[str]]:
    loaded = folder_classes(folder, classes, tuple(tasks.image_size), tasks.channels)
    return loaded.by_class(), list(loaded.names)
