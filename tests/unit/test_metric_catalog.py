"""The metric catalog is consistent with itself, the event contract and the warehouse schema."""

import json
import math
from pathlib import Path

import pytest
import sqlalchemy as sa
from scipy.stats import binomtest

from pipelines.metrics import buckets, catalog
from pipelines.metrics.catalog import EVENT_COUNTERS, QUANTILES, RATES, TELEMETRY_COUNTERS
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate

CONTRACT = Path(__file__).resolve().parents[2] / "schemas" / "interaction_event" / "v1.json"
ALL_COUNTERS = (*EVENT_COUNTERS, *TELEMETRY_COUNTERS)
COUNTER_IDS = {c.id for c in ALL_COUNTERS}
PREDICATES = {c.id: c.predicate for c in ALL_COUNTERS}


def _contract_categories() -> list[str]:
    schema = json.loads(CONTRACT.read_text(encoding="utf-8"))
    moderation = schema["properties"]["moderation"]["properties"]
    return list(moderation["flagged_categories"]["items"]["enum"])


# --- ids and references ----------------------------------------------------------------------


def test_counter_ids_are_unique_across_event_and_telemetry_counters():
    ids = [c.id for c in ALL_COUNTERS]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert duplicates == []
    assert len(ids) == len(EVENT_COUNTERS) + len(TELEMETRY_COUNTERS)


def test_rate_ids_are_unique():
    ids = [r.id for r in RATES]
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


def test_quantile_ids_are_unique():
    ids = [q.id for q in QUANTILES]
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


def test_counter_id_helpers_list_every_counter_in_order():
    assert catalog.event_counter_ids() == tuple(c.id for c in EVENT_COUNTERS)
    assert catalog.telemetry_counter_ids() == tuple(c.id for c in TELEMETRY_COUNTERS)
    assert catalog.counter_ids() == tuple(c.id for c in ALL_COUNTERS)


@pytest.mark.parametrize("r", RATES, ids=lambda r: r.id)
def test_rate_numerator_and_denominator_are_counters(r):
    assert r.numerator in COUNTER_IDS
    assert r.denominator in COUNTER_IDS
    assert r.numerator != r.denominator


def test_rates_mix_no_event_and_telemetry_counters():
    # A telemetry counter counts rejected records too; dividing it by an event counter (or
    # the reverse) would not be a proportion of one population.
    event_ids = {c.id for c in EVENT_COUNTERS}
    for r in RATES:
        assert (r.numerator in event_ids) == (r.denominator in event_ids), r.id


@pytest.mark.parametrize("q", QUANTILES, ids=lambda q: q.id)
def test_quantile_distribution_exists_and_is_numeric(q):
    by_id = {d.id: d for d in DISTRIBUTIONS}
    assert q.distribution in by_id
    assert by_id[q.distribution].kind == "numeric"
    assert 0.0 <= q.q <= 1.0


def test_event_counters_have_predicates_and_telemetry_counters_none():
    for c in EVENT_COUNTERS:
        assert isinstance(c.predicate, str), c.id
        assert c.predicate.strip(), c.id
    for c in TELEMETRY_COUNTERS:
        assert c.predicate is None, c.id


# --- per-category metrics follow the contract ------------------------------------------------


def test_one_violation_counter_per_contract_category():
    categories = _contract_categories()
    assert categories  # the schema really has the enum
    per_category = sorted(
        c.id for c in ALL_COUNTERS if c.id.startswith("violations_") and c.id != "violations"
    )
    assert per_category == sorted(f"violations_{c}" for c in categories)
    for c in categories:
        assert PREDICATES[f"violations_{c}"] == (
            f"array_contains(moderation.flagged_categories, '{c}')"
        )


def test_one_violation_rate_per_contract_category():
    categories = _contract_categories()
    per_category = {r.id: r for r in RATES if r.id.startswith("violation_rate_")}
    assert sorted(per_category) == sorted(f"violation_rate_{c}" for c in categories)
    for c in categories:
        r = per_category[f"violation_rate_{c}"]
        assert (r.numerator, r.denominator) == (f"violations_{c}", "events")


# --- rate_value ------------------------------------------------------------------------------


def test_rate_value_is_numerator_over_denominator():
    v = catalog.rate_value(
        "injection_success_rate", {"injection_successes": 3, "injection_attempts": 12}
    )
    assert (v.rate_id, v.numerator, v.denominator) == ("injection_success_rate", 3, 12)
    assert v.value == pytest.approx(0.25)
    assert v.lower < 0.25 < v.upper


def test_rate_value_reads_only_its_own_counters():
    totals = {"refusals": 7, "events": 70, "blocks": 69, "violations": 1}
    v = catalog.rate_value("refusal_rate", totals)
    assert (v.numerator, v.denominator, v.value) == (7, 70, pytest.approx(0.1))


