"""`workbench export`: each format, run by its own runtime in a fresh process, gives the Keras model's probabilities."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from workbench import runs
from workbench.cli import main
from workbench.evaluation import Classifier
from workbench.export.build import export_model
from workbench.export.parity import FLOAT32_TOLERANCE, QUANTIZED_ACCURACY_DROP, compare
from workbench.export.record import record_path, summary
from workbench.export.source import PARITY_TASKS
from workbench.meta.runner import TEST_SEED
from workbench.meta.tasks import build_tasks
from workbench.recipe import load_recipe
from workbench.runner import run_recipe

SIZE = 16

TRANSFER = f"""\
kind: transfer
name: export-glyphs
seed: 3
data: {{source: synthetic, name: glyphs, classes: 4, samples: 16, validation: 0.25, test: 0.25, image_size: [{SIZE}, {SIZE}], channels: 1, batch_size: 16,
       augment: {{rotation: 0.05, flip: horizontal}}}}
base: {{source: builtin, name: conv4, weights: none}}
freeze: {{layers: none, batchnorm: train}}
schedule:
  - {{name: train, epochs: 2, learning_rate: 3.0e-3}}
"""

GLYPH_META = f"""\
kind: meta
algorithm: maml
seed: 5
tasks: {{source: synthetic, name: glyphs, classes: 16, samples: 4, ways: 2, shots: 1, queries: 1, image_size: [{SIZE}, {SIZE}], validation: 0.25, test: 0.25}}
model: {{builtin: conv4}}
inner: {{steps: 1, learning_rate: 0.1}}
outer: {{meta_batch_size: 2, iterations: 2}}
evaluation: {{tasks: 2, steps: [1], every: 2, validation_tasks: 2}}
"""

SINUSOID_META = """\
kind: meta
algorithm: maml
seed: 2
tasks: {source: sinusoid, shots: 5, queries: 10}
model: {builtin: mlp}
inner: {steps: 1, learning_rate: 0.01}
outer: {meta_batch_size: 2, iterations: 2}
evaluation: {tasks: 4, steps: [1], every: 2, validation_tasks: 2}
"""

SUFFIXES = {"saved_model": "", "onnx": ".onnx", "litert": ".tflite"}

# Each runtime as a user's own code would call it, with nothing from the workbench.
STANDALONE = """\
import sys, numpy as np
images = np.load(sys.argv[1]); out = {}
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
(name,) = signature.structured_input_signature[1]
out["saved_model"] = list(signature(**{name: tf.constant(images)}).values())[0].numpy()
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[3], providers=["CPUExecutionProvider"])
out["onnx"] = session.run(None, {session.get_inputs()[0].name: images})[0]
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[4])
index = interpreter.get_input_details()[0]["index"]
interpreter.resize_tensor_input(index, images.shape); interpreter.allocate_tensors()
interpreter.set_tensor(index, images); interpreter.invoke()
out["litert"] = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
np.savez(sys.argv[5], **out)
"""


def _run(folder, text):
    path = folder / "recipe.yaml"
    path.write_text(text)
    return run_recipe(load_recipe(path), path, folder / "runs")


def _export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def _export_every_format(source, folder, *options):
    """`source` in every format, float32: {format: (path, record)}."""
    found = {}
    for format, suffix in SUFFIXES.items():
        path = folder / f"model{suffix}"
        result = _export(source, "--format", format, "--output", path, *options)
        assert result.exit_code == 0, result.output
        found[format] = (path, json.loads(record_path(path).read_text()))
    return found


def _outputs_in_a_fresh_process(folder, inputs, exported):
    """What each exported file gives for `inputs`, run by its own runtime as a user's code would: {format: outputs}."""
    np.save(folder / "inputs.npy", inputs)
    paths = [exported[format][0] for format in SUFFIXES]
    process = subprocess.run(
        [sys.executable, "-c", STANDALONE, folder / "inputs.npy", *paths, folder / "out.npz"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    return dict(np.load(folder / "out.npz"))


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("transfer"), TRANSFER)


@pytest.fixture(scope="module")
def exported(transfer_run, tmp_path_factory):
    """The transfer run in every format, float32: {format: (path, record)}."""
    return _export_every_format(transfer_run, tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def meta_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("meta"), GLYPH_META)


def _held_out(run_dir):
    from workbench.evaluation import _recipe_examples

    images, labels, *_ = _recipe_examples(runs.Run(run_dir).load_recipe())
    return images.astype("float32"), labels


def test_every_format_gives_the_keras_probabilities_in_a_fresh_process(transfer_run, exported, tmp_path):
    images, labels = _held_out(transfer_run)
    expected = keras.models.load_model(transfer_run / runs.MODEL_FILE).predict(images, verbose=0)
    outputs = _outputs_in_a_fresh_process(tmp_path, images, exported)
    for format, tolerance in FLOAT32_TOLERANCE.items():
        np.testing.assert_allclose(outputs[format], expected, atol=tolerance, rtol=0, err_msg=format)
        parity = exported[format][1]["parity"]
        assert parity["passed"] and parity["max_abs_diff"] <= tolerance and parity["top1_agreement"] == 1.0
        assert parity["images"] == len(labels) and parity["data"] == "the run's test split"
        assert parity["accuracy_keras"] == pytest.approx(np.mean(expected.argmax(-1) == labels))


def test_export_json_records_input_classes_size_and_latency(transfer_run, exported):
    classes = json.loads((transfer_run / runs.CLASSES_FILE).read_text())
    for format, (path, record) in exported.items():
        assert record["format"] == format and record["quantize"] is None
        assert {"keras", "tensorflow"} <= set(record["versions"])
        assert record["input"]["shape"] == [None, SIZE, SIZE, 1] and record["input"]["dtype"] == "float32"
        assert record["input"]["name"]
        assert record["classes"] == classes
        assert record["output"]["softmax_appended"] is False  # a transfer classifier ends in softmax
        assert record["output"]["left_out"] == ["augment"]  # random ops that only act in training
        size = path.stat().st_size if path.is_file() else sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
        assert record["bytes"] == size > 0
        for runtime in ("keras", "export"):
            assert set(record["latency_ms"][runtime]) == {"1", "32"} and all(value > 0 for value in record["latency_ms"][runtime].values())
            assert set(record["throughput_per_s"][runtime]) == {"1", "32"}
    assert "onnxruntime" in exported["onnx"][1]["versions"] and "ai-edge-litert" in exported["litert"][1]["versions"]
    # Nothing but the exports and their records: no staging folders left behind.
    folder = exported["onnx"][0].parent
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        name for path, _ in exported.values() for name in (path.name, record_path(path).name)
    )


