"""Lake et al.'s one-shot classification test (Science 2015) as fixed episodes.

`all_runs.zip` holds 20 runs. Run `runNN` has `training/class01.png` ..
`class20.png` (one image of each of 20 characters of one alphabet),
`test/item01.png` .. `item20.png` (another drawing of each, shuffled) and
`class_labels.txt`, one line per test image: `runNN/test/itemNN.png
runNN/training/classMM.png`, its answer. The episodes are the file's, never
sampled: run `r` is task `r`, with the training images as the support set
(label `i` for `classNN` number `i + 1`) and the test images as the query set.

Images are decoded, converted and resized by `ImageFolder`, the one pixel
conversion of every source, and given as float32 raw pixel values in [0, 255],
as `EpisodeSampler` gives them.

No TensorFlow here.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from workbench.data.episodes_types import Episodes
from workbench.data.images import ImageFolder
from workbench.errors import ArgumentError, DataError

TRAINING = "training"
TEST = "test"
LABELS_FILE = "class_labels.txt"
_LAYOUT = (
    "Expected Lake's all_runs.zip: folders runNN, each with training/classNN.png, test/itemNN.png and class_labels.txt, "
    "the same number of images in every run"
)


def load_lake_runs(path: str | Path, image_size: tuple[int, int] = (28, 28), channels: int = 1) -> Episodes:
    """The runs of `all_runs.zip` (or its unpacked folder) as `Episodes`, one task per run, in run order.

    For Lake's file: `support_x` and `query_x` are float32 `[20, 20, H, W, C]`,
    `support_y` is `0..19` in every run and `query_y` the answer of each test
    image, from `class_labels.txt`.

    Raises:
        DataError: if the file does not exist, does not have the layout of
            Lake's runs, or holds an image that does not decode.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            "No such file: Lake's one-shot runs are all_runs.zip of the Omniglot repository (python/all_runs.zip). "
            f"Check the path, or put the file there. Received: path={str(path)!r}"
        )
    folder = ImageFolder.open(path)
    # A run is a folder with a training folder; ImageFolder names classes below the
    # folders that wrap them all, so a lone run is the root itself (".").
    runs = sorted({str(PurePosixPath(name).parent) for name in folder.classes if PurePosixPath(name).name == TRAINING})
    training = [str(PurePosixPath(run) / TRAINING) for run in runs]
    test = [str(PurePosixPath(run) / TEST) for run in runs]
    missing = sorted(set(training + test) - set(folder.classes)) or ([] if runs else [TRAINING])
    if missing:
        raise DataError(f"{_LAYOUT}; {missing[0]} is missing. Received: path={str(path)!r}")
    files = dict(zip(folder.classes, folder.files, strict=True))
    sizes = {(len(files[support]), len(files[query])) for support, query in zip(training, test, strict=True)}
    if len(sizes) != 1:
        raise DataError(f"{_LAYOUT}; the runs hold (training, test) images {sorted(sizes)}. Received: path={str(path)!r}")
    loaded = folder.load(training + test, image_size=tuple(image_size), channels=channels)
    if loaded.stats.skipped:
        raise DataError(
            f"An image of Lake's runs does not decode ({loaded.stats.skipped_files[0]}), and every image is part of the test. "
            f"Replace the damaged file. Received: path={str(path)!r}"
        )
    images = dict(zip(training + test, loaded.by_class(), strict=True))
    ((ways, _),) = sizes
    answers = [_answers(folder, run, files[support], files[query]) for run, support, query in zip(runs, training, test, strict=True)]
    return Episodes(
        support_x=np.stack([images[name] for name in training]).astype(np.float32),
        support_y=np.tile(np.arange(ways, dtype=np.int32), (len(runs), 1)),
        query_x=np.stack([images[name] for name in test]).astype(np.float32),
        query_y=np.stack(answers),
    )


def error_rate(predicted: np.ndarray, episodes: Episodes) -> float:
    """Lake's score, as published: the fraction of all test images (400 in Lake's file) classified wrong.

    `predicted` holds the predicted label of every query image, `[runs, test images]`.
    Every run has the same number of test images (20), so this is also one minus
    the mean of the runs' accuracies.
    """
    predicted = np.asarray(predicted)
    if predicted.shape != tuple(episodes.query_y.shape):
        raise ArgumentError(
            f"Expected one predicted label per test image, shape {tuple(episodes.query_y.shape)}. Received: shape {predicted.shape}"
        )
    return float(np.mean(predicted != episodes.query_y))


def _answers(folder: ImageFolder, run: str, training: tuple[str, ...], test: tuple[str, ...]) -> np.ndarray:
    """The label (position in `training`) of each image of `test`, from the run's `class_labels.txt`.

    Lines name files by their path in the archive; they are matched on the part
    below the run folder (`test/item01.png`), whatever folders wrap the runs.
    """
    labels_file = str(PurePosixPath(folder.root) / run / LABELS_FILE)
    text = _read_text(folder, labels_file)
    below_run = {_below_run(name): index for index, name in enumerate(training)}
    answers: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        item, answer = (_below_run(part) for part in parts) if len(parts) == 2 else (None, None)
        if answer not in below_run or not item or not item.startswith(f"{TEST}/"):
            raise DataError(
                f"{labels_file} line {number}: expected 'runNN/test/itemNN.png runNN/training/classNN.png' naming files of "
                f"the run. Received: {line.strip()!r}"
            )
        answers[item] = below_run[answer]
    unanswered = [name for name in test if _below_run(name) not in answers]
    if unanswered:
        item = PurePosixPath(folder.root) / unanswered[0]
        raise DataError(f"{labels_file} gives no answer for {item}. {_LAYOUT}. Received: path={str(folder.path)!r}")
    return np.array([answers[_below_run(name)] for name in test], dtype=np.int32)


def _below_run(name: str) -> str:
    """`runNN/test/item01.png` -> `test/item01.png`."""
    return str(PurePosixPath(*PurePosixPath(name).parts[-2:]))


def _read_text(folder: ImageFolder, member: str) -> str:
    try:
        if folder.path.is_dir():
            return (folder.path / member).read_bytes().decode(errors="replace")
        with zipfile.ZipFile(folder.path) as archive:
            return archive.read(member).decode(errors="replace")
    except (KeyError, FileNotFoundError):
        raise DataError(f"{_LAYOUT}; {member} is missing. Received: path={str(folder.path)!r}") from None