def test_rate_value_is_none_for_a_zero_denominator_with_the_uninformative_interval():
    v = catalog.rate_value("violation_rate", {"violations": 0, "events": 0})
    assert v.value is None
    assert (v.lower, v.upper) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("k", "n"),
    [(0, 1), (1, 1), (0, 10), (1, 10), (5, 10), (10, 10), (3, 1000), (0, 50_000), (999, 1000)],
)
def test_rate_value_interval_is_the_wilson_95_interval(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    v = catalog.rate_value("user_report_rate", {"user_reports": k, "events": n})
    assert v.value == pytest.approx(k / n)
    assert v.lower == pytest.approx(expected.low, rel=1e-9, abs=1e-12)
    assert v.upper == pytest.approx(expected.high, rel=1e-9, abs=1e-12)
    assert 0.0 <= v.lower <= 1.0 and 0.0 <= v.upper <= 1.0
    assert v.lower - 1e-12 <= k / n <= v.upper + 1e-12


@pytest.mark.parametrize(("k", "n"), [(0, 7), (10, 10)])
def test_rate_value_interval_contains_the_estimate_exactly_at_zero_and_one(k, n):
    v = catalog.rate_value("user_report_rate", {"user_reports": k, "events": n})
    assert v.lower <= k / n <= v.upper


def test_rate_value_rejects_more_successes_than_trials():
    with pytest.raises(ValueError, match="successes"):
        catalog.rate_value("block_rate", {"blocks": 11, "events": 10})


def test_unknown_rate_is_a_key_error_naming_the_known_ids():
    with pytest.raises(KeyError) as excinfo:
        catalog.rate_value("no_such_rate", {"events": 1})
    message = str(excinfo.value)
    assert "no_such_rate" in message
    for r in RATES:
        assert repr(r.id) in message


def test_rate_lookup_returns_the_rate_with_that_id():
    for r in RATES:
        assert catalog.rate(r.id) is r


def test_missing_counter_in_totals_is_a_key_error():
    with pytest.raises(KeyError):
        catalog.rate_value("block_rate", {"blocks": 1})


# --- rate_value's design effect ---------------------------------------------------------------

B = 32


def _clustered_sums() -> tuple[list[int], list[int]]:
    """100 events per bucket; one bucket (a prolific user's) holds 80 of the 111 violations."""
    events = [100] * B
    violations = [1] * B
    violations[5] = 80
    return violations, events


def _direct_design_effect(num: list[int], den: list[int]) -> float:
    d = sum(den)
    r = sum(num) / d
    robust = B / (B - 1) * sum((n - r * e) ** 2 for n, e in zip(num, den, strict=True)) / d**2
    return robust / (r * (1 - r) / d)


def test_rate_value_carries_the_design_effect_of_its_bucket_sums():
    num, den = _clustered_sums()
    v = catalog.rate_value(
        "violation_rate",
        {"violations": sum(num), "events": sum(den)},
        {"violations": num, "events": den},
    )
    assert v.design_effect == buckets.design_effect(num, den)
    assert v.design_effect == pytest.approx(_direct_design_effect(num, den), rel=1e-12)
    # One user's 79 extra violations: the variance is far above the binomial one.
    assert v.design_effect > 10
    assert (v.lower, v.upper) == buckets.robust_interval(num, den)


def test_rate_value_design_effect_is_one_without_usable_bucket_sums():
    num, den = _clustered_sums()
    totals = {"violations": sum(num), "events": sum(den)}
    wilson = binomtest(sum(num), sum(den)).proportion_ci(method="wilson")
    for found in (
        catalog.rate_value("violation_rate", totals),
        catalog.rate_value("violation_rate", totals, None),
        catalog.rate_value("violation_rate", totals, {}),
        # Sums of other rows than the totals' are not used.
        catalog.rate_value(
            "violation_rate",
            totals,
            {"violations": [*num[:-1], num[-1] + 1], "events": [*den[:-1], den[-1] + 1]},
        ),
    ):
        assert found.design_effect == 1.0
        assert found.lower == pytest.approx(wilson.low, rel=1e-9)
        assert found.upper == pytest.approx(wilson.high, rel=1e-9)
    # The telemetry rates are not split by user.
    seen = catalog.rate_value(
        "telemetry_completeness",
        {"telemetry_complete": 90, "events_seen": 100},
        {"violations": num, "events": den},
    )
    assert seen.design_effect == 1.0


def test_rate_value_design_effect_is_at_least_one_and_inf_for_a_single_bucket():
    # Every bucket at exactly the same rate: the bucket variance is 0, below the binomial
    # one; the design effect is floored at 1.
    even_sums = {"violations": [2] * B, "events": [100] * B}
    even = catalog.rate_value("violation_rate", {"violations": 64, "events": 3200}, even_sums)
    assert buckets.design_effect([2] * B, [100] * B) < 1
    assert even.design_effect == 1.0
    # All events in one bucket: possibly one user, nothing known about the others.
    one_num, one_den = [0] * B, [0] * B
    one_num[3], one_den[3] = 7, 50
    one_sums = {"violations": one_num, "events": one_den}
    alone = catalog.rate_value("violation_rate", {"violations": 7, "events": 50}, one_sums)
    assert alone.design_effect == math.inf
    assert (alone.lower, alone.upper) == (0.0, 1.0)
    # A rate of 0 spread over buckets varies nowhere: 1.
    none = catalog.rate_value(
        "violation_rate", {"violations": 0, "events": 3200}, {"events": [100] * B}
    )
    assert none.design_effect == 1.0


@pytest.mark.parametrize("bad", [0.0, 0.99, math.nan, -math.inf])
def test_rate_value_rejects_a_design_effect_below_one(bad):
    with pytest.raises(ValueError, match="design_effect"):
        catalog.RateValue("violation_rate", 1, 10, 0.1, 0.0, 1.0, bad)
    assert catalog.RateValue("violation_rate", 1, 10, 0.1, 0.0, 1.0).design_effect == 1.0


# --- numerator counts a subset of the denominator's records ----------------------------------

# Denominators that count every record of their population: any predicate is a subset.
_WHOLE_POPULATION = {"events", "events_seen"}


def _top_level_split(predicate: str, word: str) -> list[str]:
    """Split a Spark SQL predicate on ` AND ` / ` OR ` outside parentheses and quotes."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    token = f" {word} "
    while i < len(predicate):
        ch = predicate[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and predicate.startswith(token, i):
            parts.append(predicate[start:i].strip())
            i += len(token)
            start = i
            continue
        i += 1
    parts.append(predicate[start:].strip())
    return parts


def test_top_level_split_helper():
    assert _top_level_split("a AND (b OR c) AND d", "AND") == ["a", "(b OR c)", "d"]
    assert _top_level_split("a AND (b OR c) AND d", "OR") == ["a AND (b OR c) AND d"]
    assert _top_level_split("x = 'A AND B'", "AND") == ["x = 'A AND B'"]


@pytest.mark.parametrize("r", RATES, ids=lambda r: r.id)
def test_rate_numerator_predicate_implies_the_denominator_predicate(r):
    # Wilson needs successes <= trials: the numerator's predicate must be the denominator's
    # AND something, unless the denominator counts the whole population.
    if r.denominator in _WHOLE_POPULATION:
        return
    num, den = PREDICATES[r.numerator], PREDICATES[r.denominator]
    assert num is not None and den is not None, r.id
    assert _top_level_split(num, "OR") == [num], f"{r.numerator} has a top-level OR"
    conjuncts = _top_level_split(num, "AND")
    assert den in conjuncts or den.strip("()") in conjuncts, (r.id, num, den)


@pytest.mark.parametrize(
    ("numerator", "must_contain"),
    [
        ("injection_successes", "injection.attempt_detected"),
        ("jailbreak_successes", "jailbreak.attempt"),
        ("unauthorized_tool_call_events", "tool_calls.total > 0"),
        ("appeal_overturns", "(moderation.action = 'block' OR refusal.refused)"),
        ("over_refusals", "size(moderation.flagged_categories) = 0"),
    ],
)
def test_known_subset_numerators_restate_their_population(numerator, must_contain):
    predicate = PREDICATES[numerator]
    assert predicate is not None
    assert must_contain in _top_level_split(predicate, "AND")


def test_whole_population_denominators_count_every_record():
    assert PREDICATES["events"] == "true"
    assert PREDICATES["events_seen"] is None  # telemetry: every record naming the segment


# --- warehouse ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_engine(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('wh')}/w.db")
    migrate(engine)
    yield engine
    engine.dispose()


def test_segment_window_agg_has_a_bigint_column_for_every_counter(migrated_engine):
    columns = {c["name"]: c for c in sa.inspect(migrated_engine).get_columns("segment_window_agg")}
    missing = sorted(COUNTER_IDS - set(columns))
    assert missing == []
    for cid in COUNTER_IDS:
        assert isinstance(columns[cid]["type"], sa.Integer), (cid, columns[cid]["type"])
        assert columns[cid]["nullable"] is False, cid


def test_analyst_view_exposes_every_counter(migrated_engine):
    with migrated_engine.connect() as conn:
        keys = set(conn.execute(sa.text("SELECT * FROM v_segment_window LIMIT 0")).keys())
    assert sorted(COUNTER_IDS - keys) == []


def test_counter_ids_are_safe_sql_identifiers():
    for cid in COUNTER_IDS:
        assert cid.isidentifier() and cid == cid.lower(), cid
