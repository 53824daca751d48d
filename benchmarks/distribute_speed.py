"""Throughput of `distribute: mirrored` against the default strategy, through the workbench's code.

Two workloads, the same global batch on both sides:

- transfer: a MobileNetV3Small (`weights: none`, every layer trainable, BatchNorm
  training) on synthetic 96x96 RGB glyphs, global batch 64, Adam; compiled and fitted as
  `workbench.transfer.fit_phase` does, inside `workbench.devices.distributed`. Training
  images per second of the median epoch after the first (which traces).
- meta: `MetaLearner.train_step` on conv4, 5-way 1-shot Omniglot-sized synthetic glyph
  tasks with 15 queries per class, meta-batch 32, second-order MAML, one inner step.
  Meta-iterations per second, median of timed blocks after warm-up.

Each side runs in its own child process: the strategy comes from
`workbench.devices.strategy_for`, which must run before TensorFlow starts (logical CPU
devices are made then). `--devices` names the mirrored replicas (`/gpu:0,/gpu:1`); by
default every local GPU, or, without one, two logical CPU devices, which checks the
path but is not a speed figure (two replicas share the same cores).

    python benchmarks/distribute_speed.py [--devices /gpu:0,/gpu:1] [--workloads transfer meta]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRANSFER = """\
kind: transfer
name: distribute-speed
seed: 0
data: {source: synthetic, name: glyphs, classes: 10, samples: 160, validation: 0.0, image_size: [96, 96], channels: 3, batch_size: 64}
base: {source: applications, name: MobileNetV3Small, weights: none}
freeze: {layers: none, batchnorm: train}
schedule:
  - {name: all, epochs: 1, optimizer: adam, learning_rate: 1.0e-3}
"""
META = """\
kind: meta
name: distribute-speed-meta
seed: 0
tasks: {source: synthetic, name: glyphs, classes: 200, samples: 20, image_size: [28, 28], ways: 5, shots: 1, queries: 15}
model: {builtin: conv4}
inner: {steps: 1, learning_rate: 0.4}
outer: {meta_batch_size: 32, iterations: 1}
"""
WORKLOADS = {"transfer": "training images/s", "meta": "meta-iterations/s"}


def child(spec: dict) -> dict:
    from workbench import devices
    from workbench.recipe import load_recipe

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        text = TRANSFER if spec["workload"] == "transfer" else META
        if spec["devices"] is not None:
            text += f"distribute: {{strategy: mirrored, devices: [{', '.join(spec['devices'])}]}}\n"
        path.write_text(text)
        recipe = load_recipe(path)
        strategy = devices.strategy_for(recipe.distribute)
        with strategy.scope():
            rates = time_transfer(recipe, spec) if spec["workload"] == "transfer" else time_meta(recipe, spec)
        return {"rate": statistics.median(rates), "replicas": strategy.num_replicas_in_sync}


def time_transfer(recipe, spec) -> list[float]:
    import keras

    from workbench.data.datasets import load_image_splits
    from workbench.devices import distributed
    from workbench.transfer import build_transfer_model

    keras.utils.set_random_seed(recipe.seed)
    data = load_image_splits(recipe.data, recipe.seed)
    model = build_transfer_model(recipe, data.image_shape, len(data.class_names))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    ends = []
    clock = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter()))
    with distributed(model):
        model.fit(data.train, epochs=spec["epochs"], callbacks=[clock], verbose=0)
    return [data.counts["train"] / (b - a) for a, b in zip(ends[:-1], ends[1:], strict=True)]


def time_meta(recipe, spec) -> list[float]:
    import keras

    from workbench.meta.runner import build_learner, build_meta_model
    from workbench.meta.tasks import build_tasks

    keras.utils.set_random_seed(recipe.seed)
    tasks = build_tasks(recipe.tasks, recipe.seed)
    learner = build_learner(recipe, build_meta_model(recipe, tasks), tasks)
    sampler = tasks.samplers["train"]
    batches = [sampler.sample(recipe.outer.meta_batch_size) for _ in range(4)]
    for batch in batches[:2]:  # the first traces
        learner.train_step(batch)
    rates = []
    for _ in range(spec["reps"]):
        started = time.perf_counter()
        for batch in batches:
            learner.train_step(batch)
        rates.append(len(batches) / (time.perf_counter() - started))
    return rates


def run_child(spec: dict) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"child {spec} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def default_devices() -> list[str]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return [f"/gpu:{index}" for index in range(len(gpus))] if len(gpus) > 1 else ["/cpu:0", "/cpu:1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", help="comma-separated replicas of the mirrored side, e.g. /gpu:0,/gpu:1")
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS, reverse=True))
    parser.add_argument("--epochs", type=int, default=4, help="transfer epochs per side; the first is not counted")
    parser.add_argument("--reps", type=int, default=3, help="timed blocks of 4 meta-iterations per side")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    mirrored = args.devices.split(",") if args.devices else default_devices()
    print(f"mirrored over {', '.join(mirrored)}; each side in its own process\n")
    print(f"{'workload':<10} {'unit':<20} {'default':>10} {'mirrored':>10} {'ratio':>7}")
    summary = {}
    for workload in args.workloads:
        sides = {}
        for side, names in (("default", None), ("mirrored", mirrored)):
            sides[side] = run_child({"workload": workload, "devices": names, "epochs": args.epochs, "reps": args.reps})
        ratio = sides["mirrored"]["rate"] / sides["default"]["rate"]
        print(
            f"{workload:<10} {WORKLOADS[workload]:<20} {sides['default']['rate']:>10.3g} {sides['mirrored']['rate']:>10.3g} {ratio:>7.2f}"
        )
        summary.update(
            {f"{workload}_default": f"{sides['default']['rate']:.3g}", f"{workload}_mirrored": f"{sides['mirrored']['rate']:.3g}"}
        )
        summary[f"{workload}_ratio"] = round(ratio, 2)
    summary["replicas"] = len(mirrored)
    print("\nsummary: " + " ".join(f"{key}={value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
