"""The labels of each head of a multi-task recipe, derived from the classes of its data.

A head labels every image through its class: `class` keeps the class itself,
`group` takes its group (the parent folder, e.g. an Omniglot character's
alphabet), and a labels file maps each class folder to a label of its own. So a
head's labels are a table from class index to head label, gathered over the
class labels that the data pipelines already carry.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.data.sources import MIN_CLASSES
from workbench.errors import DataError

__all__ = ["HeadLabels", "head_labels", "label_heads"]


@dataclasses.dataclass(frozen=True)
class HeadLabels:
    """A head's label names, in output order, and the label index of each class of the data."""

    names: list[str]
    of_class: np.ndarray  # int32 [classes]


def head_labels(head, class_names: Sequence[str], class_groups: Sequence[str] | None) -> HeadLabels:
    """The labels of `head` (a recipe's `heads` entry) for data with these classes and groups.

    Raises:
        DataError: when the data has no groups for `labels: group`, the labels file
            misses a class or cannot be read, or the head would have fewer than two labels.
    """
    if head.labels == "class":
        per_class = list(class_names)
    elif head.labels == "group":
        if class_groups is None:
            raise DataError(
                f"heads: {head.name}: labels: group takes each class folder's parent folder, but this data source has no "
                "groups; use a folder source whose classes sit in group folders (e.g. Alphabet/character01), or a labels file"
            )
        per_class = list(class_groups)
    else:
        per_class = _read_labels_file(Path(head.labels.file), class_names, head.name)
    names = sorted(set(per_class))
    if len(names) < MIN_CLASSES:
        raise DataError(f"heads: {head.name}: its labels give every image the same label ({names[0]!r}); a head needs at least two")
    index = {name: position for position, name in enumerate(names)}
    return HeadLabels(names, np.array([index[label] for label in per_class], dtype=np.int32))


def _read_labels_file(path: Path, class_names: Sequence[str], head: str) -> list[str]:
    """The label of each class (rotated classes, `name@90`, take their class's label) from a `class,label` CSV file."""
    try:
        with path.open(newline="") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the labels of head {head} ({error})") from None
    if not rows or [cell.strip() for cell in rows[0]] != ["class", "label"]:
        raise DataError(f"{path}:1: expected the header row class,label. Received: {','.join(rows[0]) if rows else 'an empty file'}")
    labels = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{line}: expected two values, class,label. Received: {','.join(row)!r}")
        labels[row[0].strip()] = row[1].strip()
    missing = [name for name in class_names if name.split("@")[0] not in labels]
    if missing:
        raise DataError(f"{path}: no label for class {missing[0]!r} ({len(missing)} classes have none); add a row {missing[0]},LABEL")
    return [labels[name.split("@")[0]] for name in class_names]


def label_heads(dataset, tables: dict[str, np.ndarray]):
    """`dataset` of (images, class labels) batches as (images, {head: that head's labels})."""
    import tensorflow as tf

    constants = {name: tf.constant(table) for name, table in tables.items()}
    return dataset.map(lambda images, labels: (images, {name: tf.gather(table, labels) for name, table in constants.items()}))
