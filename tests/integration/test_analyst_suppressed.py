"""What the analyst views hide, and distinct users over a period, on SQLite and PostgreSQL.

Ground truth is generated here: per 5-minute window and segment, a number of events and a
set of user ids drawn from the segment's pool, written through the real sink (one batch per
window) with the users' HyperLogLog sketch, in two dimension sets. Segments cross k from
window to window, so v_segment_window hides some rows of a window and the daily and weekly
roll-ups hide other ones (a period x segment whose largest window stays below k).

- The companion views say, per period x dimension set, how many rows and events their view
  hid: what the view shows plus what it hid is the base table, and what it hid is what the
  generated users say it must hide.
- The documented reconciliation query gives the base table's events per window.
- `distinct_users` merges the stored sketches into the period's distinct users: the union
  of the generated user sets, within the sketch's error, where the roll-ups' SQL only has
  a lower bound.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import datasketches as ds
import pytest
from sqlalchemy import Engine, text

from pipelines.metrics.catalog import counter_ids
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.queries import distinct_users
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import as_utc
from tests.integration.test_warehouse_doc_queries import doc_query

pytestmark = pytest.mark.integration

K = 20
T0 = datetime(2026, 11, 20, 21, 0, tzinfo=UTC)  # a Friday; the data ends on the Tuesday after
EVERY = timedelta(hours=3)
WINDOWS = 28
FULL = "product_surface,locale"
BY_LOCALE = "locale"
# (product_surface, locale) -> (user pool, fewest and most users per window)
SEGMENTS = {
    ("chat", "de-DE"): (150, 10, 60),  # crosses k from window to window
    ("chat", "fr-FR"): (40, 5, 25),  # mostly below k, some windows above
    ("agent", "fr-FR"): (12, 2, 12),  # below k always
    ("search", "is-IS"): (30, 2, 30),  # some days below k in every window
    ("chat", "en-US"): (4000, 300, 600),  # large: the sketches leave their exact modes
}
QUIET_DAY = date(2026, 11, 22)  # is-IS has at most 6 users per window that day


@dataclass
class Row:
    window_start: datetime
    dimension_set: str
    segment: tuple[str, str]  # (product_surface, locale); "*" where not in the dimension set
    events: int
    users: set[str] = field(default_factory=set)


def _sketch(users: set[str]) -> bytes:
    sketch = ds.hll_sketch(11)
    for u in sorted(users):
        sketch.update(u)
    return bytes(sketch.serialize_compact())


def generate(seed: int = 7) -> list[Row]:
    rng = random.Random(seed)
    rows: list[Row] = []
    for w in range(WINDOWS):
        start = T0 + w * EVERY
        by_locale: dict[str, Row] = {}
        for (surface, locale), (pool, low, high) in SEGMENTS.items():
            if locale == "is-IS" and start.date() == QUIET_DAY:
                high = 6
            n = rng.randint(low, high)
            users = {f"{surface}/{locale}#{i}" for i in rng.sample(range(pool), n)}
            row = Row(start, FULL, (surface, locale), rng.randint(n, 4 * n + 10), users)
            rows.append(row)
            coarse = by_locale.setdefault(locale, Row(start, BY_LOCALE, ("*", locale), 0))
            coarse.events += row.events
            coarse.users |= users
        rows.extend(by_locale.values())
    return rows


def write(engine: Engine, rows: list[Row]) -> None:
    sink = WarehouseSink(engine)
    sink.set_min_distinct_users(K)
    by_window: dict[datetime, list[Row]] = defaultdict(list)
    for r in rows:
        by_window[r.window_start].append(r)
    for batch_id, (start, window_rows) in enumerate(sorted(by_window.items())):
        aggs = []
        for r in window_rows:
            agg: dict[str, Any] = dict.fromkeys(counter_ids(), 0)
            agg.update(
                window_start=start,
                window_end=start + timedelta(minutes=5),
                dimension_set=r.dimension_set,
                **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
            )
            agg.update(product_surface=r.segment[0], locale=r.segment[1], events=r.events)
            agg.update(unflagged_events=r.events, events_seen=r.events)
            agg["telemetry_complete"] = r.events
            agg["users_sketch"] = _sketch(r.users)
            aggs.append(agg)
        events = sum(r.events for r in window_rows if r.dimension_set == FULL)
        sink.commit(
            BatchResult(
                query_id="suppressed",
                batch_id=batch_id,
                topic="t",
                started_at=start,
                input_rows=events,
                late_rows=0,
                aggregated_rows=events,
                watermark_before=None,
                watermark_after=start,
                offsets=[OffsetRange("t", 0, batch_id * 10_000, batch_id * 10_000 + events - 1, 1)],
                aggregates=aggs,
            )
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def warehouse(request, tmp_path_factory) -> Iterator[tuple[Engine, list[Row]]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('suppressed') / 'wh.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database("suppressed")
    engine = make_engine(url)
    migrate(engine)
    rows = generate()
    write(engine, rows)
    yield engine, rows
    engine.dispose()


# -- the truth, from the generated user sets -----------------------------------------------


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _period(grain: str, start: datetime) -> Any:
    if grain == "window":
        return start
    return start.date() if grain == "day" else _monday(start.date())


def expected(rows: list[Row], grain: str) -> dict[tuple[Any, str], dict[str, int]]:
    """Per period x dimension set: rows, windows and events of the base table, and those a
    view of that grain hides (a period x segment whose largest window has fewer than K
    users; for windows, the window x segment itself).
    """
    groups: dict[tuple[Any, str, tuple[str, str]], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(_period(grain, r.window_start), r.dimension_set, r.segment)].append(r)
    out: dict[tuple[Any, str], dict[str, int]] = {}
    for (period, dimension_set, _), members in groups.items():
        entry = out.setdefault(
            (period, dimension_set),
            dict.fromkeys(("rows", "windows", "events", "hidden_rows", "hidden_windows",
                           "hidden_events"), 0),
        )  # fmt: skip
        hidden = max(len(r.users) for r in members) < K
        events = sum(r.events for r in members)
        entry["rows"] += 1
        entry["windows"] += len(members)
        entry["events"] += events
        if hidden:
            entry["hidden_rows"] += 1
            entry["hidden_windows"] += len(members)
            entry["hidden_events"] += events
    return out


# -- reading the views -----------------------------------------------------------------------

VIEWS = {  # grain -> (view, its companion, the period column)
    "window": ("v_segment_window", "v_segment_window_suppressed", "window_start"),
    "day": ("v_segment_daily", "v_segment_daily_suppressed", "day"),
    "week": ("v_segment_weekly", "v_segment_weekly_suppressed", "week_start"),
}


def _key(grain: str, value: Any) -> Any:
    """A period as read: SQLite gives text, PostgreSQL a datetime or a date."""
    if grain == "window":
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
        return as_utc(parsed)
    return date.fromisoformat(value) if isinstance(value, str) else value


def _read(engine: Engine, sql: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql)).mappings()]


def shown(engine: Engine, grain: str) -> dict[tuple[Any, str], dict[str, int]]:
    view, _, column = VIEWS[grain]
    windows = "COUNT(*)" if grain == "window" else "SUM(windows)"
    rows = _read(
        engine,
        f"SELECT {column} AS period, dimension_set, COUNT(*) AS n_rows, {windows} AS n_windows, "
        f"SUM(events) AS events FROM {view} GROUP BY {column}, dimension_set",
    )
    return {
        (_key(grain, r["period"]), r["dimension_set"]): {
            "rows": int(r["n_rows"]),
            "windows": int(r["n_windows"]),
            "events": int(r["events"]),
        }
        for r in rows
    }


def suppressed(engine: Engine, grain: str) -> dict[tuple[Any, str], dict[str, int]]:
    _, companion, column = VIEWS[grain]
    out = {}
    for r in _read(engine, f"SELECT * FROM {companion}"):
        values = {"rows": r["suppressed_rows"], "events": r["suppressed_events"]}
        values["windows"] = r["suppressed_rows"] if grain == "window" else r["suppressed_windows"]
        assert all(type(v) is int for v in values.values()), r
        out[(_key(grain, r[column]), r["dimension_set"])] = values
    return out


def base(engine: Engine, grain: str) -> dict[tuple[Any, str], dict[str, int]]:
    """The base table's events per window x dimension set, summed to the grain."""
    out: dict[tuple[Any, str], dict[str, int]] = {}
    for r in _read(
        engine,
        "SELECT window_start, dimension_set, SUM(events) AS events "
        "FROM segment_window_agg GROUP BY window_start, dimension_set",
    ):
        start = _key("window", r["window_start"])
        entry = out.setdefault((_period(grain, start), r["dimension_set"]), {"events": 0})
        entry["events"] += int(r["events"])
    return out


