"""`workbench report`: every figure on the page, every number equal to the run's files, bad input in one line."""

import base64
import copy
import html.parser
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from workbench import runs
from workbench.cli import main
from workbench.report.run_files import read_run
from workbench.report.several import recipe_differences

ROOT = Path(__file__).resolve().parents[1]

# Two phases and a scratch baseline, on tiny glyphs.
TRANSFER = """\
kind: transfer
name: reported-transfer
seed: 3
data: {source: synthetic, name: glyphs, classes: 3, samples: 16, image_size: [16, 16], channels: 1, validation: 0.25, test: 0.25, batch_size: 8}
base: {source: builtin, name: conv4}
freeze: {layers: {last: 8}, batchnorm: frozen}
schedule:
  - {name: head, epochs: 2, learning_rate: 3.0e-3}
  - {name: fine-tune, unfreeze: all, epochs: 2, learning_rate: 1.0e-3}
baseline: scratch
"""

META = """\
kind: meta
name: reported-meta
algorithm: maml
seed: 5
tasks: {source: sinusoid, shots: 5, queries: 5}
model: {builtin: mlp}
inner: {steps: 1, learning_rate: 0.01}
outer: {meta_batch_size: 4, iterations: 30}
evaluation: {tasks: 10, steps: [1, 3], every: 10, validation_tasks: 5}
"""


def _invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One real run of each kind, made by `workbench run`."""
    folder = tmp_path_factory.mktemp("report")
    made = {}
    for kind, recipe in (("transfer", TRANSFER), ("meta", META)):
        (folder / f"{kind}.yaml").write_text(recipe)
        result = _invoke("run", folder / f"{kind}.yaml", "--runs-dir", folder / "runs")
        assert result.exit_code == 0, result.output
        made[kind] = Path(result.stdout.strip().splitlines()[-1])
    return made


class Page(html.parser.HTMLParser):
    """The figures, notes and sourced numbers of a report page."""

    def __init__(self, text):
        super().__init__()
        self.figures, self.images, self.cells, self.notes, self.tables = [], [], [], [], []
        self._cell = self._note = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.figures.append(attrs["data-figure"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "div" and "data-table" in attrs:
            self.tables.append(attrs["data-table"])
        elif tag == "div" and attrs.get("class") == "note":
            self._note = []
        elif tag == "td":
            self._cell = {**attrs, "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._note is not None:
            self._note.append(data)

    def handle_endtag(self, tag):
        if tag == "td":
            self.cells.append(self._cell)
            self._cell = None
        elif tag == "div" and self._note is not None:
            self.notes.append("".join(self._note))
            self._note = None

    def sourced(self):
        return [cell for cell in self.cells if "data-field" in cell]


def _field(value, path):
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _shown(text):
    """The number a cell's text shows, and how far from the exact value it may be."""
    durations = ((r"(\d+) s", (1, 0), 0.5), (r"(\d+) min (\d+) s", (60, 1), 0.5), (r"(\d+) h (\d+) min", (3600, 60), 30))
    for pattern, units, tolerance in durations:
        match = re.fullmatch(pattern, text)
        if match:
            return sum(int(group) * unit for group, unit in zip(match.groups(), units, strict=False)), tolerance
    if text.endswith("%"):
        decimals = len(text[:-1].partition(".")[2])
        return float(text[:-1]) / 100, 0.5 * 10 ** -(decimals + 2)
    decimals = len(text.partition(".")[2])
    return float(text.replace(",", "")), 0.5 * 10**-decimals


def _check_numbers_against_files(page, runs_by_name):
    """Every number the page shows from a run's file is the file's value, exactly, and shown rounded from it."""
    checked = 0
    for cell in page.sourced():
        run_dir = runs_by_name[cell["data-run"]]
        value = _field(json.loads((run_dir / cell["data-file"]).read_text()), cell["data-field"])
        assert float(cell["data-value"]) == value, cell
        shown, tolerance = _shown(cell["text"])
        assert abs(shown - value) <= tolerance, cell
        checked += 1
    return checked


def _unsourced_numbers(page):
    """Cells that show a number without saying where it came from."""
    return [cell for cell in page.cells if "data-field" not in cell and re.fullmatch(r"[\d.,%]+", cell["text"])]