def test_cli_prints_the_figures_on_stderr_and_only_the_path_on_stdout(transfer_run, tmp_path):
    """As a user's shell sees it: TensorFlow's own lines ("Assets written to: ...") are not among the workbench's."""
    output = tmp_path / "model.tflite"
    command = [sys.executable, "-m", "workbench", "export", str(transfer_run), "--format", "litert", "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{output}\n"
    assert "top-1 agreement 100.0%" in result.stderr and "ms/image" in result.stderr
    assert "Assets written" not in result.stderr and "cuInit" not in result.stderr, result.stderr


def test_int8_litert_calibrates_on_training_images_and_is_smaller(transfer_run, exported, tmp_path):
    output = tmp_path / "model-int8.tflite"
    record = export_model(transfer_run, "litert", output, quantize="int8")
    assert record["calibration"] == {"data": "the run's training split", "images": 32}
    assert record["parity"]["tolerance"] == {"accuracy_drop": QUANTIZED_ACCURACY_DROP}
    assert record["parity"]["passed"] and record["parity"]["accuracy_drop"] <= QUANTIZED_ACCURACY_DROP
    assert output.stat().st_size * 3 < exported["litert"][0].stat().st_size


def test_parity_refuses_differences_above_tolerance():
    keras_probabilities = np.array([[0.7, 0.3], [0.4, 0.6]], "float32")
    labels = np.array([0, 1])
    close = compare(keras_probabilities, keras_probabilities + 5e-6, labels, "onnx", None)
    assert close["passed"]
    assert not compare(keras_probabilities, keras_probabilities + 5e-5, labels, "onnx", None)["passed"]
    assert compare(keras_probabilities, keras_probabilities + 5e-5, labels, "litert", None)["passed"]
    flipped = keras_probabilities[:, ::-1]
    quantized = compare(keras_probabilities, flipped, labels, "litert", "int8")
    assert quantized["top1_agreement"] == 0.0 and quantized["accuracy_drop"] == 1.0 and not quantized["passed"]


def _class_folders(folder, classes, per_class=3):
    for index, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for sample in range(per_class):
            pixels = np.random.default_rng(10 * index + sample).integers(0, 256, size=(SIZE, SIZE), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{sample}.png")
    return folder


def test_a_classifier_that_adapt_wrote_exports_with_data_to_every_format(meta_run, tmp_path):
    support = _class_folders(tmp_path / "support", ["cat", "dog"])
    adapted = tmp_path / "adapted.keras"
    result = CliRunner().invoke(main, ["adapt", str(meta_run), "--support", str(support), "--steps", "1", "--output", str(adapted)])
    assert result.exit_code == 0, result.output
    refused = _export(adapted, "--format", "onnx", "--output", tmp_path / "adapted.onnx")
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and "--data FOLDER" in refused.output
    exported = _export_every_format(adapted, tmp_path / "exports", "--data", support)
    images = np.stack([np.asarray(Image.open(file), "float32")[..., None] for file in sorted(support.rglob("*.png"))])
    expected = Classifier.load(adapted).probabilities(images)
    outputs = _outputs_in_a_fresh_process(tmp_path, images, exported)
    for format, tolerance in FLOAT32_TOLERANCE.items():
        np.testing.assert_allclose(outputs[format], expected, atol=tolerance, rtol=0, err_msg=format)
        record = exported[format][1]
        assert record["classes"] == ["cat", "dog"]
        assert record["parity"]["images"] == 6 and record["parity"]["passed"] and record["parity"]["top1_agreement"] == 1.0


def test_a_meta_run_exports_its_initialisation_checked_on_its_meta_test_queries(meta_run, tmp_path):
    exported = _export_every_format(meta_run, tmp_path / "exports")
    recipe = runs.Run(meta_run).load_recipe()
    (episodes,) = build_tasks(recipe.tasks, recipe.seed).samplers["test"].fixed_tasks(PARITY_TASKS, seed=TEST_SEED, chunk_size=PARITY_TASKS)
    queries = np.asarray(episodes.query_x, "float32").reshape(-1, SIZE, SIZE, 1)
    logits = keras.models.load_model(meta_run / runs.MODEL_FILE).predict(queries, verbose=0)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    outputs = _outputs_in_a_fresh_process(tmp_path, queries, exported)
    for format, tolerance in FLOAT32_TOLERANCE.items():
        np.testing.assert_allclose(outputs[format], expected, atol=tolerance, rtol=0, err_msg=format)
        record = exported[format][1]
        assert record["classes"] == ["way 0", "way 1"] and record["output"]["softmax_appended"] is True
        assert "before adaptation" in record["output"]["meaning"]
        assert record["parity"]["images"] == PARITY_TASKS * 2 and record["parity"]["top1_agreement"] == 1.0
        assert record["parity"]["passed"] and "meta-test" in record["parity"]["data"]
    for options, needed in ((["--quantize", "int8"], "adapted"), (["--data", tmp_path], "meta-test tasks")):
        result = _export(meta_run, "--format", "litert", "--output", tmp_path / "refused.tflite", *options)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and needed in result.output, result.output
    assert not (tmp_path / "refused.tflite").exists()


def test_a_sinusoid_meta_run_exports_a_regression_model(tmp_path):
    run_dir = _run(tmp_path, SINUSOID_META)
    exported = _export_every_format(run_dir, tmp_path / "exports")
    x = np.linspace(-5.0, 5.0, 50, dtype="float32")[:, None]
    expected = keras.models.load_model(run_dir / runs.MODEL_FILE).predict(x, verbose=0)
    outputs = _outputs_in_a_fresh_process(tmp_path, x, exported)
    for format, tolerance in FLOAT32_TOLERANCE.items():
        np.testing.assert_allclose(outputs[format], expected, atol=tolerance, rtol=0, err_msg=format)
        record = exported[format][1]
        assert record["input"]["shape"] == [None, 1] and record["output"]["softmax_appended"] is False
        assert record["classes"] == [] and record["parity"]["top1_agreement"] is None and record["parity"]["passed"]
        assert record["parity"]["images"] == PARITY_TASKS * 10  # ten queries per task
    printed = summary(exported["onnx"][1])
    assert "top-1" not in printed and "ms/input" in printed and "the predicted y of each x" in printed


def test_an_export_beyond_tolerance_is_refused_and_nothing_is_written(transfer_run, tmp_path, monkeypatch):
    # No file can be within a negative distance: the real model goes through the whole refusal path.
    monkeypatch.setitem(FLOAT32_TOLERANCE, "onnx", -1.0)
    output = tmp_path / "out" / "model.onnx"
    result = _export(transfer_run, "--format", "onnx", "--output", output)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "onnx: the export differs from the Keras model by up to" in result.output and "nothing was written" in result.output
    assert list((tmp_path / "out").iterdir()) == []


def _bare_model(path, layers):
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, x)
    model.save(path)
    path.with_suffix(".classes.json").write_text(json.dumps(["a", "b"]))
    return path


def test_a_model_with_logits_out_gets_a_softmax(tmp_path):
    model = _bare_model(tmp_path / "logits.keras", [keras.layers.Flatten(), keras.layers.Dense(2, name="logits")])
    data = _class_folders(tmp_path / "data", ["a", "b"])
    record = export_model(model, "saved_model", tmp_path / "logits", data=data)
    assert record["output"]["softmax_appended"] is True and record["parity"]["passed"]
    images = np.stack([np.asarray(Image.open(file), "float32")[..., None] for file in sorted(data.rglob("*.png"))])
    import tensorflow as tf

    probabilities = list(tf.saved_model.load(str(tmp_path / "logits")).signatures["serving_default"](image=tf.constant(images)).values())[0]
    np.testing.assert_allclose(probabilities.numpy().sum(-1), 1.0, atol=1e-6)


def test_a_layer_a_format_cannot_hold_is_named_and_nothing_is_left(tmp_path):
    # Lanczos resizing is TensorFlow's ScaleAndTranslate op: neither a LiteRT builtin nor an ONNX op.
    resizing = keras.layers.Resizing(8, 8, interpolation="lanczos3", name="downsize")
    model = _bare_model(tmp_path / "lanczos.keras", [resizing, keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    data = _class_folders(tmp_path / "data", ["a", "b"])
    before = sorted(tmp_path.iterdir())
    for format, output in (("litert", tmp_path / "out" / "lanczos.tflite"), ("onnx", tmp_path / "lanczos.onnx")):
        result = _export(model, "--format", format, "--output", output, "--data", data)
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "ScaleAndTranslate" in result.output, result.output
        assert f"{format} cannot hold layer 'downsize' (Resizing)" in result.output
        assert not output.exists() and not record_path(output).exists()
    assert sorted(path for path in tmp_path.iterdir() if path.name != "out") == before
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_inputs_are_one_line_and_leave_nothing(transfer_run, exported, tmp_path, monkeypatch):
    existing, _ = exported["onnx"]
    before = existing.read_bytes()
    result = _export(transfer_run, "--format", "onnx", "--output", existing)
    assert result.exit_code == 2 and "already exists" in result.output and result.output.count("\n") == 1
    assert existing.read_bytes() == before

    failed = tmp_path / "failed-run"
    failed.mkdir()
    for name in (runs.MANIFEST_FILE, runs.MODEL_FILE, runs.RECIPE_FILE, runs.CLASSES_FILE):
        (failed / name).write_bytes((transfer_run / name).read_bytes())
    manifest = json.loads((failed / runs.MANIFEST_FILE).read_text())
    (failed / runs.MANIFEST_FILE).write_text(json.dumps({**manifest, "status": "failed"}))
    result = _export(failed, "--format", "onnx", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "the run is failed, not finished" in result.output

    (failed / runs.MODEL_FILE).unlink()
    (failed / runs.MANIFEST_FILE).write_text(json.dumps({**manifest, "status": "finished"}))
    result = _export(failed, "--format", "onnx", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 2 and f"no {runs.MODEL_FILE}" in result.output

    result = _export(transfer_run, "--format", "onnx", "--quantize", "int8", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "--quantize works with --format litert only" in result.output

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the package were not installed
    result = _export(transfer_run, "--format", "onnx", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "onnxruntime" in result.output and "pip install 'workbench[export]'" in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["failed-run"]
