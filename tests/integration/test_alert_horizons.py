"""Rules over several horizons, on SQLite and PostgreSQL: a low-volume segment that is bad
for an hour pages although no single window has enough events, a segment that stopped being
bad does not, and the backtest replays the same transitions.

Expectations are computed here from the generated counts with scipy's Wilson interval, not
by the engine's code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from scipy.stats import binomtest

from pipelines.alerting.backtest import backtest
from pipelines.alerting.engine import AlertEngine
from pipelines.alerting.loader import parse_rules
from pipelines.errors import ConfigError
from pipelines.warehouse.sink import WarehouseSink
from tests.integration.alert_windows import DIMS, commit_windows, warehouse_engine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
WINDOWS = 16
LIMIT = 0.05
MIN_EVENTS = 100


def counts(locale: str, w: int) -> tuple[int, int]:
    """(events, violations) of a segment in window `w`."""
    if locale == "ja-JP":  # low volume, 13 % harmful throughout: no window reaches 100 events
        return 60, 8
    if locale == "ko-KR":  # low volume, bad for the first 40 minutes only, then clean
        return (60, 10) if w < 8 else (60, 0)
    if locale == "en-US":  # large and healthy
        return 400, 2
    if locale == "pt-BR":  # appears in window 10, harmful from its first window
        return (150, 15) if w >= 10 else (0, 0)
    raise AssertionError(locale)


LOCALES = ("ja-JP", "ko-KR", "en-US", "pt-BR")
RULES = f"""
rules:
  - name: Sustained
    metric: violation_rate
    by: [locale]
    horizons: [5 minutes, 1 hour]
    condition:
      threshold: {{above: {LIMIT}}}
    min_events: {MIN_EVENTS}
    severity: sev2
    owner: trust-safety
    runbook: runbooks/HarmfulOutputSustained.md
    summary: "{{value:.1%}} over the hour in {{segment}}"
  - name: OneWindow
    metric: violation_rate
    by: [locale]
    condition:
      threshold: {{above: {LIMIT}}}
    min_events: {MIN_EVENTS}
    severity: sev3
    owner: trust-safety
    runbook: runbooks/HarmfulOutputRateHigh.md
    summary: "{{value:.1%}} in {{segment}}"
"""


def expected_firing(locale: str, w: int) -> bool:
    """The hour's Wilson lower bound above the limit on enough events, and the latest
    window's rate above the limit."""
    hour = [counts(locale, i) for i in range(max(0, w - 11), w + 1)]
    events, violations = sum(n for n, _ in hour), sum(k for _, k in hour)
    if events < MIN_EVENTS:
        return False
    low = binomtest(violations, events).proportion_ci(method="wilson").low
    latest_events, latest_violations = counts(locale, w)
    return low > LIMIT and latest_events > 0 and latest_violations / latest_events > LIMIT


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request, tmp_path):
    engine = warehouse_engine(request, tmp_path, "hz")
    sink = WarehouseSink(engine)
    windows = {
        w: {
            locale: {"events": events, "violations": violations}
            for locale in LOCALES
            for events, violations in [counts(locale, w)]
            if events
        }
        for w in range(WINDOWS)
    }
    commit_windows(sink, T0, WINDOW, windows)
    yield engine, sink
    engine.dispose()


def test_horizon_rule_pages_low_volume_and_new_segments_and_the_backtest_agrees(warehouse):
    engine, sink = warehouse
    rules = parse_rules(RULES, "horizons.yaml")
    alerts = AlertEngine(rules, sink.tables, DIMS, channels=(), window=WINDOW)
    transitions = []
    for w in range(WINDOWS):  # one window at a time, as the job closes them
        with engine.begin() as conn:
            transitions += alerts.evaluate(conn, [T0 + w * WINDOW], now=T0 + timedelta(hours=3))

    def episodes(rule):
        firing, out = {}, []
        for t in transitions:
            if t.rule != rule:
                continue
            loc = dict(t.segment)["locale"]
            if t.to_status == "firing":
                firing[loc] = t.window_start
            elif t.to_status == "resolved":
                out.append((loc, firing.pop(loc), t.window_start))
        return sorted(out + [(loc, start, None) for loc, start in firing.items()])

    # Independent expectation, window by window from the counts.
    expected = []
    for locale in LOCALES:
        start = None
        for w in range(WINDOWS):
            fires = expected_firing(locale, w)
            if fires and start is None:
                start = w
            elif not fires and start is not None:
                expected.append((locale, T0 + start * WINDOW, T0 + w * WINDOW))
                start = None
        if start is not None:
            expected.append((locale, T0 + start * WINDOW, None))
    assert episodes("Sustained") == sorted(expected)
    fired = {loc for loc, _, _ in expected}
    assert fired == {"ja-JP", "ko-KR", "pt-BR"}  # the scenario exercises every case
    assert [e[2] for e in expected if e[0] == "ko-KR"] == [T0 + 8 * WINDOW]  # clean again
    assert episodes("OneWindow") == [("pt-BR", T0 + 10 * WINDOW, None)]  # 150 a window
    firing = next(t for t in transitions if t.rule == "Sustained" and t.to_status == "firing")
    hour = [counts("ja-JP", i) for i in range(0, 2)]
    assert (firing.numerator, firing.denominator) == (  # the values are the hour's
        sum(k for _, k in hour),
        sum(n for n, _ in hour),
    )

    def key(t):
        return (t.rule, t.segment, t.window_start, t.to_status, t.numerator, t.denominator)

    whole = backtest(engine, rules, DIMS, [T0 + w * WINDOW for w in range(WINDOWS)], window=WINDOW)
    assert sorted(key(t) for r in whole for t in r.transitions) == sorted(map(key, transitions))
    # A replay from window 4 reads the windows before it for the hour: ja-JP fires there
    # (fresh states) on the sum of windows 0-4.
    late = backtest(
        engine, rules, DIMS, [T0 + w * WINDOW for w in range(4, WINDOWS)], window=WINDOW
    )
    (first,) = [
        t
        for r in late
        for t in r.transitions
        if r.rule.name == "Sustained" and dict(t.segment)["locale"] == "ja-JP"
    ]
    hour = [counts("ja-JP", i) for i in range(5)]
    assert (first.window_start, first.to_status) == (T0 + 4 * WINDOW, "firing")
    assert (first.numerator, first.denominator) == (
        sum(k for _, k in hour),
        sum(n for n, _ in hour),
    )


def test_horizons_must_be_whole_windows(warehouse):
    _, sink = warehouse
    rules = parse_rules(RULES.replace("1 hour", "62 minutes"), "horizons.yaml")
    with pytest.raises(ConfigError, match=r"whole multiples of the window .*Sustained"):
        AlertEngine(rules, sink.tables, DIMS, channels=(), window=WINDOW)
