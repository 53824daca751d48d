"""The figures and table of a learned-optimizer run: its loss curve against each tuned baseline, and meta-training.

Everything comes from the run's metrics.json (a learned optimizer logs no
history): `curves` holds each optimizer's mean loss after every step of the
held-out horizon (null where an optimizee diverged), `evaluation` and each
baseline's `evaluation` the mean and 95% interval at the reported step counts.
"""

from __future__ import annotations

import math
from typing import Any

from workbench import runs
from workbench.evaluation import plural
from workbench.listing import finite
from workbench.report import plotting
from workbench.report.content import INTEGER, Cell, Note, Picture, Table, number, text
from workbench.report.run_files import RunFiles

LEARNED = "learned"  # the learned optimizer's name in `curves`
CUT_ABOVE = 10.0  # the y axis stops at this many times the starting loss: a diverging baseline would squash the rest


def significant_cell(run: RunFiles, field: str, value: float | None) -> Cell:
    """A loss or learning rate from metrics.json, to 4 significant digits: losses span decades (a diverging baseline reaches 1e8)."""
    if not finite(value):
        return Cell("-")
    return Cell(f"{value:.4g}", value, (run.name, runs.METRICS_FILE, field))


def _optimizers(metrics: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """`(name, field path of its evaluation, evaluation entries)`: the learned optimizer first, then each baseline."""
    rows = [(LEARNED, "evaluation", metrics["evaluation"])]
    rows += [(name, f"baselines.{name}.evaluation", baseline["evaluation"]) for name, baseline in metrics.get("baselines", {}).items()]
    return rows


def curves_picture(run: RunFiles) -> Picture:
    """Mean loss after each step of the horizon, one line per optimizer, with 95% error bars at the reported step counts."""
    metrics = run.metrics
    optimizers = _optimizers(metrics)
    curves = {
        name: [value if finite(value) else math.nan for value in metrics.get("curves", {}).get(name, [])] for name, _, _ in optimizers
    }
    shown = [value for curve in curves.values() for value in curve if finite(value) and value > 0]
    starts = [curve[0] for curve in curves.values() if curve and finite(curve[0])]
    top = CUT_ABOVE * max(starts) if starts else math.inf
    horizon = max(entry["steps"] for entry in metrics["evaluation"])
    figure, (ax,) = plotting.new_figure(width=8.0, height=4.0)
    for index, (name, _, entries) in enumerate(optimizers):
        colour, learned = plotting.run_colour(index), name == LEARNED
        if curves[name]:
            label = name if learned else f"{name} (lr {metrics['baselines'][name]['learning_rate']:.3g})"
            ax.plot(
                range(len(curves[name])),
                curves[name],
                color=colour,
                linewidth=2.4 if learned else 1.4,
                label=label,
                zorder=3 if learned else 2,
            )
        # Points off the axis are left out; bars side by side, so that intervals at the same step stay apart.
        points = [entry for entry in entries if finite(entry.get("mean")) and entry["mean"] <= top]
        if points:
            dodge = horizon * 0.006 * (index - (len(optimizers) - 1) / 2)
            ax.errorbar(
                [entry["steps"] + dodge for entry in points],
                [entry["mean"] for entry in points],
                yerr=[entry["ci95"] for entry in points],
                color=colour,
                linestyle="none",
                marker="o",
                markersize=4,
                capsize=3,
                zorder=4 if learned else 2,
            )
    ax.set_yscale("log")
    cut = bool(shown) and max(shown) > top
    if shown:  # an interval that reaches zero would stretch a log axis without end
        ax.set_ylim(bottom=min(shown) / 2, top=top if cut else None)
    training_horizon = run.recipe.get("inner", {}).get("steps")
    if training_horizon:
        ax.axvline(training_horizon, color=plotting.BEST, linestyle=":", linewidth=1.0, label=f"training horizon ({training_horizon})")
    ax.set_xlabel("optimizee steps")
    ax.set_ylabel(f"mean {metrics['metric']}")
    plotting.integer_ticks(ax)
    ax.legend(fontsize=8)
    tasks = metrics["evaluation"][0]["tasks"]
    caption = (
        f"Mean {metrics['metric']} of {plural(tasks, 'held-out optimizee')} after each step, for the learned optimizer and each "
        "hand-designed one at the learning rate tuned on training optimizees; bars: the 95% interval at the reported step counts."
        + (f" The axis stops at {CUT_ABOVE:g} times the starting loss; curves above it diverged." if cut else "")
        + (
            " A gap in a curve: some optimizee diverged there."
            if any(math.isnan(value) for curve in curves.values() for value in curve)
            else ""
        )
    )
    return plotting.picture(figure, "learned-curves", "Held-out optimizees", caption, f"{metrics['metric']} against steps, per optimizer")


def evaluation_table(run: RunFiles) -> Table:
    """One row per reported step count and optimizer: its tuned learning rate, mean loss, 95% interval, optimizees."""
    metrics, file = run.metrics, runs.METRICS_FILE
    rows = []
    for index, entry in enumerate(metrics["evaluation"]):
        for name, field, entries in _optimizers(metrics):
            at = entries[index]
            rate = None if name == LEARNED else metrics["baselines"][name]["learning_rate"]
            mean = (
                significant_cell(run, f"{field}.{index}.mean", at["mean"])
                if finite(at.get("mean"))
                else text(f"diverged ({at.get('diverged', '?')} of {at['tasks']})")
            )
            rows.append(
                [
                    number(run.name, file, f"evaluation.{index}.steps", entry["steps"], INTEGER),
                    text(name),
                    significant_cell(run, f"baselines.{name}.learning_rate", rate),
                    mean,
                    significant_cell(run, f"{field}.{index}.ci95", at.get("ci95")),
                    number(run.name, file, f"{field}.{index}.tasks", at["tasks"], INTEGER),
                ]
            )
    header = ["steps", "optimizer", "tuned learning rate", f"mean {metrics['metric']}", "± 95%", "optimizees"]
    return Table("Held-out optimizees: the learned optimizer and the tuned baselines", header, rows, "learned-evaluation")


def training_picture(run: RunFiles) -> Picture:
    """Per logged meta-iteration: the mean meta-loss of its unrolls and the optimizees' loss at the training horizon."""
    training = run.metrics["training"]
    every = training.get("every", 1)
    figure, (ax,) = plotting.new_figure(height=3.2)
    for key, label, colour in (
        ("meta_loss", "meta-loss (mean over the unrolls)", plotting.TRAINING),
        ("final_loss", "loss at the horizon", plotting.VALIDATION),
    ):
        values = training.get(key, [])
        ax.plot([1 + every * index for index in range(len(values))], values, color=colour, linewidth=1.6, label=label)
    plotting.loss_scale(ax, [value for key in ("meta_loss", "final_loss") for value in training.get(key, [])])
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(run.metrics["metric"])
    plotting.integer_ticks(ax)
    ax.legend(fontsize=8)
    thinned = f", every {plural(every, 'iteration')}" if every > 1 else ""
    caption = f"On the training optimizees of each meta-iteration{thinned}, over {plural(training['iterations'], 'iteration')}."
    return plotting.picture(figure, "learned-training", "Meta-training", caption, "meta-training loss of the learned optimizer")


def learned_items(run: RunFiles) -> list:
    """Everything a learned-optimizer run shows, in reading order."""
    if not run.metrics.get("evaluation"):
        return [
            Note(
                f"No {runs.METRICS_FILE} yet (the run is {run.summary.status}): a learned optimizer writes its curves, "
                "its comparison with the tuned baselines and its training record when meta-training ends."
            )
        ]
    items: list = [curves_picture(run), evaluation_table(run)]
    if run.metrics.get("training", {}).get("meta_loss"):
        items.append(training_picture(run))
    return items
