"""Reading recipes: YAML with positions, `--set` overrides, one-line errors.

The YAML is composed into nodes (which keep their line and column) and turned
into plain Python by hand, so that every problem pydantic finds can be pointed
at `FILE:LINE:COL`. Aliases are expanded under a node budget, so an alias bomb
is rejected after a bounded amount of work and memory; only YAML's safe tags
are constructed.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import pydantic
import yaml

from workbench.errors import RecipeError
from workbench.recipe.schema import RECIPE_KINDS

MAX_BYTES = 1_000_000
MAX_NODES = 50_000

FieldPath = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, at one place."""

    origin: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.origin}:{self.line}:{self.column}" if self.line else self.origin
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclasses.dataclass
class Document:
    """Plain data from a recipe file, with where each value and key came from."""

    origin: str
    data: Any = None
    values: dict[FieldPath, tuple[str, int, int]] = dataclasses.field(default_factory=dict)
    keys: dict[FieldPath, tuple[str, int, int]] = dataclasses.field(default_factory=dict)

    def problem(self, path: FieldPath, message: str, *, at_key: bool = False) -> Problem:
        """A problem at `path`, placed at the nearest position known."""
        table = self.keys if at_key and path in self.keys else self.values
        for end in range(len(path), -1, -1):
            if path[:end] in table:
                origin, line, column = table[path[:end]]
                break
        else:
            origin, line, column = self.origin, 0, 0
        return Problem(origin, line, column, dotted(path), message)


def dotted(path: FieldPath) -> str:
    """`a.b.0.c`; a name with characters that would break the one-line message is quoted."""
    return ".".join(str(part) if str(part).isprintable() else repr(part) for part in path)


