"""Dataset meta-features (`dataset.json`): what a run's data looks like, to tell similar datasets apart.

After Feurer et al. 2015: counts (classes, examples per class), image size and
channels, pixel statistics per channel, and a landmarker, the accuracy of a
simple learner: the nearest class mean on a fixed random projection of the
pixels (seeded, so that the same images always give the same figure). A
transfer run describes its training split; a meta run its meta-training
classes, through fixed tasks of its own shape. They are computed from the
data the run already loaded and draw on no global random state, so writing
them changes nothing about the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from workbench import runs

PROJECTION_SEED = 0
PROJECTION_DIMENSIONS = 64
MOST_IMAGES = 2000  # pixel statistics and the landmarker read at most this many
LANDMARK_TASKS = 20  # meta runs: fixed meta-training tasks the landmarker is scored on


def record(run: runs.Run, features: Mapping) -> None:
    run.write_json(runs.DATASET_FILE, dict(features))


def record_image_splits(run: runs.Run, data, name: str) -> dict:
    """Describe a transfer run's training split (`ImageSplits`) in its dataset.json."""
    features = describe_image_splits(data, name)
    record(run, features)
    return features


def record_tasks(run: runs.Run, tasks, name: str) -> dict:
    """Describe a meta run's meta-training classes (`TaskDistribution`) in its dataset.json."""
    features = describe_tasks(tasks, name)
    record(run, features)
    return features


def dataset_name(section) -> str:
    """A short name for a recipe's `data` or `tasks` section: where the images come from."""
    if section.source == "synthetic":
        first = getattr(section, "first_class", 0)
        return f"{section.name}[{first}:{first + section.classes}]"
    if section.source == "folder":
        include = f" /{section.include}/" if getattr(section, "include", None) else ""
        return f"{section.path.rsplit('/', 1)[-1]}{include}"
    return section.source if section.source == "sinusoid" else f"{section.source}:{section.name}"


def describe_image_splits(data, name: str) -> dict:
    """Meta-features of the training pipeline of an `ImageSplits`, in one pass over it.

    Every label is counted; only the first `MOST_IMAGES` images (in the
    pipeline's seeded, shuffled order) are kept for the pixel statistics and
    the landmarker, so that a large dataset is never held in memory twice.
    """
    images, labels, kept = [], [], 0
    for batch_images, batch_labels in data.train.as_numpy_iterator():
        labels.append(np.asarray(batch_labels))
        if kept < MOST_IMAGES:
            images.append(np.asarray(batch_images[: MOST_IMAGES - kept], dtype=np.float32))
            kept += len(images[-1])
    labels = np.concatenate(labels)
    return describe_images(np.concatenate(images), labels, name)


def describe_images(images: np.ndarray, labels: np.ndarray, name: str) -> dict:
    """Meta-features of labelled images; `images` may be the first of them only (pixel values in [0, 255])."""
    classes, counts = np.unique(labels, return_counts=True)
    sampled = labels[: len(images)]
    return {
        "name": name,
        "classes": int(len(classes)),
        "examples_per_class": {"min": int(counts.min()), "mean": float(counts.mean()), "max": int(counts.max())},
        **_image_features(images),
        "landmarks": {"nearest_class_mean_accuracy": _nearest_class_mean(images, sampled)},
    }


def describe_tasks(tasks, name: str) -> dict:
    """Meta-features of a meta recipe's tasks: its meta-training classes, seen through fixed tasks of the recipe's shape."""
    if tasks.regression:
        return {"name": name, "classes": 0, "regression": True}
    sampler = tasks.samplers["train"]
    (episodes,) = list(sampler.fixed_tasks(LANDMARK_TASKS, seed=PROJECTION_SEED, chunk_size=LANDMARK_TASKS))
    images = np.concatenate([episodes.support_x, episodes.query_x], axis=1)
    accuracies = [
        _nearest_class_mean(sx, sy, qx, qy)
        for sx, sy, qx, qy in zip(episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y, strict=True)
    ]
    return {
        "name": name,
        "classes": int(sampler.num_classes),
        "examples_per_class": None,  # the sampler keeps them; tasks show only shots + queries of each
        "ways": int(sampler.ways),
        "shots": int(sampler.shots),
        **_image_features(images.reshape(-1, *images.shape[2:])),
        "landmarks": {"nearest_class_mean_accuracy": float(np.mean(accuracies)), "tasks": LANDMARK_TASKS},
    }


