"""Several runs side by side: their curves overlaid, their headline figures in one table, and where their recipes differ."""

from __future__ import annotations

from typing import Any

import yaml

from workbench import runs
from workbench.evaluation import plural
from workbench.report import plotting
from workbench.report.content import COUNT, PERCENT, Note, Picture, Table, metric_style, number, text
from workbench.report.meta import ITERATION, drawable, metric_of, percent_axis
from workbench.report.run_files import RunFiles
from workbench.report.transfer import transfer_rows


def transfer_table(transfers: list[RunFiles]) -> Table:
    file = runs.METRICS_FILE
    rows = []
    for run in transfers:
        metrics = run.metrics
        phases = metrics.get("phases", [])
        last = len(phases) - 1
        scratch = metrics.get("baseline", {}).get("scratch", {}).get("test", {})
        rows.append(
            [
                text(run.name),
                text(run.summary.status),
                number(run.name, file, "test.accuracy", metrics.get("test", {}).get("accuracy"), PERCENT),
                number(run.name, file, "baseline.scratch.test.accuracy", scratch.get("accuracy"), PERCENT),
                number(run.name, file, f"phases.{last}.val_accuracy", phases[-1].get("val_accuracy") if phases else None, PERCENT),
                number(run.name, file, "test.examples", metrics.get("test", {}).get("examples"), COUNT),
            ]
        )
    header = ["run", "status", "test accuracy", "from scratch", "last phase's val accuracy", "test examples"]
    return Table("Transfer runs", header, rows, "transfer-headlines")


def meta_tables(metas: list[RunFiles]) -> list[Table]:
    """One table per meta metric: mean and 95% interval after each number of steps any run measured."""
    tables = []
    for metric, group in _by_metric(metas).items():
        steps = sorted({entry["steps"] for run in group for entry in run.metrics.get("evaluation", [])})
        header = ["run", "status"] + [label for step in steps for label in (plural(step, "step"), "± 95%")]
        rows = []
        for run in group:
            entries = {entry["steps"]: (index, entry) for index, entry in enumerate(run.metrics.get("evaluation", []))}
            row = [text(run.name), text(run.summary.status)]
            for step in steps:
                index, entry = entries.get(step, (None, {}))
                for field in ("mean", "ci95"):
                    row.append(number(run.name, runs.METRICS_FILE, f"evaluation.{index}.{field}", entry.get(field), metric_style(metric)))
            rows.append(row)
        tables.append(Table(f"Meta runs: mean meta-test {metric} after adaptation steps", header, rows, f"meta-headlines-{metric}"))
    return tables


def _by_metric(metas: list[RunFiles]) -> dict[str, list[RunFiles]]:
    groups: dict[str, list[RunFiles]] = {}
    for run in metas:
        groups.setdefault(metric_of(run), []).append(run)
    return groups


def transfer_overlay(transfers: list[RunFiles], colours: dict[str, str]) -> Picture:
    figure, axes = plotting.new_figure(columns=2, height=3.8)
    for ax, measure in zip(axes, ("loss", "accuracy"), strict=True):
        values = []
        for run in transfers:
            rows = transfer_rows(run)
            for column, line, width in ((f"val_{measure}", "-", 1.8), (measure, ":", 1.2)):
                points = [(row["epoch"], row[column]) for row in rows if column in row]
                if points:
                    label = run.name if column.startswith("val_") else None
                    ax.plot(*zip(*points, strict=True), color=colours[run.name], linestyle=line, linewidth=width, label=label)
                    values += [value for _, value in points]
        if measure == "loss":
            plotting.loss_scale(ax, values)
        else:
            ax.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(measure)
        plotting.integer_ticks(ax)
    axes[0].legend(fontsize=8)
    caption = "Validation (solid) and training (dotted) loss and accuracy per epoch, all phases in order; each run's phase boundaries are in its own section."
    return plotting.picture(figure, "transfer-overlay", "Transfer runs overlaid", caption, "validation curves of the transfer runs")


