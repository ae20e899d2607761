"""`safewatch query` on a real PostgreSQL server: one read-only, bounded query, whatever the SQL.

The writer login (the job's) and the analyst login both try each attack; the writer is
refused outright unless `query_allow_writer_login`, and with it every attack still fails and
the warehouse is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from jobs.cli import main
from pipelines.infra.postgres import RolePlan, create_roles
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.query import QueryError, run_query
from pipelines.warehouse.sink import WarehouseSink
from tests.analyst_data import Truth, fill

pytestmark = pytest.mark.integration

PLAN = RolePlan(writer="q_writer", analyst="q_analyst")


def _url(admin_url: str, role: str) -> str:
    return make_url(admin_url).set(username=role).render_as_string(hide_password=False)


class Logins:
    def __init__(self, admin_url: str) -> None:
        self.urls = {name: _url(admin_url, role) for name, role in
                     (("writer", PLAN.writer), ("analyst", PLAN.analyst))}  # fmt: skip
        self.urls["admin"] = admin_url
        self.engines = {name: make_engine(url) for name, url in self.urls.items()}

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


@pytest.fixture(scope="module")
def logins(postgres) -> Iterator[Logins]:
    admin_url = postgres.create_database("query_read_only")
    admin = make_engine(admin_url)
    create_roles(admin, PLAN, log=lambda _m: None)
    admin.dispose()
    result = Logins(admin_url)
    yield result
    result.dispose()


@pytest.fixture(scope="module")
def truth(logins) -> Truth:
    writer = logins.engines["writer"]
    migrate(writer)
    return fill(WarehouseSink(writer), drift=False)


def snapshot(admin: Engine) -> dict[str, object]:
    """The warehouse content an attack would change, read as the administrator."""
    with admin.connect() as conn:
        return {
            "settings": conn.execute(text("SELECT * FROM analyst_settings")).all(),
            "agg": conn.execute(
                text("SELECT COUNT(*), SUM(events), SUM(violations) FROM segment_window_agg")
            ).one(),
            "bins": conn.execute(text("SELECT COUNT(*) FROM distribution_bins")).scalar(),
            "ledger": conn.execute(text("SELECT COUNT(*) FROM batch_ledger")).scalar(),
            "tables": conn.execute(
                text("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar(),
        }


def _run(logins: Logins, login: str, sql: str, **kwargs: object) -> object:
    warnings: list[str] = []
    return run_query(
        logins.engines[login],
        sql,
        allow_writer_login=login == "writer",
        warn=warnings.append,
        **kwargs,  # type: ignore[arg-type]
    )


ATTACKS = [
    ("COMMIT; UPDATE analyst_settings SET min_distinct_users = 1", "COMMIT is refused"),
    ("SELECT 1; COMMIT; UPDATE analyst_settings SET min_distinct_users = 1",
     "one statement at a time"),
    ("SET TRANSACTION READ WRITE; DELETE FROM distribution_bins", "SET is refused"),
    ("SELECT 1; SET TRANSACTION READ WRITE; DELETE FROM distribution_bins",
     "one statement at a time"),
    ("SELECT 1; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; "
     "UPDATE analyst_settings SET min_distinct_users = 1", "one statement at a time"),
    ("BEGIN; DELETE FROM distribution_bins; COMMIT", "BEGIN is refused"),
    ("DO $$ BEGIN DELETE FROM distribution_bins; END $$", "DO is refused"),
    ("WITH gone AS (DELETE FROM distribution_bins RETURNING 1) SELECT COUNT(*) FROM gone",
     "the warehouse refused"),
    ("SELECT * FROM v_segment_daily; DROP VIEW v_segment_daily", "one statement at a time"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)",
     "refuses set_config()"),
    ("SELECT pg_advisory_lock(42)", "refuses pg_advisory_lock()"),
    ("SELECT pg_sleep(30)", "refuses pg_sleep()"),
    ("SELECT query_to_xml('SELECT pg_' || 'terminate_backend(1)', true, true, '')",
     "refuses query_to_xml()"),
    ('SELECT U&"pg\\0073leep"(30)', "Unicode-escaped identifiers"),
]  # fmt: skip


@pytest.mark.parametrize("login", ["writer", "analyst"])
@pytest.mark.parametrize(("sql", "message"), ATTACKS)
def test_attacks_are_refused_and_change_nothing(logins, truth, login, sql, message):
    before = snapshot(logins.engines["admin"])
    with pytest.raises(QueryError, match=re.escape(message)):
        _run(logins, login, sql)
    assert snapshot(logins.engines["admin"]) == before


def test_a_second_statement_reaches_the_server_and_is_refused_there(logins, truth):
    """The keyword check passes `SELECT 1; ...`: the server's single-statement rule stops it."""
    before = snapshot(logins.engines["admin"])
    with pytest.raises(QueryError, match="cannot insert multiple commands"):
        _run(
            logins, "writer", "SELECT 1; COMMIT; UPDATE analyst_settings SET min_distinct_users = 1"
        )
    assert snapshot(logins.engines["admin"]) == before


