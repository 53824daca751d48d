"""Each keras.applications family's input preprocessing, as standard Keras layers.

The layers go inside the saved model, so that it takes raw RGB images with
values in [0, 255]. Only standard layers are used, so loading a saved model
needs nothing registered.
"""

from __future__ import annotations

import keras
import numpy as np

# The families of keras.applications by what their `preprocess_input` does.
_SCALE_TO_UNIT = (
    "MobileNet",
    "MobileNetV2",
    "InceptionV3",
    "InceptionResNetV2",
    "Xception",
    "NASNet",
    "ResNet50V2",
    "ResNet101V2",
    "ResNet152V2",
)
_CAFFE = ("VGG16", "VGG19", "ResNet50", "ResNet101", "ResNet152")
_TORCH = ("DenseNet",)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

PREFIX = "preprocess"


def _family_mode(name: str) -> str:
    if name in _CAFFE:
        return "caffe"
    if name.startswith(_TORCH):
        return "torch"
    if name in _SCALE_TO_UNIT or name.startswith("NASNet"):
        return "tf"
    # EfficientNet, EfficientNetV2, ConvNeXt and MobileNetV3 preprocess inside the model.
    return "none"


def preprocessing_layers(application: str) -> list[keras.layers.Layer]:
    """The layers that turn raw [0, 255] RGB images into what `application` expects."""
    mode = _family_mode(application)
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=f"{PREFIX}_scale")]
    if mode == "torch":
        mean = [255 * m for m in _TORCH_MEAN]
        variance = [(255 * s) ** 2 for s in _TORCH_STD]
        return [keras.layers.Normalization(mean=mean, variance=variance, name=f"{PREFIX}_normalize")]
    if mode == "caffe":
        # RGB -> BGR and mean subtraction in one fixed 1x1 convolution.
        swap = np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)
        layer = keras.layers.Conv2D(3, 1, name=f"{PREFIX}_bgr", trainable=False)
        layer.build((None, None, None, 3))
        layer.set_weights([swap, -np.asarray(_CAFFE_MEAN_BGR, "float32")])
        return [layer]
    return []


def scale_to_unit(name: str = f"{PREFIX}_unit") -> keras.layers.Layer:
    """Raw [0, 255] pixels to [0, 1], for the built-in nets."""
    return keras.layers.Rescaling(1 / 255.0, name=name)


def is_preprocessing(layer: keras.layers.Layer) -> bool:
    return layer.name.startswith(PREFIX)
