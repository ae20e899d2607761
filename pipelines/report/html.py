"""The weekly report as one self-contained HTML page (pure: report in, text out).

Inline CSS, the charts as `data:image/png;base64` images, no script, font file or external
URL (the only links are the runbooks, under `report.runbook_base_url`). At most 1000 px
wide, narrower without a horizontal scrollbar, and printable on A4 (`@page`), with no column
cut off. Each section has an `id` (summary, kpis, trends, risk-segments, incidents, drift,
data-quality, versions) and the rows carry `data-*` attributes with the unformatted
numbers, so a test or a script can compare the page with the warehouse.

The layout is `templates/weekly.html.j2` and `templates/sections.html.j2`, the styles
`templates/report.css`; the words come from `pipelines.report.wording`, the numbers from
`pipelines.report.numbers`. Every value a template prints goes through `html.escape`
(autoescaping, the environment's `finalize`); only what the templates' own macros return is
markup. In the HTML templates a line break and the indentation after it are not part of the
page (`_JoinLines`), so that they can be laid out readably while the page keeps one line per
section.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

from jinja2 import Environment, PackageLoader
from jinja2.ext import Extension
from markupsafe import Markup

from pipelines.report import numbers, wording
from pipelines.report.charts import trend_chart
from pipelines.report.model import (
    AT_RISK,
    DRIFT_PSI,
    MET,
    MISSED,
    NO_DATA,
    NO_TARGET,
    UNCONFIRMED,
    Trend,
    WeeklyReport,
)

# The colour of each status's badge; the word beside it is `wording.STATUS_LABELS`.
STATUS_CLASS = {
    MET: "ok",
    MISSED: "bad",
    AT_RISK: "warn",
    UNCONFIRMED: "info",
    NO_DATA: "none",
    NO_TARGET: "none",
}
SUMMARY_ORDER = (MET, AT_RISK, UNCONFIRMED, MISSED, NO_DATA)  # the summary's badges

_LINE_BREAK = re.compile(r"\n[ \t]+")


class _JoinLines(Extension):
    """Removes each line break followed by indentation from the `.html.j2` templates before
    they are compiled: a line that starts in the first column starts a new line of the page,
    an indented one continues the line above it.
    """

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        if name is None or not name.endswith(".html.j2"):
            return source
        return _LINE_BREAK.sub("", source)


def _escape(value: object) -> Markup:
    """Every printed value, as text of the page; markup from the templates' macros is kept.

    `html.escape` rather than markupsafe's escaping, whose entities for quotes differ.
    """
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def data_value(value: float | str | None) -> str:
    """A `data-*` attribute's value: a float's repr (all its digits), '' for None."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def png_base64(trend: Trend) -> str:
    return base64.b64encode(trend_chart(trend)).decode("ascii")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipelines.report", "templates"),
        autoescape=True,
        finalize=_escape,
        extensions=[_JoinLines],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(data=data_value, thousands="{:,}".format, png_base64=png_base64)
    env.globals.update(
        wording=wording,
        numbers=numbers,
        STATUS_CLASS=STATUS_CLASS,
        SUMMARY_ORDER=SUMMARY_ORDER,
        DRIFT_PSI=DRIFT_PSI,
    )
    return env


def render_html(report: WeeklyReport) -> str:
    """The whole report as one HTML document (UTF-8 text)."""
    context: dict[str, Any] = {"report": report}
    return _environment().get_template("weekly.html.j2").render(context)
