"""Every SQL block of every runbook runs on SQLite and PostgreSQL and returns what it states.

The warehouse is the scenario warehouse (an hour with the four demo incidents, written by
the job's batch processor); PostgreSQL gets a copy of its rows, table by table, in a
database migrated by `pipelines.warehouse.migrate` (so `v_segment_window` and
`analyst_settings` are the real ones). Binds come from the incident that fires the
runbook's rule: the segment of the rule's first firing in alert_history, and the incident's
time range (from its first window to three windows after its end). A rule that never fires
in the scenario, and a pipeline alert, get the violation-spike target and the whole hour.

Each block must return exactly the columns of its `<!-- expect: ... -->` comment, in order,
and a row count that satisfies it; a failure names the runbook file and line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import DateTime, Engine, MetaData, String, bindparam, select, text

from pipelines.segments import parse_segment
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.tables import Tables, as_utc
from tests.integration.scenario_warehouse import ScenarioWarehouse
from tests.unit.test_runbook_links import SqlBlock, runbook_files, sql_blocks

pytestmark = pytest.mark.integration

BLOCKS = [block for path in runbook_files() for block in sql_blocks(path)]
TIME_BINDS = ("since", "until")
FALLBACK_SCENARIO = "violation-spike"
WINDOWS_AFTER_INCIDENT = 3


def _floor(wh: ScenarioWarehouse, t: datetime) -> datetime:
    return wh.start + ((t - wh.start) // wh.window) * wh.window


def runbook_binds(wh: ScenarioWarehouse, name: str) -> dict[str, Any]:
    """The binds of runbook `name`: see the module docstring."""
    t = Tables(wh.engine).alert_history
    with wh.engine.connect() as conn:
        first = conn.execute(
            select(t.c.segment)
            .where(t.c.rule == name, t.c.to_status == "firing")
            .order_by(t.c.window_start, t.c.id)
            .limit(1)
        ).scalar()
    if first is None:
        segment = dict(wh.incidents[FALLBACK_SCENARIO].target)
        since, until = wh.start, wh.end
    else:
        segment = dict(parse_segment(first))
        incident = next(i for i in wh.incidents.values() if i.matches(segment))
        since = _floor(wh, incident.start)
        until = min(wh.end, _floor(wh, incident.end) + WINDOWS_AFTER_INCIDENT * wh.window)
    return {**segment, "since": since, "until": until, "rule": name}


def copy_warehouse(source: Engine, target: Engine) -> dict[str, int]:
    """Every table's rows from `source` into the migrated `target` (views come from the
    migrations); returns rows copied per table. SQLite's naive UTC datetimes become aware.
    """
    src, dst = MetaData(), MetaData()
    src.reflect(source)
    dst.reflect(target)
    copied = {}
    with source.connect() as read, target.begin() as write:
        for name, table in src.tables.items():
            if name in ("schema_migrations", "alembic_version"):
                continue
            rows = [
                {k: as_utc(v) if isinstance(v, datetime) else v for k, v in r.items()}
                for r in read.execute(select(table)).mappings()
            ]
            write.execute(dst.tables[name].delete())  # analyst_settings has its row already
            if rows:
                write.execute(dst.tables[name].insert(), rows)
            copied[name] = len(rows)
    return copied


def run_block(engine: Engine, block: SqlBlock, binds: Mapping[str, Any]) -> tuple[list[str], int]:
    """The block's result columns and row count with `binds` (only those it names)."""
    names = sorted(block.binds())
    stmt = text(block.sql).bindparams(
        *[
            bindparam(n, type_=DateTime(timezone=True) if n in TIME_BINDS else String())
            for n in names
        ]
    )
    with engine.connect() as conn:
        result = conn.execute(stmt, {n: binds[n] for n in names})
        return list(result.keys()), len(result.all())


@pytest.fixture(scope="module")
def binds(scenario_warehouse: ScenarioWarehouse) -> dict[str, dict[str, Any]]:
    return {p.stem: runbook_binds(scenario_warehouse, p.stem) for p in runbook_files()}


@pytest.fixture(scope="module")
def pg_warehouse(scenario_warehouse: ScenarioWarehouse, postgres) -> Iterator[Engine]:
    engine = make_engine(postgres.create_database("runbooks"))
    migrate(engine)
    copied = copy_warehouse(scenario_warehouse.engine, engine)
    assert copied["segment_window_agg"] > 0 and copied["alert_history"] > 0
    yield engine
    engine.dispose()


def test_runbooks_have_sql_blocks():
    assert len(BLOCKS) >= len(runbook_files())


def test_binds_of_firing_rules_come_from_their_incident(scenario_warehouse, binds):
    spike = scenario_warehouse.incidents["violation-spike"]
    harmful = binds["HarmfulOutputRateHigh"]
    assert {k: harmful[k] for k in spike.target} == dict(spike.target)
    assert harmful["since"] == spike.start  # 30 min in: on a window boundary
    refusal = binds["RefusalSpike"]
    assert scenario_warehouse.incidents["refusal-jump"].matches(refusal)


def test_copy_keeps_the_analyst_view(scenario_warehouse, pg_warehouse):
    query = "SELECT COUNT(*) FROM v_segment_window"
    with scenario_warehouse.engine.connect() as a, pg_warehouse.connect() as b:
        assert a.execute(text(query)).scalar() == b.execute(text(query)).scalar() > 0


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("block", BLOCKS, ids=[b.where.removeprefix("runbooks/") for b in BLOCKS])
def test_runbook_sql_returns_what_it_states(block, dialect, binds, scenario_warehouse, request):
    engine = (
        scenario_warehouse.engine
        if dialect == "sqlite"
        else request.getfixturevalue("pg_warehouse")
    )
    expected = block.expectation()
    values = binds[block.path.stem]
    try:
        columns, rows = run_block(engine, block, values)
    except Exception as exc:  # the block's place matters more than the traceback
        pytest.fail(f"{block.where} on {dialect}: {type(exc).__name__}: {exc}")
    shown = {k: str(v) for k, v in values.items() if k in block.binds()}
    assert columns == list(expected.columns), f"{block.where} on {dialect}: columns {columns}"
    assert expected.holds(rows), (
        f"{block.where} on {dialect}: {rows} row(s), expected rows{expected.op}{expected.rows} "
        f"(binds {shown})"
    )