def test_a_transfer_report_has_its_figures_and_the_run_files_numbers_and_says_how_to_get_the_confusion_matrix(finished):
    run_dir = finished["transfer"]
    result = _invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{run_dir / 'report.html'}\n"
    page = Page((run_dir / "report.html").read_text())
    assert page.figures == ["curves", "baseline"]
    assert any(f"workbench evaluate {run_dir}" in note for note in page.notes)
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    fields = {cell["data-field"]: cell for cell in page.sourced()}
    assert fields["test.accuracy"]["text"] == f"{metrics['test']['accuracy']:.1%}"
    assert fields["baseline.scratch.test.accuracy"]["text"] == f"{metrics['baseline']['scratch']['test']['accuracy']:.1%}"
    for index, phase in enumerate(metrics["phases"]):
        assert fields[f"phases.{index}.trainable_parameters"]["text"] == f"{phase['trainable_parameters']:,}"
        assert fields[f"phases.{index}.best_epoch"]["text"] == str(phase["best_epoch"])
    assert _check_numbers_against_files(page, {run_dir.name: run_dir}) >= 20

    evaluated = _invoke("evaluate", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    again = _invoke("report", run_dir)
    assert again.exit_code == 0 and again.stdout == f"{run_dir / 'report.html'}\n"
    assert f"replaced the earlier {run_dir / 'report.html'}" in again.stderr
    page = Page((run_dir / "report.html").read_text())
    assert page.figures == ["curves", "baseline", "confusion", "precision-recall"]
    assert not any("workbench evaluate" in note for note in page.notes)
    evaluation = json.loads((run_dir / runs.EVALUATION_FILE).read_text())
    per_class = [cell for cell in page.sourced() if cell["data-file"] == runs.EVALUATION_FILE and ".recall" in cell["data-field"]]
    assert [float(cell["data-value"]) for cell in per_class] == [row["recall"] for row in evaluation["per_class"]]
    assert _check_numbers_against_files(page, {run_dir.name: run_dir}) >= 20 + 3 * len(evaluation["per_class"])
    assert _unsourced_numbers(page) == []
    for source in page.images:
        assert source.startswith("data:image/png;base64,")  # nothing to fetch: the page opens offline
        assert Image.open(io.BytesIO(base64.b64decode(source.partition(",")[2]))).size[0] > 500
    assert "@media print" in (run_dir / "report.html").read_text()


def test_a_meta_report_shows_training_validation_and_the_meta_test_means_exactly(finished):
    run_dir = finished["meta"]
    output = run_dir.parent / "pages" / "meta.html"
    result = _invoke("report", run_dir, "-o", output)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{output}\n" and "adapting its model to 3 sinusoid tasks" in result.stderr
    page = Page(output.read_text())
    assert page.figures == ["meta-training", "meta-validation", "meta-test", "sinusoid"]
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    fields = {cell["data-field"]: cell for cell in page.sourced() if cell["data-file"] == runs.METRICS_FILE}
    for index, entry in enumerate(metrics["evaluation"]):
        assert float(fields[f"evaluation.{index}.mean"]["data-value"]) == entry["mean"]
        assert fields[f"evaluation.{index}.mean"]["text"] == f"{entry['mean']:.4f}"
        assert fields[f"evaluation.{index}.ci95"]["text"] == f"{entry['ci95']:.4f}"
    assert fields["best_validation.iteration"]["text"] == str(metrics["best_validation"]["iteration"])
    assert _check_numbers_against_files(page, {run_dir.name: run_dir}) >= 12
    assert _unsourced_numbers(page) == []
    without_model = _invoke("report", run_dir, "-o", output, "--no-model")
    assert without_model.exit_code == 0 and "adapting" not in without_model.stderr
    assert Page(output.read_text()).figures == ["meta-training", "meta-validation", "meta-test"]


def test_several_runs_share_one_page_with_their_curves_overlaid_and_headlines_in_tables(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke("report", finished["transfer"], finished["meta"], "--no-model")  # the meta test adapts the model
    assert result.exit_code == 0, result.output
    output = tmp_path / f"report-{finished['transfer'].name}-vs-{finished['meta'].name}.html"
    assert result.stdout == f"{output.name}\n" and output.is_file()
    assert "reading run 2/2" in result.stderr and "drawing run 1/2" in result.stderr
    page = Page(output.read_text())
    assert page.figures[:2] == ["transfer-overlay", "meta-overlay-mse"]
    assert {"transfer-headlines", "meta-headlines-mse"} <= set(page.tables)
    runs_by_name = {path.name: path for path in finished.values()}
    headline = {(cell["data-run"], cell["data-field"]) for cell in page.sourced()}
    assert (finished["transfer"].name, "test.accuracy") in headline and (finished["meta"].name, "evaluation.1.mean") in headline
    assert _check_numbers_against_files(page, runs_by_name) >= 30


def test_recipe_differences_list_the_fields_that_differ_and_only_those(finished):
    first = read_run(finished["meta"])
    second = copy.deepcopy(first)
    second.path = first.path.with_name("other-meta")
    second.recipe["inner"]["learning_rate"] = 0.4
    del second.recipe["outer"]["lr_schedule"]
    second.recipe["model"] = "mlp"  # a mapping in one recipe, a plain value in the other: one row
    table = recipe_differences([first, second])
    assert table.header == ["field", first.name, "other-meta"]
    assert [[cell.text for cell in row] for row in table.rows] == [
        ["model", "{builtin: mlp}", "mlp"],
        ["inner.learning_rate", "0.01", "0.4"],
        ["outer.lr_schedule", "constant", "-"],
    ]
    assert recipe_differences([first, first]) is None


@pytest.mark.parametrize(
    ("kind", "figures", "missing"),
    [
        ("transfer", ["curves", "baseline"], "No metrics.json yet (the run is interrupted): the curves are its history so far."),
        ("meta", ["meta-training", "meta-validation"], "No meta-test yet (the run is interrupted)"),
    ],
)
def test_a_stopped_run_is_drawn_from_its_history_so_far(finished, tmp_path, kind, figures, missing):
    run_dir = _copy(finished[kind], tmp_path, f"stopped-{kind}")
    (run_dir / runs.METRICS_FILE).unlink()  # written only when a run ends
    runs.Run(run_dir).mark("interrupted", signal="SIGINT")
    result = _invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    page = Page((run_dir / "report.html").read_text())
    assert page.figures == figures
    assert any(note.startswith(missing) for note in page.notes), page.notes
    if kind == "meta":  # its model is written when meta-training ends too
        assert any(note.startswith("The sinusoid adaptation figure needs the run's model.keras") for note in page.notes)


def _copy(run_dir, tmp_path, name):
    return Path(
        shutil.copytree(
            run_dir, tmp_path / name, ignore=shutil.ignore_patterns("checkpoints", "logs", "*.keras", runs.EVALUATION_FILE, "*.html")
        )
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("not a run", "{run}: not a run directory (no manifest.json); pass a directory that `workbench run` printed"),
        (
            "no history",
            "{run}: failed before its first epoch (TrainingError: the loss became nan); nothing to draw. Fix that and run the recipe again",
        ),
        ("garbled history", "{run}/history.csv:3: unreadable history (column loss holds 'lots', not a number)"),
        (
            "empty history",
            "{run}/history.csv: unreadable history (expected a header with a `phase` column and one row per epoch); the run directory is damaged",
        ),
        ("compare run", "{run}: a compare run; `workbench report` draws transfer and meta runs"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(finished, tmp_path, damage, message):
    run_dir = _copy(finished["transfer"], tmp_path, "damaged")
    manifest = json.loads((run_dir / runs.MANIFEST_FILE).read_text())
    history = run_dir / runs.HISTORY_FILE
    if damage == "not a run":
        (run_dir / runs.MANIFEST_FILE).unlink()
    elif damage == "no history":  # how the runner leaves a run that failed in its first epoch
        history.unlink()
        (run_dir / runs.METRICS_FILE).unlink()
        runs.Run(run_dir).mark("failed", error="TrainingError: the loss became nan")
    elif damage == "garbled history":
        lines = history.read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[2].split(",")
        cells[header.index("loss")] = "lots"
        history.write_text("\n".join([*lines[:2], ",".join(cells), *lines[3:]]) + "\n")
    elif damage == "empty history":
        history.write_text("")
    else:
        runs.atomic_write_json(run_dir / runs.MANIFEST_FILE, {**manifest, "kind": "compare"})
    result = _invoke("report", run_dir, "-o", tmp_path / "out.html")
    assert result.exit_code == 2
    assert result.output == message.format(run=run_dir) + "\n"
    assert not (tmp_path / "out.html").exists()


def test_report_refuses_an_output_that_is_not_html(finished, tmp_path):
    result = _invoke("report", finished["transfer"], "-o", tmp_path / "report.pdf")
    assert result.exit_code == 2 and result.output == f"{tmp_path / 'report.pdf'}: the output must end in .html\n"


def test_a_transfer_report_never_imports_tensorflow(finished, tmp_path):
    probe = (
        "import sys\nfrom workbench.cli import main\n"
        "try:\n    main(sys.argv[1:], prog_name='workbench')\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print('IMPORTED:' + ','.join(m for m in ('tensorflow', 'keras') if m in sys.modules))\nsys.exit(code)\n"
    )
    output = tmp_path / "transfer.html"
    result = subprocess.run(
        [sys.executable, "-c", probe, "report", str(finished["transfer"]), "-o", str(output)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{output}\nIMPORTED:\n"


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium(finished, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium package (apt-get install chromium)")
    output = tmp_path / "both.html"
    assert _invoke("report", finished["transfer"], finished["meta"], "-o", output).exit_code == 0
    screenshot = tmp_path / "screenshot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,2400",
            f"--screenshot={screenshot}",
            output.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = Image.open(screenshot).convert("L")
    pixels = list(image.getdata())
    mean = sum(pixels) / len(pixels)
    variance = sum((value - mean) ** 2 for value in pixels) / len(pixels)
    assert variance > 200, variance  # a blank or one-colour page has (almost) none
    assert sum(value < 128 for value in pixels) / len(pixels) > 0.01  # text and curves: dark pixels
