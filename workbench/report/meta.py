"""The figures and tables of one meta run: meta-training, meta-validation with its best point, the meta-test curve."""

from __future__ import annotations

from typing import Any

from workbench import runs
from workbench.evaluation import plural
from workbench.listing import finite
from workbench.report import plotting
from workbench.report.content import DECIMAL, INTEGER, SECONDS, Note, Picture, Table, metric_style, number, text
from workbench.report.run_files import RunFiles

ITERATION = "iteration"


def metric_of(run: RunFiles) -> str:
    """The meta metric (`mse` or `accuracy`): from metrics.json, else from the history's validation column."""
    if run.metrics.get("metric"):
        return run.metrics["metric"]
    columns = {column for row in run.history for column in row}
    validation = sorted(column.removeprefix("val_") for column in columns if column.startswith("val_"))
    return validation[0] if validation else ("accuracy" if "accuracy" in columns else "mse")


def lower_is_better(metric: str) -> bool:
    return metric == "mse"


def percent_axis(ax, metric: str, axis: str = "y") -> None:
    if metric_style(metric) != DECIMAL:
        getattr(ax, f"{axis}axis").set_major_formatter(lambda value, _: f"{value:.0%}")


def _series(run: RunFiles, column: str) -> list[tuple[float, float]]:
    return [(row[ITERATION], value) for row, value in run.column(column) if ITERATION in row]


def training_picture(run: RunFiles) -> Picture:
    metric = metric_of(run)
    losses, values = _series(run, "loss"), _series(run, metric)
    same = [value for _, value in losses] == [value for _, value in values]  # regression: the loss is the metric
    panels = [("loss", losses)] if same or not values else [("loss", losses), (metric, values)]
    figure, axes = plotting.new_figure(columns=len(panels), height=3.2)
    for ax, (measure, points) in zip(axes, panels, strict=True):
        if points:
            ax.plot(
                *zip(*points, strict=True), color=plotting.TRAINING, linewidth=1.6, marker="o" if len(points) < 30 else None, markersize=3
            )
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel(f"query {measure}" + (f" ({metric})" if same and measure == "loss" else ""))
        if measure == "loss":
            plotting.loss_scale(ax, [value for _, value in points])
        else:
            percent_axis(ax, metric)
        plotting.integer_ticks(ax)
    inner = run.recipe.get("inner", {}).get("steps")
    after = f"after {plural(inner, 'inner step')}" if inner is not None else "after adaptation"
    caption = f"On the meta-training tasks of each logged iteration, {after}: the loss the outer loop minimises" + (
        f" (for regression, the {metric} itself)." if same else f", and the {metric}."
    )
    return plotting.picture(figure, "meta-training", "Meta-training", caption, f"meta-training loss over {len(losses)} logged iterations")


def validation_picture(run: RunFiles) -> Picture:
    metric = metric_of(run)
    validation = _series(run, f"val_{metric}")
    figure, (ax,) = plotting.new_figure(height=3.4)
    training = _series(run, metric)
    if training:
        ax.plot(*zip(*training, strict=True), color=plotting.TRAINING, alpha=0.35, linewidth=1.2, label="meta-training tasks")
    ax.plot(
        *zip(*validation, strict=True), color=plotting.VALIDATION, marker="o", markersize=4, linewidth=1.8, label="meta-validation tasks"
    )
    best = run.metrics.get("best_validation")
    if best:
        ax.plot(
            [best["iteration"]],
            [best["mean"]],
            linestyle="none",
            marker="*",
            markersize=15,
            color=plotting.BEST,
            label="best: the weights kept",
        )
        ax.annotate(
            f"{best['mean']:.4f}" if metric_style(metric) == DECIMAL else f"{best['mean']:.1%}",
            (best["iteration"], best["mean"]),
            textcoords="offset points",
            xytext=(0, 10),
            ha="center",
            fontsize=9,
        )
    if metric_style(metric) == DECIMAL:
        plotting.loss_scale(ax, [value for _, value in validation + training])
    else:
        percent_axis(ax, metric)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(metric)
    plotting.integer_ticks(ax)
    ax.legend(fontsize=8)
    tasks = run.recipe.get("evaluation", {}).get("validation_tasks")
    steps = run.recipe.get("inner", {}).get("steps")
    detail = f" on the same {tasks} validation tasks" if tasks else ""
    after = f" after {plural(steps, 'step')}" if steps is not None else ""
    better = "lower" if lower_is_better(metric) else "higher"
    caption = f"Mean {metric}{after}{detail} at each meta-validation ({better} is better); the star marks the best, whose weights the run kept and tested."
    return plotting.picture(figure, "meta-validation", "Meta-validation", caption, f"meta-validation {metric} over iterations")


