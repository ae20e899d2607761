"""The synthetic generator: contract, determinism, base rates, scenarios and consistency.

The two large samples are generated once per module and reduced, event by event, to compact
rows (plus the consistency failures and a subset of full events to validate), so that a few
hundred thousand events take seconds and little memory.
"""

from __future__ import annotations

import gc
import math
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from pipelines.contract.validate import validate_event
from pipelines.privacy.pseudonym import is_pseudonym
from pipelines.synth import (
    SCENARIOS,
    BaseRates,
    Effect,
    Scenario,
    describe_scenarios,
    generate_events,
)
from pipelines.synth import labels as event_labels
from pipelines.synth.generator import CATEGORIES, uuid4_str
from pipelines.synth.population import FEATURE_KINDS

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
RATES = BaseRates()
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_PII_RE = re.compile(r"[\w.+-]+@[\w-]+\.\w+|\d{6,}|\d{3}[ -]\d{3}[ -]\d{3,4}")

Event = dict[str, Any]


def inconsistencies(e: Event) -> list[str]:
    """The invariants documented in pipelines.synth.generator that `e` breaks ([] if none).

    Plain expressions rather than asserts: pytest's assert rewriting would make this, run on
    every one of ~350k events, several times slower.
    """
    mod = e["moderation"]
    flagged = mod["flagged_categories"]
    scores = mod["scores"]
    action = mod["action"]
    outcome = e["request"]["outcome"]
    refused, style = e["refusal"]["refused"], e["refusal"]["style"]
    inj, jb = e["injection"], e["jailbreak"]
    calls = e["tool_calls"]
    blocked, unauthorized = calls["blocked"], calls["unauthorized"]
    privacy = e["privacy"]
    texts = [t for t in e.get("excerpts", {}).values() if t is not None]
    checks = {
        "categories unique": len(set(flagged)) == len(flagged),
        "flagged iff score >= 0.5": {c for c in CATEGORIES if scores[c] >= 0.5} == set(flagged),
        "allow iff nothing flagged": (action == "allow") == (not flagged),
        "block iff outcome blocked": (action == "block") == (outcome == "blocked"),
        "redact iff only privacy": (action == "redact") == (flagged == ["privacy"]),
        "refused iff outcome says so": refused == (outcome in ("refused", "safe_completion")),
        "style none iff not refused": (style == "none") == (not refused),
        "partial iff safe_completion": (style == "partial") == (outcome == "safe_completion"),
        "violations are not refusals": not (flagged and refused),
        "source None iff no attempt": (inj["source"] is None) == (not inj["attempt_detected"]),
        "injection success => attempt": not inj["succeeded"] or inj["attempt_detected"],
        "injection score >= 0.6 iff attempt": (inj["score"] >= 0.6) == inj["attempt_detected"],
        "jailbreak success => attempt": not jb["succeeded"] or jb["attempt"],
        "blocked + unauthorized <= total": blocked + unauthorized <= calls["total"],
        "tool calls only on agents": calls["total"] == 0
        or FEATURE_KINDS[e["segment"]["feature"]] == "agent",
        "redaction applied": privacy["redaction_applied"] is True,
        "redactor version": bool(privacy["redactor_version"]),
        "entity counts >= 1": all(v >= 1 for v in privacy["entity_counts"].values()),
        "pii => entities": not privacy["pii_detected_in_output"] or bool(privacy["entity_counts"]),
        "appeal => blocked or refused": not e["feedback"]["appeal_overturned"]
        or action == "block"
        or refused,
        "excerpts hold no PII": not any(_PII_RE.search(t) for t in texts),
    }
    return [name for name, ok in checks.items() if not ok]


@dataclass(frozen=True, slots=True)
class Row:
    """What the rate tests need of one event; segment dicts and label sets are shared."""

    event_id: str
    event_time: str
    fraction: float
    ids: tuple[str, str, str]  # tenant, user, session
    segment: dict[str, str]
    true: frozenset[str]  # the labels() keys that are true
    flagged: tuple[str, ...]
    source: str | None  # of the injection
    outcome: str
    appeal: bool
    excerpts: bool
    latency_ms: float


@dataclass
class Sample:
    rows: list[Row] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    noteworthy: list[Event] = field(default_factory=list)  # every 8th event with a true label


