"""Counters and rates per window x segment, each with a stable id.

A counter is the number of aggregated events in a window x segment for which a boolean
predicate holds. The predicate is a Spark SQL expression over the parsed event, so it runs on
the JVM (no Python per row), and the same text is what the docs and the warehouse columns
show. A rate is numerator / denominator of two counters; the warehouse stores the counters,
never the ratio, so that any roll-up (hour, day, segment union) is an exact sum.

Adding a counter: add an entry here and a warehouse migration that adds its column
(tests/unit/test_metric_catalog.py checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Counter:
    id: str
    description: str
    predicate: str  # Spark SQL boolean expression over one parsed event


@dataclass(frozen=True)
class Rate:
    id: str
    numerator: str
    denominator: str
    description: str


COUNTERS: tuple[Counter, ...] = (
    Counter("events", "Events aggregated (valid, on time).", "true"),
    Counter(
        "violations",
        "Outputs flagged in at least one policy category (harmful output).",
        "size(moderation.flagged_categories) > 0",
    ),
    Counter("blocks", "Outputs blocked by moderation.", "moderation.action = 'block'"),
    Counter("refusals", "Requests the model refused, fully or partly.", "refusal.refused"),
    Counter(
        "injection_attempts",
        "Requests with a detected prompt-injection attempt.",
        "injection.attempt_detected",
    ),
    Counter(
        "injection_successes",
        "Injection attempts that changed the model's behaviour.",
        "injection.attempt_detected AND injection.succeeded",
    ),
    Counter("jailbreak_attempts", "Jailbreak attempts.", "jailbreak.attempt"),
    Counter(
        "jailbreak_successes",
        "Jailbreak attempts that bypassed the safety controls.",
        "jailbreak.attempt AND jailbreak.succeeded",
    ),
    Counter(
        "pii_outputs",
        "Outputs that contained personal data before redaction.",
        "privacy.pii_detected_in_output",
    ),
    Counter("user_reports", "Responses reported by the user.", "feedback.user_report"),
)

RATES: tuple[Rate, ...] = (
    Rate("violation_rate", "violations", "events", "Harmful output rate."),
    Rate("block_rate", "blocks", "events", "Share of outputs blocked."),
    Rate("refusal_rate", "refusals", "events", "Refusal rate."),
    Rate("injection_attempt_rate", "injection_attempts", "events", "Injection attempts per event."),
    Rate(
        "injection_success_rate",
        "injection_successes",
        "injection_attempts",
        "Share of injection attempts that succeeded.",
    ),
    Rate("jailbreak_attempt_rate", "jailbreak_attempts", "events", "Jailbreak attempts per event."),
    Rate(
        "jailbreak_success_rate",
        "jailbreak_successes",
        "jailbreak_attempts",
        "Share of jailbreak attempts that succeeded.",
    ),
    Rate("pii_output_rate", "pii_outputs", "events", "PII leakage rate."),
    Rate("user_report_rate", "user_reports", "events", "User report rate."),
)


def counter_ids() -> tuple[str, ...]:
    return tuple(c.id for c in COUNTERS)


def rate(rate_id: str) -> Rate:
    """The rate with this id; KeyError naming the known ids otherwise."""
    for r in RATES:
        if r.id == rate_id:
            return r
    msg = f"unknown rate {rate_id!r}; known: {[r.id for r in RATES]}"
    raise KeyError(msg)
