"""`workbench runs`: what each run directory under a folder is, how it ended, and its headline figure.

Reads manifests and metrics only: no TensorFlow, no matplotlib, so the list
comes back at once however many runs there are. A run whose manifest still says
`running` but whose process is gone from this machine was killed (SIGKILL, a
crash, a reboot) before it could record how it ended: it is listed as `killed`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import platform
from pathlib import Path
from typing import Any

from workbench import runs
from workbench.errors import RunError
from workbench.evaluation import format_meta_result, plural

KILLED = "killed"  # not a manifest status: a `running` manifest whose process is gone


@dataclasses.dataclass
class RunSummary:
    """One line of `workbench runs`: a run directory, how it stands, and why when it stopped early."""

    path: str
    name: str
    kind: str
    status: str
    headline: str
    headline_value: float | None  # the headline's figure, for scripts
    started: str | None
    duration_seconds: float | None
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_json(path: Path, expected: type = dict) -> Any:
    """A run's JSON file, an object (or `expected`); raises `RunError` naming the file when it cannot be read."""
    try:
        value = json.loads(path.read_text())
    except OSError as error:
        raise RunError(f"{path}: cannot read this file ({error.strerror})") from None
    except ValueError as error:
        raise RunError(f"{path}: not valid JSON ({error}); the run directory is damaged") from None
    if not isinstance(value, expected):
        raise RunError(f"{path}: expected a JSON {'object' if expected is dict else 'list'}; the run directory is damaged")
    return value


def headline_figure(kind: str, metrics: dict[str, Any]) -> tuple[str, float | None]:
    """The one figure that says how a run did, as text and as its value.

    Test accuracy (transfer), the meta-test metric after the most steps (meta;
    for a learned optimizer, beside the best tuned baseline), or the best
    entrant's figure (compare, whose `metrics` are `compare.json`). A mean that
    is null (JSON's NaN: the optimizees or the model diverged) is said in words,
    and its value is None.
    """
    if kind == "compare":
        scored = [
            (entrant["name"], entry)
            for entrant in metrics.get("entrants", [])
            for entry in entrant.get("evaluation", [])
            if finite(entry.get("mean"))
        ]
        if not scored:
            return "", None
        best = (max if metrics["metric"] == "accuracy" else min)(scored, key=lambda pair: pair[1]["mean"])
        return f"best {best[0]}: {format_meta_result(metrics['metric'], best[1])}", best[1]["mean"]
    if kind == "sweep":  # `metrics` are sweep.json
        best = metrics.get("best")
        if not best:
            return "", None
        return f"best trial {best['trial']}: {metrics['objective']['metric']} {best['value']:.4g}", best["value"]
    if kind == "meta" and metrics.get("evaluation"):
        entry = max(metrics["evaluation"], key=lambda item: item["steps"])
        value = entry["mean"] if finite(entry.get("mean")) else None
        if "baselines" in metrics:  # a learned optimizer, against hand-designed ones
            return _learned_optimizer_headline(metrics, entry), value
        if value is None:
            return _diverged(metrics["metric"], entry), None
        return format_meta_result(metrics["metric"], entry), value
    if kind == "transfer" and "test" in metrics:
        accuracy = metrics["test"]["accuracy"]
        scratch = metrics.get("baseline", {}).get("scratch", {}).get("test")
        return f"test accuracy {accuracy:.1%}" + (f" (from scratch {scratch['accuracy']:.1%})" if scratch else ""), accuracy
    if kind == "transfer" and metrics.get("phases") and "val_accuracy" in metrics["phases"][-1]:
        accuracy = metrics["phases"][-1]["val_accuracy"]
        return f"validation accuracy {accuracy:.1%}", accuracy
    return "", None