def _reduce(events: Iterator[Event]) -> Sample:
    # The cyclic GC would rescan the growing sample over and over (halving the speed); the
    # rows hold no reference cycles.
    gc.disable()
    try:
        return _reduce_all(events)
    finally:
        gc.enable()


def _reduce_all(events: Iterator[Event]) -> Sample:
    sample = Sample()
    segments: dict[tuple[str, ...], dict[str, str]] = {}
    truths: dict[frozenset[str], frozenset[str]] = {}
    n_noteworthy = 0
    for e in events:
        broken = inconsistencies(e)
        if broken:
            sample.inconsistent.append(f"{broken}: {e}")
        true = frozenset(k for k, v in event_labels(e).items() if v)
        if true or "excerpts" in e:
            n_noteworthy += 1
            if n_noteworthy % 8 == 0:
                sample.noteworthy.append(e)
        seg = segments.setdefault(tuple(e["segment"].values()), e["segment"])
        sample.rows.append(
            Row(
                event_id=e["event_id"],
                event_time=e["event_time"],
                fraction=(datetime.fromisoformat(e["event_time"]) - START) / HOUR,
                ids=(e["tenant_id"], e["user_id"], e["session_id"]),
                segment=seg,
                true=truths.setdefault(true, true),
                flagged=tuple(e["moderation"]["flagged_categories"]),
                source=e["injection"]["source"],
                outcome=e["request"]["outcome"],
                appeal=e["feedback"]["appeal_overturned"],
                excerpts="excerpts" in e,
                latency_ms=e["request"]["latency_ms"],
            )
        )
    return sample


@pytest.fixture(scope="module")
def base() -> Sample:
    """~200k events of one hour without scenarios."""
    return _reduce(generate_events(seed=7, start=START, duration=HOUR, rate_per_s=56))


@pytest.fixture(scope="module")
def scen() -> Sample:
    """~90k events of one hour with every scenario on (they target different segments)."""
    scenarios = tuple(SCENARIOS)
    return _reduce(
        generate_events(seed=11, start=START, duration=HOUR, rate_per_s=25, scenarios=scenarios)
    )


def assert_binomial(
    name: str, rows: Iterable[Row], label: str, prob: Callable[[Row], float]
) -> None:
    """The count of `label` lies within 4 sigma of a sum of independent Bernoulli(prob)."""
    observed, mean, var = 0, 0.0, 0.0
    for r in rows:
        p = prob(r)
        observed += label in r.true
        mean += p
        var += p * (1 - p)
    band = 4 * math.sqrt(var) + 1
    assert abs(observed - mean) <= band, f"{name}: {observed} observed, {mean:.1f}±{band:.1f}"


# Base probabilities, recomputed from BaseRates by the rules stated in its docstring.
def p_violation(r: Row) -> float:
    if "jailbreak_success" in r.true:
        return RATES.violation_given_jailbreak
    return RATES.harmful_output


def p_refusal(r: Row) -> float:
    if "jailbreak_attempt" in r.true and "jailbreak_success" not in r.true:
        return RATES.refusal_given_jailbreak
    factor = RATES.regulated_refusal_factor if r.segment["risk_tier"] == "regulated" else 1.0
    return RATES.refusal * factor


def p_injection(r: Row) -> float:
    kind = FEATURE_KINDS[r.segment["feature"]]
    rates = {
        "plain": RATES.injection_attempt,
        "rag": RATES.injection_attempt_rag,
        "agent": RATES.injection_attempt_agent,
    }
    return rates[kind]


def p_pii(r: Row) -> float:
    return RATES.pii_in_output


def p_report(r: Row) -> float:
    if "violation" in r.true:
        return RATES.user_report_given_violation
    return RATES.user_report


def const(p: float) -> Callable[[Row], float]:
    return lambda r: p


def non_violating(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if not r.flagged]


def where(rows: Iterable[Row], label: str) -> list[Row]:
    return [r for r in rows if label in r.true]


