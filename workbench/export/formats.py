"""The export formats: which module writes and runs each, and what each needs installed."""

from __future__ import annotations

import importlib

from workbench.errors import ArgumentError, ModelError

FORMATS = ("saved_model", "onnx", "litert")
QUANTIZATIONS = ("float16", "int8")
QUANTIZABLE = ("litert",)  # the converter that can calibrate and quantize; the others export float32 only
EXTRA = "pip install 'workbench[export]'"

# Python modules each format's writer and runtime import.
_NEEDS = {
    "saved_model": ("tensorflow",),
    "onnx": ("tf2onnx", "onnx", "onnxruntime"),
    "litert": ("ai_edge_litert",),
}


def check_format(format: str, quantize: str | None) -> None:
    """Refuse an unknown format or quantization, and a format whose packages are missing."""
    if format not in FORMATS:
        raise ArgumentError(f"Expected a format in {FORMATS}. Received: format={format!r}")
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise ArgumentError(f"Expected a quantization in {QUANTIZATIONS}. Received: quantize={quantize!r}")
        if format not in QUANTIZABLE:
            raise ArgumentError(
                f"--quantize works with --format {' or '.join(QUANTIZABLE)} only; export {format} in float32. Received: format={format!r}"
            )
    missing = [name for name in _NEEDS[format] if not _importable(name)]
    if missing:
        raise ModelError(f"exporting {format} needs {', '.join(missing)}, which is not installed: {EXTRA}")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def module(format: str):
    """The module that writes and runs `format`: `write(model, path, quantize, calibration)` and `Runtime(path)`."""
    return importlib.import_module(f"workbench.export.{format}")
