"""ONNX: written by Keras's exporter (through tf2onnx), checked for ops ONNX lacks, run by onnxruntime."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np

from workbench.errors import ModelError
from workbench.export.faults import describe


def write(model, path: Path, quantize: str | None, calibration: np.ndarray | None) -> None:
    import tensorflow as tf

    # Given no signature, Keras's ONNX exporter refuses a model that was loaded but never called.
    (image,) = model.inputs
    signature = [tf.TensorSpec(image.shape, image.dtype, name=image.name)]
    try:
        with _quiet_converter():
            model.export(str(path), format="onnx", verbose=False, input_signature=signature)
    except Exception as error:  # tf2onnx raises ValueError, RuntimeError or its own errors
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"onnx: the converter failed ({reason})") from None
    _refuse_unknown_ops(path, model)


@contextlib.contextmanager
def _quiet_converter():
    """tf2onnx logs its progress at INFO level, and Keras's bridge to it warns about NumPy: neither is the user's concern."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _refuse_unknown_ops(path: Path, model) -> None:
    """tf2onnx copies ops it cannot convert into the file as they are; onnxruntime cannot run those."""
    import onnx

    graph = onnx.load(str(path)).graph
    for node in graph.node:
        if not onnx.defs.has(node.op_type, node.domain):
            raise ModelError(describe("onnx", node.op_type, node.name, model))


class Runtime:
    """The exported file, loaded by onnxruntime alone."""

    def __init__(self, path: Path):
        import onnxruntime

        self._session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (spec,) = self._session.get_inputs()
        self._name = spec.name
        dtype = spec.type.removeprefix("tensor(").removesuffix(")")
        self.input = {
            "name": spec.name,
            "shape": [d if isinstance(d, int) else None for d in spec.shape],
            "dtype": "float32" if dtype == "float" else dtype,
        }

    def predict(self, images: np.ndarray) -> np.ndarray:
        (outputs,) = self._session.run(None, {self._name: images})
        return outputs
