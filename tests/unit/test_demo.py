"""The demo ranks segments by the rate that shows its scenario's incident."""

from jobs.demo import SCENARIO_RATE
from pipelines.metrics.catalog import rate
from pipelines.synth.scenarios import SCENARIOS
from tests.integration.streaming_support import LABEL_TO_COUNTER


def test_every_scenario_has_the_rate_of_its_label():
    for scenario in SCENARIOS.values():
        r = rate(SCENARIO_RATE[scenario.metric])
        # The rate counts what the scenario's label marks (mapping kept by the tests' truth).
        assert r.numerator == LABEL_TO_COUNTER[scenario.metric]
        assert r.denominator == "events"
