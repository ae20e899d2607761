"""The weekly report's small-segment suppression on a real PostgreSQL warehouse: the same
ground truth and assertions as tests/unit/test_report_suppression.py (SQLite).
"""

from __future__ import annotations

from pipelines.warehouse.engine import make_engine
from tests.unit.test_report_suppression import (
    build,
    build_short,
    check_nothing_derivable,
    check_short_trends,
)


def test_a_small_segment_cannot_be_read_or_derived_from_the_report_on_postgresql(postgres):
    engine = make_engine(postgres.create_database("report_suppression"))
    try:
        check_nothing_derivable(*build(engine))
    finally:
        engine.dispose()


def test_a_trend_point_of_a_small_group_alone_is_left_out_on_postgresql(postgres):
    engine = make_engine(postgres.create_database("report_short_trends"))
    try:
        check_short_trends(*build_short(engine))
    finally:
        engine.dispose()
