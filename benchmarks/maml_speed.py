"""Speed and peak memory of the workbench's meta step, `MetaLearner.train_step`.

Configurations (second-order MAML unless named first-order, one inner step):

- sinusoid-2nd, sinusoid-1st: MLP 1-40-40-1 (`build_mlp((1,), 1)`), K=10 support and
  10 query points, meta-batch 25, inner learning rate 0.01.
- conv4-2nd, conv4-1st: `build_conv4((28, 28, 1), 5)`, 5-way 1-shot with 15 queries per
  class, meta-batch 32, inner learning rate 0.4; random uint8-valued images scaled to
  [0, 1] (`build_conv4` has no rescaling layer), drawn through `EpisodeSampler`.
  (conv4-1st is what the first iterations of MAML++ derivative-order annealing,
  `inner.first_order_iterations`, cost; it is not in the default set.)

Precisions (`--precisions`, default float32 and mixed_bfloat16): the workbench side is
timed once per recipe precision, its model built under that Keras policy
(`workbench.precision.precision_policy`, as a run does). Beside each, the loss or
accuracy that precision reaches on a fixed short recipe (`QUALITY_RECIPES`: the same
network and inner loop on sinusoids, or on synthetic glyph tasks, trained for
`--quality-iterations` outer iterations by `workbench.runner.run_recipe` and scored on
100 fixed meta-test tasks after one step): bfloat16 has 8 bits of mantissa, and its
figures say whether the speed it buys costs accuracy. 0 iterations skips it.

Each configuration runs in its own child process, which builds every side of it (the
workbench learner in each precision, and learn2learn with `--against`) and a pool of
meta-batches, warms each side up (the first step traces the graph), then times rounds:
one block of meta-iterations of each side in turn (a block lasts about `--rep-seconds`),
so that a machine whose load changes slows every side alike. Each side's figure is the
median iterations per second of its blocks, and a ratio the median of the rounds' paired
ratios. Peak RSS (`ru_maxrss`, framework imports included) is then the process's, all
sides together; `--separate-processes` times each side in a process of its own, one after
another, for per-side peak RSS (and ratios of medians). Adam 1e-3 is the outer optimizer
everywhere. The machine is shared and noisy: compare figures of one run of this script.

`--against learn2learn` also runs the same configurations with learn2learn 0.2.0's `MAML`
on PyTorch (CPU), the loop of its examples (`clone`, `adapt`, `backward` per task,
gradients divided by the meta-batch, one optimizer step), on a PyTorch copy of the
network. First, in one process, it copies the Keras weights into PyTorch and compares
`learner.meta_gradient(...)` with PyTorch's gradients on the same meta-batch (relative L2
difference of the whole meta-gradient); a configuration whose gradients differ is not
timed. The project does not depend on PyTorch: learn2learn lives in its own environment.
Its 0.2.0 source release ships C files made by an old Cython that do not compile on
Python 3.11 (`longintrepr.h`), so they are regenerated first; PyPI has no CPU build of
torchvision, so torch and torchvision come as PyPI's CUDA builds (they run on the CPU):

    python3 -m venv /work/l2l-venv
    /work/l2l-venv/bin/pip install cython "torch==2.13.0,!=2.13.0+cpu" torchvision==0.28.0
    /work/l2l-venv/bin/pip download --no-deps --no-binary :all: learn2learn==0.2.0 -d /tmp/l2l
    tar xzf /tmp/l2l/learn2learn-0.2.0.tar.gz -C /tmp/l2l
    (cd /tmp/l2l/learn2learn-0.2.0 && /work/l2l-venv/bin/cython -3 learn2learn/data/*.pyx)
    /work/l2l-venv/bin/pip install /tmp/l2l/learn2learn-0.2.0 "torch==2.13.0,!=2.13.0+cpu" torchvision==0.28.0
    /work/l2l-venv/bin/pip install -e . tensorflow==2.21.0 keras==3.15.1

Run:

    python benchmarks/maml_speed.py                                         # workbench only
    /work/l2l-venv/bin/python benchmarks/maml_speed.py --against learn2learn --threads 1

`--threads 1` gives both frameworks one thread: with one of two cores taken by another
process, PyTorch's default pool of two OpenMP threads made conv4 about 100 times slower.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from machine import cpu_model

CONFIGS = ("sinusoid-2nd", "sinusoid-1st", "conv4-2nd", "conv4-1st")
DEFAULT_CONFIGS = ("sinusoid-2nd", "sinusoid-1st", "conv4-2nd")
PRECISIONS = ("float32", "mixed_bfloat16")  # meta recipes refuse mixed_float16 (no loss scaling in the inner loop)
SHORT = {"float32": "", "mixed_bfloat16": "bf16"}  # summary-key infix of each precision
# Fixed short recipes for the quality column, by network kind; {precision}, {iterations}, {first_order} filled in.
QUALITY_RECIPES = {
    "sinusoid": """\
