"""`PATH.export.json`: what was exported, for which inputs and classes, and the proof that it matches the Keras model."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

RECORD_SUFFIX = ".export.json"
IMAGES_IN = "raw images as the Keras model takes them; preprocessing is inside"
VALUES_IN = "x values, one per row, as the Keras model takes them"
_PACKAGES = {
    "saved_model": ("tensorflow",),
    "onnx": ("tf2onnx", "onnx", "onnxruntime"),
    "litert": ("tensorflow", "ai-edge-litert"),
}


def record_path(output: Path) -> Path:
    return output.with_name(output.name + RECORD_SUFFIX)


def versions(format: str) -> dict[str, str]:
    found = {}
    for package in ("workbench", "keras", "tensorflow", *_PACKAGES[format]):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def artifact_bytes(path: Path) -> int:
    """The size of a file, or of every file in a folder (a SavedModel)."""
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def build(format: str, quantize: str | None, source: str, subject, runtime: dict, size: int, parity: dict, keras_speed: dict) -> dict:
    return {
        "format": format,
        "quantize": quantize,
        "source": source,
        "versions": versions(format),
        "input": {**runtime["input"], "meaning": VALUES_IN if subject.regression else IMAGES_IN},
        "output": {
            "meaning": subject.output_meaning,
            "softmax_appended": subject.softmax_appended,  # the Keras model ended in logits
            "left_out": subject.left_out,  # augmentation layers: identity at inference, random ops in the graph
        },
        "classes": subject.class_names,
        "bytes": size,
        "parity": {**parity, "data": subject.data},
        "calibration": {"data": subject.calibration_data, "images": len(subject.calibration)} if quantize == "int8" else None,
        "latency_ms": {"keras": keras_speed["latency_ms"], "export": runtime["latency_ms"]},
        "throughput_per_s": {"keras": keras_speed["throughput_per_s"], "export": runtime["throughput_per_s"]},
    }


def summary(record: dict) -> str:
    """What `workbench export` prints: size, parity and speed, runtime beside Keras."""
    parity = record["parity"]
    kind = record["format"] + (f" {record['quantize']}" if record["quantize"] else "")
    figures = f"max |diff| {parity['max_abs_diff']:.2e}"
    if parity["top1_agreement"] is not None:
        figures += (
            f", top-1 agreement {parity['top1_agreement']:.1%}, "
            f"accuracy {parity['accuracy_keras']:.1%} keras / {parity['accuracy_export']:.1%} export"
        )
    unit = "input" if record["input"]["meaning"] == VALUES_IN else "image"
    lines = [
        f"{kind}: {record['bytes'] / 1e6:.2f} MB; parity on {parity['images']} {unit}s ({parity['data']}): {figures}",
        f"output: {record['output']['meaning']}",
        f"{'runtime':<8} {'batch':>5} {f'ms/{unit}':>9} {f'{unit}s/s':>9}",
    ]
    for name in ("keras", "export"):
        for batch, latency in record["latency_ms"][name].items():
            lines.append(f"{name:<8} {batch:>5} {latency:>9.3f} {record['throughput_per_s'][name][batch]:>9.1f}")
    if record["output"]["softmax_appended"]:
        lines.append("a softmax was appended: the Keras model outputs logits; the export outputs probabilities")
    return "\n".join(lines)
