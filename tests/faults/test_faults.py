"""The fault-injection suite, short: every scenario of tests/faults/scenarios.py on small
data with a few faults, against real services of its own (a broker it may kill, a
PostgreSQL it may stop, an Alertmanager it may take down). The full run is
`python -m tests.faults.run` (docs/faults.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults import scenarios
from tests.faults.harness import World, build_input, world
from tests.integration.mixed_input import Record

pytestmark = pytest.mark.integration

EVENTS = 2000
BATCHES = 8


@pytest.fixture(scope="module")
def faults_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("faults")) as w:
        yield w


@pytest.fixture(scope="module")
def records() -> list[Record]:
    return build_input(seed=14, valid=EVENTS, broken_per_kind=1)


def _offsets(records: list[Record]) -> int:
    return max(50, len(records) // BATCHES)


@pytest.mark.parametrize("warehouse", ["sqlite", "postgresql"])
def test_crashes_at_every_crash_point_and_a_lost_checkpoint(
    faults_world: World, records: list[Record], warehouse: str
) -> None:
    verdict = scenarios.crashes(
        faults_world, warehouse, records, random_kills=1 if warehouse == "postgresql" else 0,
        seed=3, max_offsets=_offsets(records),
    )  # fmt: skip
    assert verdict.exact, verdict.line()
    assert "checkpoint lost once: refused" in verdict.line()
    # Every crash point was reached (a kill at each), not only the last run.
    for point in ("dlq-written", "in-commit", "committed", "before-derive"):
        assert f"{point} 1" in verdict.line(), verdict.line()


def test_a_postgresql_outage_is_waited_for(faults_world: World, records: list[Record]) -> None:
    verdict = scenarios.warehouse_outage(
        faults_world, records, down_s=10, max_offsets=_offsets(records)
    )
    assert verdict.exact, verdict.line()
    assert "no restart" in verdict.line()


def test_held_notices_reach_the_channels_that_come_back_with_no_new_event(
    faults_world: World, records: list[Record]
) -> None:
    verdict = scenarios.channels(faults_world, "sqlite", records, max_offsets=_offsets(records))
    assert verdict.exact, verdict.line()


def test_a_killed_broker_comes_back_and_nothing_is_lost(
    faults_world: World, records: list[Record]
) -> None:
    verdict = scenarios.broker(
        faults_world, "sqlite", records, down_s=10, max_offsets=_offsets(records)
    )
    assert verdict.exact, verdict.line()


def test_a_full_disk_and_a_read_only_checkpoint_stop_the_job_clearly(
    faults_world: World, records: list[Record]
) -> None:
    verdict = scenarios.storage(faults_world, records, max_offsets=_offsets(records))
    assert verdict.exact, verdict.line()
    assert "a full disk: stopped with" in verdict.line()


def test_one_broker_of_three_killed_the_job_goes_on(
    faults_world: World, records: list[Record]
) -> None:
    verdict = scenarios.broker_of_three(
        faults_world, "postgresql", records, down_s=10, max_offsets=_offsets(records)
    )
    assert verdict.exact, verdict.line()
    assert "leader of partition 0" in verdict.line()
