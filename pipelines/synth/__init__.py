"""Synthetic `interaction_event` v1 streams for demos, tests and benchmarks (pure, seeded)."""

from pipelines.synth.generator import generate_events, labels
from pipelines.synth.rates import BaseRates
from pipelines.synth.scenarios import SCENARIOS, Effect, Scenario, describe_scenarios

__all__ = [
    "SCENARIOS",
    "BaseRates",
    "Effect",
    "Scenario",
    "describe_scenarios",
    "generate_events",
    "labels",
]
