"""How the weekly report is put together, whatever its figures: the warehouse is read before
the report is built (the modules that build and render it import no database code), every
value either output prints is escaped by that output's one rule, the HTML page keeps one
line per section, and the templates ship with the package (tests/report_week.py's week).
"""

from __future__ import annotations

import ast
import dataclasses
import html
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from sqlalchemy import event

from pipelines.report import build
from pipelines.report.html import render_html
from pipelines.report.markdown import md_escape, render_markdown
from pipelines.report.model import WeeklyReport
from pipelines.report.weekly import collect_weekly
from pipelines.settings import Settings
from tests import report_week

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "pipelines" / "report"
SECTIONS = [
    "summary",
    "kpis",
    "trends",
    "risk-segments",
    "incidents",
    "drift",
    "data-quality",
    "versions",
]
# Markup of both outputs, quotes, and characters that could hide text.
HOSTILE = "<b onclick='x'>\"a\" & b</b> | *c* _d_ [e](http://x.example) `f` ~g~ \u202eh"


@pytest.fixture(scope="module")
def week(tmp_path_factory):
    url, engine = report_week.warehouse(tmp_path_factory.mktemp("structure"))
    return engine, Settings.load(environ=report_week.environ(url))


@pytest.fixture(scope="module")
def report(week) -> WeeklyReport:
    engine, settings = week
    return collect_weekly(engine, settings, report_week.WEEK, now=report_week.NOW)


def test_the_warehouse_is_read_before_the_report_is_built(week, monkeypatch):
    engine, settings = week
    building: list[str] = []
    statements: list[tuple[bool, str]] = []

    def record(conn, cursor, statement, *args):
        statements.append((bool(building), statement))

    def watched(name):
        real = getattr(build, name)

        def run(*args, **kwargs):
            building.append(name)
            try:
                return real(*args, **kwargs)
            finally:
                building.pop()

        return run

    for name in ("plan", "weekly_report"):
        monkeypatch.setattr(build, name, watched(name))
    event.listen(engine, "before_cursor_execute", record)
    try:
        report = collect_weekly(engine, settings, report_week.WEEK, now=report_week.NOW)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert report.events == report_week.EVENTS
    assert statements
    assert [s for during, s in statements if during] == []


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


# The weekly report's modules that build or render it from values: no database code.
PURE = (
    "model",
    "week_data",
    "build",
    "changes",
    "kpis",
    "trends",
    "incidents",
    "suppression",
    "wording",
    "numbers",
    "html",
    "markdown",
    "charts",
)


def test_the_report_is_built_and_rendered_by_modules_without_database_code():
    for name in PURE:
        imports = _imports(REPORT / f"{name}.py")
        database = {i for i in imports if i == "sqlalchemy" or i.startswith("sqlalchemy.")}
        assert not database, f"{name}.py imports {database}"
        assert not imports & {"pipelines.report.store", "pipelines.report.weekly"}, name
    assert "sqlalchemy" in _imports(REPORT / "store.py")


def _hostile(report: WeeklyReport) -> WeeklyReport:
    """The report with text from the warehouse and the configuration replaced by HOSTILE."""
    replace = dataclasses.replace
    risk = report.risk
    incidents = report.incidents
    versions = report.versions
    assert risk.rows and incidents.incidents and versions.seen
    return replace(
        report,
        dimensions=(HOSTILE, *report.dimensions[1:]),
        kpis=tuple(replace(k, name=HOSTILE, explanation=HOSTILE) for k in report.kpis),
        risk=replace(risk, rows=tuple(replace(r, segment=HOSTILE) for r in risk.rows)),
        incidents=replace(
            incidents,
            incidents=tuple(
                replace(i, rule=HOSTILE, segment=HOSTILE, summary=HOSTILE)
                for i in incidents.incidents
            ),
        ),
        versions=replace(
            versions,
            seen=tuple(replace(v, value=HOSTILE) for v in versions.seen),
            rules_fired=(HOSTILE,),
        ),
    )


def test_every_value_either_output_prints_is_escaped(report):
    hostile = _hostile(report)
    page = render_html(hostile)
    markdown = render_markdown(hostile, "charts")
    assert HOSTILE not in page and "<b onclick" not in page
    assert page.count(html.escape(HOSTILE, quote=True)) >= 10
    assert HOSTILE not in markdown and "<b onclick" not in markdown and "\u202e" not in markdown
    assert markdown.count(md_escape(HOSTILE)) >= 10
    # The incident link's text is escaped too; its target is the runbook's URL.
    assert f"[{md_escape(HOSTILE)}](file://" in markdown


def test_the_page_has_one_line_per_section_in_order(report):
    lines = render_html(report).splitlines()
    assert lines[0] == "<!DOCTYPE html>" and lines[-1] == "</footer></body></html>"
    sections = [line for line in lines if line.startswith("<section")]
    assert [re.match(r'<section id="([a-z-]+)"', s).group(1) for s in sections] == SECTIONS
    assert all(s.endswith("</section>") for s in sections)
    # No indentation of the templates reaches the page (the styles, above, keep theirs).
    first = lines.index(sections[0])
    assert len(lines) - first == len(SECTIONS) + 5  # the sections, then the footer's lines
    assert not any(line[:1].isspace() for line in lines[first:])


def test_the_templates_ship_with_the_package():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["pipelines"]
    templates = sorted((REPORT / "templates").iterdir())
    assert {p.suffix for p in templates} >= {".j2", ".css"}
    for path in templates:
        relative = path.relative_to(REPO / "pipelines").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative
