"""A sweep's search space: recipe field paths with their distributions, and a trial's `--set` overrides.

Optuna's categorical distributions hold plain values only, so a choice that is
a mapping or a list (a layer selector such as `{last: 4}`) is held as its YAML
text and turned back into the value for the override and for sweep.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import yaml

SCALARS = (type(None), bool, int, float, str)


def yaml_text(value: Any) -> str:
    """`value` as one line of YAML, as `--set` reads it (floats keep every digit)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def assignment(path: str, value: Any) -> str:
    """The `--set` text that gives the field at `path` the value `value`."""
    return f"{path}={yaml_text(value)}"


def encode(value: Any) -> Any:
    """A choice as Optuna holds it: plain values as they are, mappings and lists as their YAML text."""
    return value if isinstance(value, SCALARS) else yaml_text(value)


def decode(entry, param: Any) -> Any:
    """The recipe value of Optuna's `param` for a space entry."""
    if entry.distribution != "choice":
        return param
    return next((choice for choice in entry.choice if encode(choice) == param), param)


def candidates(entry) -> list[tuple[str, Any]]:
    """The values of an entry that bound what it can give, to check against the tuned recipe: both ends, or every choice."""
    if entry.distribution == "choice":
        return [("choice", choice) for choice in entry.choice]
    low, high = getattr(entry, entry.distribution)
    return [("low bound", low), ("high bound", high)]


def distributions(space: Mapping[str, Any]) -> dict:
    """Optuna's distribution of each field path."""
    import optuna

    made = {}
    for path, entry in space.items():
        if entry.distribution == "uniform":
            made[path] = optuna.distributions.FloatDistribution(*entry.uniform)
        elif entry.distribution == "log_uniform":
            made[path] = optuna.distributions.FloatDistribution(*entry.log_uniform, log=True)
        elif entry.distribution == "int":
            made[path] = optuna.distributions.IntDistribution(*entry.int)
        else:
            made[path] = optuna.distributions.CategoricalDistribution([encode(choice) for choice in entry.choice])
    return made


def recipe_values(space: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's parameters as the recipe values they stand for."""
    return {path: decode(space[path], params[path]) for path in space if path in params}


def overrides(space: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[str, ...]:
    """The `--set` overrides of a trial: one per field of the space, in the space's order."""
    return tuple(assignment(path, value) for path, value in recipe_values(space, params).items())


def fitting_params(space: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna parameters for the recipe `values` (another sweep's) that this space can give; the rest are left to the sampler."""
    return {path: encode(value) for path, value in values.items() if path in space and _within(space[path], value)}


def _within(entry, value: Any) -> bool:
    if entry.distribution == "choice":
        return encode(value) in [encode(choice) for choice in entry.choice]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if entry.distribution == "int" and not isinstance(value, int):
        return False
    low, high = getattr(entry, entry.distribution)
    return low <= value <= high
