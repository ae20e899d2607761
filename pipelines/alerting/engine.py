"""Alert rules evaluated on the warehouse, window by window, in the batch's derivation.

After each batch's commit the streaming job calls `AlertEngine.evaluate` for the windows
the batch's watermark closed, in ascending order, then `AlertEngine.evaluate_open` for the
windows still open (early firing, docs/alert-rules.md), on the connection of the batch's
derivation: states (`alert_state`), the transitions (`alert_history`) and the
notifications (`notification_outbox`) commit together, marking the batch derived, or not
at all. The same stored data gives the same transitions; a batch is derived once (the
ledger's `derived_at`), a window already evaluated closed for a segment is a no-op
(`evaluate`) and a segment already firing is not fired early again, so nobody is notified
twice.

Notifications: a segment that fires, resolves, or is still firing in a window gets one
outbox row per channel; `pipelines.alerting.outbox` delivers them, with retries.

The engine composes: the SQL is `pipelines.alerting.store`'s, a rule's inputs are summed by
`pipelines.alerting.inputs`, and the states move by the pure functions of
`pipelines.alerting.evaluate` (closed windows) and `pipelines.alerting.early` (open ones).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Connection

from pipelines.alerting import store
from pipelines.alerting.early import can_fire_early, evaluate_early
from pipelines.alerting.evaluate import AlertState, OpenWindow, Transition, evaluate, still_firing
from pipelines.alerting.inputs import (
    RecentWindows,
    WindowData,
    WindowKeyed,
    reads_rate_tests,
    rule_inputs,
)
from pipelines.alerting.model import STORED, Rule
from pipelines.errors import ConfigError
from pipelines.metrics.buckets import BucketSums
from pipelines.metrics.catalog import rate
from pipelines.segments import (
    SEGMENT_DIMENSIONS,
    Segment,
    parse_segment,
    segment_key,
    segment_label,
)
from pipelines.warehouse.tables import Tables, as_utc

CHANNELS = ("alertmanager", "webhook", "kafka")


def _pair(buckets: BucketSums | None) -> tuple[Sequence[int], Sequence[int]] | None:
    return None if buckets is None else (buckets.numerators, buckets.denominators)


def load_window(
    conn: Connection, tables: Tables, window_start: datetime, dimensions: Sequence[str]
) -> WindowData:
    """Everything the rules could read of one window (every rate test and drift row)."""
    (data,) = (data for _, data in windows_read(conn, tables, [window_start], dimensions))
    return data


# Windows read per query: a backlog batch closes a handful, a backtest hundreds.
_WINDOWS_PER_READ = 16


def windows_read(
    conn: Connection,
    tables: Tables,
    windows: Sequence[datetime],
    dimensions: Sequence[str],
    *,
    rules: Sequence[Rule] | None = None,
) -> Iterator[tuple[datetime, WindowData]]:
    """What the rules read of each window of `windows`, in ascending order by UTC start: one
    query per table for every _WINDOWS_PER_READ windows (read as the iteration reaches them)
    instead of three per window. With `rules`, only the rate tests and drift rows those rules
    read: a window holds a test for every rate and a drift row for every distribution of
    every segment, of which the default rules read a few.
    """
    dimension_set = ",".join(dimensions)
    rates = distributions = None
    if rules is not None:
        rates = sorted({rate(r.metric).id for r in rules if reads_rate_tests(r)})
        distributions = sorted({r.drift.distribution for r in rules if r.drift})
    segment_of = itemgetter(*SEGMENT_DIMENSIONS)

    def keyed(rows: list[dict[str, Any]], name: str) -> WindowKeyed:
        return {(r[name], tuple(map(str, segment_of(r)))): r for r in rows}

    starts = sorted({w for w in (as_utc(w) for w in windows) if w is not None})
    for i in range(0, len(starts), _WINDOWS_PER_READ):
        chunk = starts[i : i + _WINDOWS_PER_READ]
        aggregates = store.window_rows(conn, tables.agg, chunk, dimension_set)
        tests = store.window_rows(
            conn, tables.rate_tests, chunk, dimension_set, column="rate_id", kept=rates
        )
        drift = store.window_rows(
            conn, tables.drift, chunk, dimension_set, column="distribution", kept=distributions
        )
        for w in chunk:
            yield (
                w,
                WindowData(
                    w, aggregates[w], keyed(tests[w], "rate_id"), keyed(drift[w], "distribution")
                ),
            )


def bind_rules(rules: Sequence[Rule], dimensions: Sequence[str]) -> list[Rule]:
    """The rules for aggregates grouped by `dimensions`: `by: stored` becomes `dimensions`.

    Raises ConfigError unless every rule can then be evaluated: its `by` is a subset of
    `dimensions`, and with a change, drift or rise condition (which need the rate tests and
    drift rows that exist per stored segment only) it is all of them.
    """
    bound = [replace(r, by=tuple(dimensions)) if r.by == STORED else r for r in rules]
    for rule in bound:
        where = f"{rule.path}:{rule.line}: rule {rule.name}" if rule.path else rule.name
        extra = [d for d in rule.by if d not in dimensions]
        if extra:
            msg = (
                f"{where}: by {list(rule.by)} names {extra}, which the job does not group "
                f"by (stream.dimensions = {list(dimensions)})"
            )
            raise ConfigError(msg)
        if (rule.drift or reads_rate_tests(rule)) and set(rule.by) != set(dimensions):
            msg = (
                f"{where}: change, drift and rise conditions and until_baseline exist per "
                "stored segment only: "
                f"set by to 'stored' (stream.dimensions {list(dimensions)})"
            )
            raise ConfigError(msg)
    return bound


class AlertEngine:
    """The rules of a deployment against the warehouse tables; see the module docstring."""

    def __init__(
        self,
        rules: Sequence[Rule],
        tables: Tables,
        dimensions: Sequence[str],
        *,
        channels: Sequence[str],
        window: timedelta,
        ttl_windows: int = 3,
        runbook_base_url: str = "",
    ) -> None:
        rules = bind_rules(rules, dimensions)
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            msg = f"unknown notification channel(s) {unknown}; known: {list(CHANNELS)}"
            raise ConfigError(msg)
        uneven = [f"{r.name} ({h})" for r in rules for h in r.horizons if h % window or h < window]
        if uneven:
            msg = (
                f"alert rule horizons must be whole multiples of the window ({window}): "
                f"{', '.join(uneven)}"
            )
            raise ConfigError(msg)
        self.rules = list(rules)
        self.tables = tables
        self.dimensions = tuple(dimensions)
        self.channels = tuple(channels)
        self.window = window
        self.ttl = window * ttl_windows
        self.runbook_base_url = runbook_base_url

    def load_states(self, conn: Connection) -> dict[str, dict[Segment, AlertState]]:
        states: dict[str, dict[Segment, AlertState]] = {r.name: {} for r in self.rules}
        for row in store.alert_states(conn, self.tables):
            if row["rule"] not in states:
                continue  # a rule that was removed
            seg = parse_segment(row["segment"])
            states[row["rule"]][seg] = AlertState(
                rule=row["rule"],
                segment=seg,
                status=row["status"],
                true_windows=row["true_windows"],
                false_windows=row["false_windows"],
                started_at=as_utc(row["started_at"]),
                firing_since=as_utc(row["firing_since"]),
                last_window=as_utc(row["last_window"]),
            )
        return states

    def evaluate(
        self,
        conn: Connection,
        windows: Sequence[datetime],
        *,
        now: datetime,
        query_id: str | None = None,
        batch_id: int | None = None,
    ) -> list[Transition]:
        """Evaluate every rule on each window (ascending); store states, history, outbox."""
        if not self.rules or not windows:
            return []
        states = self.load_states(conn)
        before = {name: dict(s) for name, s in states.items()}
        transitions: list[Transition] = []
        notices: list[tuple[Rule, Transition]] = []
        recent = self.recent_windows(conn, windows)
        for w, data in windows_read(conn, self.tables, windows, self.dimensions, rules=self.rules):
            recent.add(w, data)
            for rule in self.rules:
                inputs = recent.inputs(rule, w)
                new_states, changed = evaluate(rule, w, inputs, states[rule.name])
                by_segment = {i.segment: i for i in inputs}
                moved = {t.segment for t in changed}
                for t in changed:
                    if t.to_status in ("firing", "resolved"):
                        notices.append((rule, t))
                for seg, state in new_states.items():
                    was = states[rule.name].get(seg)
                    if (
                        state.status == "firing"
                        and seg not in moved
                        and state.last_window == w
                        and (was is None or was.last_window != w)
                        # not a window before the one it fired in early
                        and (state.firing_since is None or state.firing_since <= w)
                    ):
                        t = still_firing(rule, w, state, by_segment.get(seg))
                        notices.append((rule, t))
                states[rule.name] = new_states
                transitions.extend(changed)
        self._store_states(conn, states, before, now)
        self._store_history(conn, transitions, now, query_id, batch_id)
        self._enqueue(conn, notices, now)
        return transitions

    def recent_windows(self, conn: Connection, windows: Sequence[datetime]) -> RecentWindows:
        """The windows before `windows` the rules' horizons reach back to, read."""
        recent = RecentWindows(self.rules, self.window)
        if windows and recent.reach > 1:
            first = min(w for w in (as_utc(w) for w in windows) if w is not None)
            history = recent.before(first)
            for w, data in windows_read(conn, self.tables, history, self.dimensions, rules=[]):
                recent.add(w, data)
        return recent

    @property
    def early_rules(self) -> list[Rule]:
        """The rules that may fire on a window that is still open."""
        return [r for r in self.rules if can_fire_early(r)]

    def evaluate_open(
        self,
        conn: Connection,
        watermark: datetime,
        *,
        now: datetime,
        query_id: str | None = None,
        batch_id: int | None = None,
    ) -> list[Transition]:
        """Early firing: the `early` rules on the windows the watermark has not closed yet
        (ascending), from their running counts; store states, history, outbox.

        A segment's baseline rate and usual size come from its rate test and counts in the
        window before the first open one, fixed before the open windows' data.
        """
        rules = self.early_rules
        if not rules:
            return []
        opened = store.open_windows(conn, self.tables, ",".join(self.dimensions), watermark)
        if not opened:
            return []
        previous = opened[0] - self.window
        (_, before_data) = next(
            iter(windows_read(conn, self.tables, [previous], self.dimensions, rules=rules))
        )
        states = self.load_states(conn)
        before = {name: dict(s) for name, s in states.items()}
        transitions: list[Transition] = []
        known = {r.name: {i.segment: i for i in rule_inputs(r, before_data)} for r in rules}
        # Every open window's inputs first: a window's latest slices are tested together
        # with the next window's first ones (evaluate.spans).
        read = {
            (rule.name, w): {i.segment: i for i in rule_inputs(rule, data, with_slices=True)}
            for w, data in windows_read(conn, self.tables, opened, self.dimensions, rules=[])
            for rule in rules
        }
        for w in opened:
            following = w + self.window
            for rule in rules:
                previous_of = known[rule.name]
                after = read.get((rule.name, following), {})
                inputs = [
                    OpenWindow(
                        segment=i.segment,
                        numerator=i.numerator,
                        denominator=i.denominator,
                        baseline_rate=previous_of[i.segment].baseline_rate
                        if i.segment in previous_of
                        else None,
                        baseline_counts=previous_of[i.segment].baseline_counts
                        if i.segment in previous_of
                        else None,
                        typical_denominator=previous_of[i.segment].denominator
                        if i.segment in previous_of
                        else None,
                        buckets=_pair(i.buckets),
                        slices=i.slices,
                        next_slices=after[i.segment].slices if i.segment in after else None,
                        next_buckets=_pair(after[i.segment].buckets)
                        if i.segment in after
                        else None,
                    )
                    for i in read[(rule.name, w)].values()
                ]
                states[rule.name], fired = evaluate_early(
                    rule, w, inputs, states[rule.name], next_start=following
                )
                transitions.extend(fired)
        self._store_states(conn, states, before, now)
        self._store_history(conn, transitions, now, query_id, batch_id)
        by_name = {r.name: r for r in rules}
        self._enqueue(conn, [(by_name[t.rule], t) for t in transitions], now)
        return transitions

    def _store_states(
        self,
        conn: Connection,
        states: Mapping[str, Mapping[Segment, AlertState]],
        before: Mapping[str, Mapping[Segment, AlertState]],
        now: datetime,
    ) -> None:
        rows = [
            {
                "rule": s.rule,
                "segment": segment_key(s.segment),
                "status": s.status,
                "true_windows": s.true_windows,
                "false_windows": s.false_windows,
                "started_at": s.started_at,
                "firing_since": s.firing_since,
                "last_window": s.last_window,
                "updated_at": now,
            }
            for name, segs in states.items()
            for seg, s in segs.items()
            if before.get(name, {}).get(seg) != s
        ]
        store.upsert_states(conn, self.tables, rows)

    def _store_history(
        self,
        conn: Connection,
        transitions: Sequence[Transition],
        now: datetime,
        query_id: str | None,
        batch_id: int | None,
    ) -> None:
        if not transitions:
            return
        metrics = {r.name: r.metric for r in self.rules}
        rows = [
            {
                "rule": t.rule,
                "segment": segment_key(t.segment),
                "window_start": t.window_start,
                "from_status": t.from_status,
                "to_status": t.to_status,
                "severity": t.severity,
                "metric": metrics[t.rule],
                "value": t.value,
                "lower": t.lower,
                "upper": t.upper,
                "numerator": t.numerator,
                "denominator": t.denominator,
                "baseline_rate": t.baseline_rate,
                "q_value": t.q_value,
                "drift_value": t.drift_value,
                "firing_since": t.firing_since,
                "summary": t.summary,
                "description": t.description,
                "query_id": query_id,
                "batch_id": batch_id,
                "recorded_at": now,
                "early": t.early,
                "evidence": _finite(t.evidence),
            }
            for t in transitions
        ]
        store.insert_transitions(conn, self.tables, rows)

    def payload(self, rule: Rule, t: Transition, now: datetime) -> dict[str, Any]:
        """The alert as every channel receives it (Alertmanager gets its own shape of it).

        A firing alert's `endsAt` is `ttl_windows` windows after `now` (its evaluation): it is
        sent again with every window while it fires, so it only expires when the job stops
        sending (measured from now, not from the window, so a job running behind does not
        send alerts that have already expired). A resolved alert ends at its window.
        """
        resolved = t.to_status == "resolved"
        labels = {
            "alertname": rule.name,
            "severity": rule.severity,
            "owner": rule.owner,
            "metric": rule.metric,
            **dict(t.segment),
            **dict(rule.labels),
        }
        runbook = f"{self.runbook_base_url}{rule.runbook}"
        starts = t.firing_since or t.window_start
        # An annotation, not a label: a label would make the early page and the closed
        # window's re-sends two alerts to Alertmanager, and page twice.
        early = {"early": "true"} if t.early else {}
        ends = t.window_start if resolved else now + self.ttl
        return {
            "alertname": rule.name,
            "status": "resolved" if resolved else "firing",
            "labels": labels,
            "annotations": {
                "summary": t.summary,
                "description": t.description,
                "runbook_url": runbook,
                "triage_query": triage_query(rule, t.segment, self.dimensions),
                "segment": segment_label(t.segment),
                **early,
            },
            "startsAt": starts.isoformat(),
            "endsAt": ends.isoformat(),
            "window_start": t.window_start.isoformat(),
            "values": {
                "value": t.value,
                "lower": t.lower,
                "upper": t.upper,
                "numerator": t.numerator,
                "denominator": t.denominator,
                "baseline_rate": t.baseline_rate,
                "q_value": t.q_value,
                "drift_value": t.drift_value,
                "windows": t.windows,
                "evidence": _finite(t.evidence),
            },
        }

    def _enqueue(
        self,
        conn: Connection,
        notices: Sequence[tuple[Rule, Transition]],
        now: datetime,
    ) -> None:
        if not notices or not self.channels:
            return
        rows = []
        for rule, t in notices:
            body = json.dumps(self.payload(rule, t, now), sort_keys=True)
            kind = "resolved" if t.to_status == "resolved" else "firing"
            key = f"{rule.name}|{segment_key(t.segment)}|{t.window_start.isoformat()}|{kind}"
            rows += [
                {
                    "channel": channel,
                    "dedup_key": key,
                    "payload": body,
                    "created_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "last_error": None,
                    "sent_at": None,
                }
                for channel in self.channels
            ]
        store.enqueue(conn, self.tables, rows)


def _finite(value: float | None) -> float | None:
    """A value for JSON and SQL, where infinity has no place (an e-value of inf: None)."""
    return None if value is None or value == float("inf") else value


def triage_query(rule: Rule, segment: Segment, dimensions: Sequence[str]) -> str:
    """SQL on the analyst view: the rule's rate in this segment over the last 24 windows."""
    r = rate(rule.metric)

    def quoted(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    conditions = [f"dimension_set = {quoted(','.join(dimensions))}"]
    conditions += [f"{d} = {quoted(v)}" for d, v in segment]
    return (
        f"SELECT window_start, SUM({r.numerator}) AS {r.numerator}, "
        f"SUM({r.denominator}) AS {r.denominator}, "
        f"1.0 * SUM({r.numerator}) / NULLIF(SUM({r.denominator}), 0) AS {r.id} "
        f"FROM v_segment_window WHERE {' AND '.join(conditions)} "
        "GROUP BY window_start ORDER BY window_start DESC LIMIT 24"
    )