def read_document(path: str | Path) -> Document:
    """Read a YAML file into a `Document`, or raise `RecipeError` saying why not."""
    path = Path(path)
    document = Document(str(path))
    if not path.exists():
        raise RecipeError([Problem(str(path), 0, 0, "", "no such file")])
    if path.is_dir():
        raise RecipeError([Problem(str(path), 0, 0, "", "is a directory; expected a recipe .yaml file")])
    raw = path.read_bytes()
    if len(raw) > MAX_BYTES:
        raise RecipeError([Problem(str(path), 0, 0, "", f"file is {len(raw)} bytes; recipes are at most {MAX_BYTES}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise RecipeError([Problem(str(path), line, column, "", "not valid UTF-8 text; save the recipe as UTF-8")]) from None
    document.data = _parse(text, document, ())
    return document


def _parse(text: str, document: Document, at: FieldPath) -> Any:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as error:  # a character YAML does not allow, found on reading
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        raise RecipeError(
            [Problem(document.origin, line, column, "", f"YAML syntax: character {error.character!r} is not allowed")]
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return _construct(node, loader, document, at, [MAX_NODES])
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = " ".join(str(part) for part in (error.context, error.problem) if part)
        raise RecipeError([Problem(document.origin, mark.line + 1, mark.column + 1, "", f"YAML syntax: {message}")]) from None
    except yaml.YAMLError as error:
        raise RecipeError([Problem(document.origin, 0, 0, "", f"YAML syntax: {' '.join(str(error).split())}")]) from None
    except RecursionError:
        raise RecipeError([Problem(document.origin, 0, 0, "", "YAML nested too deeply")]) from None
    finally:
        loader.dispose()


def _construct(node: yaml.Node, loader: yaml.SafeLoader, document: Document, path: FieldPath, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise RecipeError(
            [
                document.problem(
                    path, f"more than {MAX_NODES} values once aliases are expanded; recipes never need that many (an alias bomb?)"
                )
            ]
        )
    mark = node.start_mark
    document.values[path] = (document.origin, mark.line + 1, mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_mark = key_node.start_mark
            where = (document.origin, key_mark.line + 1, key_mark.column + 1)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise RecipeError([Problem(*where, dotted(path), "YAML merge keys (<<) are not supported; write the fields out")])
            key = _construct(key_node, loader, document, path + ("<key>",), budget)
            if not isinstance(key, str):
                raise RecipeError([Problem(*where, dotted(path), f"keys must be names. Received: {key!r}")])
            if key in mapping:
                raise RecipeError([Problem(*where, dotted(path + (key,)), "duplicate key")])
            document.keys[path + (key,)] = where
            mapping[key] = _construct(value_node, loader, document, path + (key,), budget)
        document.values.pop(path + ("<key>",), None)
        return mapping
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loader, document, path + (index,), budget) for index, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as error:
        raise RecipeError([document.problem(path, f"unsupported YAML tag {node.tag}; only plain values are allowed")]) from error


def parse_override(assignment: str) -> tuple[FieldPath, Any, Document]:
    """Parse `a.b.c=value`; the value is read as YAML, like the same text in the file."""
    origin = f"--set {assignment}"
    document = Document(origin)
    name, sep, text = assignment.partition("=")
    path = tuple(part.strip() for part in name.split("."))
    if not sep or not all(path):
        raise RecipeError([Problem(origin, 0, 0, "", "expected --set field.path=value, e.g. --set data.batch_size=64")])
    value = _parse(text, document, path) if text.strip() else None
    document.values = {field_path: (origin, 0, 0) for field_path in document.values}
    return path, value, document


def apply_override(document: Document, assignment: str) -> None:
    """Set one `--set` value in the document, remembering where it came from."""
    path, value, override = parse_override(assignment)
    if not isinstance(document.data, dict):
        return
    target = document.data
    for depth, part in enumerate(path[:-1]):
        current = target.get(part)
        if isinstance(current, list) and depth + 1 < len(path):
            raise RecipeError([override.problem(path, "--set cannot index into lists; set the whole list, e.g. --set a.b=[1,2]")])
        if not isinstance(current, dict):
            current = target[part] = {}
        target = current
    target[path[-1]] = value
    stale = [key for key in document.values if key[: len(path)] == path]
    for key in stale:
        del document.values[key]
    document.values.update(override.values)
    document.keys[path] = (override.origin, 0, 0)


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()):
    """Load, override and validate a recipe file. Raises `RecipeError`."""
    document = read_document(path)
    for assignment in overrides:
        apply_override(document, assignment)
    context = {"base_dir": Path(path).resolve().parent, "default_name": Path(path).stem}
    return validate_document(document, context)


def validate_document(document: Document, context: dict[str, Any]):
    data = document.data
    if data is None:
        raise RecipeError([Problem(document.origin, 1, 1, "", "recipe is empty; expected a mapping with kind: transfer or kind: meta")])
    if not isinstance(data, dict):
        raise RecipeError(
            [document.problem((), f"the top level must be a mapping with kind: transfer or kind: meta. Received: a {type(data).__name__}")]
        )
    kind = data.get("kind")
    if kind is None:
        raise RecipeError([document.problem(("kind",), "field required; expected transfer or meta")])
    model = RECIPE_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        near = difflib.get_close_matches(str(kind), RECIPE_KINDS, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise RecipeError([document.problem(("kind",), f"unknown kind {kind!r}{hint} Expected one of: {', '.join(RECIPE_KINDS)}")])
    try:
        return model.model_validate(data, context=context)
    except pydantic.ValidationError as error:
        raise RecipeError(_problems(error, document, model)) from None


def _problems(error: pydantic.ValidationError, document: Document, model: type[pydantic.BaseModel]) -> list[Problem]:
    problems: dict[FieldPath, Problem] = {}
    for detail in error.errors(include_url=False):
        path = _data_path(detail["loc"], document.data)
        if path in problems:
            continue  # a union reports once per member; the first is enough
        kind = detail["type"]
        message = detail["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == "extra_forbidden":
            known = _known_fields(model, path[:-1])
            near = difflib.get_close_matches(str(path[-1]), known, n=1)
            hint = f"did you mean {near[0]}?" if near else f"expected one of: {', '.join(known)}"
            problems[path] = document.problem(path, f"unknown field; {hint}", at_key=True)
        elif kind == "missing":
            problems[path] = document.problem(path, "field required")
        else:
            received = detail.get("input")
            if kind != "value_error" and isinstance(received, (str, int, float, bool, type(None))):
                message = f"{message}. Received: {received!r}"
            problems[path] = document.problem(path, message)
    return list(problems.values())


def _data_path(loc: tuple[Any, ...], data: Any) -> FieldPath:
    """Keep the parts of a pydantic error location that index into the data.

    Unions and validators add tags such as 'float' or 'function-after[...]'
    that are not fields; a missing field is kept as the last part.
    """
    path: list[Any] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and isinstance(part, str) and index == len(loc) - 1:
            path.append(part)
    return tuple(path)


def _known_fields(model: type[pydantic.BaseModel], path: FieldPath) -> list[str]:
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _section_type(field.annotation) if field else None
        if model is None:
            return []
    return list(model.model_fields)


def _section_type(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _section_type(argument)
        if found is not None:
            return found
    return None
