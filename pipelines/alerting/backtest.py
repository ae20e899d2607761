"""Replay alert rules over the stored windows of a past period, without touching any state.

`backtest` reads each window of [since, until) from the warehouse in order, evaluates every
rule with states kept in memory (starting inactive), and summarizes per rule how often it
would have fired, for how long and on which segments — so a rule change is judged on history
before it pages anyone. Nothing is written and nobody is notified.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from pipelines.alerting.engine import AlertEngine, windows_read
from pipelines.alerting.evaluate import AlertState, Transition, evaluate
from pipelines.alerting.model import Rule
from pipelines.segments import Segment, segment_label
from pipelines.warehouse.ledger import closed_windows, latest_watermark
from pipelines.warehouse.tables import Tables


@dataclass
class Episode:
    """One firing of one segment: from the window it fired to the window it resolved."""

    segment: Segment
    fired_at: datetime
    resolved_at: datetime | None = None  # None: still firing at the end of the period
    windows: int = 0  # windows in which it was firing


@dataclass
class RuleBacktest:
    rule: Rule
    episodes: list[Episode] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    @property
    def firing_windows(self) -> int:
        return sum(e.windows for e in self.episodes)

    def segments(self) -> list[str]:
        return sorted({segment_label(e.segment) for e in self.episodes})


def stored_windows(
    engine: Engine, dimension_set: str, since: datetime | None, until: datetime | None
) -> list[datetime]:
    """Stored windows starting in [since, until) that the job's watermark has closed.

    Only closed windows are final and have their rate tests and drift rows, and only those
    are the ones the job evaluated, so a backtest replays exactly them.
    """
    tables = Tables(engine)
    with engine.connect() as conn:
        watermark = latest_watermark(conn, tables)
    if watermark is None:
        return []
    with engine.connect() as conn:
        return closed_windows(
            conn, tables, dimension_set, watermark=watermark, since=since, until=until
        )


def backtest(
    engine: Engine,
    rules: Sequence[Rule],
    dimensions: Sequence[str],
    windows: Sequence[datetime],
    *,
    window: timedelta,
) -> list[RuleBacktest]:
    """Evaluate `rules` on `windows` (ascending; each `window` long) from fresh states; one
    result per rule. A rule with `horizons` sums the stored windows before the first one
    too, as the job does.

    Raises ConfigError for a rule the job would refuse (`AlertEngine`).
    """
    tables = Tables(engine)
    alerts = AlertEngine(rules, tables, dimensions, channels=(), window=window)
    rules = alerts.rules
    results = {r.name: RuleBacktest(r) for r in rules}
    states: dict[str, dict[Segment, AlertState]] = {r.name: {} for r in rules}
    open_episodes: dict[tuple[str, Segment], Episode] = {}
    with engine.connect() as conn:
        recent = alerts.recent_windows(conn, windows)
        for w, data in windows_read(conn, tables, windows, dimensions, rules=rules):
            recent.add(w, data)
            for rule in rules:
                new_states, changed = evaluate(rule, w, recent.inputs(rule, w), states[rule.name])
                states[rule.name] = new_states
                result = results[rule.name]
                result.transitions.extend(changed)
                for t in changed:
                    if t.to_status == "firing":
                        episode = Episode(t.segment, w)
                        open_episodes[rule.name, t.segment] = episode
                        result.episodes.append(episode)
                    elif t.to_status == "resolved":
                        episode = open_episodes.pop((rule.name, t.segment))
                        episode.resolved_at = w
                for seg, state in new_states.items():
                    if state.status == "firing" and state.last_window == w:
                        open_episodes[rule.name, seg].windows += 1
    return list(results.values())
