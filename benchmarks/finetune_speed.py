"""Training throughput of a workbench transfer phase against plain `model.compile` + `model.fit`.

A recipe written to a temporary folder (synthetic glyphs, 64x64 RGB, a frozen
`keras.applications.MobileNetV3Small` base with `weights: none` and a new head, or the
built-in conv4 base with `--base conv4`) is loaded with `workbench.recipe.load_recipe`;
its data come from `workbench.data.datasets.load_image_splits` and its model from
`workbench.transfer.build_transfer_model`. Three things are timed in the same process,
alternating repetitions (workbench, keras, pipeline, workbench, keras, ...):

- workbench: `workbench.transfer.fit_phase`, the function the runner calls for each
  phase, with the runner's arguments: compile with its optimizer factory, fit with its
  callbacks (best checkpoint, TensorBoard, history.csv, non-finite loss check, epoch
  shuffle, a resume point after every epoch) in a new run directory;
- keras: a fresh model with the same architecture and initial weights, compiled with
  Adam, the same loss and metric and Keras' defaults otherwise, and fitted on the very
  same `tf.data` objects with no callbacks but a clock (`verbose=0`);
- pipeline: one pass over the training pipeline without a model.

Throughput is training images per second of the median steady-state epoch of a
repetition (every epoch after the first, which traces; measured from the end of one epoch
to the end of the next, so the validation pass and all callbacks are included). The
table gives medians over repetitions, and the ratio is the median of the paired
workbench / keras ratios; the target is >= 0.97. Each side's first epoch (compile and tracing included) and whole call
(with the workbench's reload of the best checkpoint and final validation) are shown too.

    python benchmarks/finetune_speed.py [--base MobileNetV3Small|conv4] [--reps 5] [--epochs 6]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import statistics
import tempfile
import time
import warnings
from pathlib import Path

RECIPE = """\
kind: transfer
name: finetune-speed
seed: 0
data:
  source: synthetic
  name: glyphs
  classes: {classes}
  samples: {samples}
  validation: 0.1
  image_size: [64, 64]
  channels: 3
  batch_size: {batch_size}
base: {base}
freeze: {{layers: all, batchnorm: frozen}}
head: {{dropout: 0.2}}
schedule:
  - {{name: head, epochs: {epochs}, optimizer: adam, learning_rate: 1.0e-3}}
"""
BASES = {
    "MobileNetV3Small": "{source: applications, name: MobileNetV3Small, weights: none}",
    "conv4": "{source: builtin, name: conv4, weights: none}",
}
TARGET_RATIO = 0.97


def load(folder: Path, args):
    """The recipe, its data splits, and a template model whose weights every repetition starts from."""
    from workbench.data.datasets import load_image_splits
    from workbench.recipe import load_recipe
    from workbench.transfer import build_transfer_model

    path = folder / "finetune_speed.yaml"
    fields = {"classes": args.classes, "samples": args.samples, "batch_size": args.batch_size, "epochs": args.epochs}
    path.write_text(RECIPE.format(base=BASES[args.base], **fields))
    recipe = load_recipe(path)
    data = load_image_splits(recipe.data, recipe.seed)
    template = build_transfer_model(recipe, data.image_shape, len(data.class_names))
    return recipe, data, template


def fresh_model(recipe, data, template):
    """A new model like `template` (architecture, frozen layers) holding `template`'s weights."""
    from workbench.transfer import build_transfer_model

    model = build_transfer_model(recipe, data.image_shape, len(data.class_names))
    model.set_weights(template.get_weights())
    return model


