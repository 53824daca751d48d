"""Few-shot N-way K-shot classification episodes over any class-labelled image source.

The protocol, in order: split classes (never samples) into meta-train, meta-validation
and meta-test with `split_classes`; load each split's images; optionally turn every
class into rotated copies with `rotate_classes` (after splitting, so a rotated copy
never crosses splits); sample tasks with one `EpisodeSampler` per split.

No TensorFlow here: the data package wraps this into `tf.data`.
"""

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.data.episodes_types import Episodes, TaskStream
from workbench.data.images import check_positive_int
from workbench.errors import DataError

# Keeps the fixed evaluation tasks apart from the training stream of the same seed.
_FIXED_STREAM = 0x6669786564


@dataclass(frozen=True)
class ClassSplit:
    """Class names of each split, in their input order.

    `by_group` is False when groups were not given, or were too few to give every
    split one, and the classes themselves were split instead.
    """

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    by_group: bool


def split_classes(
    class_names: Sequence[str],
    groups: Sequence[str] | None = None,
    validation: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
) -> ClassSplit:
    """Splits classes into disjoint meta-train, meta-validation and meta-test sets.

    With `groups` (one per class, e.g. the Omniglot alphabet), whole groups go to one
    split, so no group appears in two splits; each split then takes the run of
    shuffled groups whose class count is closest to its fraction of all classes.
    When there are fewer groups than non-empty splits, classes are split instead.
    A non-zero fraction always gets at least one class (or group), and meta-train
    keeps at least one. Deterministic for a given seed.

    Raises:
        DataError: for bad fractions, duplicate class names, mismatched groups, or
            fewer classes than non-empty splits.
    """
    names = list(class_names)
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(f"Class names must be unique. Received: duplicated class_names={duplicates!r}")
    for name, fraction in (("validation", validation), ("test", test)):
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"`{name}` must be a fraction in [0, 1). Received: {name}={fraction!r}")
    if validation + test >= 1.0:
        raise DataError(
            "`validation` + `test` must leave some classes for meta-training (sum below 1). "
            f"Received: validation={validation!r}, test={test!r}"
        )
    needed = 1 + (validation > 0) + (test > 0)
    if len(names) < needed:
        raise DataError(
            f"Splitting classes for meta-train, validation and test needs at least {needed} classes. "
            f"Add classes or set the empty splits' fractions to 0. Received: {len(names)} classes"
        )
    if groups is not None and len(groups) != len(names):
        raise DataError(f"`groups` must give one group per class. Received: {len(groups)} groups for {len(names)} classes")

    by_group = groups is not None and len(set(groups)) >= needed
    keys = list(groups) if by_group else names
    units = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(units))
    units = [units[i] for i in order]
    counts = Counter(keys)
    sizes = [counts[unit] for unit in units]

    split_of: dict[str, str] = {}  # unit -> "test" or "validation"; the rest is "train"
    start = 0
    for split, fraction in (("test", test), ("validation", validation)):
        if fraction == 0:
            continue
        needed -= 1
        count = _closest_run(sizes[start : len(units) - needed], fraction * len(names))
        split_of.update((unit, split) for unit in units[start : start + count])
        start += count
    parts: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for name, key in zip(names, keys, strict=True):
        parts[split_of.get(key, "train")].append(name)
    return ClassSplit(tuple(parts["train"]), tuple(parts["validation"]), tuple(parts["test"]), by_group)


def _closest_run(sizes: list[int], target: float) -> int:
    """How many leading units (at least 1) have a total size closest to `target`."""
    totals = np.cumsum(sizes)
    return int(np.argmin(np.abs(totals - target))) + 1


