"""The `workbench` command: thin click commands that parse, call the library and print.

TensorFlow is imported only inside the commands that train or load models, so
that `workbench --help` and `workbench validate` start fast.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import sys
from importlib import resources
from pathlib import Path

import click

from workbench.errors import ArgumentError, WorkbenchError

USAGE_ERROR = 2
INTERRUPTED = 130
DEFAULT_RUNS_DIR = "runs"
WORKER_FINISHED = "worker finished; the chief wrote the run directory"  # what non-chief workers print


class WorkbenchGroup(click.Group):
    """Turns the library's errors into their message and exit status 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WorkbenchError as error:
            click.echo(str(error), err=True)
            ctx.exit(USAGE_ERROR)
        except KeyboardInterrupt as stop:
            run_path = getattr(stop, "run_path", None)  # set on a run stopped by Ctrl-C or SIGTERM
            if run_path is None:
                click.echo("interrupted", err=True)
            else:
                click.echo(f"interrupted: {run_path} keeps its last resume point; continue with: workbench resume {run_path}", err=True)
            ctx.exit(getattr(stop, "exit_status", INTERRUPTED))


def needs_tensorflow(command):
    """Import TensorFlow quietly before `command` runs (its C++ start-up lines are not the user's concern)."""

    @functools.wraps(command)
    def quietly(*args, **kwargs):
        from workbench.quiet import import_tensorflow

        import_tensorflow()
        return command(*args, **kwargs)

    return quietly


def _report_training(train) -> None:
    """Run `train()` with everything it prints on stderr; then the result on stderr and the run directory alone on stdout.

    So that `RUN=$(workbench run recipe.yaml)` captures the run directory only.
    """
    from workbench.headline import headline
    from workbench.runs import SWEEP_FILE

    with contextlib.redirect_stdout(sys.stderr):
        run_dir = train()
    if run_dir is None:
        click.echo(WORKER_FINISHED)
        return
    if (Path(run_dir) / SWEEP_FILE).is_file():
        from workbench.sweep.record import format_result

        click.echo(format_result(Path(run_dir)), err=True)
    else:
        click.echo(headline(run_dir), err=True)
    click.echo(str(run_dir))


overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD.PATH=VALUE",
    help="Override a recipe field, e.g. --set data.batch_size=64 (repeatable).",
)
runs_dir_option = click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("WORKBENCH_RUNS", DEFAULT_RUNS_DIR),
    show_default="runs, or $WORKBENCH_RUNS",
    help="Folder that holds the run directories.",
)


@click.group(cls=WorkbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="workbench")
def main():
    """Transfer learning and meta-learning from YAML recipes (Keras 3)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # TensorFlow's own INFO lines (e.g. "Assets written to: ..." on every SavedModel export) are not the workbench's to show.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@overrides_option
@runs_dir_option
@click.option(
    "--storage", metavar="URL", help="Sweeps: the study's database (e.g. postgresql://...); default: study.db in the sweep's run directory."
)
@needs_tensorflow
def run(recipe: Path, overrides: tuple[str, ...], runs_dir: Path, storage: str | None):
    """Train what RECIPE describes; print its result, and the new run directory on stdout."""
    from workbench.recipe import load_recipe
    from workbench.runner import run_recipe

    loaded = load_recipe(recipe, overrides)
    if storage is not None and loaded.kind != "sweep":
        raise ArgumentError(
            f"--storage holds a sweep's study; {recipe} is a {loaded.kind} recipe. Leave --storage out. Received: --storage={storage}"
        )
    _report_training(lambda: run_recipe(loaded, recipe, runs_dir, overrides, storage=storage))


@main.group(cls=WorkbenchGroup)
def sweep():
    """Work on a sweep's study from several processes or machines."""


@sweep.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@needs_tensorflow
def join(run_dir: Path):
    """Add a worker to the study of the sweep run RUN: it runs trials until the sweep has all of them; print the result."""
    from workbench.runner import join_sweep

    _report_training(lambda: join_sweep(run_dir))


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@needs_tensorflow
def resume(run_dir: Path):
    """Continue an interrupted or failed run from its last checkpoint; print its result, and the run directory on stdout."""
    from workbench.runner import resume_run

    _report_training(lambda: resume_run(run_dir))


@main.command()
@click.argument("recipes", nargs=-1, required=True, type=click.Path(path_type=Path))
@overrides_option
@click.option("--plan", is_flag=True, help="Also build each model (no weights, nothing trained) and print its phases.")
def validate(recipes: tuple[Path, ...], overrides: tuple[str, ...], plan: bool):
    """Check recipe files; one line per file, exit status 2 if any is invalid."""
    from workbench.recipe import load_recipe

    failed = False
    for path in recipes:
        try:
            recipe = load_recipe(path, overrides)
            if plan:
                from workbench.plan import describe_plan

                description = describe_plan(recipe, path, overrides)
        except WorkbenchError as error:
            click.echo(str(error), err=True)
            failed = True
            continue
        click.echo(f"{path}: ok ({recipe.kind}: {recipe.name})")
        if plan:
            click.echo(description)
    if failed:
        sys.exit(USAGE_ERROR)


