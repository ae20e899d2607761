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
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from pipelines.alerting.evaluate import (
    AlertState,
    OpenWindow,
    Segment,
    SegmentWindow,
    Transition,
    can_fire_early,
    evaluate,
    evaluate_early,
    segment_label,
    still_firing,
)
from pipelines.alerting.rules import STORED, Rule
from pipelines.errors import ConfigError
from pipelines.metrics.buckets import BUCKETS, BucketSums, rate_buckets, read_counter_buckets
from pipelines.metrics.catalog import rate
from pipelines.settings import SEGMENT_DIMENSIONS
from pipelines.warehouse.sink import upsert_for
from pipelines.warehouse.tables import Tables, as_utc, text_key

CHANNELS = ("alertmanager", "webhook", "kafka")


WindowKeyed = dict[tuple[str, tuple[str, ...]], dict[str, Any]]


@dataclass(frozen=True)
class WindowData:
    """What the rules read of one window: aggregate rows, rate tests and drift rows."""

    window_start: datetime
    rows: Sequence[Mapping[str, Any]]
    tests: Mapping[tuple[str, tuple[str, ...]], Mapping[str, Any]]  # (rate id, segment values)
    drift: Mapping[tuple[str, tuple[str, ...]], Mapping[str, Any]]  # (distribution, segment)


def segment_key(segment: Segment) -> str:
    """The stored form of a segment: JSON [[dimension, value], ...] in the rule's order."""
    return json.dumps([list(p) for p in segment], separators=(",", ":"))


def parse_segment(key: str) -> Segment:
    return tuple((str(d), str(v)) for d, v in json.loads(key))


def _decoded(row: Mapping[str, Any], column: str = "bucket_sums") -> dict[str, Any] | None:
    """A row's decoded bucket_sums or slice_sums (None: counted before they were kept),
    decoded once and kept in a dict row: every rule reads the same rows.
    """
    cached = f"_{column}"
    if cached in row:
        return cast(dict[str, Any] | None, row[cached])
    decoded = read_counter_buckets(row.get(column))
    if isinstance(row, dict):
        row[cached] = decoded
    return decoded


def row_buckets(row: Mapping[str, Any], numerator: str, denominator: str) -> BucketSums | None:
    """One aggregate row's per-bucket sums of a rate; None when the row has none (counted
    before they were kept).
    """
    decoded = _decoded(row)
    return None if decoded is None else rate_buckets(decoded, numerator, denominator)


def add_buckets(a: BucketSums | None, b: BucketSums | None, b_events: int) -> BucketSums | None:
    """Sum of two bucket sums, where None is unknown unless it stands for no events."""
    if b is None:
        return None if b_events else a
    if a is None:
        return None
    return a + b


class _BucketTotal:
    """Running per-bucket sums of one rate over rows: numpy, turned into BucketSums once."""

    __slots__ = ("den", "known", "num")

    def __init__(self) -> None:
        self.num = np.zeros(BUCKETS, dtype=np.int64)
        self.den = np.zeros(BUCKETS, dtype=np.int64)
        self.known = True

    def add(self, row: Mapping[str, Any], numerator: str, denominator: str, events: int) -> None:
        decoded = _decoded(row)
        if decoded is None:
            # Unknown, unless the row has no events of this rate.
            self.known = self.known and events == 0
            return
        for target, counter in ((self.num, numerator), (self.den, denominator)):
            found = decoded.get(counter)
            if found is not None:
                target += found

    def sums(self) -> BucketSums | None:
        return BucketSums.of_arrays(self.num, self.den) if self.known else None