def epoch_clock(then=None):
    """A callback that notes when each epoch ends, after running `then.on_epoch_end` (if given)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            if then is not None:
                then.on_epoch_end(epoch, logs)
            self.ends.append(time.perf_counter())

    return EpochClock()


def workbench_phase(model, recipe, data, runs_dir: Path) -> dict:
    """One phase as the runner fits it; the history callback doubles as the clock."""
    from workbench import runs
    from workbench.history import HistoryFile
    from workbench.resume import ResumePoint
    from workbench.transfer import fit_phase

    class ClockedHistory(HistoryFile):
        def callback(self, phase):
            self.clock = epoch_clock(super().callback(phase))
            return self.clock

    run = runs.Run.create(runs_dir, recipe.name)
    history = ClockedHistory(run.file(runs.HISTORY_FILE))
    started = time.perf_counter()
    fit_phase(model, recipe.schedule[0], 0, recipe, data, run, history, point=ResumePoint(run), completed=[])
    return {"started": started, "ends": history.clock.ends, "finished": time.perf_counter(), "jit_compile": model.jit_compile}


def keras_fit(model, recipe, data) -> dict:
    """Hand-written compile and fit of the same phase, Keras defaults, no callbacks but the clock."""
    import keras

    clock = epoch_clock()
    started = time.perf_counter()
    model.compile(
        optimizer=keras.optimizers.Adam(recipe.schedule[0].learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    with warnings.catch_warnings():  # Keras warns that its default shuffle=True does not apply to tf.data
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        model.fit(data.train, validation_data=data.validation, epochs=recipe.schedule[0].epochs, callbacks=[clock], verbose=0)
    return {"started": started, "ends": clock.ends, "finished": time.perf_counter(), "jit_compile": model.jit_compile}


def pipeline_pass(data) -> float:
    """Seconds for one pass over the training pipeline."""
    started = time.perf_counter()
    for _ in data.train:
        pass
    return time.perf_counter() - started


def steady_rate(timing: dict, images: int) -> float:
    """Training images per second of the median steady-state epoch (robust to an occasional disturbed epoch)."""
    ends = timing["ends"]
    return images / statistics.median(later - earlier for earlier, later in itertools.pairwise(ends))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", choices=sorted(BASES), default="MobileNetV3Small")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each side, alternated")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per repetition; the first is not counted")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--samples", type=int, default=120, help="images per class; 10%% go to validation")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error(f"--epochs must be at least 3: the first epoch traces and is not counted. Received: --epochs={args.epochs}")

    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:
        recipe, data, template = load(Path(folder), args)
        images = data.counts["train"]
        trainable = sum(int(v.numpy().size) for v in template.trainable_weights)
        print(f"versions: tensorflow={tf.__version__} keras={keras.__version__}")
        print(
            f"base {args.base}: {images} training and {data.counts['validation']} validation images {data.image_shape}, "
            f"batch {recipe.data.batch_size}, {trainable} trainable of {template.count_params()} parameters, "
            f"{args.epochs} epochs per repetition"
        )
        pipeline_pass(data)  # traces the pipeline's functions
        results = {"workbench": [], "keras": [], "pipeline": []}
        for _ in range(args.reps):
            with contextlib.redirect_stdout(io.StringIO()):  # the runner's one line per epoch
                results["workbench"].append(workbench_phase(fresh_model(recipe, data, template), recipe, data, Path(folder) / "runs"))
            results["keras"].append(keras_fit(fresh_model(recipe, data, template), recipe, data))
            results["pipeline"].append(pipeline_pass(data))
    report(results, images)


def report(results: dict, images: int) -> None:
    rates = {side: [steady_rate(t, images) for t in results[side]] for side in ("workbench", "keras")}
    rates["pipeline"] = [images / seconds for seconds in results["pipeline"]]
    print(f"\n{'side':<10} {'images/s median':>15} {'min':>8} {'max':>8} {'first epoch s':>13} {'call s':>7} {'jit':>5}")
    for side, values in rates.items():
        line = f"{side:<10} {statistics.median(values):>15.1f} {min(values):>8.1f} {max(values):>8.1f}"
        if side != "pipeline":
            timings = results[side]
            first = statistics.median(t["ends"][0] - t["started"] for t in timings)
            call = statistics.median(t["finished"] - t["started"] for t in timings)
            line += f" {first:>13.2f} {call:>7.2f} {timings[0]['jit_compile']!s:>5}"
        print(line)
    ratio = statistics.median(w / k for w, k in zip(rates["workbench"], rates["keras"], strict=True))
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"\nworkbench / keras (median of paired repetitions): {ratio:.3f} (target >= {TARGET_RATIO}: {verdict})")
    summary = {f"{side}_images_per_s": round(statistics.median(values), 1) for side, values in rates.items()}
    summary["ratio"] = round(ratio, 3)
    print("summary: " + " ".join(f"{key}={value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
