"""The verdict of a fault scenario: the warehouse, the ledger, the dead-letter topic and the
alerts after the faults, compared with the ground truth of the generated records (each built
with its fate, tests/integration/mixed_input.py), never with another run of the job.

Counted as *lost*: an event, a reject or a dead letter the truth has and the outputs lack;
as *doubled*: one the outputs hold more often than the truth. A dead letter written again
with the same key after a crash is *redelivered*, which the DLQ's contract allows (delivery
at least once, docs/contract.md), and reported apart.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from pipelines.warehouse.queries import aggregate_rows, ledger_rows
from tests.integration.streaming_support import consume_all, ground_truth, warehouse_table

# Per-record totals of segment_window_agg the truth gives (besides the labelled counters).
TOTALS = ("events_seen", "telemetry_complete", "redaction_failures")


@dataclass
class Verdict:
    scenario: str
    lost: int = 0
    doubled: int = 0
    redelivered: int = 0
    stalled: bool = False
    crashed: str = ""  # the last line of a run that failed when it should not have
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.doubled or self.stalled or self.crashed or self.problems)

    def line(self) -> str:
        if self.stalled:
            head = "stalled"
        elif self.crashed:
            head = f"crashed ({self.crashed})"
        elif self.exact:
            head = "exact"
        else:
            parts = [f"lost {self.lost}" if self.lost else "", f"doubled {self.doubled}"
                     if self.doubled else "", *self.problems]  # fmt: skip
            head = "; ".join(p for p in parts if p)
        facts = "; ".join(self.facts)
        return f"{self.scenario}: {head}" + (f" ({facts})" if facts else "")

    def same(self, what: str, expected: Counter[Any], got: Counter[Any]) -> None:
        """Record what `got` lacks of `expected` as lost, and what it holds more as doubled."""
        missing = sum((expected - got).values())
        extra = sum((got - expected).values())
        if missing:
            self.lost += missing
            self.problems.append(f"{what}: {missing} missing")
        if extra:
            self.doubled += extra
            self.problems.append(f"{what}: {extra} more than once")

    def differ(self, what: str, expected: int, got: int) -> None:
        """Record a count that differs from the truth as lost or doubled."""
        if got < expected:
            self.lost += expected - got
            self.problems.append(f"{what}: {got} of {expected}")
        elif got > expected:
            self.doubled += got - expected
            self.problems.append(f"{what}: {got}, expected {expected}")


def check(scenario: Any, verdict: Verdict) -> Verdict:
    """Compare everything `scenario` (a harness.Scenario, the job done) produced with the
    truth of its records; fill `verdict`.
    """
    records = scenario.records
    engine = scenario.engine
    expected = Counter(r.expected for r in records)
    rejected_expected = {k: v for k, v in expected.items() if k not in ("aggregated", "duplicate")}

    # Every counted event once: per window x segment, every labelled counter.
    truth = ground_truth([r.event for r in records if r.expected == "aggregated"])
    rows = aggregate_rows(engine)
    table = warehouse_table(rows)
    lost = doubled = 0
    for key in truth.keys() | table.keys():
        want, got = truth.get(key, {}), table.get(key, {})
        for counter in want.keys() | got.keys():
            w, g = want.get(counter, 0), got.get(counter, 0)
            lost += max(0, w - g)
            doubled += max(0, g - w)
    if lost or doubled:
        verdict.lost += lost
        verdict.doubled += doubled
        verdict.problems.append("window x segment counters differ from the truth")
    totals = {
        "events_seen": sum(r.attributable for r in records),
        "telemetry_complete": sum(r.attributable and not r.incomplete for r in records),
        "redaction_failures": sum(r.text_dropped for r in records),
    }
    for column in TOTALS:
        verdict.differ(column, totals[column], sum(r[column] for r in rows))

    # The ledger: each record read once, its fate as built; offsets without gap or overlap.
    ledger = ledger_rows(engine)
    verdict.differ("records read (ledger)", len(records), sum(r["input_rows"] for r in ledger))
    verdict.differ(
        "aggregated (ledger)", expected["aggregated"], sum(r["aggregated_rows"] for r in ledger)
    )
    verdict.differ(
        "duplicates (ledger)", expected["duplicate"], sum(r["duplicate_rows"] for r in ledger)
    )
    rejected: Counter[str] = Counter()
    for row in ledger:
        by_reason = json.loads(row["rejected_by_reason"])
        rejected.update(by_reason)
        if row["input_rows"] != (
            row["aggregated_rows"] + row["rejected_rows"] + row["late_rows"] + row["duplicate_rows"]
        ):
            verdict.problems.append(f"batch {row['batch_id']}'s accounting does not close")
    for reason in rejected_expected.keys() | rejected.keys():
        verdict.differ(f"rejected {reason}", rejected_expected.get(reason, 0), rejected[reason])
    _check_offsets(scenario, verdict)

    # The dead letters: each expected one present, by its source offset and reason.
    source = {
        (m.partition, m.offset): m.value for m in consume_all(scenario.world.kafka, scenario.topic)
    }
    by_payload: dict[bytes, Counter[str]] = {}
    for r in records:
        if r.dlq_reason is not None:
            by_payload.setdefault(r.payload, Counter())[r.dlq_reason] += 1
    wanted: Counter[tuple[int, int, str]] = Counter()
    for (partition, offset), payload in source.items():
        for reason in by_payload.get(payload, {}):
            wanted[(partition, offset, reason)] = 1
    letters = [json.loads(m.value) for m in consume_all(scenario.world.kafka, scenario.dlq)]
    got = Counter(
        (rec["source"]["partition"], rec["source"]["offset"], rec["reason"]) for rec in letters
    )
    missing = sum((wanted - got).values())
    unexpected = sum(1 for k in got if k not in wanted)
    verdict.redelivered = sum(n - 1 for k, n in got.items() if k in wanted and n > 1)
    if missing:
        verdict.lost += missing
        verdict.problems.append(f"{missing} dead letters missing")
    if unexpected:
        verdict.doubled += unexpected
        verdict.problems.append(f"{unexpected} dead letters no record should have")
    # The warehouse's index of rejects: one row per rejected record, never two.
    t = scenario.tables.rejected
    with engine.connect() as conn:
        indexed = Counter(
            (r.kafka_partition, r.kafka_offset) for r in conn.execute(select(t)).all()
        )
    verdict.differ("rejected_events rows", sum(rejected_expected.values()), sum(indexed.values()))

    # Alerts: no transition recorded twice, every notice sent.
    h = scenario.tables.alert_history
    with engine.connect() as conn:
        history = Counter(
            (r.rule, r.segment, r.window_start, r.to_status) for r in conn.execute(select(h)).all()
        )
        outbox = conn.execute(select(scenario.tables.outbox)).all()
    twice = sum(n - 1 for n in history.values() if n > 1)
    if twice:
        verdict.doubled += twice
        verdict.problems.append(f"{twice} alert transitions recorded twice")
    verdict.facts += [
        f"{len(records):,} records",
        f"{len(ledger)} batches",
        f"{len(table):,} window x segment rows",
        f"{sum(wanted.values()):,} dead letters",
        f"{sum(history.values())} alert transitions, {len(outbox)} notices",
    ]
    if verdict.redelivered:
        verdict.facts.append(f"{verdict.redelivered} dead letters redelivered with their key")
    if "kafka" in scenario.channels:
        _check_kafka_notices(scenario, verdict, outbox)
    return verdict


def _check_offsets(scenario: Any, verdict: Verdict) -> None:
    """The counted offset ranges of each partition tile [0, end) exactly."""
    t = scenario.tables.offsets
    with scenario.engine.connect() as conn:
        ranges = conn.execute(
            select(t.c.kafka_partition, t.c.start_offset, t.c.end_offset).where(
                t.c.topic == scenario.topic
            )
        ).all()
    by_partition: dict[int, list[tuple[int, int]]] = {}
    for p, start, end in ranges:
        by_partition.setdefault(p, []).append((start, end))
    for p, spans in sorted(by_partition.items()):
        spans.sort()
        expected_start = 0
        for start, end in spans:
            if start > expected_start:
                verdict.problems.append(
                    f"partition {p}: offsets {expected_start}..{start - 1} never counted"
                )
            elif start < expected_start:
                verdict.problems.append(
                    f"partition {p}: offsets {start}..{expected_start - 1} counted twice"
                )
            expected_start = max(expected_start, end + 1)


def _check_kafka_notices(scenario: Any, verdict: Verdict, outbox: list[Any]) -> None:
    """Every notice the outbox marks sent to Kafka is on the alerts topic; none is there that
    the outbox lacks. A repeat of one (a crash between the send and its mark) is redelivered,
    which the channel's contract allows (at least once, each with its dedup key).
    """
    rows = [r for r in outbox if r.channel == "kafka"]
    sent = Counter(r.dedup_key for r in rows if r.sent_at is not None)
    known = {r.dedup_key for r in rows}
    on_topic = Counter(m.key.decode() for m in consume_all(scenario.world.kafka, scenario.alerts))
    missing = sum((sent - on_topic).values())
    unknown = sum(n for key, n in on_topic.items() if key not in known)
    if missing:
        verdict.lost += missing
        verdict.problems.append(f"Kafka alert notices: {missing} marked sent, not on the topic")
    if unknown:
        verdict.doubled += unknown
        verdict.problems.append(f"Kafka alert notices: {unknown} no notice of the outbox")
    repeats = sum((on_topic - sent).values()) - unknown
    held = len(rows) - sum(sent.values())
    verdict.facts.append(
        f"{sum(sent.values())} Kafka alert notices on the topic"
        + (f", {repeats} redelivered with their key" if repeats > 0 else "")
        + (f", {held} held in the outbox" if held else "")
    )
