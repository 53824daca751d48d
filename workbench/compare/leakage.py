"""The leakage check: no entrant of a comparison may have seen a test class.

A score on classes a model was trained on, or selected on, is no test. So an
entrant is refused when its training data holds a class of the compare's
test classes: for a transfer recipe, every class of its data (all splits);
for a meta recipe, every class of every split its tasks read (meta-train,
meta-validation and meta-test: picking the best checkpoint or reporting on a
class is a use of it). A rotated class is its unrotated class. The base
network of a recipe counts too: a `source: recipe` base is checked as its
recipe, a `source: run` base as its run's recipe; weights from a `.keras` file
or a model zoo come with no listing of their classes and are not checked.

Classes are compared by identity (`workbench.compare.episodes`): a folder class
by its folder path, so that Omniglot's small1 and small2, which both hold the
Greek and Latin alphabets, share those classes. Folder and synthetic classes
are listed without decoding an image; a TFDS split is read to find its classes.

The refusal is a `RecipeError` at the field of the recipe that names the
data: `FILE:LINE:COL: field.path: message`, naming the class and the entrant.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

from workbench.compare.episodes import tfds_class_ids
from workbench.data.datasets import listed_class_counts
from workbench.meta.tasks import listed_task_classes
from workbench.recipe.loader import load_recipe, load_resolved_recipe, recipe_problem
from workbench.runs import RECIPE_FILE

_READS = {"train": "meta-trains on", "validation": "meta-validates on", "test": "meta-tests on"}


def check_leakage(test_classes: Collection[str], entrant_name: str, recipe_path: str | Path, recipe) -> None:
    """Refuses an entrant whose recipe (or the recipe of its base) reads a class of `test_classes`.

    `recipe` is the entrant's recipe as loaded from `recipe_path` (for a finished
    run, its `recipe.yaml`).

    Raises:
        RecipeError: at the recipe field that names the data holding the class.
    """
    tested = set(test_classes)
    if not tested:
        return
    for path, field, verb, classes in _training_classes(Path(recipe_path), recipe, set()):
        leaked = next((name for name in classes if name in tested), None)
        if leaked is None:
            continue
        through = "" if path == Path(recipe_path) else f" through the base of {recipe_path}"
        raise recipe_problem(
            path,
            field,
            f"entrant {entrant_name!r} {verb} class {leaked!r}{through}, a test class of the comparison, so its score would "
            "be no test. Train and select it on other classes, or leave the class out of the compare's tasks (tasks.include). "
            f"Received: entrant={entrant_name!r}, recipe={str(recipe_path)!r}",
        )


def _training_classes(path: Path, recipe, seen: set[Path]) -> Iterator[tuple[Path, tuple, str, list[str]]]:
    """(recipe file, field naming the data, what the recipe does with them, class identities) for a recipe and its bases."""
    seen.add(path.resolve())
    if recipe.kind == "transfer":
        yield from _transfer_classes(path, recipe.data)
        base = recipe.base
    else:
        yield from _meta_classes(path, recipe.tasks, recipe.seed)
        base = recipe.model.base
    if base is None or base.source not in ("recipe", "run"):
        return
    base_path = Path(base.path) / RECIPE_FILE if base.source == "run" else Path(base.path)
    if base_path.resolve() in seen:
        return
    base_recipe = load_resolved_recipe(base_path) if base.source == "run" else load_recipe(base_path)
    yield from _training_classes(base_path, base_recipe, seen)


def _transfer_classes(path: Path, data) -> Iterator[tuple[Path, tuple, str, list[str]]]:
    if data.source == "tfds":
        for split in (data.splits.train, data.splits.validation, data.splits.test):
            if split is not None:
                yield path, ("data", "splits"), "trains on", list(tfds_class_ids(data.name, split, data.data_dir))
        return
    field = ("data", "path") if data.source == "folder" else ("data", "first_class")
    yield path, field, "trains on", list(listed_class_counts(data))


def _meta_classes(path: Path, tasks, seed: int) -> Iterator[tuple[Path, tuple, str, list[str]]]:
    if tasks.source == "sinusoid":
        return
    if tasks.source == "tfds":
        yield path, ("tasks", "split"), "meta-learns on", list(tfds_class_ids(tasks.name, tasks.split, tasks.data_dir))
        return
    # The splits do not depend on rotations (classes are split first), so listing them
    # unrotated gives each rotated class as the class it is a rotation of.
    by_split = listed_task_classes(tasks.model_copy(update={"rotations": [0]}), seed)
    for split, counts in by_split.items():
        yield path, _split_field(tasks, split), _READS[split], list(counts)


def _split_field(tasks, split: str) -> tuple[str, ...]:
    """The field that names the data of a meta split: another folder where one is named, else the source."""
    if tasks.source == "synthetic":
        return ("tasks", "classes")
    other = getattr(tasks, split, None)
    return ("tasks", split) if isinstance(other, str) else ("tasks", "path")
