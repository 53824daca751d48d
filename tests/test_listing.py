"""`workbench runs`: one line per run, newest first, with why for runs that stopped early; `--json` for scripts."""

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from workbench import runs
from workbench.cli import main
from workbench.listing import KILLED, format_duration
from workbench.recipe import load_recipe, to_yaml

# A sinusoid meta run small enough to take seconds, and one whose inner step diverges at once.
META = """\
kind: meta
name: listed-meta
algorithm: maml
seed: 2
tasks: {source: sinusoid, shots: 5, queries: 5}
model: {builtin: mlp}
inner: {steps: 1, learning_rate: 0.01}
outer: {meta_batch_size: 4, iterations: 20}
evaluation: {tasks: 10, steps: [1, 2], every: 10, validation_tasks: 4}
"""
DIVERGING = META.replace("name: listed-meta", "name: diverging").replace("learning_rate: 0.01}", "learning_rate: 1.0e+30}")


def _invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """A finished and a failed real run; an interrupted, a killed and a running one marked the way the runner marks them."""
    folder = tmp_path_factory.mktemp("listing")
    (folder / "meta.yaml").write_text(META)
    (folder / "diverging.yaml").write_text(DIVERGING)
    runs_dir = folder / "runs"
    finished = _invoke("run", folder / "meta.yaml", "--runs-dir", runs_dir)
    assert finished.exit_code == 0, finished.output
    failed = _invoke("run", folder / "diverging.yaml", "--runs-dir", runs_dir)
    assert failed.exit_code != 0
    (finished_dir,) = runs_dir.glob("listed-meta-*")
    interrupted = runs.Run(shutil.copytree(finished_dir, runs_dir / "stopped-meta-20990101-000000"))
    interrupted.mark("interrupted", signal="SIGTERM")
    recipe = load_recipe(folder / "meta.yaml")
    killed = runs.Run.create(runs_dir, "killed-meta")
    killed.start(recipe, to_yaml(recipe))
    manifest = killed.manifest
    manifest["process"]["pid"] = _dead_pid()
    runs.atomic_write_json(killed.file(runs.MANIFEST_FILE), manifest)
    runs.Run.create(runs_dir, "alive-meta").start(recipe, to_yaml(recipe))  # this test process runs it
    (runs_dir / "notes").mkdir()  # a user's folder beside the runs: not a run, not listed
    damaged = runs_dir / "damaged-meta-20000101-000000"
    damaged.mkdir()
    (damaged / runs.MANIFEST_FILE).write_text("{ not json")
    return runs_dir


def _by_name(listed):
    return {entry["name"].rsplit("-", 2)[0]: entry for entry in listed}


def test_json_lists_every_run_with_its_status_headline_and_why(runs_dir):
    result = _invoke("runs", runs_dir, "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    by_name = _by_name(listed)
    assert set(by_name) == {"listed-meta", "diverging", "stopped-meta", "killed-meta", "alive-meta", "damaged-meta"}
    (finished_dir,) = runs_dir.glob("listed-meta-*")
    metrics = json.loads((finished_dir / runs.METRICS_FILE).read_text())
    last = metrics["evaluation"][-1]
    finished = by_name["listed-meta"]
    assert (finished["kind"], finished["status"], finished["reason"]) == ("meta", "finished", None)
    assert finished["headline_value"] == last["mean"] and last["steps"] == 2
    assert finished["headline"] == f"mse after 2 steps: {last['mean']:.4f} ± {last['ci95']:.4f} (10 tasks)"
    manifest = json.loads((finished_dir / runs.MANIFEST_FILE).read_text())
    assert finished["started"] == manifest["created"] and finished["duration_seconds"] >= 0
    (failed_dir,) = runs_dir.glob("diverging-*")
    failed = by_name["diverging"]
    assert failed["status"] == "failed" and failed["headline"] == ""
    assert failed["reason"] == json.loads((failed_dir / runs.MANIFEST_FILE).read_text())["error"]
    assert failed["reason"].startswith("TrainingError: the meta-loss became ")
    stopped = by_name["stopped-meta"]
    assert stopped["status"] == "interrupted" and stopped["reason"].startswith("stopped by SIGTERM; continue with: workbench resume ")
    assert by_name["killed-meta"]["status"] == KILLED and "ended without recording why" in by_name["killed-meta"]["reason"]
    assert (by_name["alive-meta"]["status"], by_name["alive-meta"]["reason"]) == ("running", None)
    assert by_name["damaged-meta"]["status"] == "unreadable" and "not valid JSON" in by_name["damaged-meta"]["reason"]
    starts = [entry["started"] for entry in listed if entry["started"]]
    assert starts == sorted(starts, reverse=True)  # newest first


def test_the_table_has_one_line_per_run_and_a_why_line_under_those_that_stopped(runs_dir):
    result = _invoke("runs", runs_dir)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "kind", "status", "headline", "started", "duration"]
    rows = [line for line in lines[1:] if not line.startswith("  why: ")]
    whys = [line for line in lines[1:] if line.startswith("  why: ")]
    assert len(rows) == 6 and len(whys) == 4  # failed, interrupted, killed, unreadable
    (finished,) = [row for row in rows if row.startswith("listed-meta-")]
    assert finished.split()[1:3] == ["meta", "finished"] and "mse after 2 steps:" in finished
    failed_index = next(index for index, line in enumerate(lines) if line.startswith("diverging-"))
    assert lines[failed_index + 1].startswith("  why: TrainingError: the meta-loss became ")


def test_runs_reads_the_runs_folder_from_the_environment(runs_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_RUNS", str(runs_dir))
    from_environment = json.loads(_invoke("runs", "--json").output)
    assert [entry["path"] for entry in from_environment] == [
        entry["path"] for entry in json.loads(_invoke("runs", runs_dir, "--json").output)
    ]
    assert len(from_environment) == 6
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKBENCH_RUNS")
    missing = _invoke("runs")
    assert missing.exit_code == 2
    assert missing.output == "runs: no such folder; pass the folder that holds run directories (default: runs, or $WORKBENCH_RUNS)\n"
    (tmp_path / "runs").mkdir()
    empty = _invoke("runs")
    assert empty.exit_code == 0 and empty.output == "runs: no runs yet\n"
    assert json.loads(_invoke("runs", "--json").output) == []


@pytest.mark.parametrize(
    ("seconds", "shown"), [(None, "-"), (0.4, "0 s"), (59.4, "59 s"), (61, "1 min 01 s"), (3599, "59 min 59 s"), (7620, "2 h 07 min")]
)
def test_durations_read_as_people_say_them(seconds, shown):
    assert format_duration(seconds) == shown
