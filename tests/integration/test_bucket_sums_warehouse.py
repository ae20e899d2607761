"""Per-user-bucket sums from counting to the warehouse and back to the alert rules, on SQLite
and PostgreSQL, against a direct computation from the events.

The events of a generated stretch of traffic are made clustered: a few prolific users send
a large share of them, most of those flagged as harmful. The test computes, from the event
dicts alone (its own window arithmetic, its own blake2b bucket of each user id, and the
catalog's definition of a violation, `size(moderation.flagged_categories) > 0`), the events
and violations per window x product surface x bucket, and the delta-method standard error
of the violation rate in two ways: with the 32 buckets as clusters (which the stored sums
must give exactly) and with each user as its own cluster (which the bucket estimate
approximates). The pipeline counts the same events in two batches that add to the same
windows, commits them, and the alert engine's reader sums the stored rows over the model
versions a rule does not group by.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import and_, select

from pipelines.alerting.engine import windows_read
from pipelines.alerting.evaluate import interval
from pipelines.alerting.inputs import rule_inputs
from pipelines.alerting.model import Rule, Threshold
from pipelines.contract.records import Limits, RecordChecker
from pipelines.contract.shapes import INPUT_SCHEMA
from pipelines.metrics.buckets import design_effect, ratio_standard_error
from pipelines.metrics.stats import wilson_interval
from pipelines.privacy.detectors import detector_names, screen_pattern
from pipelines.stream.counting import Counting
from pipelines.stream.merge import merge_partials
from pipelines.stream.partials import partial_counts
from pipelines.synth.generator import generate_events
from pipelines.warehouse.batch_result import BatchResult, OffsetRange
from pipelines.warehouse.sink import WarehouseSink
from tests.integration.alert_windows import warehouse_engine

DIMS = ("product_surface", "model_version")
WINDOW = timedelta(minutes=5)
START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
B = 32
COUNTING = Counting(
    window_s=int(WINDOW.total_seconds()), dimensions=DIMS, users_lg_k=12, screen=screen_pattern()
)
CHECKER = RecordChecker(
    Limits(1_000_000, timedelta(minutes=5), timedelta(days=3650)),
    screen=screen_pattern(),
    detect=detector_names,
)
RULE = Rule(
    name="HarmfulOutputRateHigh",
    metric="violation_rate",
    by=("product_surface",),
    severity="sev2",
    owner="trust-safety-oncall",
    runbook="runbooks/HarmfulOutputRateHigh.md",
    summary="{segment}",
    threshold=Threshold(above=0.05),
    min_events=1,
)


def _bucket(user: str) -> int:
    return int.from_bytes(hashlib.blake2b(user.encode(), digest_size=8).digest(), "big") % B


def _clustered_events() -> list[dict]:
    rng = random.Random(20261126)
    events = list(
        generate_events(seed=11, start=START, duration=timedelta(minutes=20), rate_per_s=2.5)
    )
    prolific = [f"{i:064x}" for i in (7, 8, 9, 10)]
    for e in events:
        if rng.random() < 0.3:
            e["user_id"] = rng.choice(prolific)
            if rng.random() < 0.6:
                e["moderation"]["flagged_categories"] = ["violence"]
                e["moderation"]["action"] = "block"
    return events


def _batch(events: list[dict], first_offset: int) -> pa.RecordBatch:
    n = len(events)
    raw = pa.RecordBatch.from_arrays(
        [
            pa.array(["t"] * n),
            pa.array([0] * n, pa.int32()),
            pa.array(range(first_offset, first_offset + n), pa.int64()),
            # Produced as they happened: the contract rejects events far ahead of their record.
            pa.array([_time_of(e) for e in events], pa.timestamp("us", tz="UTC")),
            pa.array([json.dumps(e).encode() for e in events], pa.binary()),
        ],
        schema=INPUT_SCHEMA,
    )
    return CHECKER.check_batch(raw, watermark=None)


def _commit(
    sink: WarehouseSink,
    events: list[dict],
    batch_id: int,
    first_offset: int,
    counting: Counting = COUNTING,
) -> int:
    checked = _batch(events, first_offset)
    partials = [row for p in partial_counts([checked], counting) for row in p.to_pylist()]
    counts = merge_partials(partials, counting)
    aggregated = sum(r["events"] for r in counts.aggregates)
    sink.commit(
        BatchResult(
            query_id="q", batch_id=batch_id, topic="t", started_at=START, input_rows=len(events),
            late_rows=0, aggregated_rows=aggregated, watermark_before=None, watermark_after=None,
            offsets=[OffsetRange("t", 0, first_offset, first_offset + len(events) - 1,
                                 len(events))],
            aggregates=counts.aggregates,
        )
    )  # fmt: skip
    return aggregated


def _time_of(event: dict) -> datetime:
    return datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))


def _window_of(event: dict) -> datetime:
    return START + ((_time_of(event) - START) // WINDOW) * WINDOW


def _delta_se(num: np.ndarray, den: np.ndarray) -> float:
    """sqrt(K / (K - 1) * sum_k (num_k - R den_k)^2) / D over clusters k (Deng et al. 2018)."""
    k = len(num)
    rate = num.sum() / den.sum()
    return float(np.sqrt(k / (k - 1) * np.sum((num - rate * den) ** 2)) / den.sum())


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    engine = warehouse_engine(request, tmp_path, "buckets")
    yield engine
    engine.dispose()


def test_stored_bucket_sums_give_the_direct_delta_method_error(engine) -> None:
    events = _clustered_events()
    sink = WarehouseSink(engine)
    half = len(events) // 2
    # Two batches that add to the same windows: the stored sums are merged, not replaced.
    aggregated = _commit(sink, events[:half], 0, 0) + _commit(sink, events[half:], 1, half)
    assert aggregated == len(events), "every generated event is valid and counted"

    # The reference, from the events alone.
    per_bucket: dict[tuple[datetime, str], np.ndarray] = defaultdict(lambda: np.zeros((2, B)))
    per_user: dict[tuple[datetime, str], dict[str, list[int]]] = defaultdict(dict)
    for e in events:
        key = (_window_of(e), e["segment"]["product_surface"])
        violation = int(len(e["moderation"]["flagged_categories"]) > 0)
        per_bucket[key][:, _bucket(e["user_id"])] += (violation, 1)
        counts = per_user[key].setdefault(e["user_id"], [0, 0])
        counts[0] += violation
        counts[1] += 1

    windows = sorted({w for w, _ in per_bucket})
    seen = 0
    with engine.connect() as conn:
        for w, data in windows_read(conn, sink.tables, windows, DIMS):
            for found in rule_inputs(RULE, data):
                surface = dict(found.segment)["product_surface"]
                expected = per_bucket[(w, surface)]
                assert found.buckets is not None
                assert list(found.buckets.numerators) == expected[0].astype(int).tolist()
                assert list(found.buckets.denominators) == expected[1].astype(int).tolist()
                assert (found.numerator, found.denominator) == (
                    int(expected[0].sum()),
                    int(expected[1].sum()),
                )
                if np.count_nonzero(expected[1]) < 2:
                    continue
                se = ratio_standard_error(found.buckets.numerators, found.buckets.denominators)
                assert se == pytest.approx(_delta_se(expected[0], expected[1]), rel=1e-12)
                seen += 1
    assert seen == len(per_bucket)

    # Over the whole period of the busiest surface: the bucket estimate is close to the
    # per-user one, and both are far wider than the binomial error the clustering breaks.
    surface = max({s for _, s in per_bucket}, key=lambda s: sum(
        per_bucket[(w, s)][1].sum() for w in windows if (w, s) in per_bucket))  # fmt: skip
    users: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    total = np.zeros((2, B))
    for w in windows:
        total += per_bucket.get((w, surface), 0)
        for user, (num, den) in per_user.get((w, surface), {}).items():
            users[user][0] += num
            users[user][1] += den
    by_user = np.asarray(list(users.values()), dtype=float)
    per_user_se = _delta_se(by_user[:, 0], by_user[:, 1])
    bucket_se = ratio_standard_error(total[0], total[1])
    assert 0.6 < bucket_se / per_user_se < 1.6
    rate = total[0].sum() / total[1].sum()
    binomial_se = np.sqrt(rate * (1 - rate) / total[1].sum())
    assert per_user_se > 1.5 * binomial_se
    assert design_effect(total[0], total[1]) > 2.0


def test_rule_interval_is_robust_where_buckets_are_known_and_wilson_where_not(engine) -> None:
    events = _clustered_events()
    sink = WarehouseSink(engine)
    _commit(sink, events, 0, 0)
    window = min(_window_of(e) for e in events)
    with engine.connect() as conn:
        ((_, data),) = list(windows_read(conn, sink.tables, [window], DIMS))
    inputs = rule_inputs(RULE, data)
    assert inputs
    for found in inputs:
        wilson = wilson_interval(found.numerator, found.denominator)
        low, high = interval(found)
        assert low <= wilson[0] and high >= wilson[1]
        unknown = interval(type(found)(found.segment, found.numerator, found.denominator))
        assert unknown == wilson
    # The clustered segment's interval is strictly wider than Wilson's.
    widest = max(inputs, key=lambda i: i.numerator)
    assert interval(widest)[0] < wilson_interval(widest.numerator, widest.denominator)[0]


def test_weekly_report_intervals_are_robust_from_the_stored_sums(engine) -> None:
    from pipelines.metrics.buckets import robust_interval
    from pipelines.report.model import IsoWeek
    from pipelines.report.weekly import collect_weekly
    from pipelines.settings import Settings

    events = _clustered_events()
    sink = WarehouseSink(engine)
    _commit(sink, events, 0, 0)
    settings = Settings.load(environ={"SAFEWATCH_STREAM__DIMENSIONS": ",".join(DIMS)})
    report = collect_weekly(engine, settings, IsoWeek.containing(START), now=START)
    # The reference: violations and events per user bucket over the whole week, from the
    # events alone, and the robust interval of those sums.
    num, den = np.zeros(B), np.zeros(B)
    for e in events:
        num[_bucket(e["user_id"])] += len(e["moderation"]["flagged_categories"]) > 0
        den[_bucket(e["user_id"])] += 1
    (kpi,) = (k for k in report.kpis if k.rate_id == "violation_rate")
    assert (kpi.current.numerator, kpi.current.denominator) == (int(num.sum()), int(den.sum()))
    assert (kpi.current.lower, kpi.current.upper) == pytest.approx(robust_interval(num, den))
    # The design effect that widens the week-over-week test comes from the same sums.
    assert kpi.current.design_effect == pytest.approx(design_effect(num, den), rel=1e-9)
    assert kpi.current.design_effect > 2.0
    wilson = wilson_interval(int(num.sum()), int(den.sum()))
    assert kpi.current.upper - kpi.current.lower > 1.5 * (wilson[1] - wilson[0])


def test_an_unreadable_stored_blob_is_unknown_not_a_crash(engine) -> None:
    from sqlalchemy import update

    events = _clustered_events()
    sink = WarehouseSink(engine)
    half = len(events) // 2
    _commit(sink, events[:half], 0, 0)
    agg = sink.tables.agg
    key = [agg.c.window_start, *[agg.c[d] for d in DIMS]]
    with engine.begin() as conn:
        conn.execute(update(agg).values(bucket_sums=b"\x00\xffnot a stored form"))
        corrupted = {tuple(r) for r in conn.execute(select(*key))}
    windows = sorted({_window_of(e) for e in events})
    # The rules fall back to Wilson's interval.
    with engine.connect() as conn:
        found = [i for _, d in windows_read(conn, sink.tables, windows, DIMS)
                 for i in rule_inputs(RULE, d)]  # fmt: skip
    assert found and all(i.buckets is None for i in found)
    for i in found:
        assert interval(i) == wilson_interval(i.numerator, i.denominator)
    # A later batch adding to those rows leaves them unknown (NULL) rather than trusting
    # half of the sums; rows it creates get their sums.
    _commit(sink, events[half:], 1, half)
    with engine.connect() as conn:
        after = {tuple(r[:-1]): r[-1] for r in conn.execute(select(*key, agg.c.bucket_sums))}
    garbage = b"\x00\xffnot a stored form"
    touched = [k for k in corrupted if after[k] is None]
    assert touched, "the second batch adds to some of the first batch's rows"
    assert all(after[k] is None or bytes(after[k]) == garbage for k in corrupted)
    assert all(v is not None for k, v in after.items() if k not in corrupted)


def test_slice_sums_are_merged_and_read_per_minute_of_the_window(engine) -> None:
    # 1-minute slices: two batches that interleave in time add to the same windows; the
    # rules' reader sums the stored slices over the model versions and must find each
    # minute's events and violations of each surface, counted here from the events.
    counting = dataclasses.replace(COUNTING, slice_s=60)
    events = _clustered_events()
    sink = WarehouseSink(engine)
    _commit(sink, events[0::2], 0, 0, counting)
    _commit(sink, events[1::2], 1, len(events), counting)
    expected: dict[tuple[datetime, str], np.ndarray] = defaultdict(lambda: np.zeros((2, 5)))
    for e in events:
        key = (_window_of(e), e["segment"]["product_surface"])
        minute = int((_time_of(e) - key[0]).total_seconds()) // 60
        expected[key][:, minute] += (int(len(e["moderation"]["flagged_categories"]) > 0), 1)
    seen = 0
    with engine.connect() as conn:
        windows = sorted({w for w, _ in expected})
        for w, data in windows_read(conn, sink.tables, windows, DIMS):
            for found in rule_inputs(RULE, data, with_slices=True):
                want = expected[(w, dict(found.segment)["product_surface"])]
                assert found.slices is not None
                assert list(found.slices[0]) == want[0].astype(int).tolist()
                assert list(found.slices[1]) == want[1].astype(int).tolist()
                seen += 1
            # Closed windows are read without them.
            assert all(i.slices is None for i in rule_inputs(RULE, data))
    assert seen == len(expected)


def test_an_unreadable_or_foreign_slice_blob_is_unknown_not_a_crash(engine) -> None:
    # Garbage, and sums over another number of slices (early_slice changed mid-window):
    # the open windows are then tested whole, and a later batch leaves the row's slices
    # unknown (NULL) rather than adding to sums it cannot read.
    from sqlalchemy import update

    from pipelines.alerting.early import spans
    from pipelines.alerting.evaluate import OpenWindow
    from pipelines.metrics.buckets import encode_counter_buckets

    counting = dataclasses.replace(COUNTING, slice_s=60)
    events = _clustered_events()
    sink = WarehouseSink(engine)
    half = len(events) // 2
    _commit(sink, events[:half], 0, 0, counting)
    agg = sink.tables.agg
    key = [agg.c.window_start, *[agg.c[d] for d in DIMS]]
    with engine.begin() as conn:
        rows = [tuple(r) for r in conn.execute(select(*key))]
        garbage, foreign = rows[0::2], rows[1::2]
        conn.execute(update(agg).values(slice_sums=b"\xff\x00 not zlib"))
        for r in foreign:
            conn.execute(
                update(agg)
                .where(and_(*[c == v for c, v in zip(key, r, strict=True)]))
                .values(slice_sums=encode_counter_buckets({"events": [1, 2, 3]}))
            )
    windows = sorted({_window_of(e) for e in events})
    with engine.connect() as conn:
        found = [i for _, d in windows_read(conn, sink.tables, windows, DIMS)
                 for i in rule_inputs(RULE, d, with_slices=True)]  # fmt: skip
    # Unreadable: unknown; foreign (3 slices of made-up counts): they do not add up to the
    # window's counters. Either way only the whole window is tested.
    assert found and any(i.slices is None for i in found)
    for i in found:
        window = OpenWindow(i.segment, i.numerator, i.denominator, slices=i.slices)
        assert [s.first for s in spans(window)] == [0]
    _commit(sink, events[half:], 1, half, counting)
    with engine.connect() as conn:
        after = {tuple(r[:-1]): r[-1] for r in conn.execute(select(*key, agg.c.slice_sums))}
    assert garbage and foreign
    assert all(after[k] is None or bytes(after[k]) == b"\xff\x00 not zlib" for k in garbage)
    touched = [k for k in foreign if after[k] is None]
    assert touched, "the second batch adds to some of the rows with foreign sums"
    assert all(v is not None for k, v in after.items() if k not in garbage and k not in foreign)
