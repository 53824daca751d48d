"""Warm-started against cold hyperparameter search, over a family of small offline datasets, one held out at a time.

Each dataset (synthetic glyph sets of 5 to 16 classes; Omniglot alphabets of 6
to 10 characters from the two background archives; 20 images per class, 20x20)
gets a cold TPE sweep of a small transfer recipe: a new head on a conv4 base
pretrained once on other glyph classes (learning rate, optimizer, dropout,
batch size; objective: test loss). Then, for each dataset in turn, a sweep with
`warm_start: {neighbours: 3}` runs in a runs folder that holds the cold sweeps of
the *other* datasets only, so it draws on those and never on its own.

Regret after t trials: the best test loss found in the first t trials minus the
best found on that dataset by either search; a failed trial (the loss diverged)
counts as a trial that found nothing. The table gives its mean and standard
deviation over the held-out datasets, and, per dataset, the trials the warm
search needed to reach the cold search's final best. Goal: within 10 trials of
a 30-trial cold search, on average.

    python benchmarks/sweep_warm_start.py --quick                   # 6 trials per sweep: 26 min on 2 shared, busy cores
    python benchmarks/sweep_warm_start.py --warm-trials 10          # 30 cold, 10 warm trials: 52 min there
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_TRIALS = 10
NEIGHBOURS = 3

# key: the data section of the tuned recipe (every one: 20 images per class, split 10 / 5 / 5).
DATASETS = {
    "glyphs-5": "{source: synthetic, name: glyphs, classes: 5, first_class: 0, samples: 20, image_size: [20, 20]}",
    "glyphs-8": "{source: synthetic, name: glyphs, classes: 8, first_class: 200, samples: 20, image_size: [20, 20]}",
    "glyphs-12": "{source: synthetic, name: glyphs, classes: 12, first_class: 400, samples: 20, image_size: [20, 20]}",
    "glyphs-16": "{source: synthetic, name: glyphs, classes: 16, first_class: 600, samples: 20, image_size: [20, 20]}",
    "balinese-8": "{source: folder, path: omniglot/images_background_small1.zip, include: '^Balinese/character0[1-8]$', image_size: [20, 20]}",
    "aramaic-6": "{source: folder, path: omniglot/images_background_small1.zip, include: '^Early_Aramaic/character0[1-6]$', image_size: [20, 20]}",
    "korean-10": "{source: folder, path: omniglot/images_background_small1.zip, include: '^Korean/character(0[1-9]|10)$', image_size: [20, 20]}",
    "tagalog-8": "{source: folder, path: omniglot/images_background_small2.zip, include: '^Tagalog/character0[1-8]$', image_size: [20, 20]}",
}

# The base every tuned recipe fine-tunes: conv4 trained once on glyph classes that no dataset above holds.
PRETRAIN = """\
kind: transfer
name: warm-start-base
seed: 2
data: {source: synthetic, name: glyphs, classes: 40, first_class: 3000, samples: 30, image_size: [20, 20], channels: 1,
       validation: 0.1, batch_size: 32}
base: {source: builtin, name: conv4}
freeze: {layers: none, batchnorm: train}
schedule:
  - {epochs: 5, learning_rate: 2.0e-3}
"""

TUNED = """\
kind: transfer
name: {key}
seed: 5
data: {data}
base: {{source: run, path: {base}}}
freeze: {{layers: all, batchnorm: frozen}}
head: {{dropout: 0.1}}
schedule:
  - {{epochs: 8, optimizer: adam, learning_rate: 1.0e-3}}
"""
# The data sections above leave these out: they are the same for every dataset.
SHARED_DATA = ", channels: 1, validation: 0.25, test: 0.25, batch_size: 16}"

SWEEP = """\
kind: sweep
name: {name}
seed: 1
recipe: {key}.yaml
objective: {{metric: test.loss, direction: minimize}}
space:
  schedule.0.learning_rate: {{log_uniform: [1.0e-5, 1.0]}}
  schedule.0.optimizer: {{choice: [adam, sgd, rmsprop]}}
  head.dropout: {{uniform: [0.0, 0.7]}}
  data.batch_size: {{choice: [8, 32]}}
