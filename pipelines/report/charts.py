"""Trend charts of the weekly report: a series in, PNG bytes out (matplotlib's Agg canvas).

Deterministic: the figure size, resolution, font and style are fixed here (matplotlib's
defaults, not the user's matplotlibrc), and the PNG carries no software or time metadata, so
the same series always gives the same bytes. No pyplot: a `Figure` on its own canvas keeps no
global state and needs no display.
"""

from __future__ import annotations

import io
from datetime import UTC, timedelta
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter
from matplotlib.typing import RcKeyType

from pipelines.report.model import Trend
from pipelines.report.numbers import axis_percents

WIDTH_IN = 4.8
HEIGHT_IN = 2.6
DPI = 150  # 720 x 390 pixels; shown at half that width in the HTML, sharp when printed
WIDTH_PX = round(WIDTH_IN * DPI)
HEIGHT_PX = round(HEIGHT_IN * DPI)

LINE = "#1f5fa8"
BAND = "#9cc1ea"
TARGET = "#b3261e"

_STYLE: dict[RcKeyType, Any] = {
    "font.family": "DejaVu Sans",  # shipped with matplotlib: no system font changes the output
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.titleweight": "bold",
    "axes.edgecolor": "#888888",
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "legend.frameon": False,
    "timezone": "UTC",
    "figure.facecolor": "white",
}


class _PercentTicks(Formatter):
    """The y axis (in percent) labelled in the report's number style (`axis_percents`)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return axis_percents([x / 100])[0]

    def format_ticks(self, values: Any) -> list[str]:
        return axis_percents([v / 100 for v in values])


def trend_chart(trend: Trend) -> bytes:
    """The rate per bucket (line), its Wilson 95 % band (shaded) and the target (dashed).

    A single point is drawn with an error bar, since a band needs two. The y axis always
    includes the target, so a rate far below it reads as far below it. Raises ValueError
    for a trend without points (the report lists those as skipped instead).
    """
    if not trend.points:
        msg = f"no points to chart for {trend.rate_id}"
        raise ValueError(msg)
    xs = mdates.date2num([p.start for p in trend.points])
    values = [100 * p.value for p in trend.points]
    lows = [100 * p.lower for p in trend.points]
    highs = [100 * p.upper for p in trend.points]
    target = None if trend.target is None else 100 * trend.target
    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if len(xs) == 1:
            ax.errorbar(
                xs,
                values,
                yerr=[[values[0] - lows[0]], [highs[0] - values[0]]],
                fmt="o",
                color=LINE,
                ecolor=BAND,
                elinewidth=4,
                capsize=0,
                label="rate (95 % interval)",
                clip_on=False,
            )
            half = timedelta(seconds=max(trend.bucket_seconds, 60)) / timedelta(days=1)
            ax.set_xlim(xs[0] - half, xs[0] + half)
        else:
            ax.fill_between(
                xs, lows, highs, color=BAND, alpha=0.55, linewidth=0, label="95 % interval"
            )
            # Not clipped: a rate of exactly 0 % or 100 % sits on the axis limit.
            ax.plot(
                xs, values, color=LINE, linewidth=1.3, marker="o", markersize=2.2,
                label="rate", clip_on=False,
            )  # fmt: skip
        if target is not None:
            ax.axhline(target, color=TARGET, linestyle="--", linewidth=1.0, label="target")
        bottom = min([*lows, *([target] if target is not None else [])])
        top = max([*highs, *([target] if target is not None else [])])
        pad = (top - bottom) * 0.08 or max(top * 0.1, 0.01)
        ax.set_ylim(max(0.0, bottom - pad), min(100.0, top + pad))
        ax.yaxis.set_major_formatter(_PercentTicks())
        locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=7)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
        # The legend sits between the title and the plot: never over the data.
        ax.set_title(trend.name, loc="left", pad=16)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, borderaxespad=0.1)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()
