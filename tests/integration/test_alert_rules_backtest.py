"""The default alert rules fire on the demo incidents, and on nothing else.

`backtest` replays alerts/rules over the windows of the scenario warehouse (an hour with
all four incidents of `pipelines.synth.scenarios`, written by the job's batch processor).
Expectations come from the scenarios' definitions, not from the rules:

- every episode is on an incident's target segment (a target without locale, as the
  refusal-jump's, covers every locale) and overlaps the incident's time range: it fires in a
  window that overlaps the incident and fires no later than two windows after its end
  (resolution lag: `keep_firing_for` and the window holding the end);
- each incident fires the rules of the metric it raises;
- the rules whose metric no incident moves never fire.

And the streaming path is deterministic: the alert_history the job wrote while processing
the batches equals the backtest's transitions over the same windows, but for the pages the
job made early, on a window still open (docs/alert-rules.md): same transition, made from the
window's counts so far.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from pipelines.alerting.backtest import Episode, RuleBacktest, backtest, stored_windows
from pipelines.alerting.loader import load_rules
from pipelines.segments import parse_segment, segment_label
from pipelines.warehouse.tables import Tables, as_utc
from tests.integration.scenario_warehouse import RULES_DIR, Incident, ScenarioWarehouse

pytestmark = pytest.mark.integration

# Scenario -> the rules that must fire on it (rules on the metric the scenario raises).
MUST_FIRE = {
    "violation-spike": {"HarmfulOutputRateHigh", "ViolenceViolationSpike"},
    "injection-campaign": {"InjectionCampaign"},
    "refusal-jump": {"RefusalSpike"},
    "pii-leak": {"PIILeakInOutput"},
}
# Rules whose metric no scenario moves.
MUST_NOT_FIRE = {
    "SelfHarmViolationSpike",
    "RedactionFailures",
    "JailbreakSuccess",
    "TelemetryIncomplete",
}
RESOLUTION_LAG_WINDOWS = 2


def evaluated_windows(wh: ScenarioWarehouse) -> list[datetime]:
    """The stored windows the job closed (and so evaluated): window end <= last watermark."""
    return [
        w
        for w in stored_windows(wh.engine, wh.dimension_set, None, None)
        if w + wh.window <= wh.watermark
    ]


def firing_windows(episode: Episode, window: timedelta, last: datetime) -> list[datetime]:
    """Window starts in which the episode was firing (up to `last` if it never resolved)."""
    end = episode.resolved_at if episode.resolved_at is not None else last + window
    out, w = [], episode.fired_at
    while w < end:
        out.append(w)
        w += window
    return out


def explains(incident: Incident, episode: Episode, wh: ScenarioWarehouse, last: datetime) -> bool:
    if not incident.matches(dict(episode.segment)):
        return False
    windows = firing_windows(episode, wh.window, last)
    first_overlaps = (
        episode.fired_at < incident.end and episode.fired_at + wh.window > incident.start
    )
    latest = incident.end + RESOLUTION_LAG_WINDOWS * wh.window
    return first_overlaps and all(w < latest for w in windows)


@pytest.fixture(scope="module")
def windows(scenario_warehouse: ScenarioWarehouse) -> list[datetime]:
    found = evaluated_windows(scenario_warehouse)
    assert len(found) == 10  # 12 windows stored; the final watermark (55 min) closed 10
    return found


@pytest.fixture(scope="module")
def results(scenario_warehouse, windows) -> dict[str, RuleBacktest]:
    rules = load_rules([RULES_DIR])
    out = backtest(
        scenario_warehouse.engine, rules, scenario_warehouse.dimensions, windows,
        window=scenario_warehouse.window,
    )  # fmt: skip
    return {r.rule.name: r for r in out}


def _describe(results: dict[str, RuleBacktest]) -> str:
    return "\n".join(
        f"{name}: {segment_label(e.segment)} fired {e.fired_at:%H:%M}, resolved "
        f"{e.resolved_at:%H:%M}"
        if e.resolved_at
        else f"{name}: {segment_label(e.segment)} fired {e.fired_at:%H:%M}, still firing"
        for name, r in results.items()
        for e in r.episodes
    )


def test_every_rule_is_backtested(results):
    assert set(results) == {r.name for r in load_rules([RULES_DIR])}
    assert MUST_NOT_FIRE | set().union(*MUST_FIRE.values()) <= set(results)


def test_every_episode_is_an_injected_incident(scenario_warehouse, windows, results):
    wh = scenario_warehouse
    stray = [
        f"{name}: {segment_label(e.segment)} fired {e.fired_at:%H:%M}"
        for name, r in results.items()
        for e in r.episodes
        if not any(explains(i, e, wh, windows[-1]) for i in wh.incidents.values())
    ]
    assert not stray, "episodes no incident explains:\n" + "\n".join(stray)


@pytest.mark.parametrize("scenario", sorted(MUST_FIRE))
def test_each_incident_fires_the_rules_of_its_metric(
    scenario, scenario_warehouse, windows, results
):
    incident = scenario_warehouse.incidents[scenario]
    missed = [
        rule
        for rule in sorted(MUST_FIRE[scenario])
        if not any(
            explains(incident, e, scenario_warehouse, windows[-1]) for e in results[rule].episodes
        )
    ]
    assert not missed, f"{scenario}: {missed} did not fire; episodes:\n{_describe(results)}"


def test_rules_without_an_incident_never_fire(results):
    fired = {name: results[name].segments() for name in MUST_NOT_FIRE if results[name].episodes}
    assert not fired


def test_streaming_alert_history_equals_the_backtest(scenario_warehouse, results):
    t = Tables(scenario_warehouse.engine).alert_history
    with scenario_warehouse.engine.connect() as conn:
        stored = conn.execute(select(t)).mappings().all()
    assert stored, "the job recorded no alert transition"

    def key(rule, segment, window_start, to_status):
        return (rule, segment, window_start, to_status)

    history = {
        key(r["rule"], parse_segment(r["segment"]), as_utc(r["window_start"]), r["to_status"]): (
            r["from_status"],
            r["severity"],
            r["numerator"],
            r["denominator"],
            r["value"],
            r["lower"],
            r["upper"],
            r["baseline_rate"],
            r["q_value"],
            r["drift_value"],
            as_utc(r["firing_since"]),
            r["summary"],
            r["description"],
        )
        for r in stored
    }
    replayed = {
        key(t.rule, t.segment, t.window_start, t.to_status): (
            t.from_status,
            t.severity,
            t.numerator,
            t.denominator,
            t.value,
            t.lower,
            t.upper,
            t.baseline_rate,
            t.q_value,
            t.drift_value,
            t.firing_since,
            t.summary,
            t.description,
        )
        for r in results.values()
        for t in r.transitions
    }
    assert len(history) == len(stored)
    assert sorted(history) == sorted(replayed)
    early = {
        key(r["rule"], parse_segment(r["segment"]), as_utc(r["window_start"]), r["to_status"])
        for r in stored
        if r["early"]
    }
    assert early, "no rule fired early: the scenario no longer exercises early firing"
    for k, values in history.items():
        if k not in early:
            assert values == replayed[k], k
            continue
        # Fired early, in the same window as the closed window fires: the same page, from
        # the window's running counts (at most its final counts) and the baseline known
        # before the window.
        (from_status, severity, numerator, denominator), final = values[:4], replayed[k]
        assert (k[3], from_status, severity) == ("firing", final[0], final[1]), k
        assert numerator <= final[2] and denominator <= final[3], k
        assert values[10] == final[10] == k[2], k  # firing since the window itself


def test_cli_backtest_reports_the_same_episodes(
    scenario_warehouse, windows, results, monkeypatch, capsys
):
    from jobs.cli import main

    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", scenario_warehouse.url)
    until = windows[-1] + scenario_warehouse.window
    code = main(["alerts", "backtest", "--rules", str(RULES_DIR), "--to", until.isoformat()])
    out = capsys.readouterr().out
    assert code == 0, out
    for name, r in results.items():
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert row.split()[2] == str(len(r.episodes)), row
        for e in r.episodes:
            assert f"  {name}: {segment_label(e.segment)} fired {e.fired_at:%Y-%m-%d %H:%M}" in out
