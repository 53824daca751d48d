"""A learned-optimizer run in `workbench report` and `workbench runs`: its curves against the tuned baselines, and divergence in words."""

import html.parser
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from workbench import runs
from workbench.cli import main
from workbench.listing import headline_figure

# Seconds on a CPU: a few meta-iterations over short horizons, a handful of optimizees.
LEARNED = """\
kind: meta
name: reported-learned
algorithm: learned_optimizer
seed: 7
tasks: {source: quadratic, dimensions: 10, optimizees: 8}
optimizer_net: {layers: 2, units: 20, preprocessing_p: 10}
inner: {steps: 10, unroll: 5}
outer: {optimizer: adam, learning_rate: 1.0e-2, iterations: 3}
evaluation: {tasks: 8, steps: [10, 20], baselines: [sgd, adam, rmsprop, nesterov], tuning_tasks: 4}
"""


def _invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learned")
    (folder / "learned.yaml").write_text(LEARNED)
    result = _invoke("run", folder / "learned.yaml", "--runs-dir", folder / "runs")
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


class Page(html.parser.HTMLParser):
    """The figures, tables and cells of a report page."""

    def __init__(self, text):
        super().__init__()
        self.figures, self.tables, self.cells, self._cell = [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs["data-figure"])
        elif tag == "div" and "data-table" in attrs:
            self.tables.append(attrs["data-table"])
        elif tag == "td":
            self._cell = {**attrs, "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def _field(value, path):
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _diverged_copy(run_dir: Path, folder: Path) -> Path:
    """The run with its learned optimizer diverged at the last reported step, as the runner writes it (NaN as null)."""
    copy = Path(
        shutil.copytree(run_dir, folder / "runs" / "diverged-learned-20990101-000000", ignore=shutil.ignore_patterns("*.keras", "*.html"))
    )
    metrics = json.loads((copy / runs.METRICS_FILE).read_text())
    metrics["evaluation"][-1].update(mean=None, ci95=None, diverged=3)
    metrics["curves"]["learned"][-5:] = [None] * 5
    runs.atomic_write_json(copy / runs.METRICS_FILE, metrics)
    return copy


def test_the_report_draws_the_curves_against_each_tuned_baseline_and_tables_the_file_s_figures(learned_run, tmp_path):
    output = tmp_path / "learned.html"
    result = _invoke("report", learned_run, "-o", output)
    assert result.exit_code == 0, result.output
    page = Page(output.read_text())
    assert page.figures == ["learned-curves", "learned-training"]
    assert "learned-evaluation" in page.tables
    metrics = json.loads((learned_run / runs.METRICS_FILE).read_text())
    names = ["learned", *metrics["baselines"]]
    assert names == ["learned", "sgd", "adam", "rmsprop", "nesterov"]
    shown_names = [cell["text"] for cell in page.cells if cell["text"] in names]
    assert shown_names == names * len(metrics["evaluation"])  # one row per optimizer at each reported step count
    fields = {cell["data-field"]: cell for cell in page.cells if cell.get("data-file") == runs.METRICS_FILE}
    for name, baseline in metrics["baselines"].items():
        assert float(fields[f"baselines.{name}.learning_rate"]["data-value"]) == baseline["learning_rate"]
        for index, entry in enumerate(baseline["evaluation"]):
            assert fields[f"baselines.{name}.evaluation.{index}.mean"]["text"] == f"{entry['mean']:.4g}"
    for index, entry in enumerate(metrics["evaluation"]):
        assert fields[f"evaluation.{index}.mean"]["text"] == f"{entry['mean']:.4g}"
        assert fields[f"evaluation.{index}.ci95"]["text"] == f"{entry['ci95']:.4g}"
    for cell in fields.values():  # every number shown is the file's, exactly
        assert float(cell["data-value"]) == _field(metrics, cell["data-field"]), cell
    assert "best tuned baseline" in output.read_text()  # the headline in the overview


def test_a_diverged_learned_optimizer_is_said_in_words_in_the_headline_the_list_and_the_report(learned_run, tmp_path):
    copy = _diverged_copy(learned_run, tmp_path)
    metrics = json.loads((copy / runs.METRICS_FILE).read_text())
    text, value = headline_figure("meta", metrics)
    assert value is None
    assert text.startswith("loss after 20 steps: diverged (3 of 8 tasks); best tuned baseline ")

    listed = _invoke("runs", tmp_path / "runs", "--json")
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.output)
    assert entry["headline"] == text and entry["headline_value"] is None
    table = _invoke("runs", tmp_path / "runs")
    assert table.exit_code == 0 and "loss after 20 steps: diverged (3 of 8 tasks)" in table.output

    report = _invoke("report", copy, "-o", tmp_path / "diverged.html")
    assert report.exit_code == 0, report.output
    page = Page((tmp_path / "diverged.html").read_text())
    assert page.figures == ["learned-curves", "learned-training"]
    assert "diverged (3 of 8)" in [cell["text"] for cell in page.cells]

    # Beside the finished run, on one page: the overlay leaves the diverged point out.
    both = _invoke("report", learned_run, copy, "-o", tmp_path / "both.html")
    assert both.exit_code == 0, both.output


def test_a_finished_learned_optimizer_s_headline_names_its_loss_and_the_best_baseline(learned_run):
    metrics = json.loads((learned_run / runs.METRICS_FILE).read_text())
    last = metrics["evaluation"][-1]
    at_last = {name: baseline["evaluation"][-1]["mean"] for name, baseline in metrics["baselines"].items()}
    best = min(at_last, key=at_last.get)
    text, value = headline_figure("meta", metrics)
    assert value == last["mean"]
    assert text == f"loss after 20 steps: {last['mean']:.4g} ± {last['ci95']:.2g} (8 tasks); best tuned baseline {best} {at_last[best]:.4g}"


def test_a_null_mean_of_any_meta_or_compare_run_gives_no_value():
    entry = {"steps": 5, "mean": None, "ci95": None, "tasks": 10}
    assert headline_figure("meta", {"metric": "mse", "evaluation": [entry]}) == ("mse after 5 steps: diverged", None)
    finite = {"steps": 5, "mean": 0.5, "ci95": 0.1, "tasks": 10}
    compare = {"metric": "mse", "entrants": [{"name": "maml", "evaluation": [entry]}, {"name": "reptile", "evaluation": [finite]}]}
    assert headline_figure("compare", compare) == ("best reptile: mse after 5 steps: 0.5000 ± 0.1000 (10 tasks)", 0.5)
