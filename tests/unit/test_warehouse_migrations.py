"""The warehouse migrations as Alembic revisions, on SQLite (PostgreSQL:
tests/integration/test_warehouse_migrations_postgres.py).

A released migration never changes; Alembic and `available_migrations` see the same single
line of revisions 0001, 0002, ...; a new warehouse gets the schema the migrations made before
Alembic; a warehouse migrated before Alembic is recognised from its schema_migrations and
nothing runs on it again; `alembic upgrade head` does what `safewatch` does at start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text

import schemas.warehouse.migrations as migrations_pkg
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import (
    ALEMBIC_INI,
    MigrationError,
    available_migrations,
    current_revisions,
    migrate,
    schema_migrations,
)
from tests.migration_support import legacy_migrate, schema_of, statements_that_change

# sha256 of every migration's file, by revision. A warehouse that applied a migration never
# applies it again, so a change to a released one reaches no warehouse: change the schema
# with a new migration. Add its line here (the failure message prints it) when released.
RELEASED = {
    "0001": "249b0ce4e3e49fa7c457db310bf935d6114d69007b0d93f0d4ebc3ff7f0b87d2",
    "0002": "f109d4b82019e5a346d9409b95dd5d7ebabfcb37d45c62f5d508cf3ebd273ebc",
    "0003": "3bb4f2d37781f7f7b7492224e3c0b5161751e98e79260e21fd6ae1cc53d52585",
    "0004": "3a0143050ea57cac60563d9b37490edd56cd84775b8f1431864c1a743a7dcbc2",
    "0005": "53556154d47066209da6a42a017ec468d754aa3858a403632e3b53d7b9cf753b",
    "0006": "95858ef03c1b0bb958255b3894a230c8155abce7ac3bcfba83554717d6c65f9a",
    "0007": "477cb9f2ac7685557ca7e89f9a4633b52161822577bb6fb62425755086a7b960",
    "0008": "298a2ab9d92aa89f20e2d2b9bac38a4d5b9a17ec094e2cb7d175b508fea43d1d",
    "0009": "a622911b7608501b6b7f9ae71009b0dc52caca689412e69e90b081eeedadc44b",
    "0010": "965dc06cbcca54c73c8cd6864c4e01983970f3c3a47923db9547587f3756be8d",
    "0011": "8c5d1e120587c46333b87210f194c8d1914c1bda82e18cfd2a57638d6b81234d",
    "0012": "defc21a007325007cc9e0b62182e9f36a60e631cf8ba640e7b6b2ad9420b0a76",
    "0013": "ea87548e29bd46732d09c94840246629b916d9018ecf8459464f5828007c310b",
    "0014": "5fd3f3faca4d6165383c3aa1e21b39c7ab1f669e695f36864c3a0ca5ec143e43",
}
MIGRATIONS = Path(migrations_pkg.__path__[0])
ALEMBIC = [str(Path(sys.executable).with_name("alembic")), "-c", str(ALEMBIC_INI)]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def test_released_migrations_never_change_and_every_migration_is_listed():
    files = {m.revision: Path(m.module.__file__) for m in available_migrations()}
    assert {p.name for p in files.values()} == {
        p.name for p in MIGRATIONS.glob("*.py") if p.name != "__init__.py"
    }
    digests = {revision: _digest(path) for revision, path in files.items()}
    changed = sorted(r for r, d in RELEASED.items() if digests.get(r) != d)
    assert not changed, f"released migrations changed or gone (add a new one instead): {changed}"
    unlisted = {r: d for r, d in digests.items() if r not in RELEASED}
    assert not unlisted, f"add to RELEASED when released: {unlisted}"


def test_alembic_sees_one_line_of_revisions_0001_to_the_latest():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(ALEMBIC_INI))
    line = list(reversed(list(script.walk_revisions())))
    migrations = available_migrations()
    assert [s.revision for s in line] == [m.revision for m in migrations]
    assert [m.revision for m in migrations] == [f"{v:04d}" for v in range(1, len(RELEASED) + 1)]
    assert [s.down_revision for s in line] == [None, *(m.revision for m in migrations[:-1])]
    assert script.get_heads() == [migrations[-1].revision]
    assert all(m.description and "\n" not in m.description for m in migrations)


def _schema_migrations(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(schema_migrations).order_by("version"))]


def _revisions(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as conn:
        return current_revisions(conn)


@pytest.fixture(scope="module")
def new_schema(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The schema of a warehouse made by `migrate`."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('new') / 'wh.db'}")
    migrate(engine)
    return schema_of(engine)


def test_a_new_warehouse_logs_and_records_each_migration_once(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    lines: list[str] = []
    migrations = available_migrations()
    assert migrate(engine, log=lines.append) == [m.version for m in migrations]
    assert lines[0] == (
        "warehouse: applied migration 0001 (segment_window_agg, batch_ledger, ingested_offsets)"
    )
    assert lines == [
        f"warehouse: applied migration {m.version:04d} ({m.description})" for m in migrations
    ]
    assert [r[:2] for r in _schema_migrations(engine)] == [
        (m.version, m.description) for m in migrations
    ]
    assert _revisions(engine) == (migrations[-1].revision,)
    assert migrate(engine, log=lines.append) == []
    assert len(lines) == len(migrations)


def test_the_migrations_make_the_schema_they_made_before_alembic(tmp_path, new_schema):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    legacy_migrate(engine)
    assert schema_of(engine) == new_schema


@pytest.mark.parametrize("up_to", [14, 12])
def test_a_warehouse_migrated_before_alembic_is_stamped_and_nothing_runs_again(
    tmp_path, new_schema, up_to
):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    legacy_migrate(engine, up_to=up_to)
    with engine.begin() as conn:  # a setting of its own, which migration 2 would overwrite
        conn.execute(text("UPDATE analyst_settings SET min_distinct_users = 7"))
    before = _schema_migrations(engine)
    assert _revisions(engine) == ()

    lines: list[str] = []
    with statements_that_change(engine) as changes:
        applied = migrate(engine, log=lines.append)
    later = [m for m in available_migrations() if m.version > up_to]
    assert applied == [m.version for m in later]
    stamp = f"{up_to:04d}"
    assert lines == [
        f"warehouse: migrated before Alembic (schema_migrations lists 0001 to {stamp}): "
        f"stamped Alembic revision {stamp}",
        *(f"warehouse: applied migration {m.revision} ({m.description})" for m in later),
    ]
    # Alembic's table, its revision, then the later migrations only: none before runs again.
    assert changes[0].startswith("CREATE TABLE alembic_version")
    assert changes[1].startswith(f"INSERT INTO alembic_version (version_num) VALUES ('{stamp}')")
    if not later:
        assert len(changes) == 2
    assert _schema_migrations(engine)[:up_to] == before
    assert [r[0] for r in _schema_migrations(engine)] == list(range(1, len(RELEASED) + 1))
    assert _revisions(engine) == (available_migrations()[-1].revision,)
    assert schema_of(engine) == new_schema
    with engine.connect() as conn:
        assert conn.execute(text("SELECT min_distinct_users FROM analyst_settings")).scalar() == 7
    with statements_that_change(engine) as changes:
        assert migrate(engine, log=lines.append) == []
    assert changes == []


def test_a_record_with_a_gap_is_refused_and_left_as_it_is(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wh.db'}")
    legacy_migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM schema_migrations WHERE version = 11"))
    with pytest.raises(MigrationError, match=r"lists versions 1-10, 12-14, but .* 1 to N in a row"):
        migrate(engine)
    assert _revisions(engine) == ()
    assert len(_schema_migrations(engine)) == len(RELEASED) - 1


def test_alembic_logs_nothing_through_logging_when_safewatch_migrates(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    alembic_logger = logging.getLogger("alembic")
    level = alembic_logger.level
    migrate(make_engine(f"sqlite:///{tmp_path / 'wh.db'}"), log=lambda _m: None)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []
    assert alembic_logger.level == level


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEWATCH_")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )


def test_an_up_to_date_warehouse_is_opened_without_loading_alembic(tmp_path):
    """A command that only reads (`safewatch show`) pays for no Alembic import."""
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    migrate(make_engine(url))
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from pydantic import SecretStr\n"
        "from pipelines.settings import WarehouseSettings\n"
        "from pipelines.warehouse.migrate import open_warehouse\n"
        f"open_warehouse(WarehouseSettings(url=SecretStr({url!r})), reader=True, log=print)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    done = _python(code, Path(__file__).resolve().parents[2])
    assert done.stdout == "[]\n"
    assert "alembic" not in done.stderr


def _alembic(*args: str, cwd: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEWATCH_")}
    if url is not None:
        env["SAFEWATCH_WAREHOUSE__URL"] = url
    return subprocess.run(
        [*ALEMBIC, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_alembic_upgrade_head_takes_the_url_from_the_settings_and_does_what_safewatch_does(
    tmp_path, new_schema
):
    # The settings file of the working directory names the warehouse (no URL in alembic.ini).
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    (tmp_path / "safewatch.toml").write_text(f'[warehouse]\nurl = "{url}"\n')
    done = _alembic("upgrade", "head", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Running upgrade  -> 0001" in done.stderr
    assert "applied migration 0014" in done.stderr
    engine = make_engine(url)
    assert migrate(engine) == []
    assert schema_of(engine) == new_schema
    assert [r[0] for r in _schema_migrations(engine)] == list(range(1, len(RELEASED) + 1))
    done = _alembic("current", cwd=tmp_path)
    assert done.stdout.strip() == f"{len(RELEASED):04d} (head)"


def test_alembic_upgrade_head_recognises_a_warehouse_migrated_before_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    engine = make_engine(url)
    legacy_migrate(engine, up_to=13)
    done = _alembic("upgrade", "head", cwd=tmp_path, url=url)
    assert done.returncode == 0, done.stderr
    assert "stamped Alembic revision 0013" in done.stderr
    assert "Running upgrade 0013 -> 0014" in done.stderr
    assert "Running upgrade 0012" not in done.stderr
    assert [r[0] for r in _schema_migrations(engine)] == list(range(1, 15))
    assert migrate(engine) == []


def test_the_alembic_command_fails_in_one_line_without_the_password(tmp_path):
    url = "postgresql+psycopg://writer:s3cret-pw@127.0.0.1:1/warehouse"
    done = _alembic("upgrade", "head", cwd=tmp_path, url=url)
    assert done.returncode != 0
    assert done.stdout.startswith("FAILED: cannot connect to the warehouse")
    assert "SAFEWATCH_WAREHOUSE__URL" in done.stdout and done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr


def test_a_warehouse_migrated_by_a_newer_release_is_refused_in_one_line(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(MigrationError) as info:
        migrate(engine)
    message = str(info.value)
    assert "is at schema revision 9999, newer than this release knows" in message
    assert "a newer Safewatch migrated it" in message