trials: {trials}
sampler: tpe
pruning: none
warm_start: {warm_start}
"""


def write_recipes(folder: Path, key: str, trials: int, warm_trials: int, base: Path) -> dict[str, Path]:
    (folder / f"{key}.yaml").write_text(TUNED.format(key=key, data=DATASETS[key][:-1] + SHARED_DATA, base=base))
    made = {}
    for mode, count, warm_start in (("cold", trials, "null"), ("warm", warm_trials, f"{{neighbours: {NEIGHBOURS}}}")):
        path = folder / f"{key}-{mode}.yaml"
        path.write_text(SWEEP.format(name=f"{key}-{mode}", key=key, trials=count, warm_start=warm_start))
        made[mode] = path
    return made


def pretrained_base(work: Path) -> Path:
    """The base run, trained once per work folder."""
    from workbench.recipe import load_recipe
    from workbench.runner import run_recipe

    found = sorted((work / "base").glob("warm-start-base-*/model.keras"))
    if found:
        return found[-1].parent
    path = work / "base.yaml"
    path.write_text(PRETRAIN)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return run_recipe(load_recipe(path), path, work / "base").resolve()


def run_sweep(path: Path, runs_dir: Path) -> dict:
    """Run a sweep recipe in this process (its trials' Keras output silenced); its sweep.json."""
    from workbench.recipe import load_recipe
    from workbench.runner import run_recipe

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        run_dir = run_recipe(load_recipe(path), path, runs_dir)
    return json.loads((run_dir / "sweep.json").read_text())


def best_so_far(record: dict, trials: int) -> list[float]:
    """The best objective after each of the first `trials` trials, in the order they were asked for (failed: no value)."""
    values, best = [], math.inf
    for trial in sorted(record["trials"], key=lambda entry: entry["number"])[:trials]:
        if trial["state"] == "complete" and trial["value"] is not None:
            best = min(best, trial["value"])
        values.append(best)
    return values + [best] * (trials - len(values))


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((index + 1 for index, value in enumerate(curve) if value <= target + 1e-12), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 trials per sweep instead of 30: proves the benchmark runs, not the goal.")
    parser.add_argument("--trials", type=int, help="Trials per sweep (default 30; 6 with --quick).")
    parser.add_argument("--warm-trials", type=int, help="Trials per warm-started sweep (default: as many as the cold ones).")
    parser.add_argument("--work-dir", type=Path, help="Where recipes and runs go (default: a new temporary folder, kept).")
    args = parser.parse_args()
    trials = args.trials or (6 if args.quick else 30)
    warm_trials = args.warm_trials or trials
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="sweep-warm-start-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WORKBENCH_DATA", str(ROOT.parent / "shared" / "data"))
    logging.basicConfig(level=logging.WARNING)
    from workbench.quiet import import_tensorflow

    import_tensorflow()
    base = pretrained_base(work)
    recipes = {key: write_recipes(work, key, trials, warm_trials, base) for key in DATASETS}
    cold_runs = work / "cold"
    cold, warm, drawn = {}, {}, {}
    started = time.perf_counter()
    for key in DATASETS:
        cold[key] = run_sweep(recipes[key]["cold"], cold_runs)
        print(f"cold {key}: best {cold[key]['best']['value']:.4f} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    for key in DATASETS:
        # The held-out dataset's runs folder: the other datasets' cold sweeps, and nothing of its own.
        folder = work / f"warm-{key}"
        folder.mkdir(exist_ok=True)
        for other in DATASETS:
            if other != key:
                (sweep_dir,) = [path for path in cold_runs.iterdir() if path.name.startswith(f"{other}-cold-")]
                link = folder / sweep_dir.name
                if not link.exists():
                    link.symlink_to(sweep_dir)
        warm[key] = run_sweep(recipes[key]["warm"], folder)
        drawn[key] = ", ".join(f"{entry['dataset']} ({entry['distance']:.2f})" for entry in warm[key]["warm_start"])
        print(f"warm {key}: best {warm[key]['best']['value']:.4f}; drew on {drawn[key]}", file=sys.stderr)
    report(cold, warm, drawn, trials, warm_trials, time.perf_counter() - started, work)


def report(cold: dict, warm: dict, drawn: dict, trials: int, warm_trials: int, seconds: float, work: Path) -> None:
    curves = {}
    for key in DATASETS:
        cold_curve, warm_curve = best_so_far(cold[key], trials), best_so_far(warm[key], warm_trials)
        best = min(cold_curve[-1], warm_curve[-1])
        curves[key] = ([value - best for value in cold_curve], [value - best for value in warm_curve], cold_curve, warm_curve)
    print(f"Regret (test loss above the best either search found), mean and standard deviation over {len(DATASETS)} held-out datasets")
    print(f"{'trials':>6}  {'cold mean':>9}  {'cold sd':>8}  {'warm mean':>9}  {'warm sd':>8}")
    shown = sorted({1, 2, 3, 5, GOAL_TRIALS, 15, 20, trials} & set(range(1, min(trials, warm_trials) + 1)))
    for t in shown:
        cold_regrets = [curves[key][0][t - 1] for key in DATASETS]
        warm_regrets = [curves[key][1][t - 1] for key in DATASETS]
        print(f"{t:>6}  {_mean(cold_regrets):>9.4f}  {_sd(cold_regrets):>8.4f}  {_mean(warm_regrets):>9.4f}  {_sd(warm_regrets):>8.4f}")
    print()
    print(f"{'dataset':<14}  {'cold best':>9}  {'warm best':>9}  {'warm reaches cold best at':>25}  warm start drew on (distance)")
    reached = []
    for key in DATASETS:
        _, _, cold_curve, warm_curve = curves[key]
        at = trials_to_reach(warm_curve, cold_curve[-1])
        reached.append(at)
        print(f"{key:<14}  {cold_curve[-1]:>9.4f}  {warm_curve[-1]:>9.4f}  {str(at or f'> {warm_trials}'):>25}  {drawn[key]}")
    within = sum(1 for at in reached if at is not None and at <= GOAL_TRIALS)
    # Not reached within the budget counts as the budget plus one: a lower bound on the true figure.
    mean_at = _mean([at if at is not None else warm_trials + 1 for at in reached])
    at_goal = min(GOAL_TRIALS, trials, warm_trials)
    print(f"\nruns and recipes: {work}; {seconds / 60:.1f} min")
    print(
        f"summary: datasets={len(DATASETS)} cold_trials={trials} warm_trials={warm_trials} warm_reached_cold_best_within_{GOAL_TRIALS}={within}/{len(DATASETS)} "
        f"mean_trials_to_reach={mean_at:.1f} "
        f"regret_at_{at_goal}_cold={_mean([curves[k][0][at_goal - 1] for k in DATASETS]):.4f} "
        f"regret_at_{at_goal}_warm={_mean([curves[k][1][at_goal - 1] for k in DATASETS]):.4f} minutes={seconds / 60:.1f}"
    )


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def _sd(values: list[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
