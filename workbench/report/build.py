"""`workbench report RUN...`: read every run first (bad input fails before anything is drawn), then draw each, then the page."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from workbench import runs
from workbench.errors import ArgumentError
from workbench.listing import format_duration, format_start
from workbench.report.content import INTEGER, Cell, Preformatted, Section, Table, number, text
from workbench.report.learned import learned_items
from workbench.report.meta import meta_items
from workbench.report.page import render_page
from workbench.report.run_files import RunFiles, is_learned_optimizer, read_run
from workbench.report.several import several_items
from workbench.report.transfer import transfer_items

REPORT_FILE = "report.html"  # beside a single run's files

Progress = Callable[[str], None]


def default_output(paths: Sequence[Path]) -> Path:
    """`RUN/report.html` for one run; for several, a file in the current folder named after them."""
    if len(paths) == 1:
        return Path(paths[0]) / REPORT_FILE
    names = [Path(path).resolve().name for path in paths]
    if len(names) == 2:
        return Path(f"report-{names[0]}-vs-{names[1]}.html")
    return Path(f"report-{names[0]}-and-{len(names) - 1}-more.html")


def _overview(run: RunFiles) -> Table:
    manifest, summary = run.manifest, run.summary
    versions = ", ".join(f"{name} {version}" for name, version in manifest.get("versions", {}).items())
    rows = [
        ("kind", summary.kind),
        ("status", summary.status),
        ("why", summary.reason),
        ("headline", summary.headline),
        ("started", format_start(summary.started)),
        ("duration", format_duration(summary.duration_seconds)),
        ("recipe", manifest.get("recipe_path")),
        ("overrides", " ".join(f"--set {item}" for item in manifest.get("overrides", []))),
        ("seed", number(run.name, runs.MANIFEST_FILE, "seed", manifest.get("seed"), INTEGER)),
        ("base run", manifest.get("base_run")),
        ("versions", versions),
    ]
    shown = [[text(label), value if isinstance(value, Cell) else text(value)] for label, value in rows if value]
    return Table(f"`{run.path}`", ["", ""], shown, "overview")


def run_section(run: RunFiles, index: int, adapt_sinusoid: bool, progress: Progress | None) -> Section:
    items: list = [_overview(run)]
    if run.kind == "transfer":
        items += transfer_items(run)
    elif is_learned_optimizer(run.recipe):
        items += learned_items(run)
    else:
        items += meta_items(run, adapt_sinusoid, progress)
    items.append(Preformatted(f"Resolved recipe ({run.path.name}/recipe.yaml)", run.recipe_text))
    return Section(run.name, items, f"run-{index}", subtitle=f"{run.kind} run, {run.summary.status}")


def _unique(paths: Sequence[Path]) -> list[Path]:
    seen, unique = set(), []
    for path in paths:
        if Path(path).resolve() not in seen:
            seen.add(Path(path).resolve())
            unique.append(Path(path))
    return unique


def build_report(paths: Sequence[Path], adapt_sinusoid: bool = True, progress: Progress | None = None) -> str:
    """The HTML page of the runs at `paths`; raises `RunError` (one line) when one cannot be drawn."""
    paths = _unique(paths)
    if not paths:
        raise ArgumentError("Expected at least one run directory. Received: no RUN")
    chosen = []
    for position, path in enumerate(paths, start=1):
        if progress and len(paths) > 1:
            progress(f"reading run {position}/{len(paths)}: {path}")
        chosen.append(read_run(path))
    sections = []
    if len(chosen) > 1:
        sections.append(Section("Side by side", several_items(chosen), "overview", subtitle=f"{len(chosen)} runs"))
    for position, run in enumerate(chosen, start=1):
        if progress and len(chosen) > 1:
            progress(f"drawing run {position}/{len(chosen)}: {run.name}")
        sections.append(run_section(run, position, adapt_sinusoid, progress))
    title = f"workbench report: {chosen[0].name}" if len(chosen) == 1 else f"workbench report: {len(chosen)} runs"
    made = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")
    return render_page(title, f"Made {made} by workbench {metadata.version('workbench')} from the runs' files.", sections)
