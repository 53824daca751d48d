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
import re
import typing
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic.fields import FieldInfo

from workbench.errors import RecipeError
from workbench.recipe.schema import RECIPE_KINDS, meta_recipe_model

MAX_BYTES = 1_000_000
MAX_NODES = 50_000
_KIND_CHOICES = " | ".join(RECIPE_KINDS)

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
    """Parse `a.b.c=value`; list items as `a.0.c` or `a[0].c`; the value is read as YAML, like the same text in the file.

    Numbers in the path stay strings here: whether one indexes a list is known
    only against the recipe (`apply_override`).
    """
    origin = f"--set {assignment if assignment.isprintable() else repr(assignment)}"  # a line break would split the one-line error
    document = Document(origin)
    name, sep, text = assignment.partition("=")
    path = tuple(part.strip() for part in _LIST_INDEX.sub(r".\1", name).split("."))
    if not sep or not all(path) or any(bracket in part for part in path for bracket in "[]"):
        raise RecipeError(
            [Problem(origin, 0, 0, "", "expected --set field.path=value, e.g. --set data.batch_size=64 or --set schedule.0.epochs=20")]
        )
    value = _parse(text, document, path) if text.strip() else None
    document.values = {field_path: (origin, 0, 0) for field_path in document.values}
    document.keys = {field_path: (origin, 0, 0) for field_path in document.keys}
    document.values[path] = (origin, 0, 0)
    return path, value, document


_LIST_INDEX = re.compile(r"\[\s*(\d+)\s*\]")


def apply_override(document: Document, assignment: str) -> None:
    """Set one `--set` value in the document, remembering that it came from the override."""
    path, value, override = parse_override(assignment)
    if not isinstance(document.data, dict):
        return
    resolved: list[Any] = []
    target: Any = document.data
    for depth, part in enumerate(path):
        if isinstance(target, list):
            problem = None
            if not part.isdecimal():
                problem = f"{dotted(resolved)} is a list; index it by position, e.g. {dotted(resolved)}.0"
            elif int(part) >= len(target):
                problem = f"index {part} is out of range: {dotted(resolved)} has {len(target)} item(s), numbered from 0"
            if problem:
                raise RecipeError([Problem(override.origin, 0, 0, dotted((*resolved, part)), problem)])
            part = int(part)
        resolved.append(part)
        if depth == len(path) - 1:
            target[part] = value
        else:
            inner = target[part] if isinstance(target, list) else target.get(part)
            if not isinstance(inner, dict | list):
                inner = target[part] = {}
            target = inner
    field_path = tuple(resolved)
    for table, new in ((document.values, override.values), (document.keys, override.keys)):
        for stale in [key for key in table if key[: len(field_path)] == field_path]:
            del table[stale]
        table.update({field_path + key[len(path) :]: where for key, where in new.items()})
    document.keys[field_path] = (override.origin, 0, 0)


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()):
    """Load, override and validate a recipe file. Raises `RecipeError`."""
    document = read_document(path)
    for assignment in overrides:
        apply_override(document, assignment)
    context = {"base_dir": Path(path).resolve().parent, "default_name": Path(path).stem}
    return validate_document(document, context)


def load_resolved_recipe(path: str | Path):
    """A run's resolved recipe (`recipe.yaml` in its directory).

    Runs made before each source had fields of its own spell out fields that
    their source ignored (`path: null` under synthetic data); those never had
    an effect, so they are dropped instead of refused. Anything else wrong is
    a `RecipeError`, as for `load_recipe`.
    """
    document = read_document(path)
    context = {"base_dir": Path(path).resolve().parent, "default_name": Path(path).stem}
    model = _recipe_model(document)
    while True:
        try:
            return model.model_validate(document.data, context=context)
        except pydantic.ValidationError as error:
            ignored = [_data_path(detail["loc"], document.data) for detail in error.errors() if detail["type"] == "extra_forbidden"]
            if not any(_drop(document.data, field) for field in ignored):
                raise RecipeError(_problems(error, document, model)) from None


