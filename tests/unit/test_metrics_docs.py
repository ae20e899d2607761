"""docs/metrics.md is generated from the catalog; it must not fall behind the code."""

from pathlib import Path

from pipelines.metrics.catalog import EVENT_COUNTERS, QUANTILES, RATES, TELEMETRY_COUNTERS
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.metrics.docs import metrics_reference

REPO = Path(__file__).resolve().parents[2]


def test_metrics_reference_in_docs_is_current():
    assert (REPO / "docs" / "metrics.md").read_text() == metrics_reference() + "\n"


def test_reference_documents_every_metric_id():
    text = metrics_reference()
    for item in (*EVENT_COUNTERS, *TELEMETRY_COUNTERS, *RATES, *QUANTILES, *DISTRIBUTIONS):
        assert f"| `{item.id}` |" in text, item.id