kind: meta
seed: 0
precision: {precision}
jit_compile: false
tasks: {{source: sinusoid, shots: 10, queries: 10}}
model: {{builtin: mlp}}
inner: {{steps: 1, learning_rate: 0.01, first_order: {first_order}}}
outer: {{meta_batch_size: 25, iterations: {iterations}}}
evaluation: {{tasks: 100, steps: [1], every: {iterations}, validation_tasks: 25}}
""",
    "conv4": """\
kind: meta
seed: 0
precision: {precision}
jit_compile: false
tasks: {{source: synthetic, name: glyphs, classes: 100, samples: 16, ways: 5, shots: 1, queries: 15, image_size: [28, 28],
        validation: 0.2, test: 0.2}}
model: {{builtin: conv4}}
inner: {{steps: 1, learning_rate: 0.4, first_order: {first_order}}}
outer: {{meta_batch_size: 8, iterations: {iterations}}}
evaluation: {{tasks: 100, steps: [1], every: {iterations}, validation_tasks: 20}}
""",
}
QUALITY_ITERATIONS = {"sinusoid": 300, "conv4": 40}
# The gradient check passes when the whole meta-gradient's relative L2 difference is below this (float32).
GRADIENT_TOLERANCE = 1e-3
# Targets: workbench it/s over learn2learn's, and conv4's peak RSS.
SPEEDUP_TARGETS = {"sinusoid-2nd": 15.0, "conv4-2nd": 1.5}
RSS_TARGET_MIB = {"conv4-2nd": 1536}
POOL = 8  # distinct meta-batches, cycled through while timing
# Axes permutations between Keras and PyTorch weight layouts, by rank (biases and BatchNorm vectors stay).
KERAS_TO_TORCH_AXES = {1: (0,), 2: (1, 0), 4: (3, 2, 0, 1)}
TORCH_TO_KERAS_AXES = {1: (0,), 2: (1, 0), 4: (2, 3, 1, 0)}


@dataclasses.dataclass(frozen=True)
class Config:
    kind: str  # "sinusoid" or "conv4"
    meta_batch: int
    inner_learning_rate: float
    first_order: bool


def config(name: str) -> Config:
    if name.startswith("sinusoid"):
        return Config("sinusoid", 25, 0.01, name.endswith("1st"))
    return Config("conv4", 32, 0.4, name.endswith("1st"))


# ------------------------------------------------------------------ data and models


def task_stream(cfg: Config, seed: int = 0):
    """The workbench's sampler of `cfg`'s tasks: sinusoids, or 5-way 1-shot episodes of 25 classes of random pixels."""
    import numpy as np

    from workbench.data.episodes import EpisodeSampler
    from workbench.data.sinusoid import SinusoidTasks

    if cfg.kind == "sinusoid":
        return SinusoidTasks(shots=10, queries=10, seed=seed)
    rng = np.random.default_rng(seed)
    classes = [rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8) for _ in range(25)]
    return EpisodeSampler(classes, ways=5, shots=1, queries=15, seed=seed)


def episodes_pool(cfg: Config, seed: int = 0) -> list:
    """`POOL` meta-batches of `Episodes` (NumPy, float32 inputs)."""
    stream = task_stream(cfg, seed)
    batches = [stream.sample(cfg.meta_batch) for _ in range(POOL)]
    if cfg.kind == "sinusoid":
        return batches
    return [dataclasses.replace(b, support_x=b.support_x / 255.0, query_x=b.query_x / 255.0) for b in batches]


def sampling_seconds(cfg: Config, count: int = 20) -> float:
    """Seconds to sample one meta-batch, as a meta run's outer loop does before every step (uint8 images for conv4)."""
    stream = task_stream(cfg, seed=1)
    started = time.perf_counter()
    for _ in range(count):
        stream.sample(cfg.meta_batch)
    return (time.perf_counter() - started) / count


