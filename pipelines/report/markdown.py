"""The weekly report as Markdown (pure: report in, text out): the sections, numbers and words
of the HTML page, laid out by `templates/weekly.md.j2`.

Charts are not embedded: with `chart_dir_name`, each is referenced as
`<chart_dir_name>/<rate_id>.png`, the files that `pipelines.report.weekly.write_report`
writes next to the Markdown; without it the Markdown says the charts are in the HTML version.

One escaping rule, applied by the template environment itself: every value the template
prints goes through `md_escape` (the environment's `finalize`), so that a segment value, a
version or a rule name can neither break a table nor add a tag, emphasis or a link. What the
template's own macros return (bold, links) is Markdown and is kept; a link target is
percent-encoded by `md_url` instead.
"""

from __future__ import annotations

import unicodedata
import urllib.parse
from typing import Any

from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from pipelines.report import numbers, wording
from pipelines.report.model import DRIFT_PSI, WeeklyReport

# Characters with a meaning in Markdown or HTML, shown literally. `(` and `)` only form a link
# after `]`, `#`, `-`, `+` and `1.` only mark up a line they start, and text from the warehouse
# never starts a line here.
_MD_ESCAPES = {
    "\\": "\\\\", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
    "~": "\\~", "|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;",
    "\t": " ", "\n": " ", "\r": " ",
}  # fmt: skip


def md_escape(text: object) -> str:
    r"""`text` shown literally in Markdown, on one line, also inside a table cell.

    Markdown and HTML characters are escaped, line breaks become spaces, and invisible
    characters that could disguise text (bidi overrides and isolates, zero-width characters,
    other format and control characters) are shown as their code, e.g. `\u202e`.
    """
    out = []
    for ch in str(text):
        if ch in _MD_ESCAPES:
            out.append(_MD_ESCAPES[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def md_url(url: str) -> Markup:
    """A link target that cannot end the link or break the line: unsafe bytes %-encoded."""
    return Markup(urllib.parse.quote(url, safe=":/?#@!$&'*+,;=%~-._"))


def _escape(value: object) -> Markup:
    """Every printed value, escaped by `md_escape`; Markdown from the template's macros (a
    `Markup`: the environment autoescapes, so macros return it) is kept as it is.
    """
    if isinstance(value, Markup):
        return value
    return Markup(md_escape(value))


def _environment() -> Environment:
    # Autoescaping on, with `_escape` as the one escaping rule: markupsafe's HTML escaping
    # never sees a value, since every printed one is already Markup when it would.
    env = Environment(
        loader=PackageLoader("pipelines.report", "templates"),
        autoescape=True,
        finalize=_escape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(md_url=md_url, thousands="{:,}".format)
    env.globals.update(wording=wording, numbers=numbers, DRIFT_PSI=DRIFT_PSI)
    return env


def render_markdown(report: WeeklyReport, chart_dir_name: str | None = None) -> str:
    """The report as Markdown; charts referenced as `<chart_dir_name>/<rate_id>.png`, or
    left out (with a note) when `chart_dir_name` is None.
    """
    context: dict[str, Any] = {"report": report, "chart_dir": chart_dir_name}
    return _environment().get_template("weekly.md.j2").render(context)
