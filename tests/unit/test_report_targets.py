"""Rare-event targets in the weekly report: a week with none seen but too few events to
confirm the target is "unconfirmed", not "at risk", and the report says the volume that
would confirm it. The volume is checked against scipy's Wilson interval
(`binomtest(...).proportion_ci(method="wilson")`), by brute force where it is small and at
the boundary (n confirms, n - 1 does not) where it is not, and against the closed form
n >= z^2 (1 - t) / t that the Wilson upper end for 0 events, z^2 / (n + z^2), gives.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from html import unescape

import pytest
from scipy.stats import binomtest, norm

from pipelines.metrics.catalog import rate_value
from pipelines.report.html import render_html
from pipelines.report.kpis import target_status, volume_to_confirm
from pipelines.report.markdown import render_markdown
from pipelines.report.model import (
    AT_RISK,
    MET,
    MISSED,
    NO_DATA,
    NO_TARGET,
    UNCONFIRMED,
)
from pipelines.report.weekly import collect_weekly
from pipelines.report.wording import headline
from pipelines.settings import Settings
from tests import report_week


def _wilson(k: int, n: int):
    return binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")


def _pii(k: int, n: int):
    return rate_value("pii_output_rate", {"pii_outputs": k, "events": n})


def _completeness(k: int, n: int):
    return rate_value("telemetry_completeness", {"telemetry_complete": k, "events_seen": n})


@pytest.mark.parametrize(
    ("value", "target", "worse", "status"),
    [
        (_pii(0, 6_644), 0.0001, True, UNCONFIRMED),  # upper end 0.058 % > 0.01 %, none seen
        (_pii(1, 6_644), 0.0001, True, AT_RISK),  # one seen: 0.015 %, above the target
        (_pii(0, 50_000), 0.0001, True, MET),  # upper end 0.0077 %
        (_pii(30, 6_644), 0.001, True, MISSED),
        (_pii(0, 0), 0.0001, True, NO_DATA),
        (_pii(0, 6_644), None, True, NO_TARGET),
        (_completeness(200, 200), 0.99, False, UNCONFIRMED),  # all complete, lower end 98.1 %
        (_completeness(199, 200), 0.99, False, AT_RISK),
        (_completeness(500, 500), 0.99, False, MET),  # lower end 99.2 %
    ],
)
def test_target_status(value, target, worse, status):
    assert target_status(value, target, higher_is_worse=worse) == status


@pytest.mark.parametrize("target", [0.2, 0.05, 0.01, 0.005])
def test_volume_to_confirm_is_the_first_n_whose_clean_week_meets_the_target(target):
    brute = next(n for n in range(1, 10_000) if _wilson(0, n).high <= target)
    assert volume_to_confirm(target, higher_is_worse=True) == brute


@pytest.mark.parametrize("target", [0.8, 0.95, 0.98, 0.99])
def test_volume_to_confirm_a_rate_that_must_stay_high(target):
    brute = next(n for n in range(1, 10_000) if _wilson(n, n).low >= target)
    assert volume_to_confirm(target, higher_is_worse=False) == brute


@pytest.mark.parametrize("target", [0.001, 0.0001, 0.00001])
def test_volume_to_confirm_a_rare_event_target(target):
    n = volume_to_confirm(target, higher_is_worse=True)
    assert n is not None
    assert _wilson(0, n).high <= target < _wilson(0, n - 1).high
    z = norm.ppf(0.975)
    assert n == math.ceil(z * z * (1 - target) / target)


def test_volume_of_the_default_pii_target_is_about_38_thousand():
    assert volume_to_confirm(0.0001, higher_is_worse=True) == 38_411
    assert _wilson(0, 38_411).high <= 0.0001 < _wilson(0, 38_410).high


def test_no_volume_confirms_a_target_of_zero():
    assert volume_to_confirm(0.0, higher_is_worse=True) is None
    assert volume_to_confirm(1.0, higher_is_worse=False) is None


# ---------------------------------------------------------------- in the report
@pytest.fixture(scope="module")
def report(tmp_path_factory):
    url, engine = report_week.warehouse(tmp_path_factory.mktemp("targets"))
    settings = Settings.load(environ=report_week.environ(url))
    report = collect_weekly(engine, settings, report_week.WEEK, now=report_week.NOW)
    engine.dispose()
    # Without the charts (slow to draw, and nothing to do with statuses).
    return replace(report, trends=replace(report.trends, charts=()))


def test_pii_and_redaction_with_none_seen_in_6644_events_are_unconfirmed(report):
    needed = next(n for n in range(38_000, 39_000) if _wilson(0, n).high <= 0.0001)
    for rate_id in ("pii_output_rate", "redaction_failure_rate"):
        k = report.kpi(rate_id)
        assert (k.current.numerator, k.current.denominator) == (0, report_week.EVENTS)
        assert k.status == UNCONFIRMED
        assert k.volume_to_confirm == needed
    assert report.data_quality.redaction.status == UNCONFIRMED
    assert report.status_counts()[UNCONFIRMED] == 2
    assert report.status_counts()[AT_RISK] == 0


def test_the_report_says_what_the_week_can_confirm_and_the_volume_needed(report):
    html = " ".join(unescape(re.sub(r"<[^>]+>", " ", render_html(report))).split())
    markdown = render_markdown(report)
    for text in (html, unescape(markdown)):
        assert (
            "PII leakage rate: none seen in 6,644 events; that volume can confirm < 0.058 %, "
            "not < 0.01 %. Confirming < 0.01 % takes at least 38,411 events in a week with "
            "none seen (5.8 times this week's)."
        ) in text
        assert "Redaction failure rate: none seen in 6,644 records" in text
        assert "none seen; confirms < 0.058 % only" in text
    rows = [line for line in markdown.splitlines() if line.startswith("| PII leakage rate |")]
    assert len(rows) == 1 and "**Unconfirmed**" in rows[0] and "At risk" not in rows[0]
    assert 'data-kpi="pii_output_rate"' in render_html(report)
    assert re.search(
        r'data-kpi="pii_output_rate"[^>]*data-status="unconfirmed"', render_html(report)
    )


def test_an_unconfirmed_kpi_alone_leaves_the_week_on_track(report):
    calm = replace(
        report,
        kpis=tuple(
            k if k.status in (UNCONFIRMED, NO_TARGET) else replace(k, status=MET)
            for k in report.kpis
        ),
        incidents=replace(report.incidents, incidents=(), sev1=0, still_firing=0),
    )
    assert headline(calm) == ("ok", "On track")
    at_risk = replace(
        calm,
        kpis=tuple(
            replace(k, status=AT_RISK) if k.rate_id == "pii_output_rate" else k for k in calm.kpis
        ),
    )
    assert headline(at_risk) == ("warn", "Watch")
