"""A pure, deterministic generator of realistic synthetic `interaction_event` v1 dicts.

No I/O and no wall clock: the seed, the start time, the duration, the rate, the scenarios
and the pseudonymisation key fully determine the output.

Consistency rules every generated event obeys (the tests check them):

- a category is in `moderation.flagged_categories` iff its score is >= 0.5;
- `moderation.action` is "allow" iff nothing is flagged, "redact" when only `privacy` is
  flagged, else "block" or "flag"; "block" ⇔ `request.outcome` == "blocked";
- refusals: `refusal.refused` ⇔ `request.outcome` in {"refused", "safe_completion"};
  outcome "refused" has style direct|explained|redirect, outcome "safe_completion" (a
  partial answer) has style "partial"; `refusal.style` == "none" ⇔ not refused. Violating
  events are never refusals (refusals are drawn for non-violating events only);
- `injection.source` is None ⇔ not `attempt_detected`; `succeeded` ⇒ `attempt_detected`;
  the detector score is >= 0.6 on attempts and < 0.4 otherwise; `jailbreak.succeeded` ⇒
  `jailbreak.attempt`;
- tool calls only on agent features, `blocked + unauthorized <= total`;
- `feedback.appeal_overturned` ⇒ the event was blocked or refused;
- `privacy.redaction_applied` is true; excerpts, when present, hold only placeholders such as
  "[EMAIL]", never personal data.

The probabilities are those of `BaseRates` (see its docstring for the exact rules) with the
overrides of the active scenarios (see `pipelines.synth.scenarios`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.metrics.catalog import POLICY_CATEGORIES
from pipelines.privacy.pseudonym import pseudonymize
from pipelines.synth.details import draw_excerpts, draw_request, draw_tool_calls
from pipelines.synth.population import SURFACES, Population, Session, Weighted
from pipelines.synth.rates import BaseRates
from pipelines.synth.scenarios import Scenario, resolve_scenarios

__all__ = ["BaseRates", "generate_events", "labels"]

CATEGORIES = POLICY_CATEGORIES
# Relative frequency of each category among violations (harassment is the most common).
_CATEGORY_WEIGHTS = (0.12, 0.25, 0.15, 0.01, 0.15, 0.08, 0.14, 0.03, 0.07)
_CATEGORY_CUM = list(itertools.accumulate(_CATEGORY_WEIGHTS))
_REFUSAL_STYLES = Weighted(
    (("direct", 0.3), ("explained", 0.4), ("redirect", 0.15), ("partial", 0.15))
)
_INJECTION_SOURCES = {
    "plain": Weighted((("user", 1.0),)),
    "rag": Weighted((("retrieved_content", 0.7), ("user", 0.3))),
    "agent": Weighted((("tool_output", 0.5), ("retrieved_content", 0.3), ("user", 0.2))),
}
_PROMPT_ENTITIES = Weighted(
    (
        ("EMAIL", 0.35),
        ("PERSON", 0.3),
        ("PHONE", 0.15),
        ("ADDRESS", 0.1),
        ("IP_ADDRESS", 0.05),
        ("CREDIT_CARD", 0.05),
    )
)
_OUTPUT_ENTITIES = Weighted((("EMAIL", 0.4), ("PHONE", 0.3), ("PERSON", 0.2), ("ADDRESS", 0.1)))
_VERSIONS = {name: Weighted(s.versions) for name, s in SURFACES.items()}
# Scores of unflagged categories: 0.49 * u**8 (u uniform, 12-bit) keeps most near 0 with a
# thin tail towards the 0.5 threshold, as real classifiers have; a table makes it cheap.
_BENIGN_SCORES = [round(0.49 * ((i + 0.5) / 4096) ** 8, 4) for i in range(4096)]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SESSION_MEAN_LENGTH = 4.0
# Open sessions per event/s: with 4 events per session this makes a session last ~80 s.
_OPEN_SESSIONS_PER_RATE = 20.0


def generate_events(
    *,
    seed: int,
    start: datetime,
    duration: timedelta,
    rate_per_s: float,
    scenarios: Sequence[str] = (),
    key: bytes = b"safewatch-demo-key",
    rates: BaseRates = BaseRates(),  # noqa: B008 - frozen, so a shared default is safe
) -> Iterator[dict[str, Any]]:
    """Synthetic events in event_time order, arriving as a Poisson process at `rate_per_s`.

    Event times lie in [start, start + duration), are RFC 3339 UTC with millisecond
    precision and a Z suffix, and never decrease. Ids are `pseudonymize(raw, key)`. The same
    arguments give the same events. Raises ValueError (eagerly, before iteration) when
    `start` is not timezone-aware UTC, `duration` or `rate_per_s` is not positive, or a
    scenario name is unknown.
    """
    if start.tzinfo is None or start.utcoffset() != timedelta(0):
        msg = f"start must be a timezone-aware UTC datetime, got {start!r}"
        raise ValueError(msg)
    if duration <= timedelta(0):
        msg = f"duration must be positive, got {duration}"
        raise ValueError(msg)
    if not rate_per_s > 0 or math.isinf(rate_per_s):
        msg = f"rate_per_s must be a positive finite number, got {rate_per_s}"
        raise ValueError(msg)
    chosen = resolve_scenarios(scenarios)
    return _events(seed, start, duration, rate_per_s, chosen, key, rates)


def _events(
    seed: int,
    start: datetime,
    duration: timedelta,
    rate: float,
    scenarios: tuple[Scenario, ...],
    key: bytes,
    rates: BaseRates,
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    population = Population(rng, key)
    start_us = (start - _EPOCH) // timedelta(microseconds=1)
    end_us = start_us + duration // timedelta(microseconds=1)
    duration_s = duration.total_seconds()
    open_target = max(4, int(rate * _OPEN_SESSIONS_PER_RATE))
    open_sessions: list[Session] = []
    n_sessions = 0
    stamps = _Stamps()
    active: list[Scenario] = []
    next_change = 0.0
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        # Ceil to the millisecond so that a start with sub-millisecond digits stays included.
        ms = -(-(start_us + int(t * 1_000_000)) // 1000)
        if t >= duration_s or ms * 1000 >= end_us:
            return
        if len(open_sessions) < open_target:
            n_sessions += 1
            raw = f"session-{seed}-{n_sessions}"
            session = population.new_session(rng, pseudonymize(raw, key), SESSION_MEAN_LENGTH)
            open_sessions.append(session)
            index = len(open_sessions) - 1
        else:
            index = int(rng.random() * len(open_sessions))
            session = open_sessions[index]
        session.remaining -= 1
        if session.remaining <= 0:
            open_sessions[index] = open_sessions[-1]
            open_sessions.pop()
        fraction = t / duration_s
        if fraction >= next_change:  # a scenario starts or ends
            active = [s for s in scenarios if s.active_at(fraction)]
            later = [f for s in scenarios for f in (s.start_fraction, s.end_fraction)]
            next_change = min((f for f in later if f > fraction), default=math.inf)
        yield _event(rng, rates, session, stamps.format(ms), active)


def uuid4_str(bits: int) -> str:
    """`str(uuid.UUID(int=bits, version=4))`, computed without building a UUID (2x faster)."""
    n = (bits & ~(0xF000 << 64) & ~(0xC000 << 48)) | (4 << 76) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Stamps:
    """Formats epoch milliseconds as RFC 3339 UTC, caching the per-second prefix for speed."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = (_EPOCH + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{milli:03d}Z"


