"""Learned optimizers against the figures of Andrychowicz et al. 2016 (sections 3.1 and 3.2).

Runs recipes/learned_optimizer_quadratic.yaml (10-d quadratics) and
recipes/learned_optimizer_mlp.yaml (an MLP of 20 sigmoid units on glyphs), then
tests the MLP's learned optimizer, unchanged, on the paper's generalisation
cases: 40 hidden units, two hidden layers, ReLU (where the paper reports
failure). Each baseline (SGD, Adam, RMSprop, Nesterov) has its learning rate
tuned on training optimizees of the same problem. Prints, for each problem, the
mean loss with its 95% interval over held-out optimizees at the training
horizon (100 steps) and at twice it, whether the learned optimizer is below
every baseline, the CPU time, and the CPU model.

The paper's claim, in shape: on quadratics and the base MLP the learned
optimizer ends lower than every tuned baseline; it generalises to 200 steps,
40 units and two layers, and fails with ReLU.

    python benchmarks/learned_optimizer_paper.py                      # the recipes as written
    python benchmarks/learned_optimizer_paper.py --quadratic-iterations 100 --mlp-iterations 30  # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"quadratic": ROOT / "recipes" / "learned_optimizer_quadratic.yaml", "mlp": ROOT / "recipes" / "learned_optimizer_mlp.yaml"}
GENERALISATION = {"mlp 40 units": {"hidden": (40,)}, "mlp 2 layers": {"hidden": (20, 20)}, "mlp relu": {"activation": "relu"}}


def cpu_model() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return f"{fields.get('Model name', '?').strip()} ({fields.get('CPU(s)', '?').strip()} CPUs)"


def run(recipe_path: Path, overrides: list[str], runs_dir: Path) -> tuple[Path, dict, float]:
    from workbench.recipe import load_recipe
    from workbench.runner import run_recipe

    started = time.process_time()
    run_dir = run_recipe(load_recipe(recipe_path, overrides), recipe_path, runs_dir)
    return run_dir, json.loads((run_dir / "metrics.json").read_text()), time.process_time() - started


def generalisation(run_dir: Path, recipe_path: Path, overrides: list[str], changes: dict) -> tuple[dict, float]:
    """The MLP run's optimizer, unchanged, on another architecture; the baselines re-tuned on that architecture."""
    from workbench.learned.evaluation import compare_optimizers
    from workbench.learned.keras_optimizer import load_optimizer_net
    from workbench.learned.runner import build_families
    from workbench.recipe import load_recipe

    started = time.process_time()
    recipe = load_recipe(recipe_path, overrides)
    training, held_out = (family.variant(**changes) for family in build_families(recipe.tasks, recipe.seed))
    evaluation = recipe.evaluation
    metrics = compare_optimizers(
        load_optimizer_net(run_dir),
        held_out,
        tuning_family=training,
        tasks=evaluation.tasks,
        tuning_tasks=evaluation.tuning_tasks,
        steps=evaluation.steps,
        tuning_steps=recipe.inner.steps,
        baselines=evaluation.baselines,
        seed=recipe.seed,
    )
    return metrics, time.process_time() - started


def _figure(entry: dict) -> str:
    return "diverged" if entry["mean"] is None else f"{entry['mean']:.4g} ± {entry['ci95']:.2g}"


def rows_of(problem: str, metrics: dict) -> list[list[str]]:
    rows = []
    for index, entry in enumerate(metrics["evaluation"]):
        others = {name: baseline["evaluation"][index] for name, baseline in metrics["baselines"].items()}
        finite = [other["mean"] for other in others.values() if other["mean"] is not None]
        best = entry["mean"] is not None and all(entry["mean"] < value for value in finite)
        cells = [problem, str(entry["steps"]), _figure(entry)]
        cells += [f"{_figure(others[name])} (lr {metrics['baselines'][name]['learning_rate']:.2g})" for name in others]
        rows.append([*cells, "yes" if best else "NO"])
    return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, ["-" * width for width in widths], *rows]:
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quadratic-iterations", type=int, help="override outer.iterations of the quadratic recipe")
    parser.add_argument("--mlp-iterations", type=int, help="override outer.iterations of the MLP recipe")
    parser.add_argument("--tasks", type=int, help="override evaluation.tasks (held-out optimizees) of both recipes")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    overrides = {"quadratic": [], "mlp": []}
    for name, iterations in (("quadratic", args.quadratic_iterations), ("mlp", args.mlp_iterations)):
        overrides[name] += [f"outer.iterations={iterations}"] if iterations else []
        overrides[name] += [f"evaluation.tasks={args.tasks}"] if args.tasks else []
    results, seconds, rows = {}, {}, []
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, path in RECIPES.items():
            run_dir, results[name], seconds[name] = run(path, overrides[name], Path(runs_dir))
            rows += rows_of(name, results[name])
            if name == "mlp":
                for variant, changes in GENERALISATION.items():
                    results[variant], seconds[variant] = generalisation(run_dir, path, overrides[name], changes)
                    rows += rows_of(variant, results[variant])
    baselines = list(results["quadratic"]["baselines"])
    print(f"\nLearned optimizer (Andrychowicz et al. 2016): mean final loss ± 95% interval over held-out optimizees; CPU {cpu_model()}")
    print_table(["problem", "steps", "learned", *baselines, "learned best"], rows)
    print("\nCPU seconds: " + ", ".join(f"{name} {value:.0f}" for name, value in seconds.items()))
    for name in RECIPES:
        training = results[name]["training"]
        print(f"{name}: {training['iterations']} meta-training iterations in {training['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "cpu_seconds": seconds, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