def _drop(data: Any, path: FieldPath) -> bool:
    """Remove the field at `path` from plain data; whether there was one."""
    for part in path[:-1]:
        data = data[part]
    return isinstance(data, dict) and data.pop(path[-1], _drop) is not _drop


def validate_document(document: Document, context: dict[str, Any]):
    model = _recipe_model(document)
    try:
        return model.model_validate(document.data, context=context)
    except pydantic.ValidationError as error:
        raise RecipeError(_problems(error, document, model)) from None


def _recipe_model(document: Document) -> type[pydantic.BaseModel]:
    """The recipe model that the document's `kind` names."""
    data = document.data
    if data is None:
        raise RecipeError([Problem(document.origin, 1, 1, "", f"recipe is empty; expected a mapping with kind: {_KIND_CHOICES}")])
    if not isinstance(data, dict):
        raise RecipeError(
            [document.problem((), f"the top level must be a mapping with kind: {_KIND_CHOICES}. Received: a {type(data).__name__}")]
        )
    kind = data.get("kind")
    if kind is None:
        raise RecipeError([document.problem(("kind",), f"field required; expected {_KIND_CHOICES}")])
    model = RECIPE_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        near = difflib.get_close_matches(str(kind), RECIPE_KINDS, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise RecipeError([document.problem(("kind",), f"unknown kind {kind!r}{hint} Expected one of: {', '.join(RECIPE_KINDS)}")])
    return meta_recipe_model(data) if kind == "meta" else model  # meta recipes: a model per family of algorithms


def _problems(error: pydantic.ValidationError, document: Document, model: type[pydantic.BaseModel]) -> list[Problem]:
    problems: dict[FieldPath, Problem] = {}
    for detail in error.errors(include_url=False):
        kind = detail["type"]
        path = _data_path(detail["loc"], document.data, missing=kind == "missing")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            path, message = _tag_problem(model, path, document.data)
            problems.setdefault(path, document.problem(path, message))
            continue
        if path in problems:
            continue  # a union reports once per member; the first is enough
        message = detail["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == "extra_forbidden":
            problems[path] = document.problem(path, _unknown_field(model, path, document.data), at_key=True)
        elif kind == "missing":
            field, _ = _field_at(model, path, document.data)
            problems[path] = document.problem(
                path, "field required" + (f": {_sentence_part(field.description)}" if field and field.description else "")
            )
        else:
            received = detail.get("input")
            if kind not in ("value_error", "model_kind") and isinstance(received, (str, int, float, bool, type(None))):
                message = f"{message}. Received: {received!r}"
            problems[path] = document.problem(path, message)
    return list(problems.values())


def _data_path(loc: tuple[Any, ...], data: Any, missing: bool = False) -> FieldPath:
    """Keep the parts of a pydantic error location that index into the data.

    Unions and validators add tags such as 'float', 'folder' or
    'function-after[...]' that are not fields; with `missing`, the last part
    (the missing field) is kept.
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
        elif missing and isinstance(node, dict) and isinstance(part, str) and index == len(loc) - 1:
            path.append(part)
    return tuple(path)


def _tag_problem(model: type[pydantic.BaseModel], path: FieldPath, data: Any) -> tuple[FieldPath, str]:
    """A missing or unknown `source` (the tag of a section with one model per source), with the choices."""
    field, node = _field_at(model, path, data)
    discriminator = _discriminator(field) if field is not None else None
    name = discriminator if isinstance(discriminator, str) else "source"
    choices = [tag for _, tags in _union_members(field) for tag in tags] if field is not None else []
    expected = f"expected one of: {', '.join(choices)}"
    tag = node.get(name) if isinstance(node, dict) else None
    if tag is None:
        return (*path, name), f"field required; {expected}"
    near = difflib.get_close_matches(str(tag), choices, n=1)
    hint = f"did you mean {near[0]}? " if near else ""
    return (*path, name), f"unknown {name} {tag!r}; {hint}{expected}"


def _unknown_field(model: type[pydantic.BaseModel], path: FieldPath, data: Any) -> str:
    """The message for an unknown field: the name meant, or the other source it belongs to, or the choices."""
    name = path[-1]
    field, node = _field_at(model, path[:-1], data) if path[:-1] else (None, data)
    section = _member(field, node) if field is not None else model
    known = list(section.model_fields) if section is not None else []
    expected = f"expected one of: {', '.join(known)}"
    members = _union_members(field) if field is not None else []
    if section is not None and len(members) > 1 and any(name in member.model_fields for member, _ in members):
        tag = next(tags[0] for member, tags in members if member is section)
        discriminator = _discriminator(field)
        where = f"{discriminator}: {tag}" if isinstance(discriminator, str) else f"a {tag}"
        return f"unknown field; {name} does not apply to {where}; {expected}"
    near = difflib.get_close_matches(str(name), known, n=1)
    return f"unknown field; did you mean {near[0]}?" if near else f"unknown field; {expected}"


def _field_at(model: type[pydantic.BaseModel], path: FieldPath, data: Any) -> tuple[FieldInfo | None, Any]:
    """The field at `path` and the data there; a union section is the member the data's tag picks."""
    field, node, section = None, data, model
    for part in path:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        field = section.model_fields.get(part) if section is not None else None
        if field is None:
            return None, None
        node = node.get(part) if isinstance(node, dict) else None
        section = _member(field, node)
    return field, node


def _member(field: FieldInfo, node: Any) -> type[pydantic.BaseModel] | None:
    """The section model that `field` holds for the data `node`: in a union, the one its tag picks."""
    members = _union_members(field)
    if len(members) == 1:
        return members[0][0]
    discriminator = _discriminator(field)
    if isinstance(discriminator, str):
        tag = node.get(discriminator) if isinstance(node, dict) else None
    elif isinstance(discriminator, pydantic.Discriminator):
        tag = discriminator.discriminator(node)
    else:
        return None
    return next((member for member, tags in members if tag in tags), None)


def _union_members(field: FieldInfo) -> list[tuple[type[pydantic.BaseModel], tuple[Any, ...]]]:
    """The section models a field can hold, each with the tags that choose it."""
    members = _models(field.annotation)
    discriminator = _discriminator(field)
    if isinstance(discriminator, str):
        return [(member, typing.get_args(member.model_fields[discriminator].annotation)) for member, _ in members]
    return members


def _discriminator(field: FieldInfo) -> str | pydantic.Discriminator | None:
    """A union's field name (such as `source`) or function that picks its member, if it has one."""
    if field.discriminator is not None:
        return field.discriminator
    return next((item for item in field.metadata if isinstance(item, pydantic.Discriminator)), None)


def _models(annotation: Any, tags: tuple[Any, ...] = ()) -> list[tuple[type[pydantic.BaseModel], tuple[Any, ...]]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [(annotation, tags)]
    arguments = typing.get_args(annotation)
    tags = tuple(argument.tag for argument in arguments if isinstance(argument, pydantic.Tag)) or tags
    return [found for argument in arguments for found in _models(argument, tags)]


def _sentence_part(description: str) -> str:
    """A field's description to follow a colon: first letter lowered unless it starts a name like TFDS."""
    text = description.rstrip(".")
    return text if text[:2].isupper() else text[:1].lower() + text[1:]


def recipe_problem(path: str | Path, field: FieldPath, message: str, overrides: typing.Sequence[str] = ()) -> RecipeError:
    """A `RecipeError` at `field` of the recipe at `path` (with its `--set` overrides), found after loading.

    For checks that need more than the recipe, such as the data and the model that
    `workbench validate --plan` looks at: their problems too read
    `FILE:LINE:COL: field.path: message`.
    """
    document = read_document(path)
    for assignment in overrides:
        apply_override(document, assignment)
    return RecipeError([document.problem(tuple(field), message)])
