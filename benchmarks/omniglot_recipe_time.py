"""CPU time of the Omniglot 95% recipe (recipes/omniglot_maml.yaml), before and after the speed options.

Training the whole recipe takes hours (4,000 outer iterations of 32 tasks), so this
script measures the CPU-seconds of one outer iteration of the recipe itself, run by
`workbench run` in a fresh process, in each configuration:

- before: the recipe as written (float32, second order throughout);
- `precision: mixed_bfloat16`, second order;
- `precision: mixed_bfloat16` with `inner.first_order_iterations` (MAML++'s
  derivative-order annealing): the first-order iterations cost what this configuration
  measures with `inner.first_order: true`.

Each configuration runs twice, for `--short` and `--long` outer iterations (meta-validation
and meta-test cut to a few tasks), and the CPU-seconds of one iteration are the difference
of the two runs' `training_cpu_seconds` over the difference of their iterations, so that
data loading and tracing cancel. The projection for the whole recipe scales the measured
CPU time of a full run (`--before-cpu-minutes`, that of benchmarks/omniglot_paper.py) by
the ratio of per-iteration costs measured here, in one run of this script:

    python benchmarks/omniglot_recipe_time.py --first-order-iterations 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "omniglot_maml.yaml"
ITERATIONS = 4000  # the recipe's outer iterations
# A full run of the recipe as written, measured (benchmarks/RESULTS.md), on code before the
# fused BatchNorm kernel: for the projections to hold, pass the full run of the code measured.
BEFORE_CPU_MINUTES = 263.0
SHORT_EVALUATION = ["evaluation.tasks=10", "evaluation.validation_tasks=10", "evaluation.every=100000"]

CONFIGURATIONS = {
    "float32, second order": [],
    "bfloat16, second order": ["precision=mixed_bfloat16"],
    "bfloat16, first order": ["precision=mixed_bfloat16", "inner.first_order=true"],
}


def training_cpu_seconds(overrides: list[str], iterations: int, runs_dir: Path, threads: int) -> float:
    """`training_cpu_seconds` of the recipe run for `iterations` outer iterations in a fresh process."""
    sets = [f"outer.iterations={iterations}", *SHORT_EVALUATION, *overrides]
    command = [sys.executable, "-m", "workbench", "run", str(RECIPE), "--runs-dir", str(runs_dir)]
    for value in sets:
        command += ["--set", value]
    environment = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"} if threads else None
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=environment)
    newest = max(runs_dir.glob("*/metrics.json"), key=lambda path: path.stat().st_mtime)
    return json.loads(newest.read_text())["training_cpu_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=4, help="outer iterations of the shorter run")
    parser.add_argument("--long", type=int, default=24, help="outer iterations of the longer run")
    parser.add_argument("--first-order-iterations", type=int, default=1000, help="inner.first_order_iterations of the projection")
    parser.add_argument("--before-cpu-minutes", type=float, default=BEFORE_CPU_MINUTES)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow's intra-op threads (default: its own)")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; {os.cpu_count()} CPUs; threads: {args.threads or 'TensorFlow default'}")

    per_iteration = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, overrides in CONFIGURATIONS.items():
            short = training_cpu_seconds(overrides, args.short, Path(folder), args.threads)
            long = training_cpu_seconds(overrides, args.long, Path(folder), args.threads)
            per_iteration[name] = (long - short) / (args.long - args.short)
            print(
                f"{name}: {per_iteration[name]:.2f} CPU-s per outer iteration ({short:.0f} s for {args.short}, {long:.0f} s for {args.long})"
            )

    before = per_iteration["float32, second order"]
    annealed = (
        args.first_order_iterations * per_iteration["bfloat16, first order"]
        + (ITERATIONS - args.first_order_iterations) * per_iteration["bfloat16, second order"]
    ) / ITERATIONS
    print(f"\nomniglot_maml.yaml, {ITERATIONS} iterations; before: {args.before_cpu_minutes:.0f} CPU-minutes (a full run, measured)")
    for name, cost in (
        ("precision: mixed_bfloat16", per_iteration["bfloat16, second order"]),
        (f"mixed_bfloat16 and inner.first_order_iterations: {args.first_order_iterations}", annealed),
    ):
        print(f"  {name}: {before / cost:.2f}x faster per iteration, projected {args.before_cpu_minutes * cost / before:.0f} CPU-minutes")


if __name__ == "__main__":
    main()
