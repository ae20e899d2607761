"""The segment dimensions and the policy categories come from the event contract, and every
place that needs them uses the same definition.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import inspect

from pipelines.metrics.catalog import POLICY_CATEGORIES, RATES
from pipelines.segments import (
    ALL_DIMENSIONS_VALUE,
    OTHER_VALUE,
    RESERVED_VALUES,
    SEGMENT_DIMENSIONS,
    UNKNOWN_VALUE,
)
from pipelines.settings import StreamSettings
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "interaction_event" / "v1.json"


def _schema() -> dict:
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


def test_the_dimensions_are_the_segment_fields_of_the_event_schema_in_order() -> None:
    segment = _schema()["properties"]["segment"]
    assert SEGMENT_DIMENSIONS == tuple(segment["properties"])
    assert set(segment["required"]) == set(SEGMENT_DIMENSIONS)


def test_the_policy_categories_are_those_the_schema_allows() -> None:
    moderation = _schema()["properties"]["moderation"]["properties"]
    assert POLICY_CATEGORIES == tuple(moderation["flagged_categories"]["items"]["enum"])
    assert POLICY_CATEGORIES == tuple(moderation["scores"]["properties"])  # a score each
    # One violation rate per category in the catalog, named after it.
    per_category = {r.id.removeprefix("violation_rate_") for r in RATES}
    assert set(POLICY_CATEGORIES) <= per_category


def test_the_warehouse_has_a_column_per_dimension(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("segment_window_agg")}
    assert set(SEGMENT_DIMENSIONS) <= columns


def test_the_default_grouping_uses_dimensions_of_the_schema() -> None:
    assert set(StreamSettings().dimensions) <= set(SEGMENT_DIMENSIONS)


def test_reserved_values_are_not_values_a_producer_can_be_told_apart_from() -> None:
    assert {ALL_DIMENSIONS_VALUE, OTHER_VALUE, UNKNOWN_VALUE} == RESERVED_VALUES


def test_each_rate_is_one_entry_that_the_report_the_settings_and_the_exporter_read() -> None:
    from pipelines.metrics.catalog import rate
    from pipelines.monitoring.exporter import HEADLINE_RATES
    from pipelines.report.model import CHART_RATES, KPI_ORDER
    from pipelines.report.wording import kpi_name, unit
    from pipelines.settings import ReportSettings

    # The example targets of the field's KPI reference (shared/reference/safety-kpis.md).
    assert ReportSettings().targets == {
        "violation_rate": 0.001,
        "over_refusal_rate": 0.05,
        "jailbreak_success_rate": 0.05,
        "injection_success_rate": 0.01,
        "unauthorized_tool_call_rate": 0.01,
        "pii_output_rate": 0.0001,
        "redaction_failure_rate": 0.0001,
        "telemetry_completeness": 0.98,
    }
    assert KPI_ORDER[:2] == ("violation_rate", "refusal_rate")  # the pair shown together
    assert set(KPI_ORDER) == set(ReportSettings().targets) | {"refusal_rate"}
    assert "violation_rate" in CHART_RATES and "violation_rate" in HEADLINE_RATES
    assert kpi_name("jailbreak_success_rate") == rate("jailbreak_success_rate").name
    assert kpi_name("violation_rate_self_harm") == "Harmful output: self harm"
    assert unit("jailbreak_success_rate") == "jailbreak attempts"
    assert unit("telemetry_completeness") == "records"