@pytest.mark.parametrize("grain", list(VIEWS))
def test_each_view_and_what_it_hid_add_up_to_the_base_table(warehouse, grain):
    engine, rows = warehouse
    truth = expected(rows, grain)
    # The data has periods with rows both hidden and shown; a day x segment is shown when
    # one of its windows reaches k, though v_segment_window hides the others.
    assert any(0 < t["hidden_rows"] < t["rows"] for t in truth.values())
    if grain == "day":
        windows = expected(rows, "window")
        hidden_windows = {k: sum(t["hidden_windows"] for (start, d), t in windows.items()
                                 if (start.date(), d) == k) for k in truth}  # fmt: skip
        assert any(truth[k]["hidden_windows"] < n for k, n in hidden_windows.items())
        assert truth[(QUIET_DAY, FULL)]["hidden_rows"] >= 2  # is-IS and agent/fr-FR
    view, hidden = shown(engine, grain), suppressed(engine, grain)

    # One companion row per period x dimension set of the base table, 0 when nothing is hidden.
    assert set(hidden) == set(truth)
    for key, t in truth.items():
        assert hidden[key] == {
            "rows": t["hidden_rows"],
            "windows": t["hidden_windows"],
            "events": t["hidden_events"],
        }, key
        seen = view.get(key, {"rows": 0, "windows": 0, "events": 0})
        assert seen["rows"] + hidden[key]["rows"] == t["rows"], key
        assert seen["windows"] + hidden[key]["windows"] == t["windows"], key
        assert seen["events"] + hidden[key]["events"] == t["events"], key
    # And against the stored table itself.
    assert {k: v["events"] for k, v in base(engine, grain).items()} == {
        k: t["events"] for k, t in truth.items()
    }


