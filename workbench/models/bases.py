"""Resolve a recipe's `base` into a backbone: raw images in, one feature vector out.

The backbone is a functional model named `backbone` whose first layers are the
base's own input preprocessing. Classifiers that the workbench saves contain
it by that name, so the head of a finished run is removed by taking it back.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import keras

from workbench.errors import ModelError
from workbench.models.preprocessing import preprocessing_layers, scale_to_unit
from workbench.runs import MODEL_FILE

BACKBONE = "backbone"
BUILTIN_BATCHNORM_MOMENTUM = 0.9


def build_backbone(base, image_shape: tuple[int, int, int], base_run: Path | None = None, weights: str | None = None) -> keras.Model:
    """The backbone of `base` for images of `image_shape`. Builds; never trains.

    Args:
        base: the recipe's `base` section.
        image_shape: (height, width, channels) of the raw images.
        base_run: for a `source: recipe` base, the finished run of that recipe
            (the runner finds or trains it before this run starts).
        weights: overrides `base.weights` ("none" builds the architecture only).
    """
    if base.source == "applications":
        weights = weights or base.weights
        network = _application(base.name, image_shape, weights, base.layer)
        return _wrap(preprocessing_layers(base.name), network, image_shape)
    if base.source == "builtin":
        from workbench.models.builtin import HEAD_LAYER, build_conv4

        network = build_conv4(image_shape, 2)
        network = keras.Model(network.inputs, network.get_layer(HEAD_LAYER).input, name=base.name)
        for layer in network.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                # Short trainings on small data: moving statistics that catch up within an epoch.
                layer.momentum = BUILTIN_BATCHNORM_MOMENTUM
        if base.layer:
            network = cut(network, base.layer)
        return _wrap([scale_to_unit()], network, image_shape)
    if base.source == "hub":
        return _hub_backbone(base.name, image_shape)
    if base.source == "recipe":
        if base_run is None:
            raise ModelError(f"base {base.path}: a recipe base needs its finished run; `workbench run` finds or trains it first")
        return backbone_of(load_model(Path(base_run) / MODEL_FILE), base.layer)
    if base.source == "run":
        return backbone_of(load_model(Path(base.path) / MODEL_FILE), base.layer)
    return backbone_of(load_model(Path(base.path)), base.layer)


def load_model(path: Path) -> keras.Model:
    """Load a `.keras` model safely: no Lambda layers, no unknown classes."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises ValueError, TypeError, OSError or zip errors here
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"{path}: cannot load this model safely ({reason})") from None


def _application(name: str, image_shape, weights: str, layer: str | None) -> keras.Model:
    constructor = getattr(keras.applications, name)
    from_file = weights not in ("imagenet", "none")
    try:
        network = constructor(
            include_top=False,
            weights="imagenet" if weights == "imagenet" else None,
            input_shape=tuple(image_shape),
            pooling=None if layer else "avg",
        )
    except ValueError as error:
        raise ModelError(f"keras.applications.{name} cannot be built for images of shape {tuple(image_shape)}: {error}") from None
    except Exception as error:  # keras.utils.get_file raises a bare Exception when it cannot download
        if "URL fetch failure" not in str(error):
            raise
        raise ModelError(_download_failure(name, str(error)), field=("weights",)) from None
    if from_file:
        try:
            network.load_weights(weights)
        except Exception as error:  # mismatched files raise ValueError or KeyError
            raise ModelError(
                f"{weights}: these weights do not fit keras.applications.{name}(include_top=False, input_shape={tuple(image_shape)}) ({error})"
            ) from None
    return cut(network, layer) if layer else network


def _download_failure(name: str, message: str) -> str:
    """What to do when Keras cannot download a base's ImageNet weights (offline, behind a firewall)."""
    url = re.search(r"https?://\S+?\.h5", message)
    file_name = url.group(0).rsplit("/", 1)[-1] if url else f"the {name} no-top weights file"
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return (
        f"imagenet: Keras could not download the ImageNet weights of {name} ({url.group(0) if url else 'no network'}); "
        f"put {file_name} in {cache} (Keras's cache), or give a weights file here, or none"
    )


def _hub_backbone(preset: str, image_shape) -> keras.Model:
    try:
        import keras_hub
    except ImportError:
        raise ModelError("base source hub needs keras-hub: pip install 'workbench[hub]'") from None
    network = keras_hub.models.Backbone.from_preset(preset)
    return _wrap([], network, image_shape)


def _wrap(preprocessing: list, network: keras.Model, image_shape) -> keras.Model:
    inputs = keras.Input(shape=tuple(image_shape), name="image")
    x = inputs
    for layer in preprocessing:
        x = layer(x)
    x = network(x)
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="features_pool")(x)
    elif len(x.shape) != 2:
        x = keras.layers.Flatten(name="features_flatten")(x)
    return keras.Model(inputs, x, name=BACKBONE)


def backbone_of(model: keras.Model, layer: str | None = None) -> keras.Model:
    """A backbone from a loaded model: its own backbone if it has one, cut at `layer` if asked."""
    names = [sub.name for sub in model.layers]
    if BACKBONE in names:
        model = model.get_layer(BACKBONE)
    if layer:
        model = cut(model, layer)
    return _wrap([], model, model.input_shape[1:]) if model.name != BACKBONE or layer else model


def cut(model: keras.Model, layer_name: str) -> keras.Model:
    """`model` up to the output of the layer named `layer_name`, searched in nested models too.

    A nested model that holds the layer is cut, and the chain of layers before it
    is rebuilt, so preprocessing in front of a nested base is kept.
    """
    names = [layer.name for layer in model.layers]
    if layer_name in names:
        return keras.Model(model.inputs, model.get_layer(layer_name).output, name=f"{model.name}_cut")
    for position, sub in enumerate(model.layers):
        if isinstance(sub, keras.Model) and layer_name in all_layer_names(sub):
            inputs = keras.Input(shape=model.input_shape[1:], name="image")
            x = inputs
            for before in model.layers[1:position]:
                x = before(x)
            return keras.Model(inputs, cut(sub, layer_name)(x), name=f"{model.name}_cut")
    near = difflib.get_close_matches(layer_name, all_layer_names(model), n=5, cutoff=0.4)
    raise ModelError(f"no layer named {layer_name!r} in {model.name}" + (f"; near matches: {', '.join(near)}" if near else ""))


def all_layer_names(model: keras.Model) -> list[str]:
    names = []
    for layer in model.layers:
        names.append(layer.name)
        if isinstance(layer, keras.Model):
            names.extend(all_layer_names(layer))
    return names
