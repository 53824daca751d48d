"""LiteRT: converted by TensorFlow's converter from a SavedModel, run by ai-edge-litert's interpreter.

Keras's own LiteRT export also allows TensorFlow ("flex") ops, which the
ai-edge-litert interpreter cannot run; converting with LiteRT's builtin ops
only makes the converter name the op that a phone could not run, at export time.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from workbench.errors import ModelError
from workbench.export.faults import describe

CALIBRATION_BATCH = 1  # the representative dataset gives one image at a time, as the converter expects


def write(model, path: Path, quantize: str | None, calibration: np.ndarray | None) -> None:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        model.export(folder, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            # int8 weights and activations, ranges from the calibration images; float32 in and
            # out, so that the file takes the same raw images as the others.
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in calibration.astype("float32"))
        try:
            flat = converter.convert()
        except Exception as error:  # tf.lite's ConverterError, or ValueError for a model it cannot read
            raise ModelError(_converter_failure(str(error), model)) from None
    path.write_bytes(flat)


def _converter_failure(message: str, model) -> str:
    unsupported = re.search(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)
    if unsupported:
        op = unsupported.group(1)
        located = re.search(r'fused\["' + op + r':", "([^"@]+)', message)
        return describe("litert", op, located.group(1) if located else op, model)
    first = next((line for line in message.splitlines() if "error" in line.lower()), message.splitlines()[0] if message else "")
    return f"litert: the converter failed ({first.strip()[:300]})"


class Runtime:
    """The exported file, loaded by ai-edge-litert's interpreter alone."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path))
        (spec,) = self._interpreter.get_input_details()
        self._input = spec["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = None
        shape = [int(d) if d >= 0 else None for d in spec["shape_signature"]]
        self.input = {"name": spec["name"], "shape": shape, "dtype": np.dtype(spec["dtype"]).name}

    def predict(self, images: np.ndarray) -> np.ndarray:
        if images.shape[0] != self._batch:  # the interpreter runs one batch size at a time
            self._interpreter.resize_tensor_input(self._input, images.shape)
            self._interpreter.allocate_tensors()
            self._batch = images.shape[0]
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()
