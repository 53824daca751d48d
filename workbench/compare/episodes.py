"""The fixed test episodes of a compare recipe, their digest, and their test classes.

Every entrant is scored on the very same episodes: they depend on the recipe's
`tasks`, `evaluation.tasks` and `seed` only. Classification sources give
`evaluation.tasks` N-way K-shot episodes drawn from all the classes of the
source (after `include`, and with rotations as new classes where asked) by
`EpisodeSampler.fixed_tasks`; sinusoid gives the sinusoid sampler's fixed
tasks; `lake_runs` gives the runs of Lake's file, as published, and has no
`evaluation.tasks` (the recipe refuses one).

The digest, a SHA-256 over the arrays' names, dtypes, shapes and bytes in a
fixed order, is the same for byte-identical episodes and is written beside the
scores, so that two comparisons can be told to be on the same episodes.

The test classes, given with the episodes, are the identities that the
leakage check compares with what entrants train on: a folder class is its
folder path (`Sanskrit/character01`), the same in any archive, so that archives
sharing alphabets share classes; a glyph class its name (`glyph-7`, the same
glyph in any recipe); a TFDS class is `dataset/label`. Lake's runs name no character (they come from Omniglot's
evaluation alphabets, which no background archive holds): their identities are
the run folders of the file (`run01/training`), which an entrant would hold only
by training on the file itself. Sinusoid tasks have no classes.

No TensorFlow here except reading a TFDS dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

import numpy as np

from workbench.data.datasets import select_classes
from workbench.data.episodes import EpisodeSampler, rotate_classes, rotated_names
from workbench.data.episodes_types import Episodes
from workbench.data.images import ImageFolder
from workbench.data.lake_runs import load_lake_runs
from workbench.data.sources import ClassImages, folder_classes, glyph_classes, require_classes, tfds_classes
from workbench.meta.tasks import SinusoidSampler

# The smallest decode of a TFDS dataset whose class names alone are needed.
_LISTING_IMAGE_SIZE = (8, 8)


def build_compare_episodes(recipe) -> tuple[Episodes, str, tuple[str, ...]]:
    """The test episodes of a compare recipe, all in memory; their digest; the identities of their test classes (unrotated).

    Raises:
        DataError: for a source that cannot give the episodes (too few classes for
            `ways`, a class with fewer than `shots + queries` images, a damaged file).
    """
    tasks, seed = recipe.tasks, recipe.seed
    if tasks.source == "lake_runs":
        episodes = load_lake_runs(tasks.path, tuple(tasks.image_size), tasks.channels)
        classes = ImageFolder.open(tasks.path).classes
    elif tasks.source == "sinusoid":
        sampler = SinusoidSampler(tasks.shots, tasks.queries, seed=seed)
        episodes, classes = _joined(sampler.fixed_tasks(recipe.evaluation.tasks, seed=seed)), ()
    else:
        loaded = _test_class_images(tasks, seed)
        images, names = loaded.by_class(), list(loaded.names)
        if tasks.rotations != [0]:
            images, names = rotate_classes(images, tasks.rotations), rotated_names(names, tasks.rotations)
        sampler = EpisodeSampler(images, tasks.ways, tasks.shots, tasks.queries, seed=seed, class_names=names, split="compare tasks")
        episodes, classes = _joined(sampler.fixed_tasks(recipe.evaluation.tasks, seed=seed)), loaded.names
    return episodes, episodes_digest(episodes), classes


def episodes_digest(episodes: Episodes) -> str:
    """SHA-256 (hex) of the episodes: each array's name, dtype, shape and bytes, in field order."""
    digest = hashlib.sha256()
    for field in dataclasses.fields(Episodes):
        array = np.ascontiguousarray(getattr(episodes, field.name))
        digest.update(f"{field.name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def tfds_class_ids(name: str, split: str, data_dir: str | None) -> tuple[str, ...]:
    """The identities (`dataset/label`) of the classes that one split of a TFDS dataset holds.

    TFDS label names are often plain numbers, so the dataset's name (without a
    version) keeps them apart from the labels of other datasets.
    """
    classes = tfds_classes(name, split, data_dir, _LISTING_IMAGE_SIZE, 1)
    return tuple(_tfds_ids(name, _present(classes)))


def _test_class_images(tasks, seed: int) -> ClassImages:
    """The images of every test class of an image source, class-major."""
    image_size = tuple(tasks.image_size)
    if tasks.source == "folder":
        folder = ImageFolder.open(tasks.path)
        return folder_classes(folder, select_classes(folder, tasks.include), image_size, tasks.channels)
    if tasks.source == "synthetic":
        return glyph_classes(_glyph_range(tasks), tasks.samples, image_size, tasks.channels, seed)
    classes = tfds_classes(tasks.name, tasks.split, tasks.data_dir, image_size, tasks.channels)
    present = _present(classes)
    require_classes(present, f"name={tasks.name!r}, split={tasks.split!r}")
    return ClassImages.from_classes(classes.images_of(present), _tfds_ids(tasks.name, present))


def _present(classes: ClassImages) -> list[str]:
    """The classes that hold images: a TFDS split lists every class of its dataset."""
    return [name for name, count in classes.counts().items() if count]


def _tfds_ids(dataset: str, labels: Iterable[str]) -> list[str]:
    return [f"{dataset.split(':')[0]}/{label}" for label in labels]


def _glyph_range(tasks) -> range:
    return range(tasks.first_class, tasks.first_class + tasks.classes)


def _joined(chunks: Iterable[Episodes]) -> Episodes:
    """One `Episodes` of all the chunks' tasks, in order."""
    chunks = list(chunks)
    return Episodes(*(np.concatenate([getattr(chunk, field.name) for chunk in chunks]) for field in dataclasses.fields(Episodes)))