def rotate_classes(images_by_class: Sequence[np.ndarray], rotations: Sequence[int] = (0, 90, 180, 270)) -> list[np.ndarray]:
    """Turns each class into one new class per rotation (degrees counter-clockwise).

    The result is class-major: class 0 at each rotation, then class 1, and so on, so
    new class `i * len(rotations) + j` is class `i` rotated by `rotations[j]`.

    Raises:
        DataError: for rotations that are not distinct multiples of 90 degrees, or
            quarter turns of non-square images.
    """
    turns = []
    for degrees in rotations:
        if isinstance(degrees, bool) or not isinstance(degrees, (int, np.integer)) or degrees % 90:
            raise DataError(f"Rotations must be multiples of 90 degrees. Received: rotations={list(rotations)!r}")
        turns.append(int(degrees) // 90 % 4)
    if not turns or len(set(turns)) != len(turns):
        raise DataError(
            f"Rotations must be a non-empty list of distinct angles, e.g. [0, 90, 180, 270]. Received: rotations={list(rotations)!r}"
        )
    if any(turn % 2 for turn in turns) and any(images.shape[1] != images.shape[2] for images in images_by_class):
        raise DataError(
            "Rotating by 90 or 270 degrees needs square images; set a square image_size. "
            f"Received: rotations={list(rotations)!r}, image shape={images_by_class[0].shape[1:]}"
        )
    return [np.rot90(images, turn, axes=(1, 2)) for images in images_by_class for turn in turns]


def rotated_names(names: Sequence[str], rotations: Sequence[int]) -> list[str]:
    """The names of `rotate_classes`' classes, in its order: `name@angle`, or the names themselves without rotations."""
    if list(rotations) == [0]:
        return list(names)
    return [f"{name}@{angle}" for name in names for angle in rotations]


def check_ways(classes: int, ways: int, split: str | None = None) -> None:
    """Refuses `ways`-way tasks over fewer than `ways` classes (those of `split`, for the message)."""
    if classes < ways:
        where = f"{split}: " if split else ""
        raise DataError(
            f"{where}{ways}-way tasks need at least {ways} classes, but there are {classes}. "
            f"Lower `ways` or add classes. Received: ways={ways}, classes={classes}"
        )


def check_class_sizes(counts: Mapping[str, int], shots: int, queries: int, split: str | None = None) -> None:
    """Refuses, by name, the first class of `counts` (images per class) with fewer than `shots + queries` images."""
    for name, count in counts.items():
        if count < shots + queries:
            where = f" ({split})" if split else ""
            raise DataError(
                f"Class {name!r} has {count} images{where}, but {shots}-shot tasks with {queries} queries need "
                f"shots + queries = {shots + queries} per class. Lower `shots` or `queries`, or drop the class. "
                f"Received: class={name!r}, images={count}, shots={shots}, queries={queries}"
            )


class EpisodeSampler(TaskStream):
    """Samples batches of N-way K-shot tasks from uint8 images grouped by class.

    Each task picks `ways` distinct classes in random order (the order gives labels
    0..ways-1, so a class's label changes from task to task) and, per class, `shots`
    support and `queries` query images, all distinct. Examples are grouped by label:
    `support_y` of every task is `[0]*shots + [1]*shots + ...`. Images are float32
    raw pixel values in [0, 255]: models hold their own scaling, as saved models
    take raw images.

    Args:
        images_by_class: one uint8 array `[n_i, H, W, C]` per class, all the same H, W, C.
        ways, shots, queries: classes per task, support and query examples per class.
        seed: seed of the stream of tasks that `sample` draws.
        class_names: names for error messages (default: class indices).
        split: the split's name for error messages, e.g. "meta-test".

    Raises:
        DataError: for fewer classes than `ways`, or a class with fewer than
            `shots + queries` images.
    """

    def __init__(
        self,
        images_by_class: Sequence[np.ndarray],
        ways: int,
        shots: int,
        queries: int,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
        split: str | None = None,
    ):
        ways = check_positive_int("ways", ways)
        shots = check_positive_int("shots", shots)
        queries = check_positive_int("queries", queries)
        names = [str(i) for i in range(len(images_by_class))] if class_names is None else list(class_names)
        if len(names) != len(images_by_class):
            raise DataError(f"`class_names` must name each class once. Received: {len(names)} names for {len(images_by_class)} classes")
        check_ways(len(images_by_class), ways, split)
        first = images_by_class[0]
        shape = first.shape[1:] if isinstance(first, np.ndarray) else None
        for name, images in zip(names, images_by_class, strict=True):
            if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
                raise DataError(
                    "Each class must be a uint8 array [count, height, width, channels], all with the image shape "
                    f"of the first class. Received: class {name!r} with "
                    f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}, first class {shape}"
                )
        check_class_sizes({name: len(images) for name, images in zip(names, images_by_class, strict=True)}, shots, queries, split)
        self._classes = list(images_by_class)
        self.class_names: tuple[str, ...] = tuple(names)
        self.ways, self.shots, self.queries = ways, shots, queries
        self.image_shape: tuple[int, ...] = tuple(shape)
        self._rng = np.random.default_rng(seed)

    @property
    def num_classes(self) -> int:
        return len(self._classes)

    def sample(self, batch_size: int) -> Episodes:
        """The next `batch_size` tasks of this sampler's stream."""
        return self._draw(self._rng, batch_size)

    def fixed_tasks(self, count: int, seed: int = 0, chunk_size: int = 100) -> Iterator[Episodes]:
        """Yields the same `count` tasks on every call, `chunk_size` tasks at a time.

        The tasks depend on `seed` only (not on the chunk size or on earlier calls to
        `sample`), which makes them a fixed evaluation set, e.g. 600 meta-test tasks.
        """
        count = check_positive_int("count", count)
        chunk_size = check_positive_int("chunk_size", chunk_size)
        rng = np.random.default_rng([_FIXED_STREAM, seed])
        # A generator inside, so that bad arguments fail at the call, not at the first task.
        return (self._draw(rng, min(chunk_size, count - start)) for start in range(0, count, chunk_size))

    def _draw(self, rng: np.random.Generator, batch_size: int) -> Episodes:
        batch_size = check_positive_int("batch_size", batch_size)
        ways, shots, queries = self.ways, self.shots, self.queries
        support_x = np.empty((batch_size, ways * shots, *self.image_shape), dtype=np.float32)
        query_x = np.empty((batch_size, ways * queries, *self.image_shape), dtype=np.float32)
        for task in range(batch_size):
            for label, class_index in enumerate(rng.choice(len(self._classes), ways, replace=False)):
                images = self._classes[class_index]
                picked = images[rng.choice(len(images), shots + queries, replace=False)]
                support_x[task, label * shots : (label + 1) * shots] = picked[:shots]
                query_x[task, label * queries : (label + 1) * queries] = picked[shots:]
        labels = np.arange(ways, dtype=np.int32)
        return Episodes(
            support_x=support_x,
            support_y=np.tile(np.repeat(labels, shots), (batch_size, 1)),
            query_x=query_x,
            query_y=np.tile(np.repeat(labels, queries), (batch_size, 1)),
        )
