"""The weekly safety-posture report: KPIs against targets, trends, top risks, incidents.

`collect_weekly` reads the week from the warehouse (`pipelines.report.store`, all of the
report's SQL) and builds the `WeeklyReport` from what it read (`pipelines.report.build`,
pure); `write_report` renders it as HTML and Markdown (`pipelines.report.html`,
`pipelines.report.markdown`, pure) and puts the files in place atomically. Every figure is a
ratio of summed counters of `segment_window_agg` for the configured dimension set
(`stream.dimensions`), with its 95 % interval (cluster-robust where the per-user-bucket sums
are kept, Wilson's otherwise); week-over-week changes and new versions against the versions
they follow use the pooled two-proportion test of `pipelines.metrics.rate_tests`, each side's
variance widened by its design effect from those sums. Times are event times (window
starts) except where a figure is about the pipeline itself (batches: commit time;
acknowledgements: recorded time).

Privacy: a segment whose merged weekly distinct users (HyperLogLog union) are below
`privacy.min_distinct_users` is never shown on its own, in any table, nor are the incidents
of an alert segment without such users; the report says how many segments were held back.
The totals count all traffic, so when the held-back segments together have fewer than k
users, the smallest shown segment is held back too (complementary suppression): totals minus
what is shown never give a group of fewer than k users (`pipelines.report.suppression`).

Runbook links point to `report.runbook_base_url` (`runbook_base`): by default this
repository's runbooks folder as a file:// URL, so that they open wherever the report is
written on the machine that wrote it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from pipelines.files import write_atomically
from pipelines.report import build
from pipelines.report.model import IsoWeek, WeeklyReport
from pipelines.report.store import WeekStore, newest_window, report_tables
from pipelines.settings import Settings

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"  # the repository's folder


def latest_week(engine: Engine) -> IsoWeek | None:
    """The ISO week of the newest window in segment_window_agg; None when it is empty."""
    newest = newest_window(engine)
    return None if newest is None else IsoWeek.containing(newest)


def collect_weekly(
    engine: Engine, settings: Settings, week: IsoWeek, *, now: datetime | None = None
) -> WeeklyReport:
    """Everything the weekly report shows for `week`, read from the warehouse.

    The week's data is read first, then the details that what is shown needs, on one
    connection; the report is built from them without touching the database. A week (or a
    warehouse) without data gives a report whose sections say so. Raises SafewatchError
    when the warehouse has not been migrated.
    """
    generated_at = now or datetime.now(UTC)
    tables = report_tables(engine)
    with engine.connect() as conn:
        store = WeekStore(conn, tables, tuple(settings.stream.dimensions))
        data = store.read_week(week, settings.privacy.min_distinct_users)
        plan = build.plan(data, settings)
        details = store.read_details(week, plan.request)
    return build.weekly_report(
        data,
        plan,
        details,
        settings,
        now=generated_at,
        runbook_base_url=runbook_base(settings),
    )


def runbook_base(settings: Settings, runbooks: Path = RUNBOOKS) -> str:
    """The folder the report's runbook links point to, as a URL ending in '/'.

    `report.runbook_base_url` when set: a URL as it is, a local folder (relative to the
    working directory) as its file:// URL. Else `alerting.runbook_base_url` followed by
    `runbooks/`, the alerts' own links, when that is set; else `runbooks` (this repository's
    folder) as a file:// URL.
    """
    configured = settings.report.runbook_base_url.strip()
    if not configured and settings.alerting.runbook_base_url:
        configured = settings.alerting.runbook_base_url.rstrip("/") + "/runbooks/"
    if not configured:
        return runbooks.as_uri() + "/"
    if "://" not in configured:
        return Path(configured).resolve().as_uri() + "/"
    return configured.rstrip("/") + "/"


# ---------------------------------------------------------------- writing
def report_basename(week: str) -> str:
    return f"safety-posture-{week}"


def write_report(report: WeeklyReport, out_dir: Path) -> tuple[Path, Path]:
    """Write `<out_dir>/safety-posture-<week>.html` and `.md`; return their paths.

    The Markdown references the charts as PNG files in `safety-posture-<week>-charts/` next
    to it (written too); the HTML embeds them and stands alone. Each file is written to a
    temporary name and renamed, so a reader never sees half a report.
    """
    from pipelines.report.charts import trend_chart
    from pipelines.report.html import render_html
    from pipelines.report.markdown import render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    base = report_basename(report.week)
    chart_dir = out_dir / f"{base}-charts"
    chart_dir.mkdir(exist_ok=True)
    for trend in report.trends.charts:
        write_atomically(chart_dir / f"{trend.rate_id}.png", trend_chart(trend))
    html_path = out_dir / f"{base}.html"
    md_path = out_dir / f"{base}.md"
    write_atomically(html_path, render_html(report).encode("utf-8"))
    write_atomically(md_path, render_markdown(report, chart_dir.name).encode("utf-8"))
    return html_path, md_path
