"""Training throughput of a workbench transfer phase, in each precision, against plain `model.compile` + `model.fit`.

A recipe written to a temporary folder (synthetic glyphs, 64x64 RGB by default, a frozen
`keras.applications.MobileNetV3Small` base with `weights: none` and a new head, the
built-in conv4 base with `--base conv4`, or ResNet50, whose convolutions dominate its step) is loaded with `workbench.recipe.load_recipe`;
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

With `--precisions float32 mixed_bfloat16` (the default; `mixed_float16` too), the
workbench side runs once per precision in each repetition, its model built and fitted
under that recipe precision (`workbench.precision.precision_policy`, as the runner does).
Each repetition draws its initial weights from its own seed (0, 1, ...), so the
validation accuracies the phase reaches (best checkpoint restored) give float32's
seed-to-seed spread, which each lower precision's accuracies are held against;
its speed-up is the median of the paired ratios to float32's images per second.

Throughput is training images per second of the median steady-state epoch of a
repetition (every epoch after the first, which traces; measured from the end of one epoch
to the end of the next, so the validation pass and all callbacks are included). The
table gives medians over repetitions, and the ratio is the median of the paired
workbench / keras ratios; the target is >= 0.97. Each side's first epoch (compile and tracing included) and whole call
(with the workbench's reload of the best checkpoint and final validation) are shown too.

    python benchmarks/finetune_speed.py [--base MobileNetV3Small|conv4|ResNet50] [--freeze all|none] [--batchnorm frozen|train]
        [--reps 5] [--epochs 6]
        [--image-size 64]
        [--precisions float32 mixed_bfloat16] [--threads N] [--jit-compile]
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

from machine import cpu_model

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
  image_size: [{image_size}, {image_size}]
  channels: 3
  batch_size: {batch_size}
base: {base}
freeze: {{layers: {freeze}, batchnorm: {batchnorm}}}
jit_compile: {jit_compile}
head: {{dropout: 0.2}}
schedule:
  - {{name: head, epochs: {epochs}, optimizer: adam, learning_rate: 1.0e-3}}
"""
BASES = {
    "MobileNetV3Small": "{source: applications, name: MobileNetV3Small, weights: none}",
    "conv4": "{source: builtin, name: conv4, weights: none}",
    "ResNet50": "{source: applications, name: ResNet50, weights: none}",
}
TARGET_RATIO = 0.97
# Lower precisions: images per second over float32's, on CPUs with bfloat16 instructions.
PRECISION_TARGET_SPEEDUP = 1.5
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def load(folder: Path, args):
    """The recipe and its data splits."""
    from workbench.data.datasets import load_image_splits
    from workbench.recipe import load_recipe

    path = folder / "finetune_speed.yaml"
    fields = {
        "classes": args.classes,
        "samples": args.samples,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "image_size": args.image_size,
    }
    jit = "true" if args.jit_compile else "false"
    path.write_text(RECIPE.format(base=BASES[args.base], freeze=args.freeze, batchnorm=args.batchnorm, jit_compile=jit, **fields))
    recipe = load_recipe(path)
    return recipe, load_image_splits(recipe.data, recipe.seed)


def template_model(recipe, data, seed: int):
    """The float32 model whose initial weights (drawn from `seed`) every side of one repetition starts from."""
    import keras

    from workbench.transfer import build_transfer_model

    keras.utils.set_random_seed(seed)
    return build_transfer_model(recipe, data.image_shape, len(data.class_names))


def fresh_model(recipe, data, template, precision: str = "float32"):
    """A new model like `template` (architecture, frozen layers) holding `template`'s weights, computing in `precision`.

    Variables are float32 under every policy, so the weights copy as they are.
    """
    from workbench.precision import precision_policy
    from workbench.transfer import build_transfer_model

    with precision_policy(precision):
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


def workbench_phase(model, recipe, data, runs_dir: Path, precision: str = "float32") -> dict:
    """One phase as the runner fits it, under `precision`'s policy; the history callback doubles as the clock."""
    from workbench import runs
    from workbench.history import HistoryFile
    from workbench.precision import precision_policy
    from workbench.resume import ResumePoint
    from workbench.transfer import fit_phase

    class ClockedHistory(HistoryFile):
        def callback(self, phase):
            self.clock = epoch_clock(super().callback(phase))
            return self.clock

    run = runs.Run.create(runs_dir, recipe.name)
    history = ClockedHistory(run.file(runs.HISTORY_FILE))
    started = time.perf_counter()
    with precision_policy(precision):
        result = fit_phase(model, recipe.schedule[0], 0, recipe, data, run, history, point=ResumePoint(run), completed=[])
    return {
        "started": started,
        "ends": history.clock.ends,
        "finished": time.perf_counter(),
        "jit_compile": model.jit_compile,
        "val_accuracy": result["val_accuracy"],
        "val_loss": result["val_loss"],
    }


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
    parser.add_argument("--image-size", type=int, default=64, help="side of the square RGB images")
    parser.add_argument("--freeze", choices=["all", "none"], default="all", help="all: train the head only; none: fine-tune every layer")
    parser.add_argument(
        "--batchnorm",
        choices=["frozen", "train"],
        default="frozen",
        help="the recipe's freeze.batchnorm (train: batch statistics, the fused kernel)",
    )
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=["float32", "mixed_bfloat16"], help="recipe precisions of the workbench side"
    )
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow intra- and inter-op threads (default: its own)")
    parser.add_argument("--jit-compile", action="store_true", help="recipe jit_compile: true (XLA) instead of false, on every side")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error(f"--epochs must be at least 3: the first epoch traces and is not counted. Received: --epochs={args.epochs}")
    precisions = list(dict.fromkeys(["float32", *args.precisions]))  # float32 is the reference

    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        recipe, data = load(Path(folder), args)
        template = template_model(recipe, data, 0)
        images = data.counts["train"]
        trainable = sum(int(v.numpy().size) for v in template.trainable_weights)
        print(f"versions: tensorflow={tf.__version__} keras={keras.__version__}")
        print(f"threads: {args.threads or 'framework default'}; XLA: {args.jit_compile}; CPU: {cpu_model()}")
        print(
            f"base {args.base} (freeze: {args.freeze}, batchnorm: {args.batchnorm}): {images} training and {data.counts['validation']} validation images "
            f"{data.image_shape}, batch {recipe.data.batch_size}, {trainable} trainable of {template.count_params()} parameters, "
            f"{args.epochs} epochs per repetition"
        )
        pipeline_pass(data)  # traces the pipeline's functions
        results = {**{precision: [] for precision in precisions}, "keras": [], "pipeline": []}
        for seed in range(args.reps):
            template = template_model(recipe, data, seed)
            for precision in precisions:
                with contextlib.redirect_stdout(io.StringIO()):  # the runner's one line per epoch
                    model = fresh_model(recipe, data, template, precision)
                    results[precision].append(workbench_phase(model, recipe, data, Path(folder) / "runs", precision))
            results["keras"].append(keras_fit(fresh_model(recipe, data, template), recipe, data))
            results["pipeline"].append(pipeline_pass(data))
    report(results, precisions, images)


def report(results: dict, precisions: list[str], images: int) -> None:
    sides = [*precisions, "keras"]
    rates = {side: [steady_rate(t, images) for t in results[side]] for side in sides}
    rates["pipeline"] = [images / seconds for seconds in results["pipeline"]]
    header = (
        f"{'side':<24} {'images/s median':>15} {'min':>8} {'max':>8} {'first epoch s':>13} {'call s':>7} {'jit':>5} {'val accuracy':>18}"
    )
    print("\n" + header)
    for side, values in rates.items():
        label = f"workbench {side}" if side in precisions else side + (" float32" if side == "keras" else "")
        line = f"{label:<24} {statistics.median(values):>15.1f} {min(values):>8.1f} {max(values):>8.1f}"
        if side != "pipeline":
            timings = results[side]
            first = statistics.median(t["ends"][0] - t["started"] for t in timings)
            call = statistics.median(t["finished"] - t["started"] for t in timings)
            line += f" {first:>13.2f} {call:>7.2f} {timings[0]['jit_compile']!s:>5}"
            if "val_accuracy" in timings[0]:
                accuracies = [t["val_accuracy"] for t in timings]
                line += f" {statistics.mean(accuracies):>10.3f} ± {spread(accuracies):.3f}"
        print(line)
    print("(val accuracy: mean ± standard deviation over the repetitions' seeds, best checkpoint)")

    def paired(side, reference):
        return statistics.median(a / b for a, b in zip(rates[side], rates[reference], strict=True))

    ratio = paired("float32", "keras")
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"\nworkbench float32 / keras (median of paired repetitions): {ratio:.3f} (target >= {TARGET_RATIO}: {verdict})")
    summary = {"workbench_images_per_s": round(statistics.median(rates["float32"]), 1)}
    summary.update({f"{side}_images_per_s": round(statistics.median(rates[side]), 1) for side in ("keras", "pipeline")})
    summary["ratio"] = round(ratio, 3)
    reference = [t["val_accuracy"] for t in results["float32"]]
    summary["float32_val_accuracy"] = round(statistics.mean(reference), 4)
    summary["float32_val_accuracy_std"] = round(spread(reference), 4)
    for precision in precisions[1:]:
        speedup = paired(precision, "float32")
        accuracies = [t["val_accuracy"] for t in results[precision]]
        # Within the spread: the mean is no further below float32's than float32's own seed-to-seed standard deviation.
        within = statistics.mean(accuracies) >= statistics.mean(reference) - max(spread(reference), 1e-9)
        print(
            f"{precision} / float32 images/s (median of paired repetitions): {speedup:.3f} "
            f"(target >= {PRECISION_TARGET_SPEEDUP}: {'met' if speedup >= PRECISION_TARGET_SPEEDUP else 'NOT met'}); "
            f"val accuracy {statistics.mean(accuracies):.3f} against float32's {statistics.mean(reference):.3f} ± {spread(reference):.3f} "
            f"({'within' if within else 'NOT within'} float32's seed-to-seed spread)"
        )
        summary[f"{precision}_images_per_s"] = round(statistics.median(rates[precision]), 1)
        summary[f"{precision}_speedup"] = round(speedup, 3)
        summary[f"{precision}_val_accuracy"] = round(statistics.mean(accuracies), 4)
    print("summary: " + " ".join(f"{key}={value}" for key, value in summary.items()))


def spread(values: list[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
