"""Export size, parity and latency per format: the quickstart model and a MobileNetV2 classifier.

    python benchmarks/export_speed.py [QUICKSTART_RUN]

Without a run directory, trains `recipes/quickstart.yaml` first (about a minute of CPU,
its base included). The MobileNetV2 classifier is built here with random weights
(`weights: none`, 96x96 RGB, an untrained 5-class head) and checked on 100 random
images in class folders: its accuracy is chance, but parity and speed are what a
trained one would show. Each model goes to SavedModel, ONNX and LiteRT in float32,
and to LiteRT float16 and int8; an export that fails parity is reported as refused.
Ends with one line `summary: name=value ...`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPORTS = (
    ("saved_model", None, ""),
    ("onnx", None, ".onnx"),
    ("litert", None, ".tflite"),
    ("litert", "float16", ".tflite"),
    ("litert", "int8", ".tflite"),
)
MOBILENET_CLASSES = 5
MOBILENET_IMAGES_PER_CLASS = 20
MOBILENET_SIZE = 96


def quickstart_run(folder: Path) -> Path:
    from workbench.recipe import load_recipe
    from workbench.runner import run_recipe

    recipe = ROOT / "recipes" / "quickstart.yaml"
    return Path(run_recipe(load_recipe(recipe), recipe, folder / "runs"))


def mobilenet_classifier(folder: Path) -> tuple[Path, Path]:
    """A MobileNetV2 classifier saved as a bare `.keras` file, and a folder of class folders to check it on."""
    import keras
    from PIL import Image

    keras.utils.set_random_seed(0)
    inputs = keras.Input((MOBILENET_SIZE, MOBILENET_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)  # MobileNetV2's own preprocessing, inside the model
    x = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(MOBILENET_SIZE, MOBILENET_SIZE, 3), pooling="avg")(x)
    outputs = keras.layers.Dense(MOBILENET_CLASSES, activation="softmax")(x)
    model_path = folder / "mobilenetv2.keras"
    keras.Model(inputs, outputs).save(model_path)
    classes = [f"class-{index}" for index in range(MOBILENET_CLASSES)]
    model_path.with_suffix(".classes.json").write_text(json.dumps(classes))
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / "data" / name).mkdir(parents=True)
        for index in range(MOBILENET_IMAGES_PER_CLASS):
            pixels = rng.integers(0, 256, size=(MOBILENET_SIZE, MOBILENET_SIZE, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "data" / name / f"{index}.png")
    return model_path, folder / "data"


def export_all(name: str, source: Path, data: Path | None, folder: Path) -> list[dict]:
    from workbench.errors import WorkbenchError
    from workbench.export.build import export_model

    rows = []
    for format, quantize, suffix in EXPORTS:
        label = format + (f"-{quantize}" if quantize else "")
        started = time.perf_counter()
        try:
            record = export_model(source, format, folder / f"{name}-{label}{suffix}", quantize=quantize, data=data)
        except WorkbenchError as error:
            rows.append({"model": name, "export": label, "refused": str(error)})
            continue
        rows.append({"model": name, "export": label, "record": record, "seconds": time.perf_counter() - started})
    return rows


def print_table(rows: list[dict]) -> None:
    print(
        "| model | export | bytes | max abs diff | top-1 agreement | accuracy keras / export | ms/image keras b1 / b32 | ms/image export b1 / b32 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "refused" in row:
            print(f"| {row['model']} | {row['export']} | refused: {row['refused']} | | | | | |")
            continue
        record = row["record"]
        parity, keras_ms, export_ms = record["parity"], record["latency_ms"]["keras"], record["latency_ms"]["export"]
        print(
            f"| {row['model']} | {row['export']} | {record['bytes']:,} | {parity['max_abs_diff']:.1e} | {parity['top1_agreement']:.1%} | "
            f"{parity['accuracy_keras']:.1%} / {parity['accuracy_export']:.1%} | {keras_ms['1']:.2f} / {keras_ms['32']:.3f} | "
            f"{export_ms['1']:.2f} / {export_ms['32']:.3f} |"
        )


def summary(rows: list[dict]) -> str:
    figures = []
    for row in rows:
        key = f"{row['model']}_{row['export'].replace('-', '_')}"
        if "refused" in row:
            figures.append(f"{key}_passed=0")
            continue
        record = row["record"]
        figures += [
            f"{key}_bytes={record['bytes']}",
            f"{key}_max_abs_diff={record['parity']['max_abs_diff']:.2e}",
            f"{key}_top1={record['parity']['top1_agreement']:.3f}",
            f"{key}_ms_b1={record['latency_ms']['export']['1']}",
            f"{key}_ms_b32={record['latency_ms']['export']['32']}",
            f"{key}_passed=1",
        ]
    return "summary: " + " ".join(figures)


def main(argv: list[str]) -> None:
    from workbench.quiet import import_tensorflow

    import_tensorflow()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        run = Path(argv[0]) if argv else quickstart_run(folder)
        model, data = mobilenet_classifier(folder)
        rows = export_all("quickstart", run, None, folder) + export_all("mobilenetv2", model, data, folder)
    print_table(rows)
    print(summary(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