def _image_features(images: np.ndarray) -> dict:
    height, width, channels = images.shape[1:]
    pixels = images.reshape(-1, channels).astype(np.float64)
    return {
        "image_size": [int(height), int(width)],
        "channels": int(channels),
        "pixel_mean": [float(value) for value in pixels.mean(axis=0)],
        "pixel_std": [float(value) for value in pixels.std(axis=0)],
    }


def _embed(images: np.ndarray) -> np.ndarray:
    """A fixed random projection of the pixels, scaled to [0, 1]: the same for every dataset of this image shape."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
    projection = np.random.default_rng(PROJECTION_SEED).standard_normal((flat.shape[1], PROJECTION_DIMENSIONS)) / math.sqrt(flat.shape[1])
    return flat @ projection


def _nearest_class_mean(images, labels, query_images=None, query_labels=None) -> float:
    """Accuracy of the nearest class mean on the fixed projection: the means of half of each class, scored on the other half.

    With `query_images`, the means come from all of `images` and are scored on the queries.
    """
    if query_images is None:
        first_half = np.zeros(len(labels), dtype=bool)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            first_half[members[: max(1, len(members) // 2)]] = True
        if first_half.all():
            return float("nan")
        images, labels, query_images, query_labels = images[first_half], labels[first_half], images[~first_half], labels[~first_half]
    support, queries = _embed(images), _embed(query_images)
    classes = np.unique(labels)
    means = np.stack([support[labels == label].mean(axis=0) for label in classes])
    distances = ((queries[:, None, :] - means[None, :, :]) ** 2).sum(axis=-1)
    return float(np.mean(classes[distances.argmin(axis=1)] == query_labels))


def vector(features: Mapping) -> dict[str, float]:
    """The numeric meta-features that distances between datasets use (logs of counts, pixels in [0, 1])."""
    if features.get("regression") or not features.get("classes"):
        return {}
    found = {"log_classes": math.log(features["classes"])}
    per_class = features.get("examples_per_class")
    if per_class:
        found.update({f"log_examples_{key}": math.log(max(1.0, per_class[key])) for key in ("min", "mean", "max")})
    height, width = features["image_size"]
    found.update(log_pixels=math.log(height * width), channels=float(features["channels"]))
    found.update(pixel_mean=float(np.mean(features["pixel_mean"])) / 255.0, pixel_std=float(np.mean(features["pixel_std"])) / 255.0)
    landmark = features.get("landmarks", {}).get("nearest_class_mean_accuracy")
    if landmark is not None and math.isfinite(landmark):
        found["nearest_class_mean_accuracy"] = float(landmark)
    return found


def distances(target: Mapping[str, float], others: Iterable[Mapping[str, float]]) -> list[float]:
    """Standardised Euclidean distance (root mean square of z-score differences) from `target` to each of `others`.

    Each meta-feature is scaled by its spread over all the datasets compared;
    features that do not vary, or that a dataset lacks, are left out.
    """
    others = list(others)
    everyone = [target, *others]
    shared = [key for key in target if all(key in features for features in others)]
    spreads = {key: float(np.std([features[key] for features in everyone])) for key in shared}
    used = [key for key in shared if spreads[key] > 1e-12]
    if not used:
        return [0.0] * len(others)
    return [float(math.sqrt(np.mean([((target[key] - other[key]) / spreads[key]) ** 2 for key in used]))) for other in others]
