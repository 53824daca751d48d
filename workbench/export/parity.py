"""Parity: is the exported model the Keras model? Outputs compared on the same held-out inputs.

Classifiers are compared by probabilities, top-1 agreement and accuracy;
regression models (a sinusoid meta run's initialisation) by their values alone.
"""

from __future__ import annotations

import numpy as np

# Largest absolute difference of any probability, float32 exports. LiteRT fuses and
# reorders more than TensorFlow and onnxruntime do.
FLOAT32_TOLERANCE = {"saved_model": 1e-5, "onnx": 1e-5, "litert": 1e-4}
# Quantized exports cannot match probabilities; they may cost at most this much accuracy.
QUANTIZED_ACCURACY_DROP = 0.01


def compare(
    keras: np.ndarray,
    exported: np.ndarray,
    labels: np.ndarray,
    format: str,
    quantize: str | None,
    regression: bool = False,
    primary: slice | None = None,
) -> dict:
    """The parity record of export.json: figures, the tolerance applied, and whether it passed.

    `primary` selects the outputs that top-1 and accuracy read (the first head's, of a model with several); default all.
    """
    record = {"images": len(labels), "max_abs_diff": float(np.max(np.abs(keras - exported)))}
    if regression:
        record.update(top1_agreement=None, accuracy_keras=None, accuracy_export=None)
    else:
        primary = primary or slice(None)
        keras_top1, export_top1 = keras[:, primary].argmax(-1), exported[:, primary].argmax(-1)
        record.update(
            top1_agreement=float(np.mean(keras_top1 == export_top1)),
            accuracy_keras=float(np.mean(keras_top1 == labels)),
            accuracy_export=float(np.mean(export_top1 == labels)),
        )
    if quantize is None:
        record["tolerance"] = {"max_abs_diff": FLOAT32_TOLERANCE[format]}
        record["passed"] = record["max_abs_diff"] <= FLOAT32_TOLERANCE[format]
    else:
        drop = record["accuracy_keras"] - record["accuracy_export"]
        record["tolerance"] = {"accuracy_drop": QUANTIZED_ACCURACY_DROP}
        record["accuracy_drop"] = drop
        record["passed"] = bool(drop <= QUANTIZED_ACCURACY_DROP + 1e-9)
    return record


def failure(format: str, quantize: str | None, parity: dict) -> str:
    """One line: why the export is refused."""
    if quantize is None:
        agreement = "" if parity["top1_agreement"] is None else f"; top-1 agreement {parity['top1_agreement']:.1%}"
        return (
            f"{format}: the export differs from the Keras model by up to {parity['max_abs_diff']:.2e} in an output "
            f"(tolerance {parity['tolerance']['max_abs_diff']:.0e}{agreement} on {parity['images']} inputs); "
            "nothing was written"
        )
    return (
        f"{format} {quantize}: accuracy {parity['accuracy_export']:.1%} against the Keras model's {parity['accuracy_keras']:.1%} "
        f"on {parity['images']} images, more than {QUANTIZED_ACCURACY_DROP:.0%} lost; nothing was written. "
        "Try --quantize float16, or no --quantize"
    )