def keras_learner(cfg: Config, jit_compile: bool, precision: str = "float32"):
    import keras

    from workbench.meta.learner import MetaLearner
    from workbench.models.builtin import build_conv4, build_mlp
    from workbench.precision import precision_policy

    keras.utils.set_random_seed(0)
    with precision_policy(precision):
        if cfg.kind == "sinusoid":
            model, loss = build_mlp((1,), 1), "mse"
        else:
            model, loss = build_conv4((28, 28, 1), 5), "sparse_categorical_crossentropy"
    return MetaLearner(
        model,
        algorithm="maml",
        inner_steps=1,
        inner_learning_rate=cfg.inner_learning_rate,
        first_order=cfg.first_order,
        loss=loss,
        optimizer=keras.optimizers.Adam(1e-3),
        jit_compile=jit_compile,
    )


def torch_network(cfg: Config):
    """The same network as the Keras one, parameters in the same order."""
    from torch import nn

    if cfg.kind == "sinusoid":
        return nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))
    layers, channels = [], 1
    for _ in range(4):
        # Keras' BatchNormalization epsilon is 1e-3; 28 -> 14 -> 7 -> 3 -> 1 pixels, so flattening
        # 64 x 1 x 1 gives the same order as Keras' 1 x 1 x 64.
        layers += [nn.Conv2d(channels, 64, 3, padding=1), nn.BatchNorm2d(64, eps=1e-3), nn.ReLU(), nn.MaxPool2d(2)]
        channels = 64
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64, 5))


def to_torch_layout(array):
    """Keras kernel layout to PyTorch's: Dense (in, out) -> (out, in); Conv2D (h, w, in, out) -> (out, in, h, w)."""
    return array.transpose(KERAS_TO_TORCH_AXES[array.ndim])


def to_keras_layout(array):
    return array.transpose(TORCH_TO_KERAS_AXES[array.ndim])


def copy_weights(learner, network) -> None:
    import numpy as np
    import torch

    parameters = list(network.parameters())
    weights = [v.numpy() for v in learner.meta_variables]
    shapes = [tuple(p.shape) for p in parameters], [to_torch_layout(w).shape for w in weights]
    if shapes[0] != shapes[1]:
        raise RuntimeError(f"PyTorch and Keras parameters do not line up. Received: torch={shapes[0]}, keras={shapes[1]}")
    with torch.no_grad():
        for parameter, value in zip(parameters, weights, strict=True):
            parameter.copy_(torch.from_numpy(np.ascontiguousarray(to_torch_layout(value))))


def torch_batches(cfg: Config, pool: list) -> list:
    """Meta-batches as PyTorch tensors: images NCHW, class labels int64."""
    import torch

    def images(x):
        return torch.from_numpy(x).permute(0, 1, 4, 2, 3).contiguous() if cfg.kind == "conv4" else torch.from_numpy(x)

    def labels(y):
        return torch.from_numpy(y).long() if cfg.kind == "conv4" else torch.from_numpy(y)

    return [(images(b.support_x), labels(b.support_y), images(b.query_x), labels(b.query_y)) for b in pool]


def l2l_step_function(cfg: Config, network):
    """One meta-iteration of learn2learn's MAML, as in its examples; returns `step(batch)`."""
    import learn2learn as l2l
    import torch
    import torch.nn.functional as F

    maml = l2l.algorithms.MAML(network, lr=cfg.inner_learning_rate, first_order=cfg.first_order)
    optimizer = torch.optim.Adam(maml.parameters(), 1e-3)
    loss_fn = F.mse_loss if cfg.kind == "sinusoid" else F.cross_entropy

    def gradients(batch):
        support_x, support_y, query_x, query_y = batch
        optimizer.zero_grad()
        for task in range(len(support_x)):
            learner = maml.clone()
            learner.adapt(loss_fn(learner(support_x[task]), support_y[task]))
            loss_fn(learner(query_x[task]), query_y[task]).backward()
        for parameter in maml.parameters():
            parameter.grad.mul_(1.0 / len(support_x))

    def step(batch):
        gradients(batch)
        optimizer.step()

    step.gradients = gradients
    return step


