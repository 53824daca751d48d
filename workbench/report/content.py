"""What a report holds, before it becomes HTML: sections of pictures, tables and notes.

Every number a table shows from a run's files is a `Cell` that remembers where
it came from (run, file, field path) and its exact value, so the page can carry
them and a test can check each one against the file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from workbench.listing import format_duration

# How a number is shown, by what it measures.
PERCENT, DECIMAL, COUNT, SECONDS, INTEGER = "percent", "decimal", "count", "seconds", "integer"
FORMATS = {
    PERCENT: lambda value: f"{value:.1%}",
    DECIMAL: lambda value: f"{value:.4f}",
    COUNT: lambda value: f"{round(value):,}",
    INTEGER: lambda value: str(round(value)),
    SECONDS: format_duration,
}


def format_value(value: float, style: str) -> str:
    """The one way a report shows each kind of number."""
    return FORMATS[style](value)


def metric_style(metric: str) -> str:
    """Accuracy-like metrics as percentages, losses and errors as decimals."""
    return PERCENT if metric in ("accuracy", "precision", "recall") or metric.endswith("accuracy") else DECIMAL


@dataclasses.dataclass
class Cell:
    """A table cell; `source` is `(run, file, field path)` for a number read from a run's file."""

    text: str
    value: float | None = None
    source: tuple[str, str, str] | None = None

    @property
    def numeric(self) -> bool:
        return self.value is not None


def text(value: Any) -> Cell:
    return Cell("-" if value is None else str(value))


def number(run: str, file: str, field: str, value: float | None, style: str) -> Cell:
    """A number from `file` of `run` at `field` (dotted path, list items by position), shown in `style`."""
    if value is None:
        return Cell("-")
    return Cell(format_value(value, style), value, (run, file, field))


@dataclasses.dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    key: str  # stable name, for links and tests


@dataclasses.dataclass
class Picture:
    """A matplotlib figure rendered to PNG, with what it shows."""

    key: str  # stable name, for links and tests
    title: str
    caption: str
    png: bytes
    width: int  # pixels at 1x, for the page's layout
    alt: str


@dataclasses.dataclass
class Note:
    """A paragraph; `command` is shown as code after the text."""

    text: str
    command: str | None = None


@dataclasses.dataclass
class Preformatted:
    title: str
    text: str


@dataclasses.dataclass
class Section:
    title: str
    items: list[Table | Picture | Note | Preformatted]
    key: str
    subtitle: str = ""