@main.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (replacing it; folders made) instead of printing.",
)
def schema(output: Path | None):
    """Print the JSON Schema of recipes, for editors that complete YAML."""
    from workbench.recipe import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        _write_output(output, text, overwrite=True)  # regenerating the schema file is its normal use


@main.command()
@click.option("--kind", type=click.Choice(["transfer", "meta"]), default="transfer", show_default=True)
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def init(kind: str, path: Path | None):
    """Write a commented starter recipe to PATH (default: KIND.yaml); never overwrites."""
    path = path or Path(f"{kind}.yaml")
    template = resources.files("workbench").joinpath("templates", f"{kind}.yaml").read_text()
    schema_file = resources.files("workbench").joinpath("recipe.schema.json")
    _write_output(path, template.replace("{schema}", str(schema_file)))
    click.echo(f"wrote {path}; check it with: workbench validate {path}")


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), help="Transfer runs: a folder or .zip of class folders to evaluate on instead.")
@click.option(
    "--steps", multiple=True, type=click.IntRange(min=0), help="Meta runs: adaptation steps to report (repeatable; default: the recipe's)."
)
@click.option("--tasks", type=click.IntRange(min=2), help="Meta runs: meta-test tasks (default: the recipe's).")
@needs_tensorflow
def evaluate(run_dir: Path, data: Path | None, steps: tuple[int, ...], tasks: int | None):
    """Evaluate a finished run; writes evaluation.json in RUN and prints a table.

    Transfer runs: loss, accuracy, per-class precision and recall, confusion
    matrix. Meta runs: the meta-test protocol again (mean and 95% interval),
    on the same fixed tasks.
    """
    from workbench.learned.summary import refuse_learned_optimizer_run
    from workbench.runs import Run

    refuse_learned_optimizer_run(run_dir, "evaluate")
    meta = Run.open(run_dir).manifest.get("kind") == "meta"
    if meta and data is not None:
        raise WorkbenchError(f"{run_dir}: --data is for transfer runs; a meta run is evaluated on its recipe's meta-test tasks")
    if not meta and (steps or tasks):
        raise WorkbenchError(f"{run_dir}: --steps and --tasks are for meta runs; this is a transfer run")
    if meta:
        from workbench.evaluation import format_meta_result
        from workbench.meta.runner import evaluate_meta_run

        report = evaluate_meta_run(run_dir, steps=sorted(set(steps)) or None, tasks=tasks)
        for entry in report["evaluation"]:
            click.echo(format_meta_result(report["metric"], entry))
        return
    from workbench.evaluation import evaluate_run, format_report

    click.echo(format_report(evaluate_run(run_dir, data)))


@main.command()
@click.argument("model", metavar="RUN|MODEL.keras", type=click.Path(path_type=Path))
@click.argument("images", metavar="IMAGE|FOLDER...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1), help="Classes per image (at most all of them).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "csv"]),
    default="text",
    show_default=True,
    help='json: [{"image", "predictions": [{"class", "probability"}]}]; csv: image,rank,class,probability.',
)
@needs_tensorflow
def predict(model: Path, images: tuple[Path, ...], top_k: int, output_format: str):
    """Top-k classes, with probabilities, for each image (and each image in a FOLDER, recursively).

    RUN is a finished transfer run; MODEL.keras a run's model or one that
    `workbench adapt` wrote. A meta run must be adapted first.
    """
    from workbench.evaluation import format_predictions
    from workbench.evaluation import predict as predict_images
    from workbench.learned.summary import refuse_learned_optimizer_run

    refuse_learned_optimizer_run(model, "predict")

    click.echo(format_predictions(predict_images(model, list(images), top_k), output_format))


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option(
    "--support", required=True, type=click.Path(path_type=Path), help="Labelled support set: a folder or .zip, one sub-folder per class."
)
@click.option(
    "--method",
    type=click.Choice(["prototypes", "head", "finetune"]),
    help="Transfer runs: nearest class mean of the base's embedding (default), a new linear head, or the head with base layers.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    help="Adaptation steps (default: meta runs, the most the recipe evaluates; head and finetune, 100).",
)
@click.option(
    "--learning-rate", type=click.FloatRange(min=0, min_open=True), help="Head and finetune: the step size (default 0.01, 0.001)."
)
@click.option("--unfreeze", metavar="SELECTOR", help="Finetune: base layers that train, e.g. all (default) or '{last: 5}'.")
@click.option(
    "--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the adapted MODEL.keras."
)
@needs_tensorflow
def adapt(
    run_dir: Path, support: Path, method: str | None, steps: int | None, learning_rate: float | None, unfreeze: str | None, output: Path
):
    """Adapt a finished run to a new task; write a Keras classifier.

    A meta run adapts with its own inner loop, to any number of classes; a
    transfer run by the nearest class mean of its base's embedding, a new
    linear head, or the head with base layers fine-tuned.
    """
    from workbench.adaptation.support import adapt_run
    from workbench.evaluation import plural
    from workbench.learned.summary import refuse_learned_optimizer_run

    refuse_learned_optimizer_run(run_dir, "adapt")

    if output.suffix != ".keras":
        raise ArgumentError(f"{output}: the output must end in .keras")
    selector = None if unfreeze is None else _selector(unfreeze)
    _prepare_output(output)
    result = adapt_run(run_dir, support, output, method=method, steps=steps, learning_rate=learning_rate, unfreeze=selector)
    how = "" if result["method"] == "inner_loop" else f" by {result['method']}"
    steps_text = f" in {plural(result['steps'], 'step')}" if result["steps"] else ""
    click.echo(
        f"adapted to {len(result['classes'])} classes from {plural(result['support'], 'image')}{how}{steps_text}: {result['output']}"
    )


