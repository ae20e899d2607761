"""Scoring of pages against known incidents (tests.benchmarks.alert_scoring) and the oracle
detection probability (tests.benchmarks.alert_oracle), on small cases computed by hand.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy.stats import poisson

from tests.benchmarks.alert_oracle import critical_count, oracle_alpha, oracle_power, oracle_time
from tests.benchmarks.alert_scoring import (
    Incident,
    Page,
    Targets,
    check_targets,
    contains,
    default_grace,
    detectable_target,
    matches,
    per_week_per_50,
    quantile,
    score,
)

T0 = datetime(2026, 11, 2, tzinfo=UTC)
GRACE = timedelta(minutes=15)
FULL = (("product_surface", "chat"), ("model_version", "m1"), ("locale", "de-DE"))
OTHER = (("product_surface", "chat"), ("model_version", "m1"), ("locale", "fr-FR"))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def seg(surface: str, version: str, locale: str) -> tuple[tuple[str, str], ...]:
    return (("product_surface", surface), ("model_version", version), ("locale", locale))


def test_a_roll_up_page_contains_the_incident_segment() -> None:
    assert contains(FULL, FULL)
    assert contains(seg("chat", "*", "*"), FULL)
    assert contains((("product_surface", "chat"),), FULL)  # a rule by fewer dimensions
    assert contains((), FULL)  # all traffic
    assert not contains(OTHER, FULL)
    assert not contains(seg("api", "*", "*"), FULL)
    assert not contains((("region", "eu-west"),), FULL)  # a dimension the incident lacks


def test_a_page_matches_in_the_incident_or_its_grace_and_only_for_a_covered_kind() -> None:
    incident = Incident("i", "harmful_rate", FULL, at(10), at(20))
    covers = {"A": {"harmful_rate"}, "B": {"refusal_spike"}}

    def page(rule: str, minutes: float, segment: tuple[tuple[str, str], ...] = FULL) -> Page:
        return Page(rule, segment, at(minutes))

    assert matches(page("A", 10), incident, covers, GRACE)  # at the start
    assert matches(page("A", 35), incident, covers, GRACE)  # end + grace, inclusive
    assert not matches(page("A", 9.99), incident, covers, GRACE)  # before it started
    assert not matches(page("A", 35.01), incident, covers, GRACE)  # after the grace
    assert not matches(page("B", 15), incident, covers, GRACE)  # kind not covered
    assert not matches(page("C", 15), incident, covers, GRACE)  # rule unknown
    assert not matches(page("A", 15, OTHER), incident, covers, GRACE)
    assert matches(page("A", 15, seg("chat", "*", "*")), incident, covers, GRACE)


def test_default_grace_is_window_watermark_and_trigger() -> None:
    grace = default_grace(timedelta(minutes=5), timedelta(minutes=10), timedelta(seconds=30))
    assert grace == timedelta(minutes=15, seconds=30)


def test_quantile_interpolates_linearly_like_numpy() -> None:
    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert quantile([0.0, 10.0], 0.9) == 9.0
    assert quantile([float(x) for x in range(1, 11)], 0.9) == pytest.approx(9.1)
    assert quantile([7.0], 0.9) == 7.0
    assert quantile([], 0.5) is None
    with pytest.raises(ValueError, match="q must be"):
        quantile([1.0], 1.5)


def test_false_pages_are_scaled_to_a_week_and_50_segments() -> None:
    assert per_week_per_50(1, timedelta(days=7), 50) == 1.0
    assert per_week_per_50(1, timedelta(days=1), 25) == 14.0
    assert per_week_per_50(3, timedelta(days=14), 100) == 0.75
    with pytest.raises(ValueError, match="positive"):
        per_week_per_50(1, timedelta(0), 50)


def test_an_incident_cannot_end_before_it_starts() -> None:
    with pytest.raises(ValueError, match="ends before"):
        Incident("bad", "harmful_rate", FULL, at(10), at(5))


# A small case, every figure computed by hand:
#   incidents  h1 harmful_rate  chat/m1/de-DE  [0, 30]  x5
#              h2 harmful_rate  chat/m1/fr-FR  [100, 110]  x2   (never paged)
#              r1 refusal_spike chat/m1/de-DE  [200, 260]  x4
#              e1 redaction     api/m2/en-US   [300, 300]  inf, event level
#   pages      A on de-DE at 12  -> h1 (first page of h1 by A: 12 min after its start)
#              A on de-DE at 20  -> h1 again (true, not a new incident)
#              A on de-DE at 50  -> after 30 + 15: false
#              B on chat/*/* at 5 -> h1 through the roll-up (B covers harmful_rate)
#              B on de-DE at 230 -> r1 (30 min)
#              C on en-US at 300.5 -> e1 (30 s)
#              C on fr-FR at 105 -> C does not cover harmful_rate: false
COVERS = {"A": {"harmful_rate"}, "B": {"harmful_rate", "refusal_spike"}, "C": {"redaction"}}
PRIMARY = {"A": {"harmful_rate"}, "B": {"refusal_spike"}, "C": {"redaction"}}
INCIDENTS = [
    Incident("h1", "harmful_rate", FULL, at(0), at(30), 5.0),
    Incident("h2", "harmful_rate", OTHER, at(100), at(110), 2.0),
    Incident("r1", "refusal_spike", FULL, at(200), at(260), 4.0),
    Incident("e1", "redaction", seg("api", "m2", "en-US"), at(300), at(300), math.inf, True),
]
PAGES = [
    Page("A", FULL, at(12)),
    Page("A", FULL, at(20)),
    Page("A", FULL, at(50)),
    Page("B", seg("chat", "*", "*"), at(5)),
    Page("B", FULL, at(230)),
    Page("C", seg("api", "m2", "en-US"), at(300.5), early=True),
    Page("C", OTHER, at(105)),
]


def test_per_rule_figures() -> None:
    rep = score(
        PAGES, INCIDENTS, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    a, b, c = rep.rules
    assert (a.name, a.pages, a.true_pages, a.false_pages) == ("A", 3, 2, 1)
    assert a.precision == pytest.approx(2 / 3)
    # A is meant for harmful_rate: h1 paged, h2 not; both >= 3x? h1 (x5) yes, h2 (x2) no.
    assert (a.incidents, a.paged, a.incidents_big, a.paged_big) == (2, 1, 1, 1)
    assert a.recall == 0.5 and a.recall_big == 1.0
    assert a.time_to_page.median == 12 * 60 and a.time_to_page.count == 1
    assert a.false_per_week_per_50 == 14.0  # 1 false page in a day over 25 segments
    # B's pages are both true (h1 via the roll-up, r1); its recall is over refusal_spike.
    assert (b.pages, b.true_pages, b.incidents, b.paged) == (2, 2, 1, 1)
    assert b.precision == 1.0 and b.recall == 1.0
    assert b.time_to_page.median == 30 * 60
    assert b.false_per_week_per_50 == 0.0
    # C: one true page (e1, 30 s), one false (fr-FR, a kind it does not cover).
    assert (c.pages, c.true_pages, c.incidents, c.paged) == (2, 1, 1, 1)
    assert c.time_to_page.median == 30


def test_overall_figures_and_time_to_page_split() -> None:
    rep = score(
        PAGES, INCIDENTS, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    o = rep.overall
    assert (o.pages, o.true_pages, o.false_pages) == (7, 5, 2)
    assert o.precision == pytest.approx(5 / 7)
    # Paged: h1, r1, e1 of 4; >= 3x: h1, r1, e1 (h2 is x2), all paged.
    assert (o.incidents, o.paged, o.incidents_big, o.paged_big) == (4, 3, 3, 3)
    assert o.false_per_week_per_50 == 28.0
    # h1's first page is B's at minute 5 (before A's at 12).
    assert rep.first_page["h1"] == PAGES[3]
    assert rep.first_page["h2"] is None
    # Rate incidents: h1 5 min, r1 30 min -> median 17.5 min, p90 5 + 0.9 * 25 = 27.5 min.
    assert rep.time_to_page_rate.count == 2
    assert rep.time_to_page_rate.median == 17.5 * 60
    assert rep.time_to_page_rate.p90 == pytest.approx(27.5 * 60)
    assert rep.time_to_page_event.median == 30 and rep.time_to_page_event.count == 1
    assert [i.id for i in rep.missed] == ["h2"]
    assert [p.at for p in rep.false_pages] == [at(50), at(105)]
    assert rep.matched[0] == ("h1",) and 2 not in rep.matched


def test_per_kind_figures() -> None:
    rep = score(
        PAGES, INCIDENTS, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    kinds = {k.name: k for k in rep.kinds}
    assert set(kinds) == {"harmful_rate", "refusal_spike", "redaction"}
    h = kinds["harmful_rate"]
    assert (h.incidents, h.paged, h.incidents_big, h.paged_big) == (2, 1, 1, 1)
    assert h.pages == 3  # the pages matching a harmful_rate incident: A 12, A 20, B 5
    assert h.time_to_page.median == 5 * 60


def test_a_page_matching_two_incidents_counts_once_and_pages_both() -> None:
    wide = seg("chat", "*", "*")
    incidents = [
        Incident("x", "harmful_rate", FULL, at(0), at(10), 4.0),
        Incident("y", "harmful_rate", OTHER, at(2), at(10), 4.0),
    ]
    pages = [Page("A", wide, at(3))]
    rep = score(
        pages, incidents, covers={"A": {"harmful_rate"}}, period=timedelta(days=7),
        segments=50, grace=GRACE,
    )  # fmt: skip
    assert (rep.overall.pages, rep.overall.true_pages, rep.overall.paged) == (1, 1, 2)
    assert rep.matched[0] == ("x", "y")
    assert rep.time_to_page_rate.median == (180 + 60) / 2


def test_rules_that_never_paged_are_reported_and_unknown_rules_are_false() -> None:
    pages = [Page("Z", FULL, at(1))]
    rep = score(
        pages, INCIDENTS[:1], covers={"A": {"harmful_rate"}}, period=timedelta(days=7),
        segments=50, grace=GRACE,
    )  # fmt: skip
    assert [q.name for q in rep.rules] == ["A", "Z"]
    a, z = rep.rules
    assert a.pages == 0 and a.precision is None and a.recall == 0.0
    assert z.pages == 1 and z.true_pages == 0 and z.incidents == 0 and z.recall is None
    assert rep.overall.false_per_week_per_50 == 1.0


def test_targets_are_checked_against_the_measured_figures() -> None:
    rep = score(
        PAGES, INCIDENTS, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    precision, recall, false, rate, event = check_targets(rep, Targets())
    assert precision.name == "precision" and not precision.met  # 71 % < 90 %
    assert precision.value == pytest.approx(5 / 7)
    assert recall.met and recall.value == 1.0  # 3/3 incidents >= 3x
    assert not false.met and false.value == 28.0  # > 1
    assert "rate incidents" in rate.name and not rate.met  # 17.5 min > 2 min
    assert "Sev-1" in event.name and event.met and event.value == 30  # 30 s <= 60 s
    lenient = Targets(precision=0.7, false_per_week_per_50=30, median_rate_s=1800)
    assert all(t.met for t in check_targets(rep, lenient))


def test_unmeasured_figures_miss_their_targets() -> None:
    rep = score([], INCIDENTS, covers=COVERS, period=timedelta(days=7), segments=50, grace=GRACE)
    met = {t.name: t.met for t in check_targets(rep)}
    assert not met["precision"]  # no page at all: precision is undefined
    assert met["false pages per week per 50 segments"]
    assert not any(v for k, v in met.items() if "time to page" in k)


def test_incident_ids_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        score(
            [], [INCIDENTS[0], INCIDENTS[0]], covers=COVERS, period=timedelta(days=7),
            segments=50, grace=GRACE,
        )  # fmt: skip


# -- the oracle detection probability ---------------------------------------------------------

WEEK = timedelta(days=7)


def direct_power(baseline: float, incident: float, alpha: float, injected: int = 0) -> float:
    """The oracle power computed directly: the critical count by scanning every count."""
    counts = np.arange(0, int(baseline + 50 * math.sqrt(baseline + 1) + 50))
    c = int(counts[np.argmax(poisson.sf(counts - 1, baseline) <= alpha)])
    assert poisson.sf(c - 1, baseline) <= alpha < (poisson.sf(c - 2, baseline) if c else 2)
    return 1.0 if c <= injected else float(poisson.sf(c - injected - 1, incident - injected))


def test_the_level_shares_the_false_page_budget_over_kinds_and_looks() -> None:
    # 1 false page a week per 50 segments: 46 segments may page 0.92 times a week; over
    # 12 kinds and 46 x (week / 198 s) looks, alpha = 198 s / (week x 50 x 12).
    alpha = oracle_alpha(timedelta(seconds=198), period=WEEK, segments=46, kinds=12)
    assert alpha == pytest.approx(198 / (WEEK.total_seconds() * 50 * 12))
    # Doubling the period doubles the budget and the looks: the same level.
    assert oracle_alpha(
        timedelta(seconds=198), period=2 * WEEK, segments=46, kinds=12
    ) == pytest.approx(alpha)
    assert oracle_alpha(WEEK, period=WEEK, segments=1, kinds=1, budget_per_week=0.05) == 0.05
    with pytest.raises(ValueError, match="positive"):
        oracle_alpha(WEEK, period=WEEK, segments=46, kinds=0)


def test_the_critical_count_is_the_smallest_conclusive_count() -> None:
    # P(Poisson(4) >= 8) = 5.1 % > 5 %, P(Poisson(4) >= 9) = 2.1 %.
    assert critical_count(4.0, 0.05) == 9
    assert critical_count(0.0, 1e-9) == 1  # no event expected: one is conclusive
    assert critical_count(0.0, 0.0) == 1
    assert critical_count(3.0, 0.0) is None  # no count is conclusive at level 0
    assert critical_count(3.0, 1.0) == 0
    for mean, alpha in ((0.196, 5.46e-7), (2.5, 1e-12), (1e4, 5e-7), (0.01, 0.3)):
        c = critical_count(mean, alpha)
        assert c is not None and c >= 1
        assert poisson.sf(c - 1, mean) <= alpha < poisson.sf(c - 2, mean)


@pytest.mark.parametrize(
    ("baseline", "incident", "duration", "injected"),
    [
        (4.0, 10.0, WEEK, 0),  # alpha 5 %: c = 9
        (0.0, 2.0, timedelta(minutes=10), 0),  # c = 1: P(Poisson(2) >= 1)
        (0.0, 1.0, timedelta(0), 1),  # one certain event, nothing expected: conclusive
        (0.196, 1.94, timedelta(seconds=198), 0),  # the harmful example: hopeless
        (0.6, 3.6, timedelta(minutes=30), 3),  # 3 certain events on 0.6 expected
        (10_000.0, 10_500.0, timedelta(hours=2), 0),
        (50.0, 500.0, timedelta(hours=1), 0),
    ],
)
def test_oracle_power_is_the_poisson_test_power(
    baseline: float, incident: float, duration: timedelta, injected: int
) -> None:
    budget = 0.05 if duration == WEEK else None
    segments = 1 if duration == WEEK else 46
    kinds = 1 if duration == WEEK else 12
    alpha = oracle_alpha(
        duration, period=WEEK, segments=segments, kinds=kinds, budget_per_week=budget
    )
    power = oracle_power(
        baseline, incident, duration, period=WEEK, segments=segments, kinds=kinds,
        budget_per_week=budget, injected=injected,
    )  # fmt: skip
    assert power == pytest.approx(direct_power(baseline, incident, alpha, injected), rel=1e-9)
    assert 0.0 <= power <= 1.0


def test_oracle_power_of_hand_picked_cases() -> None:
    def power(baseline: float, incident: float, duration: timedelta, injected: int = 0) -> float:
        return oracle_power(
            baseline, incident, duration, period=WEEK, segments=46, kinds=12, injected=injected
        )

    assert power(0.0, 2.0, timedelta(minutes=10)) == pytest.approx(1 - math.exp(-2.0))
    assert power(0.0, 1.0, timedelta(0), injected=1) == 1.0
    assert power(0.0, 0.0, timedelta(minutes=10)) == 0.0
    # 2 harmful outputs where 0.2 are expected, over 3.3 minutes: c = 6, power ~1.6 %.
    assert power(0.196, 1.94, timedelta(seconds=198)) < 0.05
    # A big, long incident is detectable; a small shift of a large count is not.
    assert power(50.0, 500.0, timedelta(hours=1)) > 0.999
    assert power(10_000.0, 10_100.0, timedelta(hours=2)) < 0.5


def test_oracle_test_keeps_its_level_and_has_its_power_by_monte_carlo() -> None:
    rng = np.random.default_rng(20261102)
    draws = 20_000
    # alpha 5 % over a week, 1 segment, 1 kind; baseline 4, incident 10: c = 9.
    alpha = oracle_alpha(WEEK, period=WEEK, segments=1, kinds=1, budget_per_week=0.05)
    c = critical_count(4.0, alpha)
    assert c == 9
    null = rng.poisson(4.0, draws)
    assert np.mean(null >= c) <= alpha
    power = oracle_power(4.0, 10.0, WEEK, period=WEEK, segments=1, kinds=1, budget_per_week=0.05)
    alternative = rng.poisson(10.0, draws)
    sd = math.sqrt(power * (1 - power) / draws)
    assert abs(np.mean(alternative >= c) - power) < 4 * sd
    # An event kind: 2 certain events on a Poisson(1.5) background.
    c = critical_count(1.5, alpha)
    assert c is not None
    power = oracle_power(
        1.5, 3.5, WEEK, period=WEEK, segments=1, kinds=1, budget_per_week=0.05, injected=2
    )
    realised = 2 + rng.poisson(1.5, draws)
    sd = math.sqrt(power * (1 - power) / draws)
    assert abs(np.mean(realised >= c) - power) < 4 * sd
    assert np.mean(rng.poisson(1.5, draws) >= c) <= alpha


# The small case above with oracle powers: h1 (x5, 0.9, paged), h2 (x2, 0.99: not >= 3x),
# r1 (x4, 0.3: not detectable, paged), e1 (inf, 1.0, paged), h3 (x6, 0.7, never paged).
POWERED = [
    replace(INCIDENTS[0], oracle_power=0.9),
    replace(INCIDENTS[1], oracle_power=0.99),
    replace(INCIDENTS[2], oracle_power=0.3),
    replace(INCIDENTS[3], oracle_power=1.0),
    Incident("h3", "harmful_rate", FULL, at(500), at(520), 6.0, oracle_power=0.7),
]


def test_score_counts_recall_over_the_detectable_incidents() -> None:
    rep = score(
        PAGES, POWERED, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    o = rep.overall
    # The existing figures keep their meaning: h3 is one more incident >= 3x, missed.
    assert (o.incidents, o.paged, o.incidents_big, o.paged_big) == (5, 3, 4, 3)
    # Detectable: h1, e1, h3 (r1's power is 30 %, h2 is x2); paged: h1, e1.
    assert (o.incidents_detectable, o.paged_detectable, o.incidents_big_unknown) == (3, 2, 0)
    assert o.recall_detectable == pytest.approx(2 / 3)
    kinds = {k.name: k for k in rep.kinds}
    h = kinds["harmful_rate"]
    assert (h.incidents_detectable, h.paged_detectable, h.recall_detectable) == (2, 1, 0.5)
    assert kinds["refusal_spike"].incidents_detectable == 0
    assert kinds["refusal_spike"].recall_detectable is None
    assert kinds["redaction"].recall_detectable == 1.0
    a, b, _ = rep.rules  # A is meant for harmful_rate: h1 paged by A, h3 not
    assert (a.incidents_detectable, a.paged_detectable) == (2, 1)
    assert (b.incidents_detectable, b.paged_detectable) == (0, 0)
    target = detectable_target(rep)
    assert target.name == ("recall of detectable incidents >= 3x baseline (oracle power >= 50 %)")
    assert target.value == pytest.approx(2 / 3) and not target.met
    # A stricter power: h1 (0.9) and e1 (1.0) only, both paged.
    strict = score(
        PAGES, POWERED, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE, min_power=0.8,
    )  # fmt: skip
    assert (strict.overall.incidents_detectable, strict.overall.paged_detectable) == (2, 2)
    assert detectable_target(strict).met
    # check_targets is unchanged: the detectable target is given beside it.
    assert [t.name for t in check_targets(rep)] == [t.name for t in check_targets(strict)]
    assert len(check_targets(rep)) == 5


def test_unknown_oracle_power_makes_the_detectable_recall_unknown() -> None:
    incidents = [*POWERED[:4], replace(POWERED[4], oracle_power=None)]
    rep = score(
        PAGES, incidents, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    o = rep.overall
    assert (o.incidents_detectable, o.paged_detectable, o.incidents_big_unknown) == (2, 2, 1)
    assert o.recall_detectable is None
    target = detectable_target(rep)
    assert target.value is None and not target.met
    # Without any oracle power (seeds scored before it existed), the old figures stand.
    old = score(
        PAGES, INCIDENTS, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    assert old.overall.incidents_big_unknown == 3 and old.overall.recall_detectable is None
    assert old.overall.recall_big == 1.0


# -- the oracle's time to detect ----------------------------------------------------------------


def direct_time(
    baseline: float, incident: float, duration: timedelta, injected: int, step: timedelta
) -> timedelta | None:
    """The oracle time by brute force: every look of `step` and the end, each look's level
    computed from the budget by hand (46 segments may page 46/50 times a week, over 12
    kinds and the week's looks of that length), its power by `direct_power`.
    """
    looks, t = [], step
    while t < duration:
        looks.append(t)
        t += step
    looks.append(duration)
    for t in looks:
        share = t / duration
        alpha = (46 / 50) * (t / WEEK) / (46 * 12)
        certain = math.floor(injected * share + 1e-9)
        power = direct_power(
            baseline * share, (incident - injected) * share + certain, alpha, certain
        )
        if power >= 0.5:
            return t
    return None


@pytest.mark.parametrize(
    ("baseline", "incident", "minutes", "injected"),
    [
        (2.0, 30.0, 60, 0),
        (5.27, 26.2, 118.4, 0),  # a self-harm spike: detectable only late
        (0.5, 8.0, 20, 6),  # most of it certain events
        (12.0, 60.0, 7, 0),  # short and strong
        (0.2, 0.6, 15, 0),  # never
        (100.0, 130.0, 240, 0),
    ],
)
def test_oracle_time_is_the_first_look_with_enough_power(
    baseline: float, incident: float, minutes: float, injected: int
) -> None:
    duration = timedelta(minutes=minutes)
    step = timedelta(seconds=30)
    got = oracle_time(
        baseline, incident, duration, period=WEEK, segments=46, kinds=12, injected=injected
    )
    assert got == direct_time(baseline, incident, duration, injected, step)
    # It exists exactly when the whole incident is detectable at that power (the last look).
    power = oracle_power(
        baseline, incident, duration, period=WEEK, segments=46, kinds=12, injected=injected
    )
    if power >= 0.5:
        assert got is not None and got <= duration
    # A coarser step never finds an earlier time.
    coarse = oracle_time(
        baseline, incident, duration, period=WEEK, segments=46, kinds=12, injected=injected,
        step=timedelta(minutes=5),
    )  # fmt: skip
    assert (got is None) == (coarse is None) or power < 0.5
    if got is not None and coarse is not None:
        assert coarse >= got


def test_oracle_time_with_nothing_expected_is_the_median_wait_for_one_event() -> None:
    # No event expected without the incident: one is conclusive, P(one by t) = 1 - exp(-r t)
    # reaches 1/2 at t = ln 2 / r. 20 events in 60 minutes: r = 1/3 a minute, t = 2.08 min,
    # so the look at 2.5 minutes.
    got = oracle_time(0.0, 20.0, timedelta(minutes=60), period=WEEK, segments=46, kinds=12)
    assert got == timedelta(minutes=2.5)
    assert timedelta(minutes=3 * math.log(2)) <= got < timedelta(minutes=3 * math.log(2) + 0.5)
    # Certain events instead: the first one arrives at 60 / 20 = 3 minutes.
    got = oracle_time(
        0.0, 20.0, timedelta(minutes=60), period=WEEK, segments=46, kinds=12, injected=20
    )
    assert got == timedelta(minutes=3)
    with pytest.raises(ValueError, match="step"):
        oracle_time(0.0, 1.0, WEEK, period=WEEK, segments=1, kinds=1, step=timedelta(0))


def test_score_gives_the_oracle_time_beside_the_time_to_page() -> None:
    # h1 (rate, x5, detectable, paged at 5 min, oracle 2 min); r1 (rate, x4, power 0.3:
    # not detectable, paged at 30 min, oracle None: never); h3 (rate, x6, detectable,
    # never paged, oracle 4 min); e1 is event level (its oracle time is not counted).
    incidents = [
        replace(POWERED[0], oracle_time=120.0),
        POWERED[1],
        POWERED[2],
        replace(POWERED[3], oracle_time=1.0),
        replace(POWERED[4], oracle_time=240.0),
    ]
    rep = score(
        PAGES, incidents, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    # Over the detectable rate incidents: h1 and h3.
    assert rep.oracle_time_rate.count == 2 and rep.oracle_time_rate.median == 180.0
    # Paged rate incidents with an oracle time: h1 only; its time to page is B's 5 minutes.
    assert rep.oracle_time_rate_paged.count == 1 and rep.oracle_time_rate_paged.median == 120.0
    assert rep.time_to_page_rate_paged.median == 5 * 60
    # The time to page over every paged rate incident is unchanged (h1 and r1).
    assert rep.time_to_page_rate.count == 2 and rep.time_to_page_rate.median == 17.5 * 60
    # Without oracle times, the figures are empty.
    bare = score(
        PAGES, POWERED, covers=COVERS, primary=PRIMARY, period=timedelta(days=1),
        segments=25, grace=GRACE,
    )  # fmt: skip
    assert bare.oracle_time_rate.count == 0 and bare.oracle_time_rate.median is None
