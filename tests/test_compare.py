"""`workbench run` on a compare recipe: entrants trained or reused, scored on the very same episodes, resumable."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from workbench import runs
from workbench.cli import main
from workbench.compare.episodes import build_compare_episodes
from workbench.recipe import load_recipe

SIZE = 16

# Test classes 500-507: no entrant trains on them.
COMPARE = """\
kind: compare
name: glyph-compare
seed: 3
tasks: {{source: synthetic, name: glyphs, first_class: 500, classes: 8, samples: 4, ways: 3, shots: 1, queries: 3, image_size: [{size}, {size}]}}
evaluation: {{tasks: 20, steps: [0, 2]}}
entrants:
{entrants}
"""

ENTRANTS = [
    "  - {name: prototypes, recipe: transfer.yaml, adapt: {method: prototypes}}",
    "  - {name: head, recipe: transfer.yaml, adapt: {method: head, learning_rate: 0.05}}",
    "  - {name: maml, recipe: meta.yaml}",
]

TRANSFER = f"""\
kind: transfer
name: glyph-pretrain
seed: 1
data: {{source: synthetic, name: glyphs, classes: 8, samples: 12, validation: 0.25, image_size: [{SIZE}, {SIZE}], channels: 1, batch_size: 16}}
base: {{source: builtin, name: conv4, weights: none}}
schedule:
  - {{epochs: 2, learning_rate: 3.0e-3}}
