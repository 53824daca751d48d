"""The figures and tables of one transfer run: learning curves by phase, the scratch baseline, the confusion matrix."""

from __future__ import annotations

from typing import Any

from matplotlib.transforms import blended_transform_factory

from workbench import runs
from workbench.report import plotting
from workbench.report.content import COUNT, DECIMAL, INTEGER, PERCENT, Note, Picture, Table, number, text
from workbench.report.run_files import PHASE_COLUMN, RunFiles

MANY_CLASSES = 40  # above this, class names leave the axes and only the weakest classes get bars
ANNOTATED_CLASSES = 16  # up to this, each cell of the confusion matrix shows its count
WEAKEST = 20


def phase_names(run: RunFiles) -> list[str]:
    """The transfer phases in training order (not the scratch baseline, which trains another network)."""
    if run.metrics.get("phases"):
        return [phase["name"] for phase in run.metrics["phases"]]
    baseline = set(baseline_names(run))
    return list(dict.fromkeys(row[PHASE_COLUMN] for row in run.history if row[PHASE_COLUMN] not in baseline))


def baseline_names(run: RunFiles) -> list[str]:
    """The history's phase names of the baselines (`scratch`), from metrics.json or, before it is written, the recipe."""
    if run.metrics.get("baseline"):
        return [entry.get("name", key) for key, entry in run.metrics["baseline"].items()]
    return ["scratch"] if run.recipe.get("baseline") == "scratch" else []


def transfer_rows(run: RunFiles) -> list[dict[str, Any]]:
    phases = set(phase_names(run))
    return [row for row in run.history if row[PHASE_COLUMN] in phases]