def meta_overlay(metric: str, group: list[RunFiles], colours: dict[str, str]) -> Picture:
    figure, (validation, test) = plotting.new_figure(columns=2, height=3.6)
    for run in group:
        points = [(row[ITERATION], value) for row, value in run.column(f"val_{metric}") if ITERATION in row]
        if points:
            validation.plot(*zip(*points, strict=True), color=colours[run.name], marker="o", markersize=3, linewidth=1.6, label=run.name)
        entries = drawable(run.metrics.get("evaluation", []))
        if entries:
            steps = [entry["steps"] for entry in entries]
            test.fill_between(
                steps,
                [entry["mean"] - entry["ci95"] for entry in entries],
                [entry["mean"] + entry["ci95"] for entry in entries],
                color=colours[run.name],
                alpha=0.15,
                linewidth=0,
            )
            test.plot(steps, [entry["mean"] for entry in entries], color=colours[run.name], marker="o", linewidth=1.8, label=run.name)
    validation.set_xlabel("meta-iteration")
    validation.set_ylabel(f"meta-validation {metric}")
    test.set_xlabel("adaptation steps")
    test.set_ylabel(f"meta-test {metric}")
    for ax in (validation, test):
        percent_axis(ax, metric)
        plotting.integer_ticks(ax)
    validation.legend(fontsize=8)
    caption = f"Meta-validation {metric} over meta-iterations, and meta-test {metric} against adaptation steps with 95% bands, one colour per run."
    return plotting.picture(
        figure,
        f"meta-overlay-{metric}",
        f"Meta runs overlaid ({metric})",
        caption,
        f"meta-validation and meta-test {metric} of the meta runs",
    )


MISSING = object()  # a field one recipe has and another lacks


def differences(values: list[Any], field: str = "") -> list[tuple[str, list[Any]]]:
    """`(field path, the runs' values)` wherever the values differ, going down while all of them are mappings.

    Phases are compared by position while the schedules are as long; a field that is a
    mapping in one recipe and a plain value in another differs as a whole.
    """
    if all(isinstance(value, dict) for value in values):
        keys = dict.fromkeys(key for value in values for key in value)
        return [row for key in keys for row in differences([value.get(key, MISSING) for value in values], f"{field}.{key}".lstrip("."))]
    if (
        all(isinstance(value, list) and all(isinstance(item, dict) for item in value) for value in values)
        and len({len(v) for v in values}) == 1
    ):
        return [row for index in range(len(values[0])) for row in differences([value[index] for value in values], f"{field}.{index}")]
    return [] if all(value == values[0] for value in values) else [(field, values)]


def _shown(value: Any) -> str:
    """A recipe value as the recipe would write it (YAML flow style)."""
    if value is MISSING:
        return "-"
    return (
        value
        if isinstance(value, str)
        else yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()
    )


def recipe_differences(chosen: list[RunFiles]) -> Table | None:
    """The resolved recipe fields in which runs of one kind differ (a field one run lacks differs too); None if none do."""
    rows = [[text(field)] + [text(_shown(value)) for value in values] for field, values in differences([run.recipe for run in chosen])]
    if not rows:
        return None
    kind = chosen[0].kind
    return Table(
        f"Where the {kind} runs' recipes differ ({runs.RECIPE_FILE})",
        ["field", *(run.name for run in chosen)],
        rows,
        f"recipe-differences-{kind}",
    )


def _recipe_items(chosen: list[RunFiles]) -> list:
    """A table of differences for each kind with several runs: recipes of different kinds share few fields."""
    items: list = []
    for kind in dict.fromkeys(run.kind for run in chosen):
        group = [run for run in chosen if run.kind == kind]
        if len(group) > 1:
            items.append(recipe_differences(group) or Note(f"The {kind} runs' resolved recipes are identical."))
    return items


def several_items(chosen: list[RunFiles]) -> list:
    """The comparison that opens a report of several runs."""
    colours = {run.name: plotting.run_colour(index) for index, run in enumerate(chosen)}
    transfers = [run for run in chosen if run.kind == "transfer"]
    metas = [run for run in chosen if run.kind == "meta"]
    items: list = []
    if transfers:
        items += [transfer_table(transfers), transfer_overlay(transfers, colours)]
    if metas:
        items += meta_tables(metas)
        items += [meta_overlay(metric, group, colours) for metric, group in _by_metric(metas).items()]
    return items + _recipe_items(chosen)