# --- contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_event_of_an_hour_is_valid(seed: int) -> None:
    scenarios = tuple(SCENARIOS)
    events = list(
        generate_events(seed=seed, start=START, duration=HOUR, rate_per_s=0.3, scenarios=scenarios)
    )
    assert len(events) > 900
    for e in events:
        assert validate_event(e) == [], e
        assert inconsistencies(e) == [], e
        assert all(is_pseudonym(e[k]) for k in ("tenant_id", "user_id", "session_id"))
        assert TIME_RE.match(e["event_time"])
    times = [datetime.fromisoformat(e["event_time"]) for e in events]
    assert times == sorted(times)
    assert START <= times[0] and times[-1] < START + HOUR
    assert all(t.utcoffset() == timedelta(0) for t in times)


def test_noteworthy_events_of_the_scenarios_are_valid(scen: Sample) -> None:
    assert len(scen.noteworthy) > 1000
    for e in scen.noteworthy:
        assert validate_event(e) == [], e


def test_large_samples_are_ordered_in_range_and_pseudonymous(base: Sample, scen: Sample) -> None:
    for sample in (base, scen):
        stamps = [r.event_time for r in sample.rows]
        assert stamps == sorted(stamps)  # one fixed format, so string order is time order
        assert 0 <= sample.rows[0].fraction and sample.rows[-1].fraction < 1
        assert len({r.event_id for r in sample.rows}) == len(sample.rows)
        assert all(is_pseudonym(i) for r in sample.rows[::50] for i in r.ids)


def test_event_ids_are_version_4_uuids_of_the_rng_bits() -> None:
    rng = random.Random(0)
    for _ in range(10_000):
        bits = rng.getrandbits(128)
        assert uuid4_str(bits) == str(uuid.UUID(int=bits, version=4))


def test_sub_millisecond_start_stays_in_range() -> None:
    start = datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)
    two_s = timedelta(seconds=2)
    events = list(generate_events(seed=5, start=start, duration=two_s, rate_per_s=2000))
    assert len(events) > 3000
    assert all(start <= datetime.fromisoformat(e["event_time"]) < start + two_s for e in events)


def test_arrivals_are_poisson_at_the_rate() -> None:
    n = sum(1 for _ in generate_events(seed=9, start=START, duration=HOUR, rate_per_s=5))
    assert abs(n - 18_000) <= 4 * math.sqrt(18_000)


# --- determinism and arguments ------------------------------------------------------------


def test_same_seed_same_events_other_seed_other_events() -> None:
    def run(seed: int, key: bytes = b"k1") -> list[Event]:
        return list(
            generate_events(
                seed=seed,
                start=START,
                duration=timedelta(minutes=10),
                rate_per_s=5.0,
                scenarios=("pii-leak",),
                key=key,
            )
        )

    first = run(3)
    assert first == run(3)
    other = run(4)
    assert other != first
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in other}
    rekeyed = run(3, key=b"k2")
    assert [e["event_id"] for e in rekeyed] == [e["event_id"] for e in first]
    assert not {e["user_id"] for e in first} & {e["user_id"] for e in rekeyed}


@pytest.mark.parametrize(
    "start",
    [datetime(2026, 11, 23, 10), datetime(2026, 11, 23, 10, tzinfo=timezone(timedelta(hours=1)))],
)
def test_start_must_be_utc(start: datetime) -> None:
    with pytest.raises(ValueError, match="UTC"):
        generate_events(seed=1, start=start, duration=HOUR, rate_per_s=1)


def test_bad_arguments_raise_eagerly() -> None:
    with pytest.raises(ValueError, match="injection-campaign"):
        generate_events(seed=1, start=START, duration=HOUR, rate_per_s=1, scenarios=["nope"])
    with pytest.raises(ValueError, match="duration"):
        generate_events(seed=1, start=START, duration=timedelta(0), rate_per_s=1)
    with pytest.raises(ValueError, match="rate_per_s"):
        generate_events(seed=1, start=START, duration=HOUR, rate_per_s=0)


def test_describe_scenarios_names_each_one() -> None:
    text = describe_scenarios()
    assert all(name in text for name in SCENARIOS)


# --- population and segments --------------------------------------------------------------