# ------------------------------------------------------------------ child processes


def time_steps(step, batches: list, options: dict) -> dict:
    """Iterations per second of timed blocks of `step` calls, after warm-up.

    The first call (tracing, building) is untimed; so are up to `warmup` more, or as
    many as fit in `warmup * rep_seconds` seconds (at least one). Their speed sets the
    block length, about `rep_seconds` per block, and how many of the `reps` blocks fit
    in `budget_seconds` (at least 3).
    """
    step(batches[0])
    count, started = 0, time.perf_counter()
    while count == 0 or (count < options["warmup"] and time.perf_counter() - started < options["warmup"] * options["rep_seconds"]):
        count += 1
        step(batches[count % len(batches)])
    seconds_per_step = (time.perf_counter() - started) / count
    block = max(1, round(options["rep_seconds"] / seconds_per_step))
    reps = max(3, min(options["reps"], int(options["budget_seconds"] / (block * seconds_per_step))))
    rates = []
    for rep in range(reps):
        started = time.perf_counter()
        for i in range(block):
            step(batches[(rep * block + i) % len(batches)])
        rates.append(block / (time.perf_counter() - started))
    return {"rates": rates, "block": block}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tensorflow_threads(options: dict) -> None:
    import tensorflow as tf

    if options["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(options["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(options["threads"])


def child_workbench(cfg: Config, options: dict) -> dict:
    tensorflow_threads(options)
    learner = keras_learner(cfg, options["jit_compile"], options["precision"])
    pool = episodes_pool(cfg)
    sampling = sampling_seconds(cfg)
    timing = time_steps(learner.train_step, pool, options)
    return {**timing, "peak_rss_mib": peak_rss_mib(), "tracing": learner.train_step_tracing_count, "sampling_s": sampling}


def child_interleaved(cfg: Config, options: dict) -> dict:
    """Every side of one configuration in one process, timed in alternating blocks.

    Sides: the workbench learner in each of `options["precisions"]`, and learn2learn
    when `options["against"]`. Each warms up apart (tracing, building), then every
    round times one block of each side in turn, so that a machine whose load changes
    slows every side alike and the paired ratios of a round compare like with like.
    Peak RSS is the process's, all sides together.
    """
    if options["against"]:
        import learn2learn  # noqa: F401  (before TensorFlow: torchvision, which it imports, crashes after it)
        import torch

        if options["threads"]:
            torch.set_num_threads(options["threads"])
            torch.set_num_interop_threads(options["threads"])
    tensorflow_threads(options)
    pool = episodes_pool(cfg)
    sampling = sampling_seconds(cfg)
    sides, learners = {}, {}
    for precision in options["precisions"]:
        learners[precision] = keras_learner(cfg, options["jit_compile"], precision)
        sides[f"workbench {precision}"] = (learners[precision].train_step, pool)
    if options["against"]:
        torch.manual_seed(0)
        sides["learn2learn"] = (l2l_step_function(cfg, torch_network(cfg)), torch_batches(cfg, pool))
    blocks = {}
    for name, (step, batches) in sides.items():
        step(batches[0])  # traces or builds
        started = time.perf_counter()
        for i in range(1, 1 + max(1, options["warmup"])):
            step(batches[i % len(batches)])
        seconds_per_step = (time.perf_counter() - started) / max(1, options["warmup"])
        blocks[name] = (max(1, round(options["rep_seconds"] / seconds_per_step)), seconds_per_step)
    round_seconds = sum(block * seconds for block, seconds in blocks.values())
    reps = max(3, min(options["reps"], int(len(sides) * options["budget_seconds"] / round_seconds)))
    rates = {name: [] for name in sides}
    for rep in range(reps):
        for name, (step, batches) in sides.items():
            block = blocks[name][0]
            started = time.perf_counter()
            for i in range(block):
                step(batches[(rep * block + i) % len(batches)])
            rates[name].append(block / (time.perf_counter() - started))
    rss = peak_rss_mib()
    results = {name: {"rates": rates[name], "block": blocks[name][0], "peak_rss_mib": rss} for name in sides}
    for precision, learner in learners.items():
        results[f"workbench {precision}"].update(tracing=learner.train_step_tracing_count, sampling_s=sampling)
    return results


def child_quality(cfg: Config, options: dict) -> dict:
    """The meta-test figure (mse or accuracy after one step) of the fixed short recipe of `cfg`, in its precision."""
    import tempfile
    from pathlib import Path

    from workbench.recipe import load_recipe
    from workbench.runner import run_recipe

    tensorflow_threads(options)
    text = QUALITY_RECIPES[cfg.kind].format(
        precision=options["precision"], iterations=options["quality_iterations"], first_order=str(cfg.first_order).lower()
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{cfg.kind}.yaml"
        path.write_text(text)
        run = run_recipe(load_recipe(path), path, Path(folder) / "runs")
        metrics = json.loads((run / "metrics.json").read_text())
    (entry,) = metrics["evaluation"]
    return {"metric": metrics["metric"], "mean": entry["mean"], "ci95": entry["ci95"], "training_seconds": metrics["training_seconds"]}


def child_learn2learn(cfg: Config, options: dict) -> dict:
    import torch

    if options["threads"]:
        torch.set_num_threads(options["threads"])
        torch.set_num_interop_threads(options["threads"])
    torch.manual_seed(0)
    step = l2l_step_function(cfg, torch_network(cfg))
    timing = time_steps(step, torch_batches(cfg, episodes_pool(cfg)), options)
    return {**timing, "peak_rss_mib": peak_rss_mib()}


def child_check(cfg: Config, options: dict) -> dict:
    """How far apart the two frameworks' meta-gradients of one meta-batch are.

    `relative_l2`: the norm of the difference over the norm of learn2learn's gradient,
    all variables concatenated; `max_element`: the largest element-wise difference over
    the largest gradient element. Whole-gradient scales, because some variables' true
    gradient is zero (a convolution bias before BatchNormalization) and holds only noise.
    """
    import learn2learn  # noqa: F401  (before TensorFlow: torchvision, which it imports, crashes after it)
    import numpy as np

    learner = keras_learner(cfg, options["jit_compile"])
    network = torch_network(cfg)
    copy_weights(learner, network)
    pool = episodes_pool(cfg, seed=1)
    ours = np.concatenate([g.ravel() for g in learner.meta_gradient(pool[0])["gradients"]])
    step = l2l_step_function(cfg, network)
    step.gradients(torch_batches(cfg, pool[:1])[0])
    theirs = np.concatenate([to_keras_layout(p.grad.numpy()).ravel() for p in network.parameters()])
    return {
        "relative_l2": float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)),
        "max_element": float(np.abs(ours - theirs).max() / np.abs(theirs).max()),
    }


