"""SavedModel: written by Keras's own exporter, run by TensorFlow through its serving signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIGNATURE = "serving_default"  # what TensorFlow Serving calls


def write(model, path: Path, quantize: str | None, calibration: np.ndarray | None) -> None:
    model.export(str(path), format="tf_saved_model", verbose=False)


class Runtime:
    """The exported folder, loaded by TensorFlow alone (no Keras, no workbench model code)."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self._tf = tf
        self._signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
        _, inputs = self._signature.structured_input_signature
        ((self._name, spec),) = inputs.items()
        self.input = {"name": self._name, "shape": list(spec.shape.as_list()), "dtype": spec.dtype.name}

    def predict(self, images: np.ndarray) -> np.ndarray:
        (outputs,) = self._signature(**{self._name: self._tf.constant(images)}).values()
        return outputs.numpy()
