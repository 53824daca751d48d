"""Meta-learning against pretraining on Omniglot: the compare tables and our goals.

Runs recipes/compare_omniglot.yaml (600 5-way 1-shot episodes on the three alphabets of
images_background_small2.zip that images_background_small1.zip does not hold) and
recipes/compare_lake.yaml (Lake et al.'s 20 runs of 20-way one-shot), then prints each
table and the figures our goals are stated in:

- the best 5-way 1-shot accuracy of an entrant that trained in at most 10 CPU-minutes
  (goal: 95%), beside the best overall;
- Lake's error rate (1 - accuracy over the 400 test images) of the best entrant (goal: at
  most 15%; published: people 4.5%, Siamese nets 8.0% trained on 30 alphabets);
- the seconds each entrant took to score the 600 episodes at all its step counts (goal:
  under 60 s per entrant).

Entrants train once, in --runs-dir; both comparisons, and later calls, reuse their runs.

    python benchmarks/compare_omniglot.py --runs-dir runs/compare     # hours on 2 cores the first time
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"omniglot": ROOT / "recipes" / "compare_omniglot.yaml", "lake": ROOT / "recipes" / "compare_lake.yaml"}
CPU_BUDGET_S = 600
ACCURACY_GOAL = 0.95
LAKE_ERROR_GOAL = 0.15
SCORING_GOAL_S = 60


def run_comparison(recipe: Path, runs_dir: Path) -> dict:
    """`workbench run` on the recipe; the comparison's compare.json."""
    finished = subprocess.run(
        [sys.executable, "-m", "workbench", "run", str(recipe), "--runs-dir", str(runs_dir)], stdout=subprocess.PIPE, text=True
    )
    if finished.returncode != 0:
        sys.exit(f"{recipe.name}: workbench run failed (exit status {finished.returncode})")
    run_dir = Path(finished.stdout.strip().splitlines()[-1])
    return json.loads((run_dir / "compare.json").read_text())


def best(contents: dict, budget: float | None = None) -> tuple[str, dict] | None:
    """The best (entrant name, evaluation entry), among entrants that trained within `budget` CPU-seconds when given."""
    scored = [
        (entrant["name"], entry)
        for entrant in contents["entrants"]
        if budget is None or (entrant["training_cpu_seconds"] is not None and entrant["training_cpu_seconds"] <= budget)
        for entry in entrant["evaluation"]
    ]
    return max(scored, key=lambda pair: pair[1]["mean"]) if scored else None


def cpu_model() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return platform.processor() or "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "unknown")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/compare"), help="Where entrants train (and are reused from).")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from workbench.compare.table import format_table

    print(f"CPU: {cpu_model()}")
    results = {name: run_comparison(recipe, args.runs_dir) for name, recipe in RECIPES.items()}
    for name, contents in results.items():
        print(f"\n{RECIPES[name].name}\n{format_table(contents)}")

    omniglot = results["omniglot"]
    within = best(omniglot, CPU_BUDGET_S)
    overall = best(omniglot)
    print()
    if within:
        print(
            f"5-way 1-shot, best entrant trained in <= {CPU_BUDGET_S / 60:.0f} CPU-minutes: {within[0]} after {within[1]['steps']} steps, "
            f"{within[1]['mean']:.1%} +- {within[1]['ci95']:.1%} (goal {ACCURACY_GOAL:.0%})"
        )
    print(
        f"5-way 1-shot, best entrant: {overall[0]} after {overall[1]['steps']} steps, {overall[1]['mean']:.1%} +- {overall[1]['ci95']:.1%}"
    )
    lake_name, lake_entry = best(results["lake"])
    print(
        f"Lake's 20-way one-shot error rate, best entrant: {lake_name} after {lake_entry['steps']} steps, "
        f"{1 - lake_entry['mean']:.1%} (goal <= {LAKE_ERROR_GOAL:.0%}; people 4.5%, Siamese nets 8.0%)"
    )
    for entrant in omniglot["entrants"]:
        seconds = sum(entry["adapt_seconds_per_task"] * entry["tasks"] for entry in entrant["evaluation"])
        print(
            f"scoring {entrant['name']}: {seconds:.1f} s for {omniglot['tasks']} episodes at steps "
            f"{[entry['steps'] for entry in entrant['evaluation']]} (goal < {SCORING_GOAL_S} s)"
        )


if __name__ == "__main__":
    main()