def finite(value: Any) -> bool:
    """Whether a figure read from JSON is a number to show: not null (NaN written by the run) nor infinite."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _diverged(metric: str, entry: dict[str, Any]) -> str:
    """`loss after 200 steps: diverged (3 of 100 tasks)`: a mean that is no number."""
    count = f" ({entry['diverged']} of {plural(entry['tasks'], 'task')})" if entry.get("diverged") else ""
    return f"{metric} after {plural(entry['steps'], 'step')}: diverged{count}"


def _learned_optimizer_headline(metrics: dict[str, Any], entry: dict[str, Any]) -> str:
    """`loss after 200 steps: 0.0123 ± 0.002 (100 tasks); best tuned baseline adam 0.0456`.

    Losses span decades (a diverging baseline reaches 1e8), so figures have 4
    significant digits rather than 4 decimals.
    """
    metric, steps = metrics["metric"], entry["steps"]
    if finite(entry.get("mean")):
        learned = f"{metric} after {plural(steps, 'step')}: {entry['mean']:.4g} ± {entry['ci95']:.2g} ({plural(entry['tasks'], 'task')})"
    else:
        learned = _diverged(metric, entry)
    if not metrics["baselines"]:
        return learned
    at_steps = {
        name: baseline_entry["mean"]
        for name, baseline in metrics["baselines"].items()
        for baseline_entry in baseline.get("evaluation", [])
        if baseline_entry["steps"] == steps and finite(baseline_entry.get("mean"))
    }
    if not at_steps:
        return f"{learned}; every tuned baseline diverged"
    best = min(at_steps, key=at_steps.get)
    return f"{learned}; best tuned baseline {best} {at_steps[best]:.4g}"


def _parse_time(stamp: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None


def _status_and_reason(run: runs.Run, manifest: dict[str, Any]) -> tuple[str, str | None]:
    status = manifest.get("status", "unknown")
    if status == "failed":
        return status, manifest.get("error") or "no error recorded"
    if status == "interrupted":
        return status, f"stopped by {manifest.get('signal', 'a signal')}; continue with: workbench resume {run.path}"
    if status == "running" and not runs.still_running(manifest):
        process = manifest.get("process") or {}
        if process.get("host") == platform.node():
            return KILLED, f"its process ({process.get('pid')}) ended without recording why; continue with: workbench resume {run.path}"
    return status, None


def summarize(path: Path) -> RunSummary:
    """The summary of one run directory; raises `RunError` when it is not one or its manifest is unreadable."""
    run = runs.Run.open(path)
    manifest = read_json(run.file(runs.MANIFEST_FILE))
    kind = manifest.get("kind", "unknown")
    status, reason = _status_and_reason(run, manifest)
    metrics_path = run.file({"compare": runs.COMPARE_FILE, "sweep": runs.SWEEP_FILE}.get(kind, runs.METRICS_FILE))
    headline, value = headline_figure(kind, read_json(metrics_path)) if metrics_path.is_file() else ("", None)
    started, updated = _parse_time(manifest.get("created")), _parse_time(manifest.get("updated"))
    if status == "running" and started:  # still going: its duration so far
        updated = datetime.datetime.now(datetime.timezone.utc)
    duration = (updated - started).total_seconds() if started and updated else None
    return RunSummary(
        path=str(run.path),
        name=run.path.name,
        kind=kind,
        status=status,
        headline=headline,
        headline_value=value,
        started=manifest.get("created"),
        duration_seconds=duration,
        reason=reason,
    )


def _damaged(path: Path, error: RunError) -> RunSummary:
    return RunSummary(str(path), path.name, "unknown", "unreadable", "", None, None, None, str(error))


def list_runs(folder: Path) -> list[RunSummary]:
    """Every run directory directly under `folder`, newest first; damaged ones listed as `unreadable` with why."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: no such folder; pass the folder that holds run directories (default: runs, or $WORKBENCH_RUNS)")
    summaries = []
    for path in folder.iterdir():
        if not (path / runs.MANIFEST_FILE).is_file():
            continue  # not a run directory: a user's own file or folder beside the runs
        try:
            summaries.append(summarize(path))
        except RunError as error:
            summaries.append(_damaged(path, error))

    def newest_first(summary: RunSummary):
        started = _parse_time(summary.started)
        return started.timestamp() if started else Path(summary.path).stat().st_mtime

    return sorted(summaries, key=newest_first, reverse=True)


def format_duration(seconds: float | None) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`: a wall time as people read it."""
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def format_start(stamp: str | None) -> str:
    """A manifest time in this machine's time zone, to the minute."""
    started = _parse_time(stamp)
    return started.astimezone().strftime("%Y-%m-%d %H:%M") if started else "-"


def format_runs(summaries: list[RunSummary]) -> str:
    """The runs as an aligned table, with a `why:` line under each run that stopped early."""
    header = ("name", "kind", "status", "headline", "started", "duration")
    rows = [
        (
            summary.name,
            summary.kind,
            summary.status,
            summary.headline or "-",
            format_start(summary.started),
            format_duration(summary.duration_seconds),
        )
        for summary in summaries
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    for summary, row in zip(summaries, rows, strict=True):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if summary.reason:
            lines.append(f"  why: {summary.reason}")
    return "\n".join(lines)
