"""PostgreSQL roles on a real server: the writer runs the pipeline, the analyst reads views only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from pipelines.errors import InfraError
from pipelines.infra.postgres import RolePlan, create_roles
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import analyst_roles, grant_analyst, migrate
from pipelines.warehouse.query import QueryError, run_query
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import ANALYST_OBJECTS
from schemas.warehouse.migrations import (
    m0005_analyst_views,
    m0011_successful_injection_rate,
    m0014_suppressed_views,
)
from tests.analyst_data import DIMENSION_SET, SEGMENTS, K, Truth, fill
from tests.unit.test_analyst_views import (
    assert_rollup_equals,
    assert_successful_injection_rates,
    insert_injection_rows,
    view_rows,
)

PLAN = RolePlan(writer="sw_writer", analyst="sw_analyst")


def _as(url: str, role: str) -> Engine:
    return make_engine(make_url(url).set(username=role).render_as_string(hide_password=False))


def _undo_14(conn: Connection) -> None:
    for view in m0014_suppressed_views.VIEWS:
        conn.execute(text(f"DROP VIEW {view}"))


def _undo_13(conn: Connection) -> None:
    """v_segment_window_drift as migration 5 made it on PostgreSQL (`SELECT t.*`, expanded
    when the view was created), a security barrier since migration 7, read by the analyst.
    """
    conn.execute(text("DROP VIEW v_segment_window_drift"))
    conn.execute(text("ALTER TABLE segment_window_drift DROP COLUMN doubling_p_value"))
    body = m0005_analyst_views._kanon("segment_window_drift")
    conn.execute(text(f"CREATE VIEW v_segment_window_drift WITH (security_barrier) AS {body}"))
    conn.execute(text(f"GRANT SELECT ON v_segment_window_drift TO {PLAN.analyst}"))


def _record_as_at(conn: Connection, version: int) -> None:
    """Record the warehouse as at migration `version` (the caller undid the later ones):
    Alembic's revision and the rows of schema_migrations.
    """
    conn.execute(text("DELETE FROM schema_migrations WHERE version > :v"), {"v": version})
    conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": f"{version:04d}"})


@pytest.fixture(scope="module")
def roles(postgres) -> Iterator[tuple[Engine, Engine, Engine]]:
    admin_url = postgres.create_database("roles")
    admin = make_engine(admin_url)
    create_roles(admin, PLAN, log=lambda _m: None)
    create_roles(admin, PLAN, log=lambda _m: None)  # idempotent
    writer, analyst = _as(admin_url, PLAN.writer), _as(admin_url, PLAN.analyst)
    yield admin, writer, analyst
    for e in (admin, writer, analyst):
        e.dispose()


@pytest.fixture(scope="module")
def truth(roles) -> Truth:
    """The writer migrates (the job does at start) and writes batches through the sink."""
    _, writer, _ = roles
    migrate(writer)
    return fill(WarehouseSink(writer))


def test_the_writer_runs_the_pipeline_and_owns_every_object(roles, truth):
    admin, writer, _ = roles
    assert_rollup_equals(view_rows(writer, "v_segment_daily", "day"), truth.rollup("day"))
    with admin.connect() as conn:
        owners = set(
            conn.scalars(
                text(
                    "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'S')"
                )
            )
        )
    assert owners == {PLAN.writer}


def test_the_analyst_reads_the_views_with_the_same_figures(roles, truth):
    _, _, analyst = roles
    for view, period, grain in (
        ("v_segment_daily", "day", "day"),
        ("v_segment_weekly", "week_start", "week"),
    ):
        assert_rollup_equals(view_rows(analyst, view, period), truth.rollup(grain))
    with analyst.connect() as conn:
        for name in ANALYST_OBJECTS:
            conn.execute(text(f"SELECT * FROM {name} LIMIT 1")).all()
        assert conn.execute(text("SELECT COUNT(*) FROM v_segment_window_drift")).scalar() > 0


@pytest.mark.parametrize("statement", [
    "SELECT * FROM segment_window_agg",
    "SELECT * FROM rejected_events",
    "SELECT * FROM batch_ledger",
    "SELECT * FROM alert_history",
    "INSERT INTO rejected_events (topic, kafka_partition, kafka_offset, query_id, batch_id, "
    "reason, errors, detectors, recorded_at) VALUES ('t', 0, 0, 'q', 0, 'r', '[]', '[]', now())",
    "UPDATE analyst_settings SET min_distinct_users = 1",
    "DELETE FROM segment_window_agg",
    "CREATE TABLE mine (x int)",
    "DROP VIEW v_segment_daily",
])  # fmt: skip
def test_the_analyst_cannot_write_or_read_base_tables(roles, statement):
    _, _, analyst = roles
    with analyst.connect() as conn, pytest.raises(ProgrammingError) as err:
        conn.execute(text(statement))
    assert type(err.value.orig).__name__ in {"InsufficientPrivilege", "WrongObjectType"}


def test_safewatch_query_runs_read_only_even_for_the_writer(roles):
    _, writer, analyst = roles
    result = run_query(analyst, "SELECT COUNT(*) AS n FROM v_segment_weekly")
    assert result.columns == ("n",)
    with pytest.raises(QueryError, match="read-only"):
        run_query(writer, "DELETE FROM distribution_bins")


def test_views_added_by_a_later_migration_are_granted_to_the_analyst(roles):
    admin, writer, analyst = roles
    with writer.begin() as conn:
        assert analyst_roles(conn) == [PLAN.analyst]
        conn.execute(text("REVOKE SELECT ON v_segment_weekly FROM sw_analyst"))
    with analyst.connect() as conn, pytest.raises(ProgrammingError):
        conn.execute(text("SELECT 1 FROM v_segment_weekly"))
    with writer.begin() as conn:  # what migrate() does after applying a migration
        grant_analyst(conn, analyst_roles(conn))
    with analyst.connect() as conn:
        conn.execute(text("SELECT 1 FROM v_segment_weekly")).all()


def test_migration_11_gives_the_analyst_successful_injection_rate(roles, truth):
    """The roll-ups as migration 10 left them (migration 5's rates, security barriers, read by
    the analyst) get the new rate from migration 11: successes / events per day x segment,
    read by the analyst, the views still barriers with the same figures as before.
    """
    _, writer, analyst = roles
    insert_injection_rows(writer)  # a dimension set of their own: `truth` is unchanged
    with writer.begin() as conn:  # back to a warehouse at migration 10
        _undo_14(conn)
        _undo_13(conn)
        conn.execute(text("ALTER TABLE segment_window_agg DROP COLUMN slice_sums"))  # 12
        for view, (grain, period) in m0011_successful_injection_rate.ROLLUP_VIEWS.items():
            conn.execute(text(f"DROP VIEW {view}"))
            body = m0005_analyst_views._rollup("postgresql", grain, period)
            conn.execute(text(f"CREATE VIEW {view} WITH (security_barrier) AS {body}"))
            conn.execute(text(f"GRANT SELECT ON {view} TO {PLAN.analyst}"))
        _record_as_at(conn, 10)
    with analyst.connect() as conn:
        columns = conn.execute(text("SELECT * FROM v_segment_daily LIMIT 0")).keys()
    assert "successful_injection_rate" not in columns

    assert migrate(writer) == [11, 12, 13, 14]
    assert_successful_injection_rates(analyst)
    for view, period, grain in (
        ("v_segment_daily", "day", "day"),
        ("v_segment_weekly", "week_start", "week"),
    ):
        assert_rollup_equals(view_rows(analyst, view, period), truth.rollup(grain))
    with writer.connect() as conn:
        options = dict(
            conn.execute(
                text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:v)"),
                {"v": list(m0011_successful_injection_rate.ROLLUP_VIEWS)},
            ).all()
        )
    assert {v: "security_barrier=true" in (o or []) for v, o in options.items()} == dict.fromkeys(
        m0011_successful_injection_rate.ROLLUP_VIEWS, True
    )


def test_migration_13_shows_the_analyst_the_doubling_test_behind_the_same_barrier(roles, truth):
    """v_segment_window_drift as migration 5 made it on PostgreSQL (`SELECT t.*`, expanded
    when the view was created) gets migration 13's column: the analyst reads it, on the same
    rows as before (k-anonymity unchanged), and the view is still a security barrier.
    """
    _, writer, analyst = roles
    count = "SELECT COUNT(*) FROM v_segment_window_drift"
    with writer.begin() as conn:  # back to a warehouse at migration 12
        _undo_14(conn)
        _undo_13(conn)
        _record_as_at(conn, 12)
    with analyst.connect() as conn:
        visible = conn.execute(text(count)).scalar()
        columns = conn.execute(text("SELECT * FROM v_segment_window_drift LIMIT 0")).keys()
    assert visible and "doubling_p_value" not in columns

    assert migrate(writer) == [13, 14]
    with writer.begin() as conn:  # rows of before the migration have none: give them one
        conn.execute(text("UPDATE segment_window_drift SET doubling_p_value = chi2_p_value / 2"))
        hidden = conn.execute(text("SELECT COUNT(*) FROM segment_window_drift")).scalar()
        barrier = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'v_segment_window_drift'")
        ).scalar()
    with analyst.connect() as conn:
        assert conn.execute(text(count)).scalar() == visible < hidden
        pairs = conn.execute(
            text("SELECT chi2_p_value, doubling_p_value FROM v_segment_window_drift")
        ).all()
    assert pairs and all((c is None and d is None) or d == pytest.approx(c / 2) for c, d in pairs)
    assert "security_barrier=true" in (barrier or [])


def test_migration_14_gives_the_analyst_what_the_views_hide_behind_a_barrier(roles, truth):
    """A warehouse at migration 13, its analyst role set up, is migrated: the analyst reads
    the companion views (granted by `migrate`), each a security barrier, and per window
    they count the small segment's row and events, which v_segment_window hides.
    """
    _, writer, analyst = roles
    views = m0014_suppressed_views.VIEWS
    with writer.begin() as conn:  # back to a warehouse at migration 13
        _undo_14(conn)
        _record_as_at(conn, 13)
    assert migrate(writer) == [14]

    with analyst.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT window_start, suppressed_rows, suppressed_events "
                "FROM v_segment_window_suppressed WHERE dimension_set = :d"
            ),
            {"d": DIMENSION_SET},
        ).all()
        daily_events = conn.execute(
            text("SELECT SUM(suppressed_events) FROM v_segment_daily_suppressed "
                 "WHERE dimension_set = :d"),
            {"d": DIMENSION_SET},
        ).scalar()  # fmt: skip
    small = {s for s, users in SEGMENTS.items() if users < K}
    hidden = {
        r["window_start"]: r["events"]
        for r in truth.rows
        if (r["product_surface"], r["locale"]) in small
    }
    assert {w: (n, e) for w, n, e in rows} == {w: (1, e) for w, e in hidden.items()}
    assert int(daily_events) == sum(hidden.values())  # the small segment never reaches k in a day
    with writer.connect() as conn:
        options = dict(
            conn.execute(
                text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:v)"),
                {"v": list(views)},
            ).all()
        )
    assert {v: "security_barrier=true" in (o or []) for v, o in options.items()} == dict.fromkeys(
        views, True
    )


WRITER_PW = "Wr1ter-pw'xé-93"  # a quote and a non-ASCII letter (SASLprep applies)
ANALYST_PW = "an4lyst-pw-77"


def _require_scram(postgres, database: str, roles: tuple[str, ...]) -> None:
    """pg_hba: these roles must log in to `database` with SCRAM (the server trusts others)."""
    hba = postgres.data_dir / "pg_hba.conf"
    lines = "".join(f"host {database} {r} 127.0.0.1/32 scram-sha-256\n" for r in roles)
    hba.write_text(lines + hba.read_text())


def test_passwords_reach_the_server_as_verifiers_only_and_the_logins_work(postgres, tmp_path):
    admin_url = postgres.create_database("roles_pw")
    with make_engine(admin_url).begin() as conn:  # log every statement of the database
        conn.execute(text("ALTER DATABASE roles_pw SET log_statement = 'all'"))
        conn.execute(text("ALTER DATABASE roles_pw SET log_min_error_statement = 'error'"))
    admin = make_engine(admin_url)
    plan = RolePlan(
        writer="pw_writer",
        analyst="pw_analyst",
        writer_password=WRITER_PW,
        analyst_password=ANALYST_PW,
    )
    log_before = (postgres.data_dir / "server.log").stat().st_size
    create_roles(admin, plan, log=lambda _m: None)
    with admin.connect() as conn:
        stored: dict[str, str | None] = dict(
            conn.execute(
                text(
                    "SELECT rolname, rolpassword FROM pg_authid "
                    "WHERE rolname IN ('pw_writer', 'pw_analyst')"
                )
            ).all()
        )
        _require_scram(postgres, "roles_pw", ("pw_writer", "pw_analyst"))
        conn.execute(text("SELECT pg_reload_conf()"))
    assert all(p and p.startswith("SCRAM-SHA-256$4096:") for p in stored.values())
    # PostgreSQL itself checks the verifiers: the right password logs in, a wrong one not.
    url = make_url(admin_url)
    for role, password in (("pw_writer", WRITER_PW), ("pw_analyst", ANALYST_PW)):
        good = make_engine(url.set(username=role, password=password).render_as_string(False))
        with good.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == role
        good.dispose()
        bad = make_engine(url.set(username=role, password=password + "x").render_as_string(False))
        with pytest.raises(OperationalError, match="password authentication failed"):
            bad.connect()
        bad.dispose()

    # A failing run (a login without CREATEROLE) says what to change in one line, and
    # neither its message nor the server's log holds a password.
    analyst = make_engine(
        url.set(username="pw_analyst", password=ANALYST_PW).render_as_string(False)
    )
    with pytest.raises(InfraError) as err:
        create_roles(analyst, plan, log=lambda _m: None)
    message = str(err.value)
    assert "\n" not in message and "SQLSTATE 42501" in message  # insufficient privilege
    assert "CREATEROLE" in message and "warehouse.url" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__
    server_log = (postgres.data_dir / "server.log").read_bytes()[log_before:].decode()
    assert "ALTER ROLE" in server_log and "SCRAM-SHA-256$" in server_log  # it was logged
    for secret in (WRITER_PW, ANALYST_PW, "Wr1ter", "an4lyst"):
        assert secret not in message
        assert secret not in server_log
    analyst.dispose()

    sqlite = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    with pytest.raises(InfraError, match="PostgreSQL"):
        create_roles(sqlite, plan, log=lambda _m: None)
    admin.dispose()


def test_the_roles_command_fails_in_one_line_without_the_password(
    postgres, roles, monkeypatch, capsys
):
    from jobs.cli import main

    admin, _, _ = roles
    url = make_url(admin.url.render_as_string(hide_password=False))
    monkeypatch.setenv(
        "SAFEWATCH_WAREHOUSE__URL", url.set(username=PLAN.analyst).render_as_string(False)
    )
    monkeypatch.setenv("SAFEWATCH_WRITER_PASSWORD", WRITER_PW)
    monkeypatch.setenv("SAFEWATCH_ANALYST_PASSWORD", ANALYST_PW)
    argv = ["warehouse", "roles", "--writer", PLAN.writer, "--analyst", PLAN.analyst]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("safewatch: error: could not set up")
    assert "SQLSTATE 42501" in err and "Traceback" not in err
    assert WRITER_PW not in err and ANALYST_PW not in err and "SCRAM" not in err
