"""A real PostgreSQL stopped under the sink (as a crash: `pg_ctl stop -m immediate`): a
commit waits for it within the retry budget and lands exactly once; past the budget it stops
with one line and leaves nothing behind.

Each test starts its own server (its data in a temporary folder): the session's `postgres`
fixture is shared by other tests and must not go away under them.
"""

from __future__ import annotations

import threading
import time

import pytest

from pipelines.infra.postgres import LocalPostgres
from pipelines.warehouse.batch_result import OffsetRange
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.queries import aggregate_rows, ledger_rows
from pipelines.warehouse.retry import RetryPolicy, WarehouseUnavailableError
from pipelines.warehouse.sink import WarehouseSink
from tests.integration.conftest import _free_ports, postgres_folder
from tests.unit.test_warehouse_sink import _agg, _batch

pytestmark = pytest.mark.integration


@pytest.fixture
def server():
    (port,) = _free_ports(1)
    with postgres_folder() as folder:
        pg = LocalPostgres(folder / "data", port, log=lambda _m: None)
        pg.start()
        try:
            yield pg
        finally:
            pg.stop(mode="immediate")


def _sink(url: str, budget_s: float, lines: list[str]) -> WarehouseSink:
    engine = make_engine(url)
    migrate(engine, log=lambda _m: None)
    return WarehouseSink(
        engine, retry=RetryPolicy(budget_s=budget_s, initial_s=0.5, max_s=2), log=lines.append
    )


def test_a_commit_waits_for_postgresql_to_come_back_and_lands_once(server):
    lines: list[str] = []
    sink = _sink(server.create_database("outage"), 120, lines)
    first = _batch(0, [_agg("de-DE", 10, 1)], [OffsetRange("t", 0, 0, 9, 10)])
    sink.commit(first)
    second = _batch(
        1, [_agg("de-DE", 7, 2), _agg("fr-FR", 3, 0)], [OffsetRange("t", 0, 10, 19, 10)]
    )
    server.stop(mode="immediate")
    done: list[int] = []
    failed: list[BaseException] = []

    def commit() -> None:
        try:
            done.append(sink.commit(second))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            failed.append(exc)

    worker = threading.Thread(target=commit)
    worker.start()
    time.sleep(4)  # the commit is retrying against a stopped server
    assert worker.is_alive() and not done and not failed
    server.start()
    worker.join(60)
    assert not failed, failed
    assert done == [2]
    rows = {r["locale"]: r for r in aggregate_rows(sink.engine)}
    assert (rows["de-DE"]["events"], rows["de-DE"]["violations"]) == (17, 3)
    assert rows["fr-FR"]["events"] == 3
    assert [r["batch_id"] for r in ledger_rows(sink.engine)] == [0, 1]
    failures = [line for line in lines if "committing batch 1 failed" in line]
    assert failures and "trying again" in failures[0]
    assert lines[-1].startswith("warehouse: reachable again, committing batch 1 done after")
    sink.engine.dispose()


def test_past_the_budget_it_stops_with_one_line_and_writes_nothing(server):
    lines: list[str] = []
    url = server.create_database("gone")
    sink = _sink(url, 3, lines)
    server.stop(mode="immediate")
    batch = _batch(0, [_agg("de-DE", 10, 1)], [OffsetRange("t", 0, 0, 9, 10)])
    with pytest.raises(WarehouseUnavailableError) as info:
        sink.commit(batch)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the warehouse postgresql+psycopg://postgres@127.0.0.1:")
    assert "while committing batch 0" in message
    assert "SAFEWATCH_WAREHOUSE__RETRY_BUDGET_S (now 3)" in message
    server.start()
    assert aggregate_rows(sink.engine) == [] and ledger_rows(sink.engine) == []
    sink.engine.dispose()
