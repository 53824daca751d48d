"""matplotlib without pyplot: figures drawn off-screen to PNG, all in one look.

`matplotlib.figure.Figure` renders through the Agg canvas by itself, so no
backend is chosen and no global pyplot state is touched: reports can be built
in any process, with or without a display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator

from workbench.report.content import Picture

DPI = 150  # sharp on high-density screens and in print
SCREEN_DPI = 96  # CSS pixels per inch: a figure 8 inches wide shows 768 pixels wide
TRAINING = "#2f6db3"
VALIDATION = "#e07b00"
SCRATCH = "#7a7f87"
BEST = "#1d232a"
RUN_COLOURS = ("#2f6db3", "#e07b00", "#2a9d55", "#c8382c", "#8253b5", "#8c5a3c", "#d45fa5", "#6b7280", "#a7a21c", "#17a3b8")


def new_figure(columns: int = 1, width: float = 9.0, height: float = 3.4) -> tuple[Figure, list]:
    """A figure of `columns` side-by-side axes, styled alike."""
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = list(figure.subplots(1, columns, squeeze=False).ravel())
    for ax in axes:
        style(ax)
    return figure, axes


def style(ax) -> None:
    ax.grid(True, color="#d8dde3", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def integer_ticks(ax) -> None:
    """Whole numbers on the x axis (epochs, iterations, steps), at round intervals."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))


def loss_scale(ax, values: Sequence[float]) -> None:
    """A log scale for losses that fall by more than 30 times, so the end of training stays readable."""
    positive = [value for value in values if value > 0]
    if positive and len(positive) == len(values) and max(positive) / min(positive) > 30:
        ax.set_yscale("log")
        # Plain numbers at 1, 2 and 5 of each decade: `10^-1` alone leaves too few labels to read a value.
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_minor_formatter(lambda value, _: "")


def run_colour(index: int) -> str:
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def picture(figure: Figure, key: str, title: str, caption: str, alt: str) -> Picture:
    """Render `figure` to PNG (no timestamp in its metadata: the same figure gives the same bytes)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return Picture(key, title, caption, buffer.getvalue(), round(figure.get_figwidth() * SCREEN_DPI), alt)
