"""The Wilson-interval queries of docs/warehouse.md, read from the file and run on the
warehouse they are written for (through `safewatch query`'s read-only path), against the
interval computed here from the counts generated for the test.
"""

from __future__ import annotations

import math
import random
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import binomtest, norm
from sqlalchemy import Engine

from pipelines.metrics.catalog import counter_ids
from pipelines.metrics.stats import wilson_interval
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.query import run_query
from pipelines.warehouse.tables import Tables

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "warehouse.md"
DIMENSION_SET = "product_surface,model_version,locale"
T0 = datetime(2026, 11, 16, tzinfo=UTC)
# model version -> (violations, events) per window; the edges: none, all, a single event,
# a rare rate in a billion events.
VERSIONS: dict[str, list[tuple[int, int]]] = {
    "m-none": [(0, 40), (0, 75)],
    "m-all": [(12, 12), (3, 3)],
    "m-one": [(1, 1)],
    "m-rare": [(2, 600_000_000), (1, 400_000_000)],
}


def doc_query(name: str) -> str:
    """The SQL block of docs/warehouse.md marked `<!-- query: name -->`."""
    found = re.findall(
        rf"<!-- query: {re.escape(name)} -->\s*```sql\n(.*?)```", DOC.read_text(), re.DOTALL
    )
    assert len(found) == 1, f"docs/warehouse.md has {len(found)} query blocks named {name!r}"
    return str(found[0])


def generate(seed: int = 11) -> dict[str, list[tuple[int, int]]]:
    """VERSIONS and a few versions of random counts, one row per window and locale."""
    rng = random.Random(seed)
    counts = dict(VERSIONS)
    for i in range(4):
        windows = []
        for _ in range(rng.randint(1, 6)):
            events = rng.randint(1, 5000)
            windows.append((rng.randint(0, events // rng.choice([1, 5, 50])), events))
        counts[f"m-{i}"] = windows
    return counts


def write(engine: Engine, counts: dict[str, list[tuple[int, int]]]) -> None:
    rows = []
    for version, windows in counts.items():
        for w, (violations, events) in enumerate(windows):
            start = T0 + timedelta(minutes=5 * w)
            row: dict[str, Any] = dict.fromkeys(counter_ids(), 0)
            row.update(dict.fromkeys(SEGMENT_DIMENSIONS, "*"))
            row.update(
                window_start=start,
                window_end=start + timedelta(minutes=5),
                dimension_set=DIMENSION_SET,
                product_surface="chat",
                model_version=version,
                locale="de-DE" if w % 2 else "fr-FR",
                events=events,
                violations=violations,
                distinct_users=25,
                first_batch_id=0,
                last_batch_id=0,
                updated_at=T0,
            )
            rows.append(row)
    # Another dimension set's rows, which the queries must leave out.
    other = {**rows[0], "dimension_set": "product_surface", "violations": 7, "events": 9}
    with engine.begin() as conn:
        conn.execute(Tables(engine).agg.insert(), [*rows, other])


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's score interval, closed form, at the exact 97.5 % normal quantile."""
    z = float(norm.ppf(0.975))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def warehouse(request, tmp_path_factory) -> Iterator[tuple[Engine, dict[str, Any]]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('doc_queries') / 'wh.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database("doc_queries")
    engine = make_engine(url)
    migrate(engine)
    counts = generate()
    write(engine, counts)
    yield engine, counts
    engine.dispose()


QUERIES = {
    "sqlite": ("wilson-sqlite", "wilson-sqlite-no-math"),
    "postgresql": ("wilson-postgresql",),
}


def test_the_documented_wilson_queries_give_the_wilson_interval(warehouse):
    engine, counts = warehouse
    for name in QUERIES[engine.dialect.name]:
        result = run_query(engine, doc_query(name), allow_writer_login=True, warn=lambda _m: None)
        assert result.columns == ("model_version", "n", "rate", "low", "high"), name
        got = {r[0]: tuple(float(v) for v in r[1:]) for r in result.rows}
        assert set(got) == set(counts), name
        rates = [got[v][1] for v in (r[0] for r in result.rows)]
        assert rates == sorted(rates, reverse=True), name
        for version, windows in counts.items():
            k, n = sum(w[0] for w in windows), sum(w[1] for w in windows)
            low, high = wilson(k, n)
            ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
            assert got[version][:2] == (n, pytest.approx(k / n, rel=1e-12)), (name, version)
            shown = wilson_interval(k, n)  # what `safewatch show` prints, as the doc says
            for value, closed, scipy_bound, printed in zip(
                got[version][2:], (low, high), (ci.low, ci.high), shown, strict=True
            ):
                # The documented z = 1.959964 is the quantile to 7 digits.
                assert value == pytest.approx(closed, rel=1e-6, abs=1e-12), (name, version)
                assert value == pytest.approx(float(scipy_bound), rel=1e-6, abs=1e-12)
                assert value == pytest.approx(printed, rel=1e-6, abs=1e-12)


def _functions_called(database: str, sql: str) -> set[str]:
    """The functions SQLite's authorizer is asked about while `sql` runs (lower case)."""
    called: set[str] = set()

    def authorize(action: int, _arg1: Any, arg2: Any, _db: Any, _src: Any) -> int:
        if action == sqlite3.SQLITE_FUNCTION:
            called.add(str(arg2).lower())
        return sqlite3.SQLITE_OK

    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        conn.set_authorizer(authorize)
        assert conn.execute(sql).fetchall()
    finally:
        conn.close()
    return called


def test_the_sqlite_query_without_math_functions_calls_none(tmp_path):
    database = str(tmp_path / "wh.db")
    engine = make_engine(f"sqlite:///{database}")
    migrate(engine)
    write(engine, generate())
    engine.dispose()
    assert _functions_called(database, doc_query("wilson-sqlite-no-math")) == {"sum"}
    # The control: the query with sqrt is seen calling it.
    assert "sqrt" in _functions_called(database, doc_query("wilson-sqlite"))