def test_the_documented_reconciliation_gives_the_base_tables_events(warehouse):
    engine, rows = warehouse
    sql = doc_query("suppressed-reconciliation").replace(
        "'product_surface,model_version,locale'", f"'{FULL}'"
    )
    got = {_key("window", r["window_start"]): r for r in _read(engine, sql)}
    truth = {k[0]: t for k, t in expected(rows, "window").items() if k[1] == FULL}
    assert set(got) == set(truth)
    for start, t in truth.items():
        r = got[start]
        assert (int(r["shown_events"]), int(r["suppressed_events"]), int(r["events"])) == (
            t["events"] - t["hidden_events"],
            t["hidden_events"],
            t["events"],
        ), start


# -- distinct users over a period ------------------------------------------------------------

RSE = 1.04 / 2**5.5  # HyperLogLog's relative standard error at lg_k 11 (2,048 buckets)


def _members(rows: list[Row], since: datetime, until: datetime, where: dict[str, str]) -> list[Row]:
    """The generated rows of FULL in [since, until) whose segment matches `where`."""
    names = ("product_surface", "locale")
    return [
        r
        for r in rows
        if r.dimension_set == FULL
        and since <= r.window_start < until
        and all(r.segment[names.index(d)] == v for d, v in where.items())
    ]


@pytest.mark.parametrize(
    "where",
    [
        {"product_surface": "chat", "locale": "de-DE"},
        {"product_surface": "chat", "locale": "en-US"},
        {"locale": "fr-FR"},  # two segments
        {},  # every segment
    ],
)
def test_distinct_users_merges_the_sketches_of_the_period(warehouse, where):
    engine, rows = warehouse
    days = [T0 + timedelta(days=d) for d in range(4)]
    below_truth = False
    for since, until in [(days[0], days[1]), (days[1], days[3]), (T0, T0 + WINDOWS * EVERY)]:
        members = _members(rows, since, until, where)
        truth = len(set().union(*(r.users for r in members)))
        got = distinct_users(engine, start=since, end=until, dimension_set=FULL, where=where)
        assert got.rows == len(members)
        assert abs(got.estimate - truth) <= 3 * RSE * truth + 1, (since, until, truth, got)
        assert got.lower <= truth <= got.upper, (since, until, truth, got)
        # The largest window's users: the lower bound that SQL gives.
        below_truth = below_truth or max(len(r.users) for r in members) < 0.8 * truth
    assert below_truth


def test_distinct_users_of_a_coarser_dimension_set_equals_the_union(warehouse):
    """The locale rows hold the union of their surfaces' users: the same figure."""
    engine, rows = warehouse
    end = T0 + WINDOWS * EVERY
    fr = {"locale": "fr-FR"}
    truth = len(set().union(*(r.users for r in _members(rows, T0, end, fr))))
    got = distinct_users(engine, start=T0, end=end, dimension_set=BY_LOCALE, where=fr)
    assert got.rows == WINDOWS
    assert abs(got.estimate - truth) <= 3 * RSE * truth + 1


def test_distinct_users_refuses_an_unknown_column(warehouse):
    engine, _ = warehouse
    with pytest.raises(KeyError, match="tenant"):
        distinct_users(engine, start=T0, end=T0 + EVERY, where={"tenant": "acme"})