def _selector(text: str):
    """A layer selector written on the command line: all, none, or a YAML mapping such as {last: 5}."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ArgumentError(
            f"--unfreeze: expected all, none, {{last: N}}, {{until: layer}} or {{match: regex}}. Received: {text!r}"
        ) from None


def _prepare_output(path: Path, overwrite: bool = False) -> None:
    """Refuse an existing `path` (unless `overwrite`); make its missing folders."""
    if path.exists() and not overwrite:
        raise ArgumentError(f"{path}: already exists; choose another path or remove it first")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = "a file is in the way" if isinstance(error, (FileExistsError, NotADirectoryError)) else error.strerror
        raise ArgumentError(f"{path.parent}: cannot make this folder ({reason}); choose another path") from None


def _write_output(path: Path, text: str, overwrite: bool = False) -> None:
    """Write a file the user named, atomically, making its folders; never over an existing one unless `overwrite`."""
    from workbench.runs import atomic_write_text

    _prepare_output(path, overwrite)
    try:
        atomic_write_text(path, text)
    except OSError as error:
        raise ArgumentError(f"{path}: cannot write this file ({error.strerror}); choose another path") from None


@main.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the page (.html; folders made). Default: RUN/report.html, or report-....html here for several runs.",
)
@click.option("--no-model", is_flag=True, help="Sinusoid meta runs: leave out the figure that adapts the model (it imports TensorFlow).")
def report(run_dirs: tuple[Path, ...], output: Path | None, no_model: bool):
    """Write one self-contained HTML page of figures and tables for finished or stopped runs; print its path.

    Several RUNs: their curves overlaid, their headline figures in one table,
    and the recipe fields in which they differ, before each run's own section.
    """
    from workbench.report.build import build_report, default_output

    if output is not None and output.suffix.lower() not in (".html", ".htm"):
        raise ArgumentError(f"{output}: the output must end in .html")
    page = build_report(list(run_dirs), adapt_sinusoid=not no_model, progress=lambda line: click.echo(line, err=True))
    output = output or default_output(run_dirs)
    replaced = output.exists()
    _write_output(output, page, overwrite=True)  # a report is made again as its runs go on
    if replaced:
        click.echo(f"replaced the earlier {output}", err=True)
    click.echo(str(output))


@main.command(name="runs")
@click.argument("folder", metavar="[DIR]", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="A JSON list of runs, for scripts.")
def list_runs_command(folder: Path | None, as_json: bool):
    """One line per run under DIR (default: runs, or $WORKBENCH_RUNS), newest first; why, for runs that stopped early."""
    from workbench.listing import format_runs, list_runs

    folder = folder or Path(os.environ.get("WORKBENCH_RUNS", DEFAULT_RUNS_DIR))
    summaries = list_runs(folder)
    if as_json:
        click.echo(json.dumps([summary.as_json() for summary in summaries], indent=2, ensure_ascii=False))
    elif summaries:
        click.echo(format_runs(summaries))
    else:
        click.echo(f"{folder}: no runs yet", err=True)


@main.command()
@click.argument("source", metavar="RUN|MODEL.keras", type=click.Path(path_type=Path))
@click.option("--format", "export_format", required=True, metavar="saved_model|onnx|litert", help="What to write.")
@click.option(
    "--output", "-o", required=True, type=click.Path(path_type=Path), help="Where (never overwritten); PATH.export.json goes beside it."
)
@click.option("--quantize", metavar="float16|int8", help="LiteRT only: smaller weights; int8 calibrates on the run's training images.")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="A folder of class folders to check the export on (needed for a bare MODEL.keras).",
)
@needs_tensorflow
def export(source: Path, export_format: str, output: Path, quantize: str | None, data: Path | None):
    """Export a classifier or a meta run's initialisation to SavedModel, ONNX or LiteRT, proven equal to the Keras model in a fresh process.

    Prints size, parity and latency on stderr and the exported path on stdout;
    PATH.export.json beside it records them.
    """
    from workbench.export.build import export_model
    from workbench.export.record import summary
    from workbench.learned.summary import refuse_learned_optimizer_run

    refuse_learned_optimizer_run(source, "export")

    # TensorFlow prints "Assets written to" a staging folder that is gone once the export is proven.
    with contextlib.redirect_stdout(io.StringIO()):
        written = export_model(source, export_format, output, quantize=quantize, data=data)
    click.echo(summary(written), err=True)
    click.echo(str(output))


if __name__ == "__main__":
    main()
