"""Bulk writes (pipelines.warehouse.bulk.execute_many) leave the same rows as SQLAlchemy's own
executemany, on SQLite and on PostgreSQL: the histogram upsert adds to stored counts.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.warehouse.batch_result import SEGMENT_KEY
from pipelines.warehouse.bulk import execute_many
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.tables import Tables, as_utc
from pipelines.warehouse.upsert import upsert_for

KEY = [*SEGMENT_KEY, "distribution", "bin"]
COLUMNS = [*KEY, "count"]


def _rows(seed: int) -> list[dict]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = {}
    for _ in range(400):
        # Windows on whole seconds and with microseconds: SQLite compares their text.
        window = start + timedelta(minutes=5 * rng.randrange(6), microseconds=rng.choice([0, 7]))
        row = {
            "window_start": window,
            "dimension_set": "product_surface,model_version,locale",
            **{d: "*" for d in SEGMENT_DIMENSIONS},
            "product_surface": rng.choice(["chat", "search", "名前"]),
            "model_version": rng.choice(["m-1", "m-2"]),
            "locale": rng.choice(["en-US", "de-DE"]),
            "distribution": rng.choice(["latency_ms", "output_tokens"]),
            "bin": rng.randrange(4),
            "count": rng.randrange(1, 50),
        }
        rows[tuple(row[k] for k in KEY)] = row  # one row per key in a batch
    return list(rows.values())


def _upsert(conn, table):
    stmt = upsert_for(conn)(table)
    return stmt.on_conflict_do_update(
        index_elements=KEY, set_={"count": table.c["count"] + stmt.excluded["count"]}
    )


def _stored(engine, table) -> list[tuple]:
    with engine.connect() as conn:
        return sorted(
            (*(as_utc(r[k]) if k == "window_start" else r[k] for k in KEY), r["count"])
            for r in conn.execute(select(table)).mappings()
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def engines(request, tmp_path):
    """Two empty warehouses of the same backend."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    else:
        server = request.getfixturevalue("postgres")
        urls = [server.create_database("bulk_a"), server.create_database("bulk_b")]
    made = [make_engine(u) for u in urls]
    for e in made:
        migrate(e)
    yield made
    for e in made:
        e.dispose()


def test_histogram_upsert_equals_sqlalchemy_executemany(engines):
    ours, mixed = engines
    table = Tables(ours).hist
    batches = [_rows(1), _rows(2), _rows(1)]  # the third batch repeats every key of the first

    def bulk(conn, rows):
        params = [tuple(r[c] for c in COLUMNS) for r in rows]
        execute_many(conn, _upsert(conn, table), table, COLUMNS, params)

    def sqlalchemy(conn, rows):
        conn.execute(_upsert(conn, table), rows)

    for rows in batches:
        with ours.begin() as conn:
            bulk(conn, rows)
    # The same batches, written alternately by SQLAlchemy and by execute_many: their rows
    # must meet on the same keys (on SQLite, the same text for a date-time).
    for rows, write in zip(batches, [sqlalchemy, bulk, sqlalchemy], strict=True):
        with mixed.begin() as conn:
            write(conn, rows)
    expected: dict = {}
    for rows in batches:
        for r in rows:
            key = tuple(r[k] for k in KEY)
            expected[key] = expected.get(key, 0) + r["count"]
    assert _stored(ours, table) == sorted((*k, v) for k, v in expected.items())
    assert _stored(mixed, table) == _stored(ours, table)
