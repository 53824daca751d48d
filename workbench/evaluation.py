"""`workbench evaluate` and `workbench predict` for classifiers that runs saved.

A run's model takes raw images; its class names are in `classes.json` beside
it. A bare `.keras` classifier (what `workbench adapt` writes) carries its class
names beside it, in `<model>.classes.json`. A meta run's model is an
initialisation to adapt, not a classifier: `predict` refuses it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np

from workbench import runs
from workbench.errors import ArgumentError, DataError, ModelError, RunError

log = logging.getLogger(__name__)

PREDICTION_FORMATS = ("text", "json", "csv")
PREDICTION_BATCH = 256  # images decoded and predicted at a time, so that a large folder fits in memory


class Classifier:
    """A saved classifier of images with its class names.

    `class_names` names every output: outputs that the names file leaves out
    (a head wider than the data's classes) are `class N`. A model with several
    named heads has `heads`: each head's label names (and `class_names` are the
    first head's).
    """

    def __init__(self, model, class_names: list[str] | dict[str, list[str]]):
        self.model = model
        self.image_shape = tuple(model.input_shape[1:])
        if isinstance(class_names, dict):
            self.heads = {name: list(names) for name, names in class_names.items()}
            self.class_names = next(iter(self.heads.values()))
            return
        self.heads = None
        outputs = model.output_shape[-1]
        self.class_names = list(class_names) + [f"class {index}" for index in range(len(class_names), outputs)]

    @classmethod
    def load(cls, path: Path) -> Classifier:
        """From a run directory, a run's `model.keras`, or a bare `.keras` file."""
        from workbench.models.bases import load_model

        path = Path(path)
        run = _run_of(path)
        if run is not None:
            _refuse_meta_run(run)
            model_path, names_path = run.file(runs.MODEL_FILE), run.file(runs.CLASSES_FILE)
            if not model_path.is_file():
                raise RunError(f"{run.path}: no {runs.MODEL_FILE}; the run has not finished (see its {runs.MANIFEST_FILE})")
        else:
            model_path, names_path = path, path.with_suffix(".classes.json")
        model = load_model(model_path)
        if len(model.input_shape) != 4:
            raise ModelError(
                f"{model_path}: takes inputs of shape {tuple(model.input_shape[1:])}, not images; "
                "predict needs a classifier of (height, width, channels) images"
            )
        if isinstance(model.output, dict):
            return cls(model, _read_head_names(names_path, model))
        return cls(model, _read_class_names(names_path, model.output_shape[-1]))

    def probabilities(self, images: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """Class probabilities of `images`; with several heads, each head's, by name."""
        if self.heads is not None:
            outputs = self.model.predict(images.astype("float32"), verbose=0)
            return {name: np.asarray(outputs[name]) for name in self.heads}
        outputs = np.asarray(self.model.predict(images.astype("float32"), verbose=0))
        if np.any(outputs < 0) or not np.allclose(outputs.sum(-1), 1, atol=1e-3):
            outputs = _softmax(outputs)  # a model with logits out, e.g. one that meta-learning adapted
        return outputs


def _run_of(path: Path) -> runs.Run | None:
    """The run that `path` (a run directory, or the `model.keras` in one) belongs to; None for a bare model file."""
    if path.is_dir():
        return runs.Run.open(path)
    if path.name == runs.MODEL_FILE and (path.parent / runs.MANIFEST_FILE).is_file():
        return runs.Run(path.parent)
    return None


def _read_class_names(path: Path, outputs: int) -> list[str]:
    """The class names in `path` (none when it is missing), at most one per output."""
    if not path.is_file():
        return []
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: unreadable class names ({error}); expected a JSON list of names") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ModelError(f"{path}: expected a JSON list of class names. Received: {str(names)[:80]}")
    if len(names) > outputs:
        raise ModelError(f"{path}: names {len(names)} classes but the model has {outputs} outputs; it belongs to another model")
    return names


def _read_head_names(path: Path, model) -> dict[str, list[str]]:
    """Each head's label names from `path` (a JSON object of lists), checked against the model's named outputs."""
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: unreadable label names ({error}); a model with several heads needs them beside it") from None
    outputs = {name: tensor.shape[-1] for name, tensor in model.output.items()}
    if not isinstance(names, dict) or set(names) != set(outputs):
        raise ModelError(f"{path}: expected the label names of the heads {sorted(outputs)}. Received: {str(names)[:80]}")
    for head, labels in names.items():
        if not isinstance(labels, list) or len(labels) != outputs[head] or not all(isinstance(label, str) for label in labels):
            raise ModelError(f"{path}: head {head}: expected a list of {outputs[head]} label names. Received: {str(labels)[:80]}")
    return {head: names[head] for head in outputs}


def _refuse_meta_run(run: runs.Run) -> None:
    if run.manifest.get("kind") != "meta":
        return
    recipe = run.load_recipe()
    if recipe.tasks.source == "sinusoid":
        raise RunError(
            f"{run.path}: this meta run learned to regress sinusoids; predict classifies images. "
            f"Its meta-test figures come from `workbench evaluate {run.path}`"
        )
    raise RunError(
        f"{run.path}: a meta run saves an initialisation to adapt, not a classifier of your classes. "
        f"Adapt it first: `workbench adapt {run.path} --support FOLDER -o MODEL.keras`, then `workbench predict MODEL.keras IMAGE...`"
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def image_files(paths: list[Path]) -> list[tuple[Path, bool]]:
    """Each path, with each folder replaced by the image files in it and below, sorted.

    Returns `(file, named)` pairs: `named` is False for files found in a folder,
    which `predict` skips with a warning when they cannot be decoded.
    """
    from workbench.data.images import IMAGE_EXTENSIONS

    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append((path, True))
            continue
        found = sorted(
            file
            for file in path.rglob("*")
            if file.suffix.lower() in IMAGE_EXTENSIONS
            and file.is_file()
            and not any(part.startswith(".") for part in file.relative_to(path).parts)
        )
        if not found:
            raise DataError(f"{path}: no image files in this folder or below; expected {', '.join(sorted(IMAGE_EXTENSIONS))} files")
        files.extend((file, False) for file in found)
    return files


def predict(model_path: Path, image_paths: list[Path], top_k: int = 3) -> list[tuple[str, list[tuple[str, float]]]]:
    """Top-k class names and probabilities for each image file, or each image in a folder.

    `top_k` above the number of classes gives every class.
    """
    from workbench.data.images import load_image

    classifier = Classifier.load(model_path)
    height, width, channels = classifier.image_shape
    readable = []
    for path, named in image_files(image_paths):
        try:
            readable.append((path, load_image(path, (height, width), channels)))
        except DataError as error:
            if named:
                raise
            log.warning("skipped %s: %s", path, error)
    if not readable:
        raise DataError(f"no readable image among {', '.join(map(str, image_paths))}")
    results = []
    for start in range(0, len(readable), PREDICTION_BATCH):
        batch = readable[start : start + PREDICTION_BATCH]
        probabilities = classifier.probabilities(np.stack([image for _, image in batch]))
        for position, (path, _) in enumerate(batch):
            if classifier.heads is None:
                results.append((str(path), _ranked(probabilities[position], classifier.class_names, top_k)))
            else:
                ranked = {head: _ranked(probabilities[head][position], names, top_k) for head, names in classifier.heads.items()}
                results.append((str(path), ranked))
    return results


def _ranked(row: np.ndarray, names: list[str], top_k: int) -> list[tuple[str, float]]:
    best = np.argsort(row)[::-1][: min(top_k, len(names))]
    return [(names[i], float(row[i])) for i in best]


def format_predictions(results: list[tuple[str, list | dict]], output_format: str = "text") -> str:
    """`predict`'s results as text (one line per image), JSON, or CSV (one row per image, head and rank).

    An image's predictions are a ranked list, or one per head (a dict) for a model with several heads.
    """
    if output_format == "json":
        listed = [{"image": image, "predictions": _json_predictions(predictions)} for image, predictions in results]
        return json.dumps(listed, indent=2)
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        several = bool(results) and isinstance(results[0][1], dict)
        writer.writerow(["image", *(["head"] if several else []), "rank", "class", "probability"])
        for image, predictions in results:
            for head, ranked in predictions.items() if several else [(None, predictions)]:
                for rank, (name, probability) in enumerate(ranked, start=1):
                    writer.writerow([image, *([head] if several else []), rank, name, f"{probability:.6f}"])
        return buffer.getvalue().rstrip("\n")
    if output_format == "text":
        return "\n".join(f"{image}: {_text_predictions(predictions)}" for image, predictions in results)
    raise ArgumentError(f"Expected a format in {PREDICTION_FORMATS}. Received: output_format={output_format!r}")


def _json_predictions(predictions: list | dict) -> list | dict:
    if isinstance(predictions, dict):
        return {head: _json_predictions(ranked) for head, ranked in predictions.items()}
    return [{"class": name, "probability": probability} for name, probability in predictions]


def _text_predictions(predictions: list | dict) -> str:
    if isinstance(predictions, dict):
        return "; ".join(f"{head}: {_text_predictions(ranked)}" for head, ranked in predictions.items())
    return ", ".join(f"{name} {probability:.3f}" for name, probability in predictions)


def classification_report(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Loss, accuracy, per-class precision and recall, and the confusion matrix."""
    count = len(class_names)
    predicted = probabilities.argmax(-1)
    confusion = np.zeros((count, count), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    picked = probabilities[np.arange(len(labels)), labels]
    per_class = []
    for index, name in enumerate(class_names):
        predicted_here = confusion[:, index].sum()
        actual_here = confusion[index].sum()
        per_class.append(
            {
                "class": name,
                "precision": float(confusion[index, index] / predicted_here) if predicted_here else None,
                "recall": float(confusion[index, index] / actual_here) if actual_here else None,
                "support": int(actual_here),
            }
        )
    return {
        "examples": len(labels),
        "loss": float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0)))),
        "accuracy": float(np.mean(predicted == labels)),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def evaluate_run(run_path: Path, data_path: Path | None = None) -> dict:
    """Evaluate a transfer run on its test split (or validation), or on a folder of images."""
    run = runs.Run.open(run_path)
    recipe = run.load_recipe()
    classifier = Classifier.load(run.path)
    if classifier.heads is not None:
        report = _evaluate_heads(recipe, classifier, data_path)
    else:
        if data_path is not None:
            images, labels, split = *_folder_examples(Path(data_path), classifier), str(data_path)
        else:
            images, labels, split, _ = _recipe_examples(recipe)
        report = {"data": split, **classification_report(classifier.probabilities(images), labels, classifier.class_names)}
    run.write_json(runs.EVALUATION_FILE, report)
    return report


def _evaluate_heads(recipe, classifier: Classifier, data_path: Path | None) -> dict:
    """A report per head, each over its own labels; the totals at the top are the primary (first) head's."""
    from workbench.data.head_labels import head_labels

    if data_path is not None:
        raise ArgumentError(
            "a model with several heads is evaluated on its recipe's test split, whose labels every head reads; leave out --data"
        )
    images, labels, split, splits = _recipe_examples(recipe)
    probabilities = classifier.probabilities(images)
    reports = {}
    for head in recipe.heads:
        found = head_labels(head, splits.class_names, splits.class_groups)
        reports[head.name] = classification_report(probabilities[head.name], found.of_class[labels], classifier.heads[head.name])
    primary = reports[recipe.heads[0].name]
    return {"data": split, "examples": primary["examples"], "loss": primary["loss"], "accuracy": primary["accuracy"], "heads": reports}


def _folder_examples(path: Path, classifier: Classifier):
    from workbench.data.images import ImageFolder

    height, width, channels = classifier.image_shape
    folder = ImageFolder.open(path)
    unknown = [name for name in folder.classes if name not in classifier.class_names]
    if unknown:
        raise DataError(
            f"{path}: classes the model does not know: {', '.join(unknown[:5])}; it knows {', '.join(classifier.class_names[:10])}"
        )
    loaded = folder.load(image_size=(height, width), channels=channels)
    labels = np.array([classifier.class_names.index(name) for name in loaded.class_names])[loaded.labels]
    return loaded.images, labels


def _recipe_examples(recipe):
    from workbench.data.datasets import load_image_splits

    splits = load_image_splits(recipe.data, recipe.seed)
    for name in ("test", "validation"):
        dataset = getattr(splits, name)
        if dataset is not None:
            images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset), strict=True)
            return np.concatenate(images), np.concatenate(labels), name, splits
    raise DataError("the recipe's data has no test or validation split; pass --data FOLDER")


def format_report(report: dict) -> str:
    """The report as a terminal table: totals, per-class figures, confusion matrix; each head's in turn where there are several."""
    if "heads" in report:
        return "\n\n".join(
            f"head {name}\n" + format_report({"data": report["data"], **figures}) for name, figures in report["heads"].items()
        )
    lines = [f"{report['data']}: {report['examples']} examples, loss {report['loss']:.4f}, accuracy {report['accuracy']:.4f}", ""]
    width = max(len(row["class"]) for row in report["per_class"])
    lines.append(f"{'class':<{width}}  precision  recall  support")
    for row in report["per_class"]:
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        lines.append(f"{row['class']:<{width}}  {precision:>9}  {recall:>6}  {row['support']:>7}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    lines += [" ".join(f"{cell:>4}" for cell in row) for row in report["confusion_matrix"]]
    return "\n".join(lines)


def plural(count: int, noun: str) -> str:
    """`1 step`, `2 steps`: a count with its noun."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_meta_result(metric: str, entry: dict) -> str:
    """One meta-test figure, e.g. `mse after 1 step: 0.5830 ± 0.0410 (600 tasks)`."""
    return f"{metric} after {plural(entry['steps'], 'step')}: {entry['mean']:.4f} ± {entry['ci95']:.4f} ({plural(entry['tasks'], 'task')})"