def _category(rng: random.Random) -> str:
    x = rng.random() * _CATEGORY_CUM[-1]
    for category, cum in zip(CATEGORIES, _CATEGORY_CUM, strict=True):
        if x < cum:
            return category
    return CATEGORIES[-1]


def _event(
    rng: random.Random,
    rates: BaseRates,
    session: Session,
    event_time: str,
    active: list[Scenario],
) -> dict[str, Any]:
    r = rng.random
    event_id = uuid4_str(rng.getrandbits(128))
    segment = dict(session.segment)
    surface = session.surface
    version = ""
    for scenario in active:
        if scenario.effect.new_model_version and (
            scenario.target.get("product_surface") == surface.name
        ):
            version = scenario.effect.new_model_version
    if not version:
        version = _VERSIONS[surface.name].draw(rng)
    segment["model_version"] = version
    effects = [s.effect for s in active if s.matches(segment)]
    kind = session.kind

    # Probabilities for this event: BaseRates, then scenario overrides.
    jb_attempt = r() < rates.jailbreak_attempt
    jb_success = jb_attempt and r() < rates.jailbreak_success
    p_injection = (
        rates.injection_attempt_agent
        if kind == "agent"
        else rates.injection_attempt_rag
        if kind == "rag"
        else rates.injection_attempt
    )
    p_inj_success = rates.injection_success
    p_violation = rates.violation_given_jailbreak if jb_success else rates.harmful_output
    if jb_attempt and not jb_success:
        p_refusal = rates.refusal_given_jailbreak
    elif segment["risk_tier"] == "regulated":
        p_refusal = rates.refusal * rates.regulated_refusal_factor
    else:
        p_refusal = rates.refusal
    p_pii = rates.pii_in_output
    sources = _INJECTION_SOURCES[kind]
    focus, focus_share = None, 0.0
    for e in effects:
        if e.violation_rate is not None:
            p_violation = e.violation_rate
            focus, focus_share = e.violation_category, e.category_share
        if e.injection_attempt is not None:
            p_injection = e.injection_attempt
        if e.injection_success is not None:
            p_inj_success = e.injection_success
        if e.injection_sources:
            sources = Weighted([(s, 1.0) for s in e.injection_sources])
        if e.refusal_rate is not None:
            p_refusal = e.refusal_rate
        if e.pii_rate is not None:
            p_pii = e.pii_rate

    inj_attempt = r() < p_injection
    inj_success = inj_attempt and r() < p_inj_success
    injection = {
        "attempt_detected": inj_attempt,
        "source": sources.draw(rng) if inj_attempt else None,
        # Detector scores: high on detected attempts, a long low tail otherwise.
        "score": round(0.6 + 0.4 * r() ** 0.5, 4) if inj_attempt else round(0.39 * r() ** 4, 4),
        "succeeded": inj_success,
    }

    flagged: list[str] = []
    if r() < p_violation:
        flagged.append(focus if focus and r() < focus_share else _category(rng))
        if r() < rates.second_category:
            second = _category(rng)
            if second != flagged[0]:
                flagged.append(second)
    bits = rng.getrandbits(12 * len(CATEGORIES))
    scores = {}
    for c in CATEGORIES:
        scores[c] = _BENIGN_SCORES[bits & 4095]
        bits >>= 12
    for c in flagged:
        scores[c] = round(0.5 + 0.5 * r() ** 0.7, 4)  # above the 0.5 threshold
    if not flagged:
        action = "allow"
    elif flagged == ["privacy"]:
        action = "redact"
    else:
        action = "block" if r() < rates.block_given_violation else "flag"

    refused, style = False, "none"
    if action == "block":
        outcome = "blocked"
    elif flagged:
        outcome = "answered"
    elif r() < p_refusal:
        refused, style = True, _REFUSAL_STYLES.draw(rng)
        outcome = "safe_completion" if style == "partial" else "refused"
    elif r() < rates.error:
        outcome = "error"
    else:
        outcome = "answered"

    tool_calls = {"total": 0, "blocked": 0, "unauthorized": 0}
    if kind == "agent":
        draw_tool_calls(rng, rates, tool_calls, inj_success)

    pii = r() < p_pii
    entities: dict[str, int] = {}
    if r() < rates.prompt_entities:
        entities[_PROMPT_ENTITIES.draw(rng)] = 2 if r() < 0.2 else 1
    if pii:
        entity = _OUTPUT_ENTITIES.draw(rng)
        entities[entity] = entities.get(entity, 0) + 1

    event: dict[str, Any] = {
        "event_id": event_id,
        "event_time": event_time,
        "schema_version": "1",
        "tenant_id": session.user.tenant,
        "user_id": session.user.pseudonym,
        "session_id": session.pseudonym,
        "segment": segment,
        "request": draw_request(rng, rates, session, outcome),
        "moderation": {"scores": scores, "flagged_categories": flagged, "action": action},
        "refusal": {"refused": refused, "style": style},
        "injection": injection,
        "jailbreak": {"attempt": jb_attempt, "succeeded": jb_success},
        "tool_calls": tool_calls,
        "privacy": {
            "pii_detected_in_output": pii,
            "redaction_applied": True,
            "redactor_version": "redact-2.3.1",
            "entity_counts": entities,
        },
        "feedback": {
            "user_report": r()
            < (rates.user_report_given_violation if flagged else rates.user_report),
            "appeal_overturned": (action == "block" or refused) and r() < rates.appeal_overturned,
        },
    }
    noteworthy = flagged or refused or inj_attempt or jb_attempt or pii
    if r() < (rates.excerpt_flagged if noteworthy else rates.excerpt):
        event["excerpts"] = draw_excerpts(rng, event)
    return event


def labels(event: dict[str, Any]) -> dict[str, bool]:
    """The ground-truth booleans of `event`, read straight from its fields."""
    return {
        "violation": bool(event["moderation"]["flagged_categories"]),
        "refused": bool(event["refusal"]["refused"]),
        "injection_attempt": bool(event["injection"]["attempt_detected"]),
        "injection_success": bool(event["injection"]["succeeded"]),
        "jailbreak_attempt": bool(event["jailbreak"]["attempt"]),
        "jailbreak_success": bool(event["jailbreak"]["succeeded"]),
        "blocked": event["moderation"]["action"] == "block",
        "pii_in_output": bool(event["privacy"]["pii_detected_in_output"]),
        "user_report": bool(event["feedback"]["user_report"]),
    }