@pytest.mark.parametrize("sql", [
    "SELECT * FROM analyst_settings FOR UPDATE",  # row locks the job would wait on
    "SELECT nextval(c.oid) FROM pg_class c WHERE c.relkind = 'S' LIMIT 1",
])  # fmt: skip
def test_what_passes_every_check_is_stopped_by_the_read_only_transaction(logins, truth, sql):
    before = snapshot(logins.engines["admin"])
    with pytest.raises(QueryError, match="in a read-only transaction"):
        _run(logins, "writer", sql)
    assert snapshot(logins.engines["admin"]) == before


@pytest.mark.parametrize("login", ["writer", "analyst"])
def test_the_session_is_read_only_with_a_statement_timeout(logins, truth, login):
    result = _run(
        logins,
        login,
        "SELECT current_setting('default_transaction_read_only') AS d, "
        "current_setting('transaction_read_only') AS t, "
        "current_setting('statement_timeout') AS timeout",
        timeout_s=12.5,
    )
    assert result.rows == (("on", "on", "12500ms"),)  # type: ignore[attr-defined]


def test_the_writer_cannot_end_the_jobs_sessions(logins, truth):
    """The job connects as the writer; its session survives a termination attempt."""
    writer = logins.engines["writer"]
    with writer.connect() as job:
        pid = job.execute(text("SELECT pg_backend_pid()")).scalar()
        for fn in ("pg_terminate_backend", "pg_cancel_backend"):
            with pytest.raises(QueryError, match=f"refuses {fn}"):
                _run(logins, "writer", f"SELECT {fn}({pid})")
        assert job.execute(text("SELECT 1")).scalar() == 1


@pytest.mark.parametrize(("login", "why"), [
    ("writer", "can write or owns"),
    ("admin", "is a superuser"),
])  # fmt: skip
def test_logins_that_can_write_are_refused_by_default(logins, truth, login, why):
    before = snapshot(logins.engines["admin"])
    with pytest.raises(QueryError, match=why) as err:
        run_query(logins.engines[login], "SELECT COUNT(*) FROM v_segment_daily")
    assert "analyst login" in str(err.value)
    assert snapshot(logins.engines["admin"]) == before
    warnings: list[str] = []
    result = run_query(
        logins.engines[login],
        "SELECT COUNT(*) FROM v_segment_daily",
        allow_writer_login=True,
        warn=warnings.append,
    )
    assert result.rows[0][0] > 0
    assert len(warnings) == 1
    assert why in warnings[0]


def test_the_analyst_reads_normally_and_only_the_printed_rows_are_fetched(logins, truth):
    analyst = logins.engines["analyst"]
    result = run_query(analyst, "SELECT SUM(events) AS events FROM v_segment_daily", max_rows=None)
    expected = sum(r["events"] for r in truth.rollup("day").values())
    assert result.columns == ("events",)
    assert result.rows == ((expected,),)
    de = run_query(analyst, "SELECT DISTINCT locale FROM v_segment_daily WHERE locale LIKE 'de%'")
    assert de.rows == (("de-DE",),)  # a literal % is SQL, not a parameter placeholder
    many = run_query(analyst, "SELECT g FROM generate_series(1, 10000000) AS g", max_rows=3)
    assert many.rows == ((1,), (2,), (3,))
    assert many.truncated


@pytest.mark.parametrize("login", ["writer", "analyst"])
def test_a_long_query_is_cancelled_by_the_timeout(logins, truth, login):
    with pytest.raises(QueryError, match=r"longer than 0.2 s"):
        _run(logins, login, "SELECT COUNT(*) FROM generate_series(1, 300000000)", timeout_s=0.2)
    # The same login runs a short query at once afterwards.
    assert _run(logins, login, "SELECT 1 AS one").rows == ((1,),)  # type: ignore[attr-defined]


def test_the_command_refuses_the_writer_and_warns_when_allowed(
    logins, truth, capsys, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", logins.urls["writer"])
    sql = "SELECT COUNT(*) AS n FROM v_segment_weekly"
    assert main(["query", sql]) == 2
    err = capsys.readouterr().err
    assert "refuses to run as login q_writer" in err
    assert "SAFEWATCH_WAREHOUSE__QUERY_ALLOW_WRITER_LOGIN" in err
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__QUERY_ALLOW_WRITER_LOGIN", "true")
    assert main(["query", "--format", "csv", sql]) == 0
    captured = capsys.readouterr()
    assert "WARNING: login q_writer" in captured.err
    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", logins.urls["analyst"])
    assert main(["query", "--format", "csv", sql]) == 0
    assert capsys.readouterr().out == captured.out
