"""Where the files a recipe names are found.

A relative path is looked up beside the recipe first. Datasets that are not
there are looked up under the data root, `$WORKBENCH_DATA` (default
`~/.workbench/data`), the way TFDS uses `data_dir` and Keras `KERAS_HOME`.
Resolved paths are absolute, so that the resolved recipe saved in a run
directory means the same thing from anywhere.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DATA_ROOT_VARIABLE = "WORKBENCH_DATA"
DEFAULT_DATA_ROOT = "~/.workbench/data"
DOWNLOAD_HINTS = {
    "omniglot": "the Omniglot archives are public at https://github.com/brendenlake/omniglot (python/*.zip)",
}


def data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_VARIABLE) or DEFAULT_DATA_ROOT).expanduser().resolve()


def _base_dir(context: dict[str, Any] | None) -> Path:
    return Path((context or {}).get("base_dir") or Path.cwd())


def resolve_data(value: str, context: dict[str, Any] | None) -> str:
    """Resolve a dataset path: beside the recipe, then under the data root."""
    path = Path(value).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [_base_dir(context) / path, data_root() / path]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    hint = DOWNLOAD_HINTS.get(path.parts[0].lower() if path.parts else "", "")
    where = " nor ".join(str(c) for c in candidates)
    message = f"dataset not found at {where}"
    if not path.is_absolute():
        message += f"; put it under the data root or set ${DATA_ROOT_VARIABLE}"
    if hint:
        message += f" ({hint})"
    raise ValueError(f"{message}. Received: {value!r}")


def resolve_file(value: str, context: dict[str, Any] | None, what: str) -> str:
    """Resolve a path beside the recipe that must name an existing file."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = _base_dir(context) / path
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"{what} {path} {problem}. Received: {value!r}")
    return str(path.resolve())


def resolve_model_path(source: str, value: str, context: dict[str, Any] | None) -> str:
    """Resolve `base.path` for the file, run and recipe sources."""
    if source == "run":
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = _base_dir(context) / path
        if not path.is_dir():
            raise ValueError(f"run directory {path} does not exist. Received: {value!r}")
        return str(path.resolve())
    what = {"file": ".keras model file", "recipe": "recipe file"}[source]
    return resolve_file(value, context, what)


def unknown_name(what: str, name: Any, choices: Iterable[str]) -> str:
    """The message for a name that is not one of `choices`, with the nearest ones."""
    choices = list(choices)
    near = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    if name is None:
        return f"needs name: a {what}, one of {', '.join(choices)}"
    if near:
        return f"unknown {what} {name!r}; did you mean {' or '.join(near)}?"
    return f"unknown {what} {name!r}; expected one of {', '.join(choices)}"
