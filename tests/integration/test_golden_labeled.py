"""Golden test: real, human-labeled data sets streamed through Kafka and Spark give rates that
equal their labels exactly.

The events come from `pipelines.synth.labeled` (one event per labeled row, segments fixed per
source). The expectations are computed here straight from the raw files in tests/data with
plain csv/json reading, independently of the builder and of the Spark SQL predicates.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from scipy.stats import binomtest
from sqlalchemy import func, select

from pipelines.kafka.admin import ensure_topics
from pipelines.kafka.producer import produce_events
from pipelines.metrics.catalog import RATES, rate_value
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.synth.labeled import labeled_events
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.queries import aggregate_rows
from pipelines.warehouse.tables import Tables
from tests.integration.streaming_support import make_settings, run_job

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
DIMENSIONS = ("product_surface", "feature", "model_version")
XSTEST_MODELS = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
OPENAI_KEYS = {
    "S": "sexual",
    "H": "hate",
    "V": "violence",
    "HR": "harassment",
    "SH": "self_harm",
    "S3": "sexual_minors",
    "H2": "hate",
    "V2": "violence",
}


def _truth() -> dict[tuple[str, str, str], Counter]:
    """Segment -> expected counters, from the raw label files."""
    truth: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    with open(DATA / "xstest" / "xstest_prompts.csv", newline="") as f:
        prompt_labels = [r["label"] for r in csv.DictReader(f)]
    for model in XSTEST_MODELS:
        path = DATA / "xstest" / "model_completions" / f"xstest_v2_completions_{model}.csv.gz"
        with gzip.open(path, "rt", newline="") as f:
            for i, r in enumerate(csv.DictReader(f)):
                t = truth["chat", f"xstest-{prompt_labels[i]}", model]
                refused = r["final_label"] in ("2_full_refusal", "3_partial_refusal")
                t["events"] += 1
                t["unflagged_events"] += 1
                t["refusals"] += refused
                t["over_refusals"] += refused
    with open(DATA / "jailbreakbench" / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            t = truth["redteam", r["method"], r["model"]]
            t["events"] += 1
            t["unflagged_events"] += 1
            t["jailbreak_attempts"] += 1
            t["jailbreak_successes"] += r["jailbroken"] == "true"
            t["refusals"] += r["jailbroken"] != "true"
            t["over_refusals"] += r["jailbroken"] != "true"
    with gzip.open(DATA / "openai_moderation" / "samples-1680.jsonl.gz", "rt") as f:
        for line in f:
            row = json.loads(line)
            if not all(k in row for k in OPENAI_KEYS):
                continue  # a missing key means unknown, not 0
            t = truth["moderation-eval", "openai-moderation", "n/a"]
            flagged = {cat for k, cat in OPENAI_KEYS.items() if row[k] == 1}
            t["events"] += 1
            t["violations"] += bool(flagged)
            t["unflagged_events"] += not flagged
            for cat in flagged:
                t[f"violations_{cat}"] += 1
    for split in ("train", "test"):
        with open(DATA / "deepset_prompt_injections" / f"{split}.jsonl") as f:
            for line in f:
                t = truth["agent", "deepset-injections", "n/a"]
                t["events"] += 1
                t["unflagged_events"] += 1
                t["injection_attempts"] += json.loads(line)["label"] == 1
    path = DATA / "jailbreak_classification" / "jailbreak_dataset_full.csv.gz"
    with gzip.open(path, "rt", newline="") as f:
        for r in csv.DictReader(io.StringIO(f.read())):
            t = truth["chat", "jailbreak-classification", "n/a"]
            t["events"] += 1
            t["unflagged_events"] += 1
            t["jailbreak_attempts"] += r["type"] == "jailbreak"
    return truth


@pytest.fixture(scope="module")
def golden(spark, kafka_broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    topic = f"golden.{tmp.name}"
    ensure_topics(kafka_broker.kafka, [topic])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    events = labeled_events(DATA, start=now - timedelta(hours=3), spacing=timedelta(seconds=1))
    produce_events(kafka_broker.kafka, topic, events)
    url = f"sqlite:///{tmp / 'wh.db'}"
    settings = make_settings(
        kafka_broker.kafka,
        topic,
        tmp / "ckpt",
        url,
        max_offsets=len(events),  # one batch: the windows its watermark closes get drift
        watermark="10 minutes",
        dimensions=DIMENSIONS,
    )
    summary = run_job(spark, settings)
    return make_engine(url), events, summary


def _segment_totals(engine) -> dict[tuple[str, str, str], dict[str, int]]:
    totals: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    for row in aggregate_rows(engine, dimension_set=",".join(DIMENSIONS)):
        key = tuple(row[d] for d in DIMENSIONS)
        for c in {c for r in RATES for c in (r.numerator, r.denominator)}:
            totals[key][c] += row[c]
    return {k: dict(v) for k, v in totals.items()}


def test_every_labeled_row_is_aggregated_once(golden):
    engine, events, summary = golden
    assert summary.input_rows == len(events) == 7465
    assert summary.aggregated_rows == len(events)


def test_rates_per_segment_equal_the_labels_ground_truth(golden):
    engine, _, _ = golden
    truth = _truth()
    got = _segment_totals(engine)
    assert set(got) == set(truth)
    for segment, expected in truth.items():
        for counter in ("events", *expected):
            assert got[segment][counter] == expected[counter], (segment, counter)
        # Counters the labels say nothing about stay zero (nothing invented on the way).
        for counter in ("blocks", "pii_outputs", "tool_call_events", "injection_successes"):
            assert got[segment][counter] == 0, (segment, counter)


def test_published_jailbreakbench_success_rates_are_reproduced(golden):
    engine, _, _ = golden
    got = _segment_totals(engine)
    with open(DATA / "jailbreakbench" / "labels.csv", newline="") as f:
        published = {
            (r["method"], r["model"]): r["published_attack_success_rate"] for r in csv.DictReader(f)
        }
    for (method, model), rate in published.items():
        value = rate_value("jailbreak_success_rate", got["redteam", method, model])
        assert value.value == pytest.approx(float(rate), abs=1e-12), (method, model)
        ci = binomtest(value.numerator, value.denominator).proportion_ci(method="wilson")
        assert (value.lower, value.upper) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_histograms_hold_the_labels(golden):
    engine, _, _ = golden
    t = Tables(engine).hist
    truth = _truth()
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                t.c.product_surface,
                t.c.feature,
                t.c.model_version,
                t.c.distribution,
                t.c.bin,
                func.sum(t.c["count"]),
            ).group_by(
                t.c.product_surface, t.c.feature, t.c.model_version, t.c.distribution, t.c.bin
            )
        ).all()
    hist: dict[tuple, dict[int, int]] = defaultdict(dict)
    for surface, feature, model, dist, b, n in rows:
        hist[surface, feature, model, dist][b] = n
    openai = ("moderation-eval", "openai-moderation", "n/a")
    for cat in ("sexual", "hate", "violence", "harassment", "self_harm", "sexual_minors"):
        # Score 1.0 for a flagged category, 0.0 otherwise: only the first and last bins.
        flagged = truth[openai][f"violations_{cat}"]
        expected = {0: truth[openai]["events"] - flagged, 19: flagged}
        assert hist[(*openai, f"score_{cat}")] == {b: n for b, n in expected.items() if n}
    for segment, expected in truth.items():
        outcome = hist[(*segment, "outcome")]
        assert sum(outcome.values()) == expected["events"]
        # Every distribution counts each event once (flagged_category: once per category).
        for d in DISTRIBUTIONS:
            total = sum(hist[(*segment, d.id)].values())
            if d.kind == "multi":
                assert total >= expected["events"]
            else:
                assert total == expected["events"], (segment, d.id)


def test_drift_is_computed_for_every_closed_window_and_segment(golden):
    engine, events, summary = golden
    tables = Tables(engine)
    last_event = datetime.fromisoformat(events[-1]["event_time"].replace("Z", "+00:00"))
    watermark = last_event - timedelta(minutes=10)
    with engine.connect() as conn:
        agg = conn.execute(
            select(
                tables.agg.c.window_start,
                tables.agg.c.window_end,
                tables.agg.c.product_surface,
                tables.agg.c.feature,
                tables.agg.c.model_version,
            )
        ).all()
        drift = Counter(
            tuple(r)
            for r in conn.execute(
                select(
                    tables.drift.c.window_start,
                    tables.drift.c.product_surface,
                    tables.drift.c.feature,
                    tables.drift.c.model_version,
                )
            )
        )
        tests = Counter(
            tuple(r)
            for r in conn.execute(
                select(
                    tables.rate_tests.c.window_start,
                    tables.rate_tests.c.product_surface,
                    tables.rate_tests.c.feature,
                    tables.rate_tests.c.model_version,
                )
            )
        )
    closed = {(w, *seg) for w, end, *seg in agg if end.replace(tzinfo=UTC) <= watermark}
    assert closed, "the batch's watermark closed no window"
    assert set(drift) == closed and set(tests) == closed
    assert set(drift.values()) == {len(DISTRIBUTIONS)}
    assert set(tests.values()) == {len(RATES)}
    assert sum(d.drift_windows for d in summary.derived) == len({k[0] for k in closed})
    assert len(summary.derived) == len(summary.batches)  # every batch derived, once
