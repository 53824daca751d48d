"""Speed and peak memory of the workbench's meta step, `MetaLearner.train_step`.

Configurations (second-order MAML unless named first-order, one inner step):

- sinusoid-2nd, sinusoid-1st: MLP 1-40-40-1 (`build_mlp((1,), 1)`), K=10 support and
  10 query points, meta-batch 25, inner learning rate 0.01.
- conv4-2nd: `build_conv4((28, 28, 1), 5)`, 5-way 1-shot with 15 queries per class,
  meta-batch 32, inner learning rate 0.4; random uint8-valued images scaled to [0, 1]
  (`build_conv4` has no rescaling layer), drawn through `EpisodeSampler`.

Each configuration and framework runs in its own child process, so that each has its own
peak RSS (`ru_maxrss`: framework imports included). A child builds the learner and a
pool of meta-batches, warms up (the first step traces the graph), then times several
repetitions of a block of meta-iterations (a block lasts about `--rep-seconds`) and
reports the median iterations per second. Adam 1e-3 is the outer optimizer everywhere.
The machine is shared and noisy: compare figures of one run of this script.

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

CONFIGS = ("sinusoid-2nd", "sinusoid-1st", "conv4-2nd")
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
    return Config("conv4", 32, 0.4, False)


# ------------------------------------------------------------------ data and models


def episodes_pool(cfg: Config, seed: int = 0) -> list:
    """`POOL` meta-batches of `Episodes` (NumPy, float32 inputs)."""
    import numpy as np

    from workbench.data.episodes import EpisodeSampler
    from workbench.data.sinusoid import SinusoidTasks

    if cfg.kind == "sinusoid":
        tasks = SinusoidTasks(shots=10, queries=10, seed=seed)
        return [tasks.sample(cfg.meta_batch) for _ in range(POOL)]
    rng = np.random.default_rng(seed)
    classes = [rng.integers(0, 256, (20, 28, 28, 1), dtype=np.uint8) for _ in range(25)]
    sampler = EpisodeSampler(classes, ways=5, shots=1, queries=15, seed=seed)
    batches = [sampler.sample(cfg.meta_batch) for _ in range(POOL)]
    return [dataclasses.replace(b, support_x=b.support_x / 255.0, query_x=b.query_x / 255.0) for b in batches]


def keras_learner(cfg: Config, jit_compile: bool):
    import keras

    from workbench.meta.learner import MetaLearner
    from workbench.models.builtin import build_conv4, build_mlp

    keras.utils.set_random_seed(0)
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


def child_workbench(cfg: Config, options: dict) -> dict:
    import tensorflow as tf

    if options["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(options["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(options["threads"])
    learner = keras_learner(cfg, options["jit_compile"])
    timing = time_steps(learner.train_step, episodes_pool(cfg), options)
    return {**timing, "peak_rss_mib": peak_rss_mib(), "tracing": learner.train_step_tracing_count}


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


CHILDREN = {"workbench": child_workbench, "learn2learn": child_learn2learn, "check": child_check}


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
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
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
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["role"]](config(spec["config"]), spec)))
        return

    options = {key: getattr(args, key) for key in ("reps", "warmup", "rep_seconds", "budget_seconds", "threads", "jit_compile")}
    against = learn2learn_versions() if args.against else None
    print("versions: " + " ".join(f"{k}={v}" for k, v in {**versions(), **(against or {})}.items()))
    print(f"threads: {args.threads or 'framework defaults'} ({os.cpu_count()} CPUs); workbench meta step with XLA: {args.jit_compile}")
    summary: dict[str, object] = {}
    rows = []
    for name in args.configs:
        rows += measure(name, options, against is not None, summary)
    print_table(rows)
    print_targets(summary)
    print("summary: " + " ".join(f"{key}={value}" for key, value in summary.items()))


def measure(name: str, options: dict, against: bool, summary: dict) -> list[tuple]:
    """Times one configuration (and checks, then times, learn2learn when `against`); fills `summary`."""
    key = name.replace("-", "_")
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
    ours = run_child("workbench", name, options)
    rows = [(name, "workbench", ours)]
    summary[f"{key}_its"] = significant(statistics.median(ours["rates"]))
    summary[f"{key}_rss_mib"] = round(ours["peak_rss_mib"])
    summary[f"{key}_tracing"] = ours["tracing"]
    if same_gradient:
        theirs = run_child("learn2learn", name, options)
        rows.append((name, "learn2learn", theirs))
        summary[f"{key}_l2l_its"] = significant(statistics.median(theirs["rates"]))
        summary[f"{key}_l2l_rss_mib"] = round(theirs["peak_rss_mib"])
        summary[f"{key}_speedup"] = significant(statistics.median(ours["rates"]) / statistics.median(theirs["rates"]))
    return rows


def significant(value: float) -> float:
    """`value` to three significant digits."""
    return float(f"{value:.3g}")


def print_table(rows: list) -> None:
    header = (
        f"{'config':<13} {'framework':<12} {'it/s median':>11} {'min':>9} {'max':>9} {'reps x its':>10} {'peak RSS MiB':>12} {'tracing':>7}"
    )
    print("\n" + header)
    for name, framework, result in rows:
        rates = result["rates"]
        print(
            f"{name:<13} {framework:<12} {statistics.median(rates):>11.4g} {min(rates):>9.4g} {max(rates):>9.4g} "
            f"{len(rates):>4} x {result['block']:<4} {result['peak_rss_mib']:>12.0f} {result.get('tracing', ''):>7}"
        )


def print_targets(summary: dict) -> None:
    print()
    for name, target in SPEEDUP_TARGETS.items():
        key = name.replace("-", "_")
        if f"{key}_speedup" in summary:
            speedup = summary[f"{key}_speedup"]
            print(f"target {name}: workbench >= {target}x learn2learn: {speedup}x ({'met' if speedup >= target else 'NOT met'})")
    for name, target in RSS_TARGET_MIB.items():
        key = name.replace("-", "_")
        if f"{key}_rss_mib" in summary:
            rss = summary[f"{key}_rss_mib"]
            print(f"target {name}: peak RSS < {target} MiB: {rss} MiB ({'met' if rss < target else 'NOT met'})")
    tracing = {k: v for k, v in summary.items() if k.endswith("_tracing")}
    print(f"target train_step traced once per configuration: {'met' if set(tracing.values()) == {1} else f'NOT met {tracing}'}")


if __name__ == "__main__":
    main()