"""

# Meta-trained for 2-way tasks; the comparison's tasks are 3-way.
META = """\
kind: meta
name: glyph-maml
algorithm: maml
seed: 2
tasks: {{source: synthetic, name: glyphs, classes: 16, samples: 4, ways: 2, shots: 1, queries: 1, image_size: [{size}, {size}], validation: 0.25, test: 0.25}}
model: {{builtin: conv4}}
inner: {{steps: 1, learning_rate: 0.1}}
outer: {{meta_batch_size: 2, iterations: {iterations}}}
evaluation: {{tasks: 2, steps: [1], every: {every}, validation_tasks: 2}}
"""


def _recipes(folder, entrants=ENTRANTS, iterations=4, every=2):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transfer.yaml").write_text(TRANSFER)
    (folder / "meta.yaml").write_text(META.format(size=SIZE, iterations=iterations, every=every))
    path = folder / "compare.yaml"
    path.write_text(COMPARE.format(size=SIZE, entrants="\n".join(entrants)))
    return path


def _run(recipe, runs_dir):
    result = CliRunner().invoke(main, ["run", str(recipe), "--runs-dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    return runs.Run(result.stdout.strip()), result


def _compare_json(run):
    return json.loads(run.file(runs.COMPARE_FILE).read_text())


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    recipe = _recipes(folder)
    run, result = _run(recipe, folder / "runs")
    return recipe, run, result


def test_every_entrant_is_scored_on_the_episodes_of_the_digest(compared):
    recipe, run, result = compared
    found = _compare_json(run)
    _, digest, _ = build_compare_episodes(load_recipe(recipe))
    assert found["episodes_sha256"] == digest and found["tasks"] == 20 and found["metric"] == "accuracy" and found["complete"]
    assert [entrant["name"] for entrant in found["entrants"]] == ["prototypes", "head", "maml"]
    assert [(entrant["kind"], entrant["method"]) for entrant in found["entrants"]] == [
        ("transfer", "prototypes"),
        ("transfer", "head"),
        ("meta", "maml"),
    ]
    for entrant in found["entrants"]:
        assert [entry["steps"] for entry in entrant["evaluation"]] == [0, 2]
        for entry in entrant["evaluation"]:
            assert 0.0 <= entry["mean"] <= 1.0 and entry["ci95"] >= 0 and entry["tasks"] == 20 and entry["adapt_seconds_per_task"] > 0
        metrics = json.loads((runs.Run(entrant["run"]).file(runs.METRICS_FILE)).read_text())
        assert entrant["training_cpu_seconds"] == metrics["training_cpu_seconds"] > 0 and entrant["parameters"] > 0
    prototypes, head, _ = found["entrants"]
    # Prototypes take no gradient step: the same figure at every step count. Both transfer entrants share one run.
    assert prototypes["evaluation"][0]["mean"] == prototypes["evaluation"][1]["mean"]
    assert prototypes["run"] == head["run"]
    assert sorted(path.name.rsplit("-", 2)[0] for path in run.path.parent.iterdir()) == ["glyph-compare", "glyph-maml", "glyph-pretrain"]
    # The table: every entrant at every step count, on stderr; the run directory alone on stdout.
    table = [line for line in result.stderr.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 3 * 2 and "| maml | meta | maml | 2 |" in result.stderr


def test_figures_do_not_depend_on_the_order_of_the_entrants(compared, tmp_path):
    recipe, run, _ = compared
    reversed_recipe = _recipes(tmp_path, entrants=ENTRANTS[::-1])
    before = set(run.path.parent.iterdir())
    again, _ = _run(reversed_recipe, run.path.parent)  # the same runs folder: every entrant's run is reused
    assert set(run.path.parent.iterdir()) - before == {again.path}
    first = {entrant["name"]: entrant["evaluation"] for entrant in _compare_json(run)["entrants"]}
    second = {entrant["name"]: entrant["evaluation"] for entrant in _compare_json(again)["entrants"]}
    for name, evaluation in first.items():
        assert [entry["mean"] for entry in second[name]] == [entry["mean"] for entry in evaluation], name


def test_an_entrant_that_trained_on_a_test_class_is_refused_before_anything_trains(tmp_path):
    recipe = _recipes(tmp_path)
    leaky = TRANSFER.replace("classes: 8, samples: 12", "classes: 8, first_class: 498, samples: 12")
    (tmp_path / "transfer.yaml").write_text(leaky)
    result = CliRunner().invoke(main, ["run", str(recipe), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "glyph-500" in result.output and "prototypes" in result.output and "transfer.yaml" in result.output
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_an_adapt_section_on_a_meta_entrant_is_refused(tmp_path):
    recipe = _recipes(tmp_path, entrants=["  - {name: maml, recipe: meta.yaml, adapt: {method: head}}"])
    result = CliRunner().invoke(main, ["run", str(recipe), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "compare.yaml:" in result.output and "entrants.0.adapt" in result.output and "own inner loop" in result.output


ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _resume_point_of(runs_dir, name):
    return any(runs_dir.glob(f"{name}-*/{runs.CHECKPOINTS_DIR}/resume.json"))


def test_a_comparison_stopped_while_an_entrant_trains_resumes_that_entrant_and_keeps_the_scores(tmp_path):
    # The meta entrant trains last, for long after its first resume point: the stop lands in its training.
    recipe = _recipes(tmp_path, iterations=150, every=20)
    runs_dir = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", str(recipe), "--runs-dir", str(runs_dir)],
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600
    while not _resume_point_of(runs_dir, "glyph-maml"):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    (comparison,) = runs_dir.glob("glyph-compare-*")
    (meta_run,) = runs_dir.glob("glyph-maml-*")
    assert err.strip().splitlines()[-1].endswith(f"continue with: workbench resume {comparison}")
    stopped = json.loads((comparison / runs.COMPARE_FILE).read_text())
    assert not stopped["complete"] and [entrant["name"] for entrant in stopped["entrants"]] == ["prototypes", "head", "maml"]
    assert stopped["entrants"][2] == {"name": "maml", "run": str(meta_run)}
    # Fewer iterations now would change the recipe: the comparison resumes the run it started.
    result = subprocess.run(
        [sys.executable, "-m", "workbench", "resume", str(comparison)], env=ENVIRONMENT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = json.loads((comparison / runs.COMPARE_FILE).read_text())
    assert resumed["complete"] and resumed["entrants"][:2] == stopped["entrants"][:2]  # scored once, kept as they were
    assert resumed["entrants"][2]["run"] == str(meta_run) and len(list(runs_dir.glob("glyph-maml-*"))) == 1
    manifest = json.loads((meta_run / runs.MANIFEST_FILE).read_text())
    assert manifest["status"] == "finished" and manifest["resumed"] == 1
    assert json.loads((comparison / runs.MANIFEST_FILE).read_text())["status"] == "finished"
    np.testing.assert_array_less(0, [entry["adapt_seconds_per_task"] for entry in resumed["entrants"][2]["evaluation"]])


def test_validate_shows_the_plan_of_a_comparison(compared):
    recipe, _, _ = compared
    result = CliRunner().invoke(main, ["validate", str(recipe), "--plan"])
    assert result.exit_code == 0, result.output
    assert "20 episodes" in result.output and "maml: meta.yaml" in result.output and "adapts by prototypes" in result.output


def test_runs_lists_the_comparison_by_its_best_entrant(compared):
    _, run, _ = compared
    result = CliRunner().invoke(main, ["runs", str(run.path.parent), "--json"])
    assert result.exit_code == 0, result.output
    (listed,) = [entry for entry in json.loads(result.output) if entry["path"] == str(run.path)]
    assert listed["kind"] == "compare"
    best = max((entry["mean"], entrant["name"]) for entrant in _compare_json(run)["entrants"] for entry in entrant["evaluation"])
    assert listed["headline"].startswith(f"best {best[1]}: accuracy")