CHILDREN = {
    "workbench": child_workbench,
    "learn2learn": child_learn2learn,
    "check": child_check,
    "quality": child_quality,
    "interleaved": child_interleaved,
}


def run_child(role: str, name: str, options: dict) -> dict:
    """Runs one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    spec = json.dumps({"role": role, "config": name, **options})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{role} child for {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ parent


def learn2learn_versions() -> dict | None:
    """Versions of torch and learn2learn in this interpreter, or None (with a note) when absent."""
    try:
        import learn2learn
        import torch
    except ImportError as error:
        print(
            f"note: --against learn2learn needs torch and learn2learn in this interpreter ({sys.executable}), "
            f"but importing them failed ({error}). Build the environment described in this script's docstring "
            "and run it with that environment's python. Timing the workbench only.\n"
        )
        return None
    return {"torch": torch.__version__, "learn2learn": learn2learn.__version__}


def versions() -> dict:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("tensorflow", "keras", "numpy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(DEFAULT_CONFIGS))
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), help="recipe precisions of the workbench side"
    )
    parser.add_argument(
        "--quality-iterations",
        type=int,
        default=None,
        help=f"outer iterations of the fixed short recipe scored per precision (default {QUALITY_ITERATIONS}; 0: skip)",
    )
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed meta-iterations after the traced first one")
    parser.add_argument("--rep-seconds", type=float, default=1.0, help="about how long one timed repetition lasts")
    parser.add_argument("--budget-seconds", type=float, default=60.0, help="fewer repetitions (at least 3) when they would take longer")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra- and inter-op threads of TensorFlow and PyTorch alike (default: their own defaults)"
    )
    parser.add_argument("--against", choices=["learn2learn"], help="also time learn2learn 0.2.0 on PyTorch (CPU)")
    parser.add_argument(
        "--jit-compile", action="store_true", help="the workbench's meta step compiled with XLA (MetaLearner(jit_compile=True))"
    )
    parser.add_argument(
        "--separate-processes",
        action="store_true",
        help="time each side in its own process, one after another, for per-side peak RSS (default: all sides of a "
        "configuration in one process, alternating blocks, for ratios that a changing machine load does not skew)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["role"]](config(spec["config"]), spec)))
        return

    keys = ("reps", "warmup", "rep_seconds", "budget_seconds", "threads", "jit_compile", "separate_processes")
    options = {key: getattr(args, key) for key in keys}
    options["quality_iterations"] = args.quality_iterations
    precisions = list(dict.fromkeys(["float32", *args.precisions]))  # float32 is the reference
    against = learn2learn_versions() if args.against else None
    print("versions: " + " ".join(f"{k}={v}" for k, v in {**versions(), **(against or {})}.items()))
    print(f"threads: {args.threads or 'framework defaults'} ({os.cpu_count()} CPUs); workbench meta step with XLA: {args.jit_compile}")
    print(f"CPU: {cpu_model()}")
    summary: dict[str, object] = {}
    rows = []
    for name in args.configs:
        rows += measure(name, options, precisions, against is not None, summary)
    print_table(rows)
    print_targets(summary, precisions, args.separate_processes)
    print("summary: " + " ".join(f"{key}={value}" for key, value in summary.items()))


def measure(name: str, options: dict, precisions: list[str], against: bool, summary: dict) -> list[tuple]:
    """Times one configuration in each precision (and checks, then times, learn2learn when `against`); fills `summary`.

    Summary keys of float32 keep their names (`conv4_2nd_its`); other precisions add
    their short name (`conv4_2nd_bf16_its`). The quality recipe runs after the timing.
    """
    key = name.replace("-", "_")
    cfg = config(name)
    iterations = QUALITY_ITERATIONS[cfg.kind] if options["quality_iterations"] is None else options["quality_iterations"]
    same_gradient = False
    if against:
        check = run_child("check", name, options)
        same_gradient = check["relative_l2"] < GRADIENT_TOLERANCE
        summary[f"{key}_grad_rel_diff"] = f"{check['relative_l2']:.1e}"
        print(
            f"{name}: meta-gradient workbench vs learn2learn: relative L2 difference {check['relative_l2']:.1e}, "
            f"largest element difference {check['max_element']:.1e} of the largest element "
            f"({'same' if same_gradient else 'DIFFERENT: learn2learn not timed'})"
        )
    rows, ours = [], {}
    if options["separate_processes"]:
        for precision in precisions:
            ours[precision] = run_child("workbench", name, {**options, "precision": precision})
        theirs = run_child("learn2learn", name, options) if same_gradient else None
    else:
        sides = run_child("interleaved", name, {**options, "precisions": precisions, "against": same_gradient})
        ours = {precision: sides[f"workbench {precision}"] for precision in precisions}
        theirs = sides.get("learn2learn")
    for precision in precisions:
        rows.append((name, f"workbench {SHORT[precision] or 'f32'}", ours[precision]))
        infix = f"_{SHORT[precision]}" if SHORT[precision] else ""
        summary[f"{key}{infix}_its"] = significant(statistics.median(ours[precision]["rates"]))
        if options["separate_processes"]:
            summary[f"{key}{infix}_rss_mib"] = round(ours[precision]["peak_rss_mib"])
        summary[f"{key}{infix}_tracing"] = ours[precision]["tracing"]
        if infix:
            summary[f"{key}{infix}_vs_f32"] = significant(ratio(ours[precision]["rates"], ours["float32"]["rates"]))
    if not options["separate_processes"]:
        summary[f"{key}_shared_rss_mib"] = round(ours["float32"]["peak_rss_mib"])  # every side of the configuration together
    step_seconds = 1 / statistics.median(ours["float32"]["rates"])
    sampling = ours["float32"]["sampling_s"]
    summary[f"{key}_sampling_share"] = f"{sampling / step_seconds:.1e}"
    print(
        f"{name}: sampling one meta-batch of episodes takes {sampling * 1e3:.2f} ms, {100 * sampling / step_seconds:.2f}% of a float32 meta step"
    )
    if theirs is not None:
        rows.append((name, "learn2learn", theirs))
        summary[f"{key}_l2l_its"] = significant(statistics.median(theirs["rates"]))
        if options["separate_processes"]:
            summary[f"{key}_l2l_rss_mib"] = round(theirs["peak_rss_mib"])
        for precision in precisions:
            infix = f"_{SHORT[precision]}" if SHORT[precision] else ""
            summary[f"{key}{infix}_speedup"] = significant(ratio(ours[precision]["rates"], theirs["rates"]))
    if iterations:
        for precision in precisions:
            quality = run_child("quality", name, {**options, "precision": precision, "quality_iterations": iterations})
            infix = f"_{SHORT[precision]}" if SHORT[precision] else ""
            summary[f"{key}{infix}_{quality['metric']}"] = f"{quality['mean']:.4g}"
            ours[precision]["quality"] = quality
            print(
                f"{name} {precision}: fixed short recipe ({iterations} iterations, {quality['training_seconds']:.0f} s): "
                f"meta-test {quality['metric']} after 1 step {quality['mean']:.4g} ± {quality['ci95']:.2g}"
            )
    return rows


def ratio(rates: list[float], reference: list[float]) -> float:
    """Median of the paired ratios of interleaved blocks; the ratio of medians when the two were timed apart."""
    if len(rates) == len(reference):
        return statistics.median(a / b for a, b in zip(rates, reference, strict=True))
    return statistics.median(rates) / statistics.median(reference)


def significant(value: float) -> float:
    """`value` to three significant digits."""
    return float(f"{value:.3g}")


def print_table(rows: list) -> None:
    header = (
        f"{'config':<13} {'framework':<15} {'it/s median':>11} {'min':>9} {'max':>9} {'reps x its':>10} {'peak RSS MiB':>12} {'tracing':>7}"
        f" {'short recipe: meta-test':>24}"
    )
    print("\n" + header)
    for name, framework, result in rows:
        rates = result["rates"]
        quality = result.get("quality")
        figure = f"{quality['metric']} {quality['mean']:.4g} ± {quality['ci95']:.2g}" if quality else ""
        print(
            f"{name:<13} {framework:<15} {statistics.median(rates):>11.4g} {min(rates):>9.4g} {max(rates):>9.4g} "
            f"{len(rates):>4} x {result['block']:<4} {result['peak_rss_mib']:>12.0f} {result.get('tracing', ''):>7} {figure:>24}"
        )


def print_targets(summary: dict, precisions: list[str], separate_processes: bool) -> None:
    print()
    for name, target in SPEEDUP_TARGETS.items():
        key = name.replace("-", "_")
        for precision in precisions:
            infix = f"_{SHORT[precision]}" if SHORT[precision] else ""
            if f"{key}{infix}_speedup" in summary:
                speedup = summary[f"{key}{infix}_speedup"]
                print(
                    f"target {name}: workbench ({precision}) >= {target}x learn2learn (float32): {speedup}x "
                    f"({'met' if speedup >= target else 'NOT met'})"
                )
    for name, target in RSS_TARGET_MIB.items():
        key = name.replace("-", "_")
        if f"{key}_its" not in summary:
            continue
        if not separate_processes:
            print(f"target {name}: peak RSS < {target} MiB: not measured (every side shared one process; use --separate-processes)")
        elif f"{key}_rss_mib" in summary:
            rss = summary[f"{key}_rss_mib"]
            print(f"target {name}: peak RSS < {target} MiB: {rss} MiB ({'met' if rss < target else 'NOT met'})")
    tracing = {k: v for k, v in summary.items() if k.endswith("_tracing")}
    for key, value in summary.items():
        if key.endswith("_vs_f32"):
            print(f"{key.removesuffix('_vs_f32')}: {value}x the float32 meta step")
    print(f"target train_step traced once per configuration: {'met' if set(tracing.values()) == {1} else f'NOT met {tracing}'}")


if __name__ == "__main__":
    main()
