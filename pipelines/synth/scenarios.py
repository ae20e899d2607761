"""Named incident scenarios that the synthetic generator can inject into its stream.

Each scenario changes one safety metric for the events of one target segment inside a time
range (fractions of the generated duration), and nothing else, so that a test or a demo can
check that the pipeline finds exactly that segment, at that time, and no other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Effect:
    """What a scenario does to the events it matches; None or empty leaves a rate at base.

    `violation_rate` replaces the violation probability, and a violation's first category is
    `violation_category` with probability `category_share` (else drawn as usual).
    `injection_attempt`/`injection_success` replace those probabilities and the attempt's
    source is drawn uniformly from `injection_sources`. `refusal_rate` replaces the refusal
    probability (tier factor not applied). `new_model_version` routes all traffic of the
    target's product_surface to that version. `pii_rate` replaces the PII-in-output rate.
    """

    violation_rate: float | None = None
    violation_category: str | None = None
    category_share: float = 0.0
    injection_attempt: float | None = None
    injection_success: float | None = None
    injection_sources: tuple[str, ...] = ()
    refusal_rate: float | None = None
    new_model_version: str | None = None
    pii_rate: float | None = None


@dataclass(frozen=True)
class Scenario:
    """A named incident: `effect` applies to events whose segment has every `target` value
    and whose time lies in [start_fraction, end_fraction) of the generated duration.

    `metric` names the `labels()` key the scenario raises.
    """

    name: str
    description: str
    target: Mapping[str, str] = field(hash=False)
    start_fraction: float
    end_fraction: float
    metric: str
    effect: Effect

    def __post_init__(self) -> None:
        if not 0.0 <= self.start_fraction < self.end_fraction <= 1.0:
            msg = (
                f"scenario {self.name}: need 0 <= start_fraction < end_fraction <= 1, got "
                f"{self.start_fraction}..{self.end_fraction}"
            )
            raise ValueError(msg)

    def active_at(self, fraction: float) -> bool:
        """True iff the scenario is on at `fraction` (0..1) of the duration."""
        return self.start_fraction <= fraction < self.end_fraction

    def matches(self, segment: Mapping[str, str]) -> bool:
        """True iff `segment` has every field value of the target."""
        return all(segment.get(k) == v for k, v in self.target.items())


NEW_API_MODEL_VERSION = "atlas-l-2026.11.1"

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="violation-spike",
            description="Harmful outputs jump to ~9 %, mostly violence, on German chat "
            "traffic of the main chat model.",
            target={
                "product_surface": "chat",
                "model_version": "atlas-l-2026.10.2",
                "locale": "de-DE",
            },
            start_fraction=0.5,
            end_fraction=0.7,
            metric="violation",
            effect=Effect(violation_rate=0.09, violation_category="violence", category_share=0.8),
        ),
        Scenario(
            name="injection-campaign",
            description="A prompt-injection campaign through retrieved pages and tool outputs: "
            "~20 % of en-US agent requests carry an injection, ~15 % of them succeed.",
            target={
                "product_surface": "agent",
                "model_version": "atlas-agent-2026.10.0",
                "locale": "en-US",
            },
            start_fraction=0.25,
            end_fraction=0.45,
            metric="injection_attempt",
            effect=Effect(
                injection_attempt=0.2,
                injection_success=0.15,
                injection_sources=("retrieved_content", "tool_output"),
            ),
        ),
        Scenario(
            name="refusal-jump",
            description=f"A new model version {NEW_API_MODEL_VERSION} takes all API traffic "
            "and refuses ~15 % of requests (over-blocking after a release).",
            target={"product_surface": "api", "model_version": NEW_API_MODEL_VERSION},
            start_fraction=0.6,
            end_fraction=1.0,
            metric="refused",
            effect=Effect(refusal_rate=0.15, new_model_version=NEW_API_MODEL_VERSION),
        ),
        Scenario(
            name="pii-leak",
            description="Personal data appears in ~3 % of en-US search answers.",
            target={
                "product_surface": "search",
                "model_version": "atlas-s-2026.08.1",
                "locale": "en-US",
            },
            start_fraction=0.4,
            end_fraction=0.6,
            metric="pii_in_output",
            effect=Effect(pii_rate=0.03),
        ),
    )
}


def resolve_scenarios(names: Sequence[str]) -> tuple[Scenario, ...]:
    """The scenarios named, in order, without duplicates; ValueError names unknown ones.

    A single string is taken as one name (not as a sequence of characters).
    """
    if isinstance(names, str):
        names = (names,)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        msg = f"unknown scenario(s) {unknown}; known: {', '.join(sorted(SCENARIOS))}"
        raise ValueError(msg)
    return tuple(SCENARIOS[n] for n in dict.fromkeys(names))


def describe_scenarios() -> str:
    """One paragraph per scenario (name, target, time range, effect), for CLI help."""
    lines = []
    for s in SCENARIOS.values():
        target = ", ".join(f"{k}={v}" for k, v in s.target.items())
        lines.append(
            f"{s.name}: {s.description}\n"
            f"    target {target}; from {s.start_fraction:.0%} to {s.end_fraction:.0%} "
            f"of the duration; raises {s.metric}"
        )
    return "\n".join(lines)
