"""Counting checked records per window x segment (pipelines.stream.counting), against plain
Python on the same events: histogram bins like numpy's searchsorted (every edge and its
neighbouring doubles), counters and telemetry per segment, offsets per partition and
status, distinct users within the sketch's error, and the same totals however the records
are split into partitions and Arrow batches."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import kstest

from pipelines.cardinality import admit, fold, value_counts
from pipelines.contract.records import Limits, RecordChecker, record_checker
from pipelines.contract.shapes import INPUT_SCHEMA
from pipelines.metrics.buckets import add_counter_buckets
from pipelines.metrics.catalog import counter_ids
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.metrics.sketches import estimate
from pipelines.privacy.detectors import AllowList, detector_names, screen_pattern
from pipelines.stream.counting import COUNTERS, Counting, ValueLimits
from pipelines.stream.merge import merge_partials
from pipelines.stream.packing import SAMPLE
from pipelines.stream.partials import partial_counts
from pipelines.stream.predicates import Columns, SqlPredicate
from pipelines.stream.sampling import Sampling, sample_hash, sample_of
from pipelines.synth.generator import generate_events
from pipelines.warehouse.batch_result import SEGMENT_KEY

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
DIMS = ("product_surface", "model_version")
WINDOW = 300
COUNTING = Counting(window_s=WINDOW, dimensions=DIMS, users_lg_k=12, screen=screen_pattern())
CHECKER = RecordChecker(
    Limits(1_000_000, timedelta(minutes=5), timedelta(days=7)),
    screen=screen_pattern(),
    detect=detector_names,
)


def _events(n: int, seed: int) -> list[dict]:
    return list(
        generate_events(
            seed=seed, start=NOW - timedelta(hours=1), duration=timedelta(minutes=20),
            rate_per_s=n / 1200,
        )
    )  # fmt: skip


def _checked(events: list, partition: int = 0, first_offset: int = 0) -> pa.RecordBatch:
    values = [e if isinstance(e, bytes) else json.dumps(e).encode() for e in events]
    n = len(values)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(["t"] * n),
            pa.array([partition] * n, pa.int32()),
            pa.array(range(first_offset, first_offset + n), pa.int64()),
            pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),
            pa.array(values, pa.binary()),
        ],
        schema=INPUT_SCHEMA,
    )
    return CHECKER.check_batch(batch, watermark=None)


def _count(batches, duplicates=frozenset(), counting=COUNTING):
    partials = [row for b in batches for p in partial_counts([b], counting, duplicates)
                for row in p.to_pylist()]  # fmt: skip
    return merge_partials(partials, counting)


def _field(event: dict, path: str):
    for part in path.split("."):
        event = event[part]
    return event


def _window(event: dict) -> datetime:
    t = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
    return datetime.fromtimestamp(int(t.timestamp()) // WINDOW * WINDOW, UTC)


def _reference_bin(d, value) -> int:
    if d.kind == "numeric":
        i = int(np.searchsorted(np.array(d.edges), float(value), side="right")) - 1
        return min(max(i, 0), d.bins - 1)
    return list(d.values).index(value)


def test_bins_equal_numpy_bins():
    events = _events(2500, seed=3)
    rng = random.Random(5)
    score_edges = DISTRIBUTIONS[0].edges
    for e in events[:300]:
        # Edge cases: exact edges, 0 and 1, huge latencies and token counts.
        e["moderation"]["scores"]["hate"] = rng.choice(score_edges)
        e["request"]["latency_ms"] = rng.choice([0, 10.0, 11.5, 119_999.9, 120_000.0, 5e6])
        e["request"]["output_tokens"] = rng.choice([0, 1, 2, 10**7])
    # Every edge of every numeric distribution, and the closest doubles on either side.
    probes = iter(events[300:])
    for d in (d for d in DISTRIBUTIONS if d.kind == "numeric"):
        for edge in d.edges:
            for x in (np.nextafter(edge, -np.inf), edge, np.nextafter(edge, np.inf)):
                if x < 0:
                    continue
                e = next(probes)
                *path, leaf = d.expression.split(".")
                parent = _field(e, ".".join(path))
                parent[leaf] = float(x) if isinstance(parent[leaf], float) else int(np.ceil(x))
    checked = _checked(events)
    counts = _count([checked])
    # Probes beyond a score's maximum of 1 break the contract: they are not counted.
    events = [
        e for e, r in zip(events, checked.column("reason").to_pylist(), strict=True) if r is None
    ]
    assert len(events) > 2400
    got = Counter(
        {
            (h["window_start"], h["product_surface"], h["model_version"], h["distribution"],
             h["bin"]): h["count"]
            for h in counts.histograms
        }
    )  # fmt: skip
    expected = Counter()
    for e in events:
        seg = (e["segment"]["product_surface"], e["segment"]["model_version"])
        for d in DISTRIBUTIONS:
            value = _field(e, d.expression)
            for v in (value or [d.values[0]]) if d.kind == "multi" else [value]:
                expected[_window(e), *seg, d.id, _reference_bin(d, v)] += 1
    assert got == expected


def _truth(events, predicate):
    out = Counter()
    for e in events:
        if predicate(e):
            out[_window(e), e["segment"]["product_surface"], e["segment"]["model_version"]] += 1
    return out


def test_counters_telemetry_offsets_and_users():
    events = _events(3000, seed=11)
    bad = copy.deepcopy(events[0])
    bad["refusal"]["style"] = "rude"  # a safety field fails: counted in events_seen only
    segment_bad = copy.deepcopy(events[1])
    segment_bad["segment"]["locale"] = 7  # the segment fails: not attributable at all
    leak = copy.deepcopy(events[2])
    leak["segment"]["model_version"] = "call +1 415 555 0100"
    leak["excerpts"] = {"prompt": "my mail is jane.doe@example.com", "response": None}
    # Counted by its structured fields, its flagged texts dropped, under a redacted segment.
    leak_counted = copy.deepcopy(leak)
    leak_counted["segment"]["model_version"] = "[REDACTED]"
    # A schema error elsewhere does not let a flagged segment value through either.
    bad_leak = copy.deepcopy(events[3])
    bad_leak["refusal"]["style"] = "rude"
    bad_leak["segment"]["model_version"] = "ops@example.org"
    bad_leak_seen = copy.deepcopy(bad_leak)
    bad_leak_seen["segment"]["model_version"] = "[REDACTED]"
    records = [*events, bad, segment_bad, leak, bad_leak, b"not json"]
    halves = [_checked(records[:1600], 0), _checked(records[1600:], 1, first_offset=100)]
    counts = _count(halves)

    rows = {(a["window_start"], a["product_surface"], a["model_version"]): a
            for a in counts.aggregates}  # fmt: skip
    assert all(a[d] == "*" for a in counts.aggregates for d in ("locale", "feature"))
    checks = {
        "events": lambda e: True,
        "violations": lambda e: len(e["moderation"]["flagged_categories"]) > 0,
        "violations_hate": lambda e: "hate" in e["moderation"]["flagged_categories"],
        "blocks": lambda e: e["moderation"]["action"] == "block",
        "over_refusals": lambda e: (
            e["refusal"]["refused"] and not e["moderation"]["flagged_categories"]
        ),
        "injection_successes": lambda e: (
            e["injection"]["attempt_detected"] and e["injection"]["succeeded"]
        ),
        "unauthorized_tool_call_events": lambda e: (
            e["tool_calls"]["total"] > 0 and e["tool_calls"]["unauthorized"] > 0
        ),
        "appeal_overturns": lambda e: (
            e["feedback"]["appeal_overturned"]
            and (e["moderation"]["action"] == "block" or e["refusal"]["refused"])
        ),
    }
    for counter, predicate in checks.items():
        truth = _truth([*events, leak_counted], predicate)
        got = {k: r[counter] for k, r in rows.items() if r[counter]}
        assert got == dict(truth), counter

    seen = _truth([*events, bad, leak_counted, bad_leak_seen], lambda e: True)
    redacted = (_window(leak), leak["segment"]["product_surface"], "[REDACTED]")
    assert {k: r["events_seen"] for k, r in rows.items()} == dict(seen)
    assert all("example" not in k[2] for k in rows)
    incomplete = _truth([bad, bad_leak_seen], lambda e: True)
    assert {k: r["events_seen"] - r["telemetry_complete"] for k, r in rows.items()
            if r["events_seen"] != r["telemetry_complete"]} == dict(incomplete)  # fmt: skip
    assert {k: r["redaction_failures"] for k, r in rows.items() if r["redaction_failures"]} == {
        redacted: 1
    }

    by_status = Counter()
    for s in counts.stats:
        by_status[s["status"]] += s["rows"]
    assert by_status == Counter(aggregated=len(events) + 1, schema_violation=3, invalid_json=1)
    p1 = [s for s in counts.stats if s["partition"] == 1 and s["status"] == "aggregated"]
    # The last aggregated record of partition 1 is `leak`, two after the last clean event.
    assert (p1[0]["start_offset"], p1[0]["end_offset"]) == (100, 100 + len(events) + 2 - 1600)

    for key, r in rows.items():
        users = {e["user_id"] for e in [*events, leak_counted]
                 if _truth([e], lambda e: True).get(key)}  # fmt: skip
        if len(users) >= 20:
            # lg_k 12: relative standard error 1.6 %; 5 sigma.
            assert abs(estimate(r["users_sketch"]) - len(users)) <= 0.08 * len(users) + 1


def test_duplicates_are_not_counted_and_splits_do_not_matter():
    events = _events(1200, seed=2)
    whole = _count([_checked(events)])
    # The same records in 5 Arrow batches over 2 partitions, plus 40 marked duplicates.
    copies = [copy.deepcopy(e) for e in events[:40]]
    parts = [
        _checked(events[i : i + 250], partition=i // 600, first_offset=i)
        for i in range(0, 1200, 250)
    ]
    parts.append(_checked(copies, partition=3))
    split = _count(parts, duplicates=frozenset((3, i) for i in range(40)))

    def without_sketch(rows):
        return [{k: v for k, v in r.items() if k != "users_sketch"} for r in rows]

    assert without_sketch(split.aggregates) == without_sketch(whole.aggregates)
    # The union of the partitions' sketches estimates what one sketch of all users does.
    assert [estimate(r["users_sketch"]) for r in split.aggregates] == [
        estimate(r["users_sketch"]) for r in whole.aggregates
    ]
    assert split.histograms == whole.histograms
    assert sum(s["rows"] for s in split.stats if s["status"] == "duplicate") == 40


def test_slice_sums_count_each_minute_of_the_window_as_plain_python_does():
    # 1-minute slices of 5-minute windows: per window x segment, each bucket counter's sum
    # in each minute, against a direct count by event time; split over two partitions.
    events = _events(3000, seed=5)
    sliced = dataclasses.replace(COUNTING, slice_s=60)
    halves = [_checked(events[:1300], 0), _checked(events[1300:], 1, first_offset=50)]
    partials = [row for b in halves for p in partial_counts([b], sliced)
                for row in p.to_pylist()]  # fmt: skip
    counts = merge_partials(partials, sliced)
    predicates = {
        "events": lambda e: True,
        "violations": lambda e: len(e["moderation"]["flagged_categories"]) > 0,
        "refusals": lambda e: e["refusal"]["refused"],
        "injection_attempts": lambda e: e["injection"]["attempt_detected"],
    }
    for counter, predicate in predicates.items():
        truth: Counter = Counter()
        for e in events:
            if predicate(e):
                t = datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
                minute = int(t.timestamp()) % WINDOW // 60
                key = (_window(e), e["segment"]["product_surface"], e["segment"]["model_version"])
                truth[(*key, minute)] += 1
        got = Counter()
        for a in counts.aggregates:
            key = (a["window_start"], a["product_surface"], a["model_version"])
            values = a["slice_sums"].get(counter, [0] * 5)
            assert len(values) == 5 and sum(values) == a[counter]
            got.update({(*key, m): v for m, v in enumerate(values) if v})
        assert got == truth, counter
        if counter == "events":
            assert len({k[3] for k in truth}) == 5  # every minute of a window holds events
    # Without slices each row holds one slice: its counters.
    whole = _count(halves)
    for a in whole.aggregates:
        assert all(v == [a[c]] for c, v in a["slice_sums"].items())
    with pytest.raises(ValueError, match="must divide"):
        dataclasses.replace(COUNTING, slice_s=70)


@pytest.mark.parametrize(
    "sql",
    ["size(moderation.flagged_categories) >", "nope(moderation.action)", "refusal.refused AND"],
)
def test_unreadable_predicates_raise(sql):
    columns = Columns(_checked(_events(10, seed=1)).column("event"))
    with pytest.raises(ValueError, match="predicate"):
        SqlPredicate(sql)(columns)


def _sample(batches, sampling):
    """The sample rows the partial passes of `batches` (one list per partition) yield."""
    rows = [
        p
        for partition in batches
        for p in partial_counts(partition, COUNTING, sampling=sampling)
        if p.num_rows and p.column("kind")[0].as_py() == SAMPLE
    ]
    return sample_of(pa.Table.from_batches(rows), sampling.rows)


def test_quality_sample_is_the_smallest_hashes_of_parsed_records_whatever_the_split():
    events = _events(2000, seed=6)
    first = _checked([*events[:1000], b"not json", b"{}"] * 1, partition=0)
    second = _checked(events[1000:], partition=1, first_offset=50)
    sampling = Sampling(rows=300, seed=3)
    sample = _sample([[first], [second]], sampling)
    # Independent expectation: hash every parsed record directly, keep the 300 smallest.
    parsed = [(0, i, e) for i, e in enumerate(events[:1000])] + [
        (1, 50 + i, e) for i, e in enumerate(events[1000:])
    ]
    u = sample_hash(
        np.array([p for p, _, _ in parsed], np.int32),
        np.array([o for _, o, _ in parsed], np.int64),
        seed=3,
    )
    expected = [parsed[i][2]["event_id"] for i in np.argsort(u)[:300]]
    assert [e["event_id"] for e in sample.to_pylist()] == expected
    # The same records, cut into other Arrow batches, give the same sample.
    pieces = [first.slice(0, 7), first.slice(7, 500), first.slice(507)]
    again = _sample([pieces, [second.slice(0, 999), second.slice(999)]], sampling)
    assert again.to_pylist() == sample.to_pylist()
    # Fewer parsed records than asked for: all of them, the unparsed ones left out.
    small = _sample([[_checked([*events[:40], b"not json"])]], Sampling(rows=100, seed=3))
    assert sorted(e["event_id"] for e in small.to_pylist()) == sorted(
        e["event_id"] for e in events[:40]
    )
    # The hash is uniform on [0, 1): Kolmogorov-Smirnov against scipy's uniform.
    u = sample_hash(np.zeros(20000, np.int32), np.arange(20000), seed=11)
    assert kstest(u, "uniform").pvalue > 1e-3
    assert not np.array_equal(u, sample_hash(np.zeros(20000, np.int32), np.arange(20000), 12))


def test_allowed_public_contacts_are_not_redaction_failures():
    """A helpline in a refusal and a support address as a segment value, both allowed by the
    deployment, stay as they are; another number in the same places is still a hit."""
    allow = AllowList(values=("1-800-273-8255",), patterns=("support@[a-z]+[.]example[.]com",))
    counting = dataclasses.replace(COUNTING, allow=allow)
    checker = record_checker(CHECKER.limits, screen_pattern(), allow)
    events = _events(40, seed=4)
    helpline, other = copy.deepcopy(events[0]), copy.deepcopy(events[1])
    helpline["excerpts"] = {"prompt": "help", "response": "Please call 1-800-273-8255 now."}
    other["excerpts"] = {"prompt": "help", "response": "Please call 1-800-555-0199 now."}
    # Schema errors elsewhere: only the counting screen reads these segment values.
    support, personal = copy.deepcopy(events[2]), copy.deepcopy(events[3])
    for e, value in ((support, "support@help.example.com"), (personal, "jane@mail.example.com")):
        e["refusal"]["style"] = "rude"
        e["segment"]["model_version"] = value
    records = [helpline, other, support, personal]
    values = [json.dumps(e).encode() for e in records]
    n = len(values)
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["t"] * n), pa.array([0] * n, pa.int32()), pa.array(range(n), pa.int64()),
         pa.array([NOW] * n, pa.timestamp("us", tz="UTC")), pa.array(values, pa.binary())],
        schema=INPUT_SCHEMA,
    )  # fmt: skip
    checked = checker.check_batch(batch, watermark=None)
    assert checked.column("detectors").to_pylist() == [None, ["phone"], None, None]
    assert checked.column("reason").to_pylist() == [None, None, *["schema_violation"] * 2]
    rows = [row for p in partial_counts([checked], counting) for row in p.to_pylist()]
    counts = merge_partials(rows, counting)
    versions = {a["model_version"]: a for a in counts.aggregates}
    assert "support@help.example.com" in versions
    assert "jane@mail.example.com" not in versions and "[REDACTED]" in versions
    assert sum(a["redaction_failures"] for a in counts.aggregates) == 1
    assert sum(a["events"] for a in counts.aggregates) == 2


def test_the_job_counts_with_the_allow_list_of_its_settings(tmp_path):
    from pydantic import SecretStr

    from pipelines.settings import PrivacySettings, Settings, WarehouseSettings
    from pipelines.stream.batch import BatchProcessor
    from pipelines.warehouse.engine import make_engine
    from pipelines.warehouse.migrate import migrate
    from pipelines.warehouse.sink import WarehouseSink

    url = f"sqlite:///{tmp_path / 'wh.db'}"
    settings = Settings(
        warehouse=WarehouseSettings(url=SecretStr(url)),
        privacy=PrivacySettings(pii_allowed_values=("1-800-273-8255",)),
    )
    engine = make_engine(url)
    migrate(engine)
    try:
        job = BatchProcessor(WarehouseSink(engine), settings, log=lambda _m: None)
        allow = job.aggregator.counting.allow
        plain = BatchProcessor(
            WarehouseSink(engine),
            Settings(warehouse=WarehouseSettings(url=SecretStr(url))),
            log=lambda _m: None,
        ).aggregator.counting.allow
    finally:
        engine.dispose()
    assert (
        allow is not None and allow.allows("1-800-273-8255") and not allow.allows("1-800-555-0199")
    )
    assert plain is None


def test_values_beyond_the_limit_fold_on_the_executors_as_on_the_driver():
    """Cardinality control in the partitions (ValueLimits) ends in the same rows as folding
    the unbounded counts on the driver (pipelines.cardinality), and no partition
    sends more than its room of new values."""
    events = _events(1500, seed=21)
    rng = random.Random(3)
    weights = [1 / (i + 1) for i in range(60)]
    for e in events:
        e["segment"]["model_version"] = f"v{rng.choices(range(60), weights)[0]:02d}"
    parts = [_checked(events[:700], 0), _checked(events[700:], 1, first_offset=700)]
    limits = {"product_surface": 100, "model_version": 5}
    admitted = {"product_surface": set(), "model_version": {"v07"}}  # from earlier batches

    # Reference: count everything, then admit and fold on the driver.
    sliced = dataclasses.replace(COUNTING, slice_s=60)
    whole = _count(parts, counting=sliced)
    truth_values = Counter()
    for a in whole.aggregates:
        truth_values[a["model_version"]] += a["events_seen"]
    allowed, admissions = admit(admitted, value_counts(whole.aggregates, DIMS, "events_seen"),
                                limits)  # fmt: skip
    reference = fold(whole.aggregates, allowed, SEGMENT_KEY, add=counter_ids(),
                     merge={"users_sketch": lambda s: None,
                            "bucket_sums": lambda s: add_counter_buckets(*s),
                            "slice_sums": lambda s: add_counter_buckets(*s)})  # fmt: skip

    def counted(values):
        by = dataclasses.replace(sliced, values=values)
        partials = [[r for p in partial_counts([b], by) for r in p.to_pylist()] for b in parts]
        return by, partials

    keep = {d: frozenset(admitted[d]) for d in DIMS}
    room = {d: limits[d] - len(keep[d]) for d in DIMS}
    by, partials = counted(ValueLimits(tuple(keep.items()), tuple(room.items())))
    for rows in partials:  # bounded: admitted values, `room` new ones, and other
        versions = {r["segment"][1] for r in rows if r["kind"] == "window"}
        assert len(versions - keep["model_version"] - {"other"}) <= room["model_version"]
    first = merge_partials([r for rows in partials for r in rows], by)
    # The new values' counts are exact, whatever the partitions folded.
    assert first.new_values["model_version"] == {
        v: n for v, n in truth_values.items() if v not in keep["model_version"]
    }
    assert (allowed, admissions) == admit(admitted, first.new_values, limits)
    assert any(v in allowed[d] for d, v in first.folded)  # this input needs the recount
    final_by, final_partials = counted(
        ValueLimits(tuple((d, allowed[d]) for d in DIMS), final=True)
    )
    final = merge_partials([r for rows in final_partials for r in rows], final_by)

    def by_key(rows):
        return {
            (r["window_start"], r["product_surface"], r["model_version"]):
            {c: r[c] for c in COUNTERS} for r in rows
        }  # fmt: skip

    assert by_key(final.aggregates) == by_key(reference)

    def sums_of(rows, column):
        return {
            (r["window_start"], r["product_surface"], r["model_version"]):
            {c: list(v) for c, v in r[column].items()} for r in rows
        }  # fmt: skip

    for column in ("bucket_sums", "slice_sums"):  # merged when rows fold, as the job does
        assert sums_of(final.aggregates, column) == sums_of(reference, column), column
    assert {a["model_version"] for a in final.aggregates} == {*allowed["model_version"], "other"}
