"""`safewatch query` and `safewatch alerts ack` against a real SQLite warehouse."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from jobs.cli import main
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.query import (
    QueryError,
    check_statement,
    first_keyword,
    open_sqlite_read_only,
    run_query,
)
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import Tables
from tests.analyst_data import DIMENSION_SET, fill

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    engine = make_engine(url)
    migrate(engine)
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", url)
    monkeypatch.chdir(tmp_path)
    return engine


SQL = (
    "SELECT locale, SUM(events) AS events, SUM(violations) AS violations "
    "FROM v_segment_daily GROUP BY locale ORDER BY locale"
)


def test_query_prints_table_csv_and_json_with_the_same_rows(warehouse, capsys):
    truth = fill(WarehouseSink(warehouse), drift=False)
    expected: dict[str, tuple[int, int]] = {}
    for key, row in truth.rollup("day").items():
        events, violations = expected.get(key[2], (0, 0))
        expected[key[2]] = (events + row["events"], violations + row["violations"])

    assert main(["query", "--format", "csv", SQL]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["locale"]: (int(r["events"]), int(r["violations"])) for r in rows} == expected

    assert main(["query", "--format", "json", SQL]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["locale"]: (r["events"], r["violations"]) for r in rows} == expected

    assert main(["query", SQL]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["locale", "events", "violations"]
    assert out[-1] == f"({len(expected)} rows)"
    for line, (locale, (events, violations)) in zip(
        out[2:-1], sorted(expected.items()), strict=True
    ):
        assert line.split() == [locale, str(events), str(violations)]


def test_query_reads_sql_from_a_file_and_cuts_at_max_rows(warehouse, tmp_path, capsys):
    fill(WarehouseSink(warehouse), drift=False)
    (tmp_path / "q.sql").write_text("SELECT day FROM v_segment_daily ORDER BY day;\n")
    assert main(["query", "-f", "q.sql", "--max-rows", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + 2 + 1
    assert "first 2" in out[-1]


@pytest.mark.parametrize(("argv", "message"), [
    (["query", "DELETE FROM batch_ledger"], "read-only"),
    (["query", "SELECT 1 FRM x"], "syntax error"),
    (["query", "SELECT * FROM no_such_table"], "no such table"),
    (["query", ";"], "empty"),
    (["query"], "as an argument or with --file"),
    (["query", "-f", "missing.sql"], "no such SQL file"),
])  # fmt: skip
def test_query_errors_are_clear_and_change_nothing(warehouse, capsys, argv, message):
    fill(WarehouseSink(warehouse), drift=False)
    with warehouse.connect() as conn:
        before = conn.execute(text("SELECT COUNT(*) FROM batch_ledger")).scalar()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("safewatch: error:")
    assert message in err
    with warehouse.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM batch_ledger")).scalar() == before
    # The warehouse is still writable by the job afterwards.
    with pytest.raises(QueryError):
        run_query(warehouse, "UPDATE analyst_settings SET min_distinct_users = 1")
    WarehouseSink(warehouse).set_min_distinct_users(7)
    with warehouse.connect() as conn:
        assert conn.execute(text("SELECT min_distinct_users FROM analyst_settings")).scalar() == 7


def _firing(engine, rule: str, locale: str, since: datetime) -> None:
    t = Tables(engine)
    segment = json.dumps([["locale", locale]])
    with engine.begin() as conn:
        conn.execute(
            t.alert_state.insert().values(
                rule=rule, segment=segment, status="firing", true_windows=2, false_windows=0,
                started_at=since, firing_since=since, last_window=since, updated_at=since,
            )
        )  # fmt: skip
        conn.execute(
            t.alert_history.insert().values(
                rule=rule, segment=segment, window_start=since, from_status="pending",
                to_status="firing", severity="sev2", metric="violation_rate", value=0.1,
                summary="s", description="d", recorded_at=since + timedelta(minutes=12),
            )
        )  # fmt: skip


def test_alerts_status_writes_segments_as_the_rest_of_the_cli(warehouse, capsys):
    t = Tables(warehouse)
    segment = [["product_surface", "chat"], ["model_version", "atlas-l-2026.10.2"]]
    with warehouse.begin() as conn:
        conn.execute(
            t.alert_state.insert().values(
                rule="RefusalSpike", segment=json.dumps(segment), status="firing",
                true_windows=2, false_windows=0, started_at=T, firing_since=T, last_window=T,
                updated_at=T,
            )
        )  # fmt: skip
    assert main(["alerts", "status"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "RefusalSpike" in line)
    assert "chat / atlas-l-2026.10.2" in row
    assert "[" not in row and "product_surface" not in row


def test_ack_records_one_acknowledgement_per_firing_episode(warehouse, capsys):
    _firing(warehouse, "HarmfulOutputRateHigh", "de-DE", T)
    _firing(warehouse, "HarmfulOutputRateHigh", "fr-FR", T)
    _firing(warehouse, "RefusalSpike", "de-DE", T)
    argv = ["alerts", "ack", "--rule", "HarmfulOutputRateHigh", "--segment", "de-DE", "--by", "kim"]
    assert main(argv) == 0
    assert "acknowledged HarmfulOutputRateHigh on de-DE" in capsys.readouterr().out
    assert main(argv) == 1  # already acknowledged: nothing new
    assert main(["alerts", "ack", "--rule", "HarmfulOutputRateHigh"]) == 2  # --by is required
    t = Tables(warehouse)
    with warehouse.connect() as conn:
        acks = (
            conn.execute(
                select(t.alert_history).where(t.alert_history.c.to_status == "acknowledged")
            )
            .mappings()
            .all()
        )
    assert [(a["rule"], json.loads(a["segment"]), a["summary"]) for a in acks] == [
        ("HarmfulOutputRateHigh", [["locale", "de-DE"]], "acknowledged by kim")
    ]
    assert acks[0]["window_start"].replace(tzinfo=UTC) == T
    assert acks[0]["recorded_at"].replace(tzinfo=UTC) > T + timedelta(minutes=12)


def test_report_weekly_writes_html_and_markdown_for_the_chosen_week(
    warehouse, tmp_path, capsys, monkeypatch
):
    truth = fill(WarehouseSink(warehouse), drift=False)
    monkeypatch.setenv("SAFEWATCH_STREAM__DIMENSIONS", DIMENSION_SET)
    assert main(["report", "weekly", "--week", "2026-W47", "--out", "out"]) == 0
    html = (tmp_path / "out" / "safety-posture-2026-W47.html").read_text()
    markdown = (tmp_path / "out" / "safety-posture-2026-W47.md").read_text()
    monday = datetime(2026, 11, 16, tzinfo=UTC)
    in_week = [r for r in truth.rows if monday <= r["window_start"] < monday + timedelta(days=7)]
    events = sum(r["events"] for r in in_week)
    assert f'data-events="{events}"' in html
    assert f"{events:,}" in markdown
    # Without --week: the week of the newest window (the data ends in 2026-W48).
    assert main(["report", "weekly", "--out", "out"]) == 0
    assert (tmp_path / "out" / "safety-posture-2026-W48.html").is_file()
    assert main(["report", "weekly", "--week", "2026-47"]) == 2
    assert "2026-47" in capsys.readouterr().err


# ---------------------------------------------------------------- read-only and bounded


def _dump(engine) -> list[str]:
    """Every row and schema object of the SQLite warehouse, for before/after comparisons."""
    conn = sqlite3.connect(engine.url.database)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


SQLITE_ATTACKS = [
    ("DELETE FROM batch_ledger", "DELETE is refused"),
    ("COMMIT; UPDATE analyst_settings SET min_distinct_users = 1", "COMMIT is refused"),
    ("SELECT 1; UPDATE analyst_settings SET min_distinct_users = 1", "one statement at a time"),
    ("ATTACH DATABASE 'evil.db' AS evil", "ATTACH is refused"),
    ("PRAGMA query_only = OFF", "PRAGMA query_only is not allowed"),
    ("PRAGMA writable_schema = ON", "PRAGMA writable_schema is not allowed"),
    ("WITH x AS (SELECT 1) DELETE FROM analyst_settings", "DELETE analyst_settings is not"),
    ("WITH x AS (SELECT 1) INSERT INTO analyst_settings SELECT * FROM analyst_settings",
     "INSERT analyst_settings is not allowed"),
    ("BEGIN IMMEDIATE", "BEGIN is refused"),
    ("/* /* */ SELECT */ DELETE FROM analyst_settings", "DELETE is refused"),
    ("SELECT load_extension('evil')", "load_extension() is not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "message"), SQLITE_ATTACKS)
def test_sqlite_attacks_are_refused_and_change_nothing(warehouse, tmp_path, capsys, sql, message):
    fill(WarehouseSink(warehouse), drift=False)
    before = _dump(warehouse)
    assert main(["query", sql]) == 2
    err = capsys.readouterr().err
    assert err.startswith("safewatch: error:")
    assert message in err
    assert _dump(warehouse) == before
    assert not (tmp_path / "evil.db").exists()


@pytest.mark.parametrize("sql", [
    "ATTACH DATABASE '{evil}' AS evil",
    "INSERT INTO analyst_settings (min_distinct_users) VALUES (1)",
    "UPDATE analyst_settings SET min_distinct_users = 1",
    "PRAGMA query_only = OFF",
    "BEGIN IMMEDIATE",
    "SAVEPOINT s",
    "CREATE TEMP TABLE t (x)",
])  # fmt: skip
def test_the_sqlite_connection_itself_denies_what_is_not_a_read(warehouse, tmp_path, sql):
    """The authorizer and the attach limit hold even for a statement the keyword check missed."""
    WarehouseSink(warehouse).set_min_distinct_users(9)
    before = _dump(warehouse)
    evil = tmp_path / "evil.db"
    conn, denied = open_sqlite_read_only(Path(warehouse.url.database), timeout_s=5)
    try:
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(sql.format(evil=evil))
        assert denied  # refused by the authorizer, not by chance
        assert conn.execute("SELECT min_distinct_users FROM analyst_settings").fetchone() == (9,)
        columns = conn.execute("PRAGMA table_info(analyst_settings)").fetchall()
        assert "min_distinct_users" in [c[1] for c in columns]
    finally:
        conn.close()
    assert _dump(warehouse) == before
    assert not evil.exists()


def test_sqlite_query_is_cancelled_after_the_time_limit(warehouse):
    endless = (
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 200000000) "
        "SELECT COUNT(*) FROM c"
    )
    with pytest.raises(QueryError, match=r"longer than 0.05 s .*QUERY_TIMEOUT_S"):
        run_query(warehouse, endless, timeout_s=0.05)
    # A short statement under the same limit runs.
    assert run_query(warehouse, "SELECT 1 AS one", timeout_s=0.05).rows == ((1,),)


def test_the_timeout_setting_reaches_the_command(warehouse, capsys, monkeypatch):
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__QUERY_TIMEOUT_S", "0.05")
    endless = (
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 200000000) "
        "SELECT COUNT(*) FROM c"
    )
    assert main(["query", endless]) == 2
    assert "longer than 0.05 s" in capsys.readouterr().err


def test_a_missing_sqlite_warehouse_is_an_error_and_is_not_created(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere" / "wh.db"
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", f"sqlite:///{missing}")
    monkeypatch.chdir(tmp_path)
    assert main(["query", "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert f"no warehouse database at {missing}" in err
    assert "safewatch warehouse migrate" in err
    assert not (tmp_path / "nowhere").exists()


def test_sqlite_allows_introspection_pragmas(warehouse, capsys):
    assert main(["query", "--format", "json", "PRAGMA table_info(v_segment_daily)"]) == 0
    names = [c["name"] for c in json.loads(capsys.readouterr().out)]
    with warehouse.connect() as conn:
        expected = list(conn.execute(text("SELECT * FROM v_segment_daily LIMIT 0")).keys())
    assert names == expected


@pytest.mark.parametrize(("sql", "keyword"), [
    ("select 1", "SELECT"),
    ("  -- a note\n/* block */ (WITH x AS (SELECT 1) SELECT * FROM x)", "WITH"),
    ("/* /* nested */ SELECT */ COMMIT", "COMMIT"),
    ("/* unterminated SELECT", ""),
    ("-- only a comment", ""),
    ("SET TRANSACTION READ WRITE", "SET"),
])  # fmt: skip
def test_first_keyword_skips_comments_like_postgresql(sql, keyword):
    assert first_keyword(sql) == keyword


@pytest.mark.parametrize("sql", [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    'SELECT "PG_CANCEL_BACKEND"(1)',
    "SELECT pg_catalog.pg_advisory_lock(42)",
    "SELECT pg_try_advisory_xact_lock(42)",
    "SELECT pg_sleep(10)",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT query_to_xml('SELECT 1', true, true, '')",
    "SELECT * FROM ts_stat('SELECT 1')",
    'SELECT U&"pg\\0073leep"(10)',
])  # fmt: skip
def test_postgresql_function_deny_list(sql):
    with pytest.raises(QueryError, match="refuses"):
        check_statement(sql, "postgresql")
    assert check_statement("SELECT locale FROM v_segment_daily;", "postgresql") == (
        "SELECT locale FROM v_segment_daily"
    )
