"""The warehouse migrations as Alembic revisions on a real PostgreSQL server (SQLite:
tests/unit/test_warehouse_migrations.py): the same schema as before Alembic, a warehouse
migrated before Alembic recognised and nothing run on it again, the analyst roles granted
after `alembic upgrade head` as after `safewatch`'s own migration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from pipelines.infra.postgres import RolePlan, create_roles
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import (
    ALEMBIC_INI,
    available_migrations,
    current_revisions,
    migrate,
)
from schemas.warehouse.migrations import m0014_suppressed_views
from tests.migration_support import legacy_migrate, schema_of, statements_that_change

pytestmark = pytest.mark.integration


@pytest.fixture
def database(postgres) -> Iterator[Engine]:
    engine = make_engine(postgres.create_database(f"mig_{uuid.uuid4().hex[:12]}"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def new_schema(postgres) -> dict:
    """The schema of a PostgreSQL warehouse made by `migrate`."""
    engine = make_engine(postgres.create_database("mig_new"))
    migrate(engine)
    schema = schema_of(engine)
    engine.dispose()
    return schema


def _versions(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT version, description, applied_at FROM schema_migrations ORDER BY 1")
        ).all()


def test_the_migrations_make_the_schema_they_made_before_alembic(database, new_schema):
    legacy_migrate(database)
    assert schema_of(database) == new_schema


@pytest.mark.parametrize("up_to", [14, 12])
def test_a_warehouse_migrated_before_alembic_is_stamped_and_nothing_runs_again(
    database, new_schema, up_to
):
    legacy_migrate(database, up_to=up_to)
    before = _versions(database)
    lines: list[str] = []
    with statements_that_change(database) as changes:
        applied = migrate(database, log=lines.append)
    later = [m for m in available_migrations() if m.version > up_to]
    assert applied == [m.version for m in later]
    assert lines[0] == (
        f"warehouse: migrated before Alembic (schema_migrations lists 0001 to {up_to:04d}): "
        f"stamped Alembic revision {up_to:04d}"
    )
    assert lines[1:] == [
        f"warehouse: applied migration {m.revision} ({m.description})" for m in later
    ]
    assert changes[0].startswith("CREATE TABLE alembic_version")
    stamp = f"INSERT INTO alembic_version (version_num) VALUES ('{up_to:04d}')"
    assert changes[1].startswith(stamp)
    if not later:
        assert len(changes) == 2
    assert _versions(database)[:up_to] == before
    assert [v for v, _, _ in _versions(database)] == [m.version for m in available_migrations()]
    with database.connect() as conn:
        assert current_revisions(conn) == (available_migrations()[-1].revision,)
    assert schema_of(database) == new_schema


PLAN = RolePlan(writer="mg_writer", analyst="mg_analyst")


def _as(engine: Engine, role: str) -> Engine:
    url = make_url(engine.url.render_as_string(hide_password=False)).set(username=role)
    return make_engine(url.render_as_string(hide_password=False))


def _analyst_reads(analyst: Engine, views: tuple[str, ...]) -> bool:
    try:
        with analyst.connect() as conn:
            for view in views:
                conn.execute(text(f"SELECT * FROM {view} LIMIT 1")).all()
    except ProgrammingError:
        return False
    return True


def test_the_roles_command_on_a_warehouse_migrated_before_alembic(database):
    """`safewatch warehouse roles` on a warehouse at migration 13 (the job's writer stays
    the owner of everything, Alembic's table too) stamps it, applies 14 and grants it.
    """
    legacy_migrate(database, up_to=13)
    lines: list[str] = []
    create_roles(database, PLAN, log=lines.append)
    assert [line for line in lines if line.startswith("warehouse:")] == [
        "warehouse: migrated before Alembic (schema_migrations lists 0001 to 0013): "
        "stamped Alembic revision 0013",
        f"warehouse: applied migration 0014 ({available_migrations()[13].description})",
    ]
    analyst = _as(database, PLAN.analyst)
    assert _analyst_reads(analyst, m0014_suppressed_views.VIEWS)
    with database.connect() as conn:
        owner = conn.execute(
            text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'alembic_version'")
        ).scalar()
    assert owner == PLAN.writer
    analyst.dispose()


def test_alembic_upgrade_head_as_the_writer_grants_the_analyst_what_it_adds(database):
    create_roles(database, PLAN, log=lambda _m: None)
    writer, analyst = _as(database, PLAN.writer), _as(database, PLAN.analyst)
    views = m0014_suppressed_views.VIEWS
    with writer.begin() as conn:  # back to a warehouse at migration 13
        for view in views:
            conn.execute(text(f"DROP VIEW {view}"))
        conn.execute(text("DELETE FROM schema_migrations WHERE version = 14"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0013'"))
    assert not _analyst_reads(analyst, views)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEWATCH_")}
    env["SAFEWATCH_WAREHOUSE__URL"] = writer.url.render_as_string(hide_password=False)
    alembic = str(Path(sys.executable).with_name("alembic"))
    done = subprocess.run(
        [alembic, "-c", str(ALEMBIC_INI), "upgrade", "head"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Running upgrade 0013 -> 0014" in done.stderr
    assert "Running upgrade 0012" not in done.stderr
    assert _analyst_reads(analyst, views)
    with writer.connect() as conn:
        options = dict(
            conn.execute(
                text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:v)"),
                {"v": list(views)},
            ).all()
        )
    assert all("security_barrier=true" in (o or []) for o in options.values()) and options
    assert migrate(writer) == []
    writer.dispose()
    analyst.dispose()
