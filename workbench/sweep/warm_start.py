"""Warm start: the best configurations of past sweeps on the most similar datasets are the first trials.

After Feurer, Springenberg and Hutter 2015 (MI-SMBO). The new sweep's dataset
is described as its runs will describe it (`workbench.data.meta_features`),
and compared with the dataset.json of every past sweep's best trial under the
same runs folder, by standardised meta-feature distance. The best parameters
of the K nearest are enqueued (`study.enqueue_trial`), nearest first, so that
they are the first trials of this sweep and are measured on this dataset.

Their old objective values are not told to the sampler as if they were
results of this study: a value measured on another dataset is no observation
of this objective (an easy dataset's 0.95 would rank above every honest
result here, and `best` would name a configuration never run on this data).
The sampler learns what those configurations are worth here from the
enqueued trials themselves, which run first.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from workbench import runs
from workbench.data import meta_features
from workbench.sweep import space

log = logging.getLogger(__name__)
SOURCE = "warm_start"


def target_features(tuned) -> dict:
    """The meta-features of the tuned recipe's data, loaded as its runs load it."""
    name = meta_features.dataset_name(tuned.data if tuned.kind == "transfer" else tuned.tasks)
    if tuned.kind == "transfer":
        from workbench.data.datasets import load_image_splits

        return meta_features.describe_image_splits(load_image_splits(tuned.data, tuned.seed), name)
    from workbench.meta.tasks import build_tasks

    return meta_features.describe_tasks(build_tasks(tuned.tasks, tuned.seed), name)


def past_sweeps(runs_dir: Path, exclude: Path) -> list[dict]:
    """Finished or stopped sweeps under `runs_dir` with a best trial whose run left a dataset.json."""
    found = []
    for record_path in sorted(Path(runs_dir).glob(f"*/{runs.SWEEP_FILE}")):
        if record_path.parent.resolve() == Path(exclude).resolve():
            continue
        try:
            record = json.loads(record_path.read_text())
            best = record["best"]
            features = json.loads((Path(best["run"]) / runs.DATASET_FILE).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no completed trial yet, or a damaged record: nothing to learn from
        found.append({"sweep": str(record_path.parent), "features": features, "best": best, "direction": record["objective"]["direction"]})
    return found


def nearest(target: dict, candidates: list[dict], neighbours: int) -> list[tuple[dict, float]]:
    """The `neighbours` candidates nearest to `target`, with their distances, nearest first (ties: the older sweep)."""
    if not candidates:
        return []
    measured = meta_features.distances(meta_features.vector(target), [meta_features.vector(c["features"]) for c in candidates])
    order = sorted(range(len(candidates)), key=lambda index: (measured[index], index))
    return [(candidates[index], measured[index]) for index in order[:neighbours]]


def enqueue(sweep, study, tuned, runs_dir: Path, exclude: Path, features: dict | None = None) -> list[dict]:
    """Enqueue the best parameters of the nearest past sweeps; record and print which datasets they came from."""
    target = features or target_features(tuned)
    candidates = [c for c in past_sweeps(runs_dir, exclude) if c["direction"] == sweep.objective.direction]
    chosen = nearest(target, candidates, sweep.warm_start.neighbours)
    drawn = []
    for candidate, distance in chosen[: sweep.trials]:
        params = space.fitting_params(sweep.space, candidate["best"]["params"])
        entry = {
            "dataset": candidate["features"].get("name"),
            "distance": round(distance, 4),
            "sweep": candidate["sweep"],
            "trial": candidate["best"]["trial"],
            "value": candidate["best"]["value"],
            "params": space.recipe_values(sweep.space, params),
        }
        if params:
            study.enqueue_trial(params, user_attrs={"source": SOURCE, "warm_start_from": candidate["sweep"]}, skip_if_exists=True)
        drawn.append(entry)
    study.set_user_attr("warm_start", drawn)
    if not chosen:
        log.info("warm start: no past sweep under %s to draw on; starting cold", runs_dir)
    for entry in drawn:
        log.info(
            "warm start: %s at distance %.3f (best %.4g in %s): %s",
            entry["dataset"],
            entry["distance"],
            entry["value"],
            Path(entry["sweep"]).name,
            ", ".join(f"{path}={space.yaml_text(value)}" for path, value in entry["params"].items()) or "no parameter of this space",
        )
    return drawn
