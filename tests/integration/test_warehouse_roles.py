"""PostgreSQL roles on a real server: the writer runs the pipeline, the analyst reads views only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from pipelines.errors import InfraError
from pipelines.infra.postgres import RolePlan, create_roles
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import analyst_roles, grant_analyst, migrate
from pipelines.warehouse.query import QueryError, run_query
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import ANALYST_OBJECTS
from tests.analyst_data import Truth, fill
from tests.unit.test_analyst_views import assert_rollup_equals, view_rows

PLAN = RolePlan(writer="sw_writer", analyst="sw_analyst")


def _as(url: str, role: str) -> Engine:
    return make_engine(make_url(url).set(username=role).render_as_string(hide_password=False))


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


def test_passwords_are_set_when_given_and_the_command_refuses_sqlite(postgres, tmp_path):
    admin = make_engine(postgres.create_database("roles_pw"))
    plan = RolePlan(
        writer="pw_writer", analyst="pw_analyst", writer_password="w'1", analyst_password="a2"
    )
    create_roles(admin, plan, log=lambda _m: None)
    with admin.connect() as conn:
        stored = dict(
            conn.execute(
                text(
                    "SELECT rolname, rolpassword FROM pg_authid "
                    "WHERE rolname IN ('pw_writer', 'pw_analyst')"
                )
            ).all()
        )
    assert set(stored) == {"pw_writer", "pw_analyst"}
    assert all(p and p.startswith("SCRAM-SHA-256$") for p in stored.values())
    sqlite = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    with pytest.raises(InfraError, match="PostgreSQL"):
        create_roles(sqlite, plan, log=lambda _m: None)
    admin.dispose()
