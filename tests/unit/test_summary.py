from datetime import UTC, datetime, timedelta

import pytest
from scipy.stats import binomtest

from pipelines.metrics.catalog import counter_ids
from pipelines.metrics.summary import summarize_segments

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def _row(locale, minute, events, violations):
    row = dict.fromkeys(counter_ids(), 0)
    row.update(
        locale=locale,
        window_start=T0 + timedelta(minutes=minute),
        events=events,
        violations=violations,
    )
    return row


def test_summaries_sum_counters_and_rank_by_peak_window_with_enough_events():
    rows = [
        _row("de-DE", 0, 100, 1),
        _row("de-DE", 5, 100, 20),
        _row("en-US", 0, 300, 3),
        _row("en-US", 5, 10, 9),  # high rate but below min_events: not a peak
    ]
    out = summarize_segments(rows, ["locale"], min_events=30)
    assert [s.segment for s in out] == [("de-DE",), ("en-US",)]
    de, en = out
    assert de.totals["events"] == 200 and de.totals["violations"] == 21
    assert de.peak_rate == 0.2 and de.peak_window_start == T0 + timedelta(minutes=5)
    assert en.peak_rate == 0.01 and en.windows == 2
    value = en.rate("violation_rate")
    assert (value.numerator, value.denominator, value.value) == (12, 310, 12 / 310)
    ci = binomtest(12, 310).proportion_ci(method="wilson")  # scipy's Wilson interval
    assert value.lower == pytest.approx(ci.low) and value.upper == pytest.approx(ci.high)


def test_segment_without_eligible_window_sorts_last():
    rows = [_row("fr-FR", 0, 5, 5), _row("en-US", 0, 50, 0)]
    out = summarize_segments(rows, ["locale"], min_events=30)
    assert [s.segment for s in out] == [("en-US",), ("fr-FR",)]
    assert out[1].peak_rate is None
