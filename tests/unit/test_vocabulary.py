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