def test_population_and_segments_are_realistic(base: Sample) -> None:
    rows = base.rows
    triples = Counter(
        (r.segment["product_surface"], r.segment["model_version"], r.segment["locale"])
        for r in rows
    )
    assert 20 <= len(triples) <= 40
    assert max(triples.values()) > 10 * min(triples.values())  # skewed
    versions_per_surface = Counter(s for s, _ in {(s, v) for s, v, _ in triples})
    assert max(versions_per_surface.values()) >= 2
    assert {r.segment["risk_tier"] for r in rows} == {"internal", "beta", "ga", "regulated"}
    assert 30 <= len({r.ids[0] for r in rows}) <= 40
    assert 2000 <= len({r.ids[1] for r in rows}) <= 3000
    assert 3 <= len(rows) / len({r.ids[2] for r in rows}) <= 5  # events per session
    sticky: dict[str, set[tuple[str, ...]]] = {}
    for r in rows:
        s = r.segment
        attrs = (r.ids[0], s["locale"], s["region"], s["user_cohort"], s["client"])
        sticky.setdefault(r.ids[1], set()).add(attrs)
    assert all(len(v) == 1 for v in sticky.values())
    latencies = sorted(r.latency_ms for r in rows)
    p50, p99 = latencies[len(latencies) // 2], latencies[int(0.99 * len(latencies))]
    assert 600 <= p50 <= 1000 and p99 > 3 * p50


# --- base rates -------------------------------------------------------------------------


def test_headline_rates_are_those_of_the_kpi_doc(base: Sample) -> None:
    n = len(base.rows)
    total = Counter(label for r in base.rows for label in r.true)
    assert 0.001 <= total["violation"] / n <= 0.003
    assert 0.03 <= total["refused"] / n <= 0.05
    assert 0.005 <= total["injection_attempt"] / n <= 0.015
    assert 0.02 <= total["injection_success"] / total["injection_attempt"] <= 0.05
    assert 0.003 <= total["jailbreak_attempt"] / n <= 0.007
    assert total["jailbreak_success"] / total["jailbreak_attempt"] <= 0.07
    assert 0.02 <= sum(r.excerpts for r in base.rows) / n <= 0.08


def test_base_rates_follow_baserates(base: Sample) -> None:
    rows = base.rows
    assert_binomial("violation", rows, "violation", p_violation)
    assert_binomial("refused", non_violating(rows), "refused", p_refusal)
    assert_binomial("injection", rows, "injection_attempt", p_injection)
    assert_binomial(
        "injection success",
        where(rows, "injection_attempt"),
        "injection_success",
        const(RATES.injection_success),
    )
    assert_binomial("jailbreak", rows, "jailbreak_attempt", const(RATES.jailbreak_attempt))
    assert_binomial(
        "jailbreak success",
        where(rows, "jailbreak_attempt"),
        "jailbreak_success",
        const(RATES.jailbreak_success),
    )
    assert_binomial("pii", rows, "pii_in_output", p_pii)
    assert_binomial("user report", rows, "user_report", p_report)
    blockable = [r for r in rows if r.flagged and r.flagged != ("privacy",)]
    assert_binomial("blocked", blockable, "blocked", const(RATES.block_given_violation))
    answered = [r for r in non_violating(rows) if "refused" not in r.true]
    errors = sum(r.outcome == "error" for r in answered)
    mean = RATES.error * len(answered)
    assert abs(errors - mean) <= 4 * math.sqrt(mean * (1 - RATES.error)) + 1
    appealable = [r for r in rows if {"blocked", "refused"} & r.true]
    appeals = sum(r.appeal for r in appealable)
    mean = RATES.appeal_overturned * len(appealable)
    assert abs(appeals - mean) <= 4 * math.sqrt(mean) + 1
    assert not any(r.appeal for r in rows if not {"blocked", "refused"} & r.true)


# --- scenarios --------------------------------------------------------------------------

# scenario -> (rows the metric is measured on, label, base probability, effect probability)
_Check = tuple[Callable[[list[Row]], list[Row]], str, Callable[[Row], float], float]
_CHECKS: dict[str, _Check] = {
    "violation-spike": (list, "violation", p_violation, 0.09),
    "injection-campaign": (list, "injection_attempt", p_injection, 0.2),
    "refusal-jump": (non_violating, "refused", p_refusal, 0.15),
    "pii-leak": (list, "pii_in_output", p_pii, 0.03),
}


def split(rows: list[Row], s: Scenario) -> tuple[list[Row], list[Row]]:
    """Rows inside (target segment and time range) and outside the scenario."""
    inside, outside = [], []
    for r in rows:
        if min(abs(r.fraction - s.start_fraction), abs(r.fraction - s.end_fraction)) < 1e-3:
            continue  # within a few seconds of a boundary: could be on either side
        (inside if s.matches(r.segment) and s.active_at(r.fraction) else outside).append(r)
    return inside, outside


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_raises_its_metric_only_in_target_and_range(name: str, scen: Sample) -> None:
    scenario = SCENARIOS[name]
    select, label, p_base, p_effect = _CHECKS[name]
    assert scenario.metric == label
    inside, outside = split(select(scen.rows), scenario)
    assert len(inside) >= 500
    observed = sum(label in r.true for r in inside) / len(inside)
    base_rate = sum(p_base(r) for r in inside) / len(inside)
    # 15 % refusals against a ~3.5 % base is "only" 4x; the others are far above 5x.
    assert observed > (3 if name == "refusal-jump" else 5) * base_rate
    assert_binomial(f"{name} inside", inside, label, const(p_effect))
    # Everywhere else the metric stays at base: other segments, and the target off-time.
    assert_binomial(f"{name} outside", outside, label, p_base)
    off_time = [r for r in outside if scenario.matches(r.segment)]
    assert_binomial(f"{name} target off-time", off_time, label, p_base)


def test_scenario_details(scen: Sample) -> None:
    spike, _ = split(scen.rows, SCENARIOS["violation-spike"])
    flagged = [r.flagged for r in spike if r.flagged]
    assert sum("violence" in f for f in flagged) >= 0.6 * len(flagged)

    campaign, _ = split(scen.rows, SCENARIOS["injection-campaign"])
    attempts = where(campaign, "injection_attempt")
    assert {r.source for r in attempts} == {"retrieved_content", "tool_output"}
    assert_binomial("campaign success", attempts, "injection_success", const(0.15))

    jump = SCENARIOS["refusal-jump"]
    new = jump.effect.new_model_version
    for r in scen.rows:
        if r.segment["product_surface"] != "api":
            assert r.segment["model_version"] != new
        elif r.fraction >= jump.start_fraction + 1e-3:
            assert r.segment["model_version"] == new
        elif r.fraction < jump.start_fraction - 1e-3:
            assert r.segment["model_version"] != new


# --- consistency ------------------------------------------------------------------------


def test_every_event_is_consistent(base: Sample, scen: Sample) -> None:
    assert base.inconsistent == []
    assert scen.inconsistent == []


def test_labels_read_the_fields() -> None:
    events = generate_events(seed=2, start=START, duration=timedelta(minutes=10), rate_per_s=30)
    for e in events:
        got = event_labels(e)
        assert got == {
            "violation": len(e["moderation"]["flagged_categories"]) > 0,
            "refused": e["refusal"]["refused"],
            "injection_attempt": e["injection"]["attempt_detected"],
            "injection_success": e["injection"]["succeeded"],
            "jailbreak_attempt": e["jailbreak"]["attempt"],
            "jailbreak_success": e["jailbreak"]["succeeded"],
            "blocked": e["moderation"]["action"] == "block",
            "pii_in_output": e["privacy"]["pii_detected_in_output"],
            "user_report": e["feedback"]["user_report"],
        }


def test_rates_and_scenarios_are_checked() -> None:
    with pytest.raises(ValueError, match="harmful_output"):
        BaseRates(harmful_output=1.5)
    with pytest.raises(ValueError, match="tool_calls_mean"):
        BaseRates(tool_calls_mean=0.5)
    with pytest.raises(ValueError, match="start_fraction"):
        Scenario("x", "x", {}, 0.7, 0.5, "violation", Effect())


def test_rates_can_be_overridden() -> None:
    rates = BaseRates(harmful_output=0.05)
    events = generate_events(
        seed=4, start=START, duration=timedelta(minutes=10), rate_per_s=20, rates=rates
    )
    rows = _reduce(events).rows
    assert_binomial(
        "violation",
        rows,
        "violation",
        lambda r: (
            rates.violation_given_jailbreak
            if "jailbreak_success" in r.true
            else rates.harmful_output
        ),
    )