class _SliceTotal:
    """Running per-slice sums of one rate over rows; unknown when a row with events of the
    rate has none, or rows disagree on the number of slices.
    """

    __slots__ = ("den", "known", "num")

    def __init__(self) -> None:
        self.num: npt.NDArray[np.int64] | None = None
        self.den: npt.NDArray[np.int64] | None = None
        self.known = True

    def add(self, row: Mapping[str, Any], numerator: str, denominator: str, events: int) -> None:
        if not self.known or not events:
            return
        decoded = _decoded(row, "slice_sums")
        den = None if decoded is None else decoded.get(denominator)
        if den is None:
            self.known = False
            return
        num = decoded.get(numerator) if decoded is not None else None
        if self.den is None:
            self.num = np.zeros(len(den), dtype=np.int64)
            self.den = np.zeros(len(den), dtype=np.int64)
        if len(den) != len(self.den) or (num is not None and len(num) != len(self.den)):
            self.known = False
            return
        self.den += den
        if num is not None:
            assert self.num is not None
            self.num += num

    def sums(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        if not self.known or self.num is None or self.den is None:
            return None
        return tuple(self.num.tolist()), tuple(self.den.tolist())


def _pair(buckets: BucketSums | None) -> tuple[Sequence[int], Sequence[int]] | None:
    return None if buckets is None else (buckets.numerators, buckets.denominators)


def reads_rate_tests(rule: Rule) -> bool:
    """Whether `rule` reads its rate's test rows: a `change`, a `rise`, or a threshold with
    `until_baseline` (the baseline's size).
    """
    until = rule.threshold is not None and rule.threshold.until_baseline is not None
    return bool(rule.change or rule.rise or until)


def rule_inputs(rule: Rule, data: WindowData, *, with_slices: bool = False) -> list[SegmentWindow]:
    """The rule's per-segment inputs in one window (pure): the rate's counters and their
    per-user-bucket sums summed over the dimensions the rule does not group by; the rate
    test and the drift statistic of the segment when the rule groups by exactly the stored
    dimensions; with `with_slices` (an open window), the per-slice sums too.
    """
    r = rate(rule.metric)
    sums: dict[Segment, list[int]] = {}
    buckets: dict[Segment, _BucketTotal] = {}
    slices: dict[Segment, _SliceTotal] | None = {} if with_slices else None
    full: dict[Segment, tuple[str, ...]] = {}
    for row in data.rows:
        seg = tuple((d, str(row[d])) for d in rule.by)
        acc = sums.setdefault(seg, [0, 0])
        den_row = int(row[r.denominator])
        acc[0] += int(row[r.numerator])
        acc[1] += den_row
        total = buckets.get(seg)
        if total is None:
            total = buckets[seg] = _BucketTotal()
        total.add(row, r.numerator, r.denominator, den_row)
        if slices is not None:
            sliced = slices.get(seg)
            if sliced is None:
                sliced = slices[seg] = _SliceTotal()
            sliced.add(row, r.numerator, r.denominator, den_row)
        full[seg] = tuple(str(row[d]) for d in SEGMENT_DIMENSIONS)
    out = []
    for seg, (num, den) in sorted(sums.items()):
        test = data.tests.get((r.id, full[seg])) if reads_rate_tests(rule) else None
        drift = data.drift.get((rule.drift.distribution, full[seg])) if rule.drift else None
        baseline = counts = None
        if test is not None and test["baseline_denominator"]:
            counts = (int(test["baseline_numerator"]), int(test["baseline_denominator"]))
            baseline = counts[0] / counts[1]
        out.append(
            SegmentWindow(
                segment=seg,
                numerator=num,
                denominator=den,
                q_value=None if test is None else test["q_value"],
                difference=None if test is None else test["difference"],
                baseline_rate=baseline,
                baseline_counts=counts,
                drift_value=None
                if drift is None or rule.drift is None
                else drift[rule.drift.statistic],
                buckets=buckets[seg].sums(),
                slices=None if slices is None else slices[seg].sums(),
            )
        )
    return out


class RecentWindows:
    """The windows the rules' `horizons` reach back to, kept as the evaluation moves forward.

    `before(first)` names the windows to read before the first one evaluated; `add` each
    window's data in ascending order; `inputs(rule, w)` is `rule_inputs` for a rule without
    horizons, and for one with horizons the segment sums over its longest horizon (the
    windows ending with `w`; a segment counts if it had events in any of them), with
    `confirmed` set when every shorter horizon's rate is past the threshold too.
    """

    def __init__(self, rules: Sequence[Rule], window: timedelta) -> None:
        self.window = window
        self.reach = max((_windows_in(h, window) for r in rules for h in r.horizons), default=1)
        self._data: dict[datetime, WindowData] = {}
        self._inputs: dict[tuple[str, datetime], dict[Segment, SegmentWindow]] = {}

    def before(self, first: datetime) -> list[datetime]:
        return [first - i * self.window for i in range(self.reach - 1, 0, -1)]

    def add(self, w: datetime, data: WindowData) -> None:
        self._data[w] = data
        oldest = w - (self.reach - 1) * self.window
        for old in [k for k in self._data if k < oldest]:
            del self._data[old]
        self._inputs = {k: v for k, v in self._inputs.items() if k[1] >= oldest}

    def _of(self, rule: Rule, w: datetime) -> dict[Segment, SegmentWindow]:
        key = (rule.name, w)
        if key not in self._inputs:
            data = self._data.get(w)
            found = [] if data is None else rule_inputs(rule, data)
            self._inputs[key] = {i.segment: i for i in found}
        return self._inputs[key]

    def _sums(self, rule: Rule, w: datetime, horizon: timedelta) -> dict[Segment, list[Any]]:
        """Per segment: numerator, denominator and bucket sums over the horizon."""
        sums: dict[Segment, list[Any]] = {}
        for i in range(_windows_in(horizon, self.window)):
            for seg, one in self._of(rule, w - i * self.window).items():
                acc = sums.get(seg)
                if acc is None:
                    sums[seg] = [one.numerator, one.denominator, one.buckets]
                    continue
                acc[0] += one.numerator
                acc[1] += one.denominator
                acc[2] = add_buckets(acc[2], one.buckets, one.denominator)
        return sums

    def inputs(self, rule: Rule, w: datetime) -> list[SegmentWindow]:
        if not rule.horizons:
            return list(self._of(rule, w).values())
        longest = self._sums(rule, w, rule.horizons[-1])
        shorter = [self._sums(rule, w, h) for h in rule.horizons[:-1]]
        # The baseline of a sum of windows is the latest window's (a trailing baseline
        # before it; the horizon's older windows are in it too, which only makes the test
        # more cautious).
        latest = self._of(rule, w)

        def passed(seg: Segment, found: list[Any] | None) -> bool:
            """The shorter horizon's point estimate past the rule's conditions (combined
            as the rule's `match` combines them).
            """
            if found is None:
                return False
            num, den = found[0], found[1]
            verdicts = []
            if rule.threshold is not None:
                base = latest[seg].baseline_counts if seg in latest else None
                # The threshold's own `min_events` guards the longest horizon's decision;
                # "still burning" is asked of however few events the shorter one holds
                # (a low-volume segment never fills one window), `until_baseline` stays.
                verdicts.append(
                    rule.threshold.applies(rule.threshold.min_events, base)
                    and rule.threshold.passed(num, den)
                )
            if rule.rise is not None:
                base = latest[seg].baseline_counts if seg in latest else None
                if base is not None and not rate(rule.metric).higher_is_worse:
                    # A rate that gets worse as it falls: its shortfall rises.
                    num, base = den - num, (base[1] - base[0], base[1])
                verdicts.append(
                    base is not None
                    and den > 0
                    and num * base[1] > rule.rise.factor * base[0] * den
                )
            return all(verdicts) if rule.match == "all" else any(verdicts)

        out = []
        for seg, (num, den, buckets) in sorted(longest.items()):
            now = latest.get(seg)
            out.append(
                SegmentWindow(
                    segment=seg,
                    numerator=num,
                    denominator=den,
                    confirmed=all(passed(seg, s.get(seg)) for s in shorter),
                    buckets=buckets,
                    baseline_rate=None if now is None else now.baseline_rate,
                    baseline_counts=None if now is None else now.baseline_counts,
                )
            )
        return out


def _windows_in(horizon: timedelta, window: timedelta) -> int:
    return max(1, round(horizon / window))


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

    def stored(
        table: Any, chunk: list[datetime], column: str = "", kept: Sequence[str] | None = None
    ) -> dict[datetime, list[dict[str, Any]]]:
        found: dict[datetime, list[dict[str, Any]]] = {w: [] for w in chunk}
        if kept is not None and not kept:
            return found
        where = and_(table.c.window_start.in_(chunk), table.c.dimension_set == dimension_set)
        if kept is not None:
            where = and_(where, table.c[column].in_(kept))
        result = conn.execute(select(table).where(where))
        # Thousands of rows per window: zip with the keys once fetched, where a dict of each
        # RowMapping builds its key view again per row.
        keys = list(result.keys())
        for row in result.fetchall():
            record = dict(zip(keys, row, strict=True))
            found[as_utc(record["window_start"])].append(record)  # type: ignore[index]
        return found

    def keyed(rows: list[dict[str, Any]], name: str) -> WindowKeyed:
        return {(r[name], tuple(map(str, segment_of(r)))): r for r in rows}

    starts = sorted({w for w in (as_utc(w) for w in windows) if w is not None})
    for i in range(0, len(starts), _WINDOWS_PER_READ):
        chunk = starts[i : i + _WINDOWS_PER_READ]
        aggregates = stored(tables.agg, chunk)
        tests = stored(tables.rate_tests, chunk, "rate_id", rates)
        drift = stored(tables.drift, chunk, "distribution", distributions)
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
        t = self.tables.alert_state
        states: dict[str, dict[Segment, AlertState]] = {r.name: {} for r in self.rules}
        for row in conn.execute(select(t)).mappings():
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
        t = self.tables.agg
        dimension_set = ",".join(self.dimensions)
        opened = sorted(
            {
                w
                for w in (
                    as_utc(v)
                    for v in conn.scalars(
                        select(t.c.window_start)
                        .where(t.c.dimension_set == dimension_set, t.c.window_end > watermark)
                        .distinct()
                    )
                )
                if w is not None
            }
        )
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
        t = self.tables.alert_state
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
        if not rows:
            return
        stmt = upsert_for(conn)(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.rule, text_key(conn, t.c.segment)],
            set_={c: stmt.excluded[c] for c in rows[0] if c not in ("rule", "segment")},
        )
        conn.execute(stmt, rows)

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
        h = self.tables.alert_history
        stmt = upsert_for(conn)(h).on_conflict_do_nothing(
            index_elements=[h.c.rule, text_key(conn, h.c.segment), h.c.window_start, h.c.to_status]
        )
        conn.execute(stmt, rows)

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
        o = self.tables.outbox
        stmt = upsert_for(conn)(o).on_conflict_do_nothing(
            index_elements=[o.c.channel, text_key(conn, o.c.dedup_key)]
        )
        conn.execute(stmt, rows)


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
