"""Sinusoid regression against the figures of Finn et al. 2017 (MAML, section 5.1).

Runs recipes/sinusoid_maml.yaml (the paper's settings), recipes/sinusoid_maml_multistep.yaml
(the same with two inner steps and a uniform multi-step loss in meta-training) and their
transfer baseline, recipes/sinusoid_pretrain.yaml (one network trained on all tasks
jointly, then fine-tuned). Prints the meta-test mean squared error after 1, 5 and 10
gradient steps on 600 fixed 5-shot tasks, with the CPU time each run took, beside the
paper's figures, and whether each MAML run is at or below the paper at every step count.

    python benchmarks/sinusoid_paper.py                    # the recipes as written
    python benchmarks/sinusoid_paper.py --iterations 2000  # a quick look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "maml": ROOT / "recipes" / "sinusoid_maml.yaml",
    "multistep": ROOT / "recipes" / "sinusoid_maml_multistep.yaml",
    "pretrained": ROOT / "recipes" / "sinusoid_pretrain.yaml",
}
# Read off Figure 2 of Finn et al. 2017, K=5 (MAML) and the "pretrained, step=0.01" baseline.
PAPER_MAML = {1: 0.67, 5: 0.38, 10: 0.35}
PAPER = {"maml": PAPER_MAML, "multistep": PAPER_MAML, "pretrained": {1: 2.41, 5: 2.23, 10: 2.19}}


def run(recipe_path: Path, overrides: list[str], runs_dir: Path) -> tuple[dict, float, float]:
    from workbench.recipe import load_recipe
    from workbench.runner import run_recipe

    started_cpu, started_wall = time.process_time(), time.perf_counter()
    run_dir = run_recipe(load_recipe(recipe_path, overrides), recipe_path, runs_dir)
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    return json.loads((run_dir / "metrics.json").read_text()), cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, help="override outer.iterations of both recipes")
    args = parser.parse_args()
    overrides = ["evaluation.steps=[1, 5, 10]"]
    if args.iterations:
        overrides += [f"outer.iterations={args.iterations}", f"evaluation.every={max(1, args.iterations // 4)}"]
    summary = {}
    rows = []
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, path in RECIPES.items():
            metrics, cpu, wall = run(path, overrides, Path(runs_dir))
            by_steps = {entry["steps"]: entry for entry in metrics["evaluation"]}
            for steps in (1, 5, 10):
                entry = by_steps[steps]
                rows.append((name, steps, entry["mean"], entry["ci95"], PAPER[name][steps]))
                summary[f"{name}_mse_{steps}"] = round(entry["mean"], 3)
            summary[f"{name}_cpu_s"] = round(cpu, 1)
            summary[f"{name}_wall_s"] = round(wall, 1)
    print(f"{'model':<11} {'steps':>5} {'mse':>7} {'ci95':>7} {'paper':>6}")
    for name, steps, mean, ci95, paper in rows:
        print(f"{name:<11} {steps:>5} {mean:>7.3f} {ci95:>7.3f} {paper:>6.2f}")
    for name in RECIPES:
        print(f"{name}: {summary[f'{name}_cpu_s']} s CPU, {summary[f'{name}_wall_s']} s wall")
    for name in ("maml", "multistep"):
        above = [steps for name_, steps, mean, _, paper in rows if name_ == name and round(mean, 3) > paper]
        verdict = "met" if not above else "not met after " + ", ".join(f"{steps} steps" for steps in above)
        print(f"{name}: at or below the paper's MAML after 1, 5 and 10 steps: {verdict}")
    print("summary: " + " ".join(f"{key}={value}" for key, value in summary.items()))


if __name__ == "__main__":
    main()