def drawable(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluation entries with a number for mean and interval, by step count: a diverged run's null means leave gaps."""
    return sorted((entry for entry in entries if finite(entry["mean"]) and finite(entry["ci95"])), key=lambda entry: entry["steps"])


def test_picture(run: RunFiles) -> Picture:
    metric = metric_of(run)
    series = [("end of the run", run.metrics["evaluation"], plotting.TRAINING)]
    evaluated = (run.evaluation or {}).get("evaluation")
    if evaluated and evaluated != run.metrics["evaluation"]:
        series.append(("workbench evaluate", evaluated, plotting.VALIDATION))
    figure, (ax,) = plotting.new_figure(width=7.0, height=3.6)
    for label, entries, colour in series:
        entries = drawable(entries)
        if not entries:
            continue
        steps = [entry["steps"] for entry in entries]
        means = [entry["mean"] for entry in entries]
        low = [entry["mean"] - entry["ci95"] for entry in entries]
        high = [entry["mean"] + entry["ci95"] for entry in entries]
        ax.fill_between(steps, low, high, color=colour, alpha=0.18, linewidth=0)
        ax.plot(steps, means, color=colour, marker="o", linewidth=1.8, label=f"{label} ({entries[0]['tasks']} tasks)")
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel(metric)
    percent_axis(ax, metric)
    plotting.integer_ticks(ax)
    ax.legend(fontsize=8)
    caption = f"Mean {metric} on the meta-test tasks after each number of adaptation steps; the band is the 95% interval (1.96 sigma / sqrt(tasks))."
    return plotting.picture(figure, "meta-test", "Meta-test", caption, f"meta-test {metric} against adaptation steps")


def _evaluation_rows(run: RunFiles, file: str, entries: list[dict[str, Any]], metric: str) -> list[list]:
    style = metric_style(metric)
    return [
        [
            number(run.name, file, f"evaluation.{index}.steps", entry["steps"], INTEGER),
            number(run.name, file, f"evaluation.{index}.mean", entry["mean"], style),
            number(run.name, file, f"evaluation.{index}.ci95", entry["ci95"], style),
            number(run.name, file, f"evaluation.{index}.tasks", entry["tasks"], INTEGER),
        ]
        for index, entry in enumerate(entries)
    ]


def test_tables(run: RunFiles) -> list[Table]:
    metric = metric_of(run)
    header = ["adaptation steps", f"mean {metric}", "± 95%", "tasks"]
    tables = [
        Table(
            "Meta-test, at the end of the run",
            header,
            _evaluation_rows(run, runs.METRICS_FILE, run.metrics["evaluation"], metric),
            "meta-test",
        )
    ]
    if (run.evaluation or {}).get("evaluation"):
        rows = _evaluation_rows(run, runs.EVALUATION_FILE, run.evaluation["evaluation"], metric)
        tables.append(Table("Meta-test again, by `workbench evaluate`", header, rows, "evaluate"))
    return tables


def summary_table(run: RunFiles) -> Table:
    """The best meta-validation and where the time went."""
    metrics, file, style = run.metrics, runs.METRICS_FILE, metric_style(metric_of(run))
    best = metrics.get("best_validation") or {}
    rows = [
        [text("best meta-validation iteration"), number(run.name, file, "best_validation.iteration", best.get("iteration"), INTEGER)],
        [text(f"best meta-validation {metric_of(run)}"), number(run.name, file, "best_validation.mean", best.get("mean"), style)],
        [text("its 95% interval (±)"), number(run.name, file, "best_validation.ci95", best.get("ci95"), style)],
        [text("meta-training wall time"), number(run.name, file, "training_seconds", metrics.get("training_seconds"), SECONDS)],
        [text("meta-training CPU time"), number(run.name, file, "training_cpu_seconds", metrics.get("training_cpu_seconds"), SECONDS)],
        [text("meta-test time"), number(run.name, file, "evaluation_seconds", metrics.get("evaluation_seconds"), SECONDS)],
    ]
    return Table("Best meta-validation and time", ["", ""], rows, "meta-summary")


def is_sinusoid(run: RunFiles) -> bool:
    return run.recipe.get("tasks", {}).get("source") == "sinusoid"


def meta_items(run: RunFiles, adapt_sinusoid: bool = True, progress=None) -> list:
    """Everything one meta run shows, in reading order."""
    items: list = [training_picture(run)]
    if any(f"val_{metric_of(run)}" in row for row in run.history):
        items.append(validation_picture(run))
    if run.metrics.get("evaluation"):
        items += [test_picture(run), *test_tables(run), summary_table(run)]
    else:
        items.append(
            Note(f"No meta-test yet (the run is {run.summary.status}): it comes at the end of meta-training, in {runs.METRICS_FILE}.")
        )
    if is_sinusoid(run):
        if adapt_sinusoid:
            from workbench.report.sinusoid import adaptation_item

            items.append(adaptation_item(run, progress))
        else:
            items.append(Note("Left out on request (--no-model): the sinusoid tasks adapted from the meta-learned initialisation."))
    return items
