"""`workbench evaluate` and `workbench predict` for classifiers that runs saved.

A run's model takes raw images; its class names are in `classes.json` and its
image size in the resolved recipe. A bare `.keras` classifier (what
`workbench adapt` writes) carries its class names beside it, in
`<model>.classes.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workbench import runs
from workbench.errors import DataError, RunError


class Classifier:
    """A saved classifier with its class names and expected image shape."""

    def __init__(self, model, class_names: list[str]):
        self.model = model
        self.class_names = class_names
        self.image_shape = tuple(model.input_shape[1:])

    @classmethod
    def load(cls, path: Path) -> Classifier:
        """From a run directory or a `.keras` file."""
        from workbench.models.bases import load_model

        path = Path(path)
        if path.is_dir():
            model_path, names_path = path / runs.MODEL_FILE, path / runs.CLASSES_FILE
            if not model_path.is_file():
                raise RunError(f"{path}: no {runs.MODEL_FILE}; the run has not finished (see its manifest.json)")
        else:
            model_path, names_path = path, path.with_suffix(".classes.json")
        model = load_model(model_path)
        classes = model.output_shape[-1]
        names = json.loads(names_path.read_text()) if names_path.is_file() else [f"class {i}" for i in range(classes)]
        return cls(model, names)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        outputs = np.asarray(self.model.predict(images.astype("float32"), verbose=0))
        if np.any(outputs < 0) or not np.allclose(outputs.sum(-1), 1, atol=1e-3):
            outputs = _softmax(outputs)  # a model with logits out, e.g. one that meta-learning adapted
        return outputs


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def predict(model_path: Path, image_paths: list[Path], top_k: int = 3) -> list[tuple[str, list[tuple[str, float]]]]:
    """Top-k class names and probabilities for each image file."""
    from workbench.data.images import load_image

    classifier = Classifier.load(model_path)
    height, width, channels = classifier.image_shape
    images = np.stack([load_image(path, (height, width), channels) for path in image_paths])
    probabilities = classifier.probabilities(images)
    results = []
    for path, row in zip(image_paths, probabilities, strict=True):
        best = np.argsort(row)[::-1][:top_k]
        results.append((str(path), [(classifier.class_names[i], float(row[i])) for i in best]))
    return results


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
    if data_path is not None:
        images, labels, split = *_folder_examples(Path(data_path), classifier), str(data_path)
    else:
        images, labels, split = _recipe_examples(recipe)
    report = {"data": split, **classification_report(classifier.probabilities(images), labels, classifier.class_names)}
    run.write_json("evaluation.json", report)
    return report


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
            return np.concatenate(images), np.concatenate(labels), name
    raise DataError("the recipe's data has no test or validation split; pass --data FOLDER")


def format_report(report: dict) -> str:
    """The report as a terminal table: totals, per-class figures, confusion matrix."""
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
