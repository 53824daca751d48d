"""Name the layer at fault when a converter names the TensorFlow op it cannot hold.

Converters report ops by their graph path, e.g.
`functional_1/downsize_1/resize/ScaleAndTranslate`: TensorFlow's name scopes,
which are the Keras layer names with a `_N` suffix where a name was taken.
"""

from __future__ import annotations

import re


def layer_names(model) -> dict[str, str]:
    """Every layer name in `model` and the models inside it, with its class name."""
    names = {}
    for layer in model.layers:
        names[layer.name] = type(layer).__name__
        if hasattr(layer, "layers"):
            names.update(layer_names(layer))
    return names


def layer_at(op_path: str, model) -> str | None:
    """`'name' (Class)` of the innermost layer on `op_path`, or None when no part of the path is a layer."""
    names = layer_names(model)
    found = None
    for part in op_path.split("/"):
        candidate = part
        while candidate:
            if candidate in names:
                found = f"'{candidate}' ({names[candidate]})"
                break
            stripped = re.sub(r"_\d+$", "", candidate)
            candidate = stripped if stripped != candidate else ""
    return found


def describe(format: str, op: str, op_path: str, model) -> str:
    """One line: which layer and op `format` cannot hold, and what to do."""
    layer = layer_at(op_path, model)
    where = f"layer {layer}" if layer else f"op at {op_path}"
    return f"{format} cannot hold {where}: its TensorFlow op {op} has no {format} equivalent; replace that layer, or export another format"