def _phase_spans(rows: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """`(phase, first epoch, last epoch)` in order."""
    spans: list[tuple[str, float, float]] = []
    for row in rows:
        if spans and spans[-1][0] == row[PHASE_COLUMN]:
            spans[-1] = (spans[-1][0], spans[-1][1], row["epoch"])
        else:
            spans.append((row[PHASE_COLUMN], row["epoch"], row["epoch"]))
    return spans


def _phase_metrics(run: RunFiles) -> dict[str, dict[str, Any]]:
    return {phase["name"]: phase for phase in run.metrics.get("phases", [])}


def _mark_phases(ax, rows: list[dict[str, Any]], phases: dict[str, dict[str, Any]]) -> None:
    """Dashed lines between phases; above each phase its name and trainable parameters."""
    spans = _phase_spans(rows)
    place = blended_transform_factory(ax.transData, ax.transAxes)
    for index, (name, first, last) in enumerate(spans):
        if index:
            ax.axvline(first - 0.5, color="#5b6570", linestyle="--", linewidth=1)
        trainable = phases.get(name, {}).get("trainable_parameters")
        words = name if trainable is None else f"{name}\n{trainable:,} trainable"
        ax.text((first + last) / 2, 1.02, words, transform=place, ha="center", va="bottom", fontsize=8.5, color="#3d4650")


def _best_points(rows: list[dict[str, Any]], phases: dict[str, dict[str, Any]]) -> list[tuple[str, float, float]]:
    """`(monitor, global epoch, monitored value)` of the epoch each phase kept."""
    points = []
    for name, phase in phases.items():
        monitor = phase.get("monitor")
        for row in rows:
            if row[PHASE_COLUMN] == name and row.get("phase_epoch") == phase.get("best_epoch") and monitor in row:
                points.append((monitor, row["epoch"], row[monitor]))
    return points


def curves_picture(run: RunFiles) -> Picture:
    rows = transfer_rows(run)
    phases = _phase_metrics(run)
    figure, axes = plotting.new_figure(columns=2, height=3.8)
    best = _best_points(rows, phases)
    for ax, measure in zip(axes, ("loss", "accuracy"), strict=True):
        for column, colour, label in ((measure, plotting.TRAINING, "training"), (f"val_{measure}", plotting.VALIDATION, "validation")):
            points = [(row["epoch"], row[column]) for row in rows if column in row]
            if points:
                ax.plot(*zip(*points, strict=True), color=colour, marker="o", markersize=3, linewidth=1.6, label=label)
        kept = [(epoch, value) for monitor, epoch, value in best if monitor.endswith(measure)]
        if kept:
            ax.plot(*zip(*kept, strict=True), linestyle="none", marker="*", markersize=13, color=plotting.BEST, label="kept (best epoch)")
        if measure == "loss":
            plotting.loss_scale(ax, [row[c] for row in rows for c in ("loss", "val_loss") if c in row])
        else:
            ax.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
        _mark_phases(ax, rows, phases)
        ax.set_xlabel("epoch")
        ax.set_ylabel(measure)
        plotting.integer_ticks(ax)
        ax.legend(fontsize=8, loc="best")
    monitors = sorted({monitor for monitor, _, _ in best})
    caption = (
        "Training and validation loss and accuracy after each epoch; dashed lines separate the phases, each labelled with "
        "its trainable parameters. A star marks the epoch each phase kept"
        + (f" (best {', '.join(monitors)})" if monitors else "")
        + ": its weights are restored before the next phase."
    )
    return plotting.picture(figure, "curves", "Learning curves", caption, "loss and accuracy per epoch, by phase")


def phases_table(run: RunFiles) -> Table:
    header = ["phase", "epochs", "kept epoch", "monitor", "trainable", "frozen", "val accuracy", "val loss"]
    rows = []
    name = run.name
    for index, phase in enumerate(run.metrics.get("phases", [])):
        field = f"phases.{index}"
        rows.append(_phase_row(name, field, phase, phase["name"]))
    for key, entry in run.metrics.get("baseline", {}).items():
        rows.append(_phase_row(name, f"baseline.{key}", entry, f"{entry.get('name', key)} (baseline)"))
    return Table("Each phase: how long it trained, the epoch it kept, and its parameters", header, rows, "phases")


def _phase_row(run: str, field: str, phase: dict[str, Any], label: str) -> list:
    file = runs.METRICS_FILE
    return [
        text(label),
        number(run, file, f"{field}.epochs", phase.get("epochs"), INTEGER),
        number(run, file, f"{field}.best_epoch", phase.get("best_epoch"), INTEGER),
        text(phase.get("monitor")),
        number(run, file, f"{field}.trainable_parameters", phase.get("trainable_parameters"), COUNT),
        number(run, file, f"{field}.frozen_parameters", phase.get("frozen_parameters"), COUNT),
        number(run, file, f"{field}.val_accuracy", phase.get("val_accuracy"), PERCENT),
        number(run, file, f"{field}.val_loss", phase.get("val_loss"), DECIMAL),
    ]


def test_table(run: RunFiles) -> Table | None:
    """Test accuracy and loss of the transfer and of each baseline."""
    entries = [("transfer", "test", run.metrics.get("test"))]
    entries += [
        (f"{entry.get('name', key)} (baseline)", f"baseline.{key}.test", entry.get("test"))
        for key, entry in run.metrics.get("baseline", {}).items()
    ]
    entries = [entry for entry in entries if entry[2]]
    if not entries:
        return None
    file = runs.METRICS_FILE
    rows = [
        [
            text(label),
            number(run.name, file, f"{field}.accuracy", test.get("accuracy"), PERCENT),
            number(run.name, file, f"{field}.loss", test.get("loss"), DECIMAL),
            number(run.name, file, f"{field}.examples", test.get("examples"), COUNT),
        ]
        for label, field, test in entries
    ]
    return Table("Held-out test examples", ["network", "test accuracy", "test loss", "examples"], rows, "test")


def baseline_picture(run: RunFiles) -> Picture | None:
    """Validation accuracy per epoch and test accuracy, transfer against the same network trained from scratch."""
    baselines = baseline_names(run)
    scratch_rows = [row for row in run.history if row[PHASE_COLUMN] in baselines]
    if not scratch_rows:
        return None
    transfer = transfer_rows(run)
    # Runs without a validation split compare training accuracy instead.
    column = "val_accuracy" if any("val_accuracy" in row for row in transfer + scratch_rows) else "accuracy"
    described = "validation accuracy" if column == "val_accuracy" else "training accuracy"
    figure, (curve, bars) = plotting.new_figure(columns=2, height=3.4)
    for rows, x_column, colour, label in (
        (transfer, "epoch", plotting.TRAINING, "transfer"),
        (scratch_rows, "phase_epoch", plotting.SCRATCH, "from scratch"),
    ):
        points = [(row[x_column], row[column]) for row in rows if column in row]
        if points:
            curve.plot(*zip(*points, strict=True), color=colour, marker="o", markersize=3, linewidth=1.6, label=label)
    curve.set_xlabel("epoch")
    curve.set_ylabel(described)
    curve.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    plotting.integer_ticks(curve)
    curve.legend(fontsize=8)
    scratch = run.metrics.get("baseline", {}).get("scratch", {})
    if "test" in run.metrics and "test" in scratch:
        values, measure = [run.metrics["test"]["accuracy"], scratch["test"]["accuracy"]], "test accuracy"
    else:
        values = [max(row.get(column, 0.0) for row in rows) for rows in (transfer, scratch_rows)]
        measure = f"best {described}"
    drawn = bars.bar(["transfer", "from scratch"], values, color=[plotting.TRAINING, plotting.SCRATCH], width=0.55)
    bars.bar_label(drawn, labels=[f"{value:.1%}" for value in values], fontsize=9, padding=2)
    bars.set_ylim(0, 1.08)
    bars.set_ylabel(measure)
    bars.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    caption = (
        "The same network trained from random weights on the same examples for as many epochs as all phases together "
        f"(`baseline: scratch`): {described} per epoch, and {measure}."
    )
    return plotting.picture(
        figure,
        "baseline",
        "Transfer against training from scratch",
        caption,
        f"{measure}: transfer {values[0]:.1%}, from scratch {values[1]:.1%}",
    )


def confusion_picture(run: RunFiles) -> Picture:
    evaluation = run.evaluation
    matrix = evaluation["confusion_matrix"]
    names = [row["class"] for row in evaluation["per_class"]]
    count = len(names)
    side = min(9.0, max(3.6, 2.2 + 0.3 * count))
    figure, (ax,) = plotting.new_figure(width=side + 1.2, height=side)
    ax.grid(False)
    # Colour by the share of each true class (a row): classes with few examples stay as visible as large ones.
    shares = [[cell / max(1, sum(row)) for cell in row] for row in matrix]
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    if count <= MANY_CLASSES:
        ax.set_xticks(range(count), names, rotation=90, fontsize=8)
        ax.set_yticks(range(count), names, fontsize=8)
    if count <= ANNOTATED_CLASSES:
        for i, row in enumerate(matrix):
            for j, cell in enumerate(row):
                if cell:
                    ax.text(j, i, str(cell), ha="center", va="center", fontsize=8, color="white" if shares[i][j] > 0.6 else "#1d232a")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    caption = (
        f"{evaluation['examples']:,} examples of `{evaluation['data']}`: rows are true classes, columns predictions; colour is the share of the row"
        + (", each cell's count written in it." if count <= ANNOTATED_CLASSES else ".")
    )
    return plotting.picture(figure, "confusion", "Confusion matrix", caption, f"confusion matrix of {count} classes")


def precision_recall_picture(run: RunFiles) -> Picture:
    per_class = run.evaluation["per_class"]
    shown = per_class if len(per_class) <= MANY_CLASSES else sorted(per_class, key=lambda row: row["recall"] or 0.0)[:WEAKEST]
    height = max(2.6, 0.8 + 0.28 * len(shown))
    figure, (ax,) = plotting.new_figure(height=height)
    positions = list(range(len(shown)))
    for offset, measure, colour in ((-0.2, "precision", plotting.TRAINING), (0.2, "recall", plotting.VALIDATION)):
        ax.barh([p + offset for p in positions], [row[measure] or 0.0 for row in shown], height=0.38, color=colour, label=measure)
    ax.set_yticks(positions, [row["class"] for row in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    which = "each class" if shown is per_class else f"the {WEAKEST} classes of {len(per_class)} with the lowest recall"
    caption = f"Precision and recall of {which} on `{run.evaluation['data']}`; a class never predicted has no precision (drawn as 0)."
    return plotting.picture(figure, "precision-recall", "Precision and recall per class", caption, f"precision and recall of {which}")


def per_class_table(run: RunFiles) -> Table:
    file = runs.EVALUATION_FILE
    rows = [
        [
            text(row["class"]),
            number(run.name, file, f"per_class.{index}.precision", row["precision"], PERCENT),
            number(run.name, file, f"per_class.{index}.recall", row["recall"], PERCENT),
            number(run.name, file, f"per_class.{index}.support", row["support"], COUNT),
        ]
        for index, row in enumerate(run.evaluation["per_class"])
    ]
    return Table(f"Per class, on `{run.evaluation['data']}`", ["class", "precision", "recall", "examples"], rows, "per-class")


def evaluation_table(run: RunFiles) -> Table:
    file, evaluation = runs.EVALUATION_FILE, run.evaluation
    row = [
        text(evaluation["data"]),
        number(run.name, file, "accuracy", evaluation["accuracy"], PERCENT),
        number(run.name, file, "loss", evaluation["loss"], DECIMAL),
        number(run.name, file, "examples", evaluation["examples"], COUNT),
    ]
    return Table("What `workbench evaluate` measured", ["data", "accuracy", "loss", "examples"], [row], "evaluation")


def transfer_items(run: RunFiles) -> list:
    """Everything one transfer run shows, in reading order."""
    items: list = [curves_picture(run)]
    if run.metrics.get("phases"):
        items.append(phases_table(run))
        if not any("trainable_parameters" in phase for phase in run.metrics["phases"]):
            items.append(
                Note("This run predates per-phase parameter counts in metrics.json; `workbench validate --plan` on its recipe prints them.")
            )
    else:
        items.append(Note(f"No {runs.METRICS_FILE} yet (the run is {run.summary.status}): the curves are its history so far."))
    test = test_table(run)
    if test:
        items.append(test)
    baseline = baseline_picture(run)
    if baseline:
        items.append(baseline)
    if run.evaluation and "confusion_matrix" in run.evaluation:
        items += [evaluation_table(run), confusion_picture(run), precision_recall_picture(run), per_class_table(run)]
    else:
        items.append(
            Note(
                "No confusion matrix or per-class precision and recall yet: they need the model's predictions. "
                "Evaluate the run (it writes evaluation.json), then make this report again:",
                f"workbench evaluate {run.path} && workbench report {run.path}",
            )
        )
    return items
