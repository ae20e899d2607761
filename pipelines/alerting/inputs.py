"""A rule's inputs from stored windows: the rows of each window summed per segment.

Pure: the caller reads the windows (`pipelines.alerting.engine.windows_read`). `rule_inputs`
sums one window's aggregate rows over the dimensions a rule does not group by, with the
segment's rate test and drift row; `RecentWindows` keeps the windows a rule's `horizons`
reach back to and sums them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from pipelines.alerting.evaluate import SegmentWindow
from pipelines.alerting.model import Rule
from pipelines.metrics.buckets import BUCKETS, BucketSums, read_counter_buckets
from pipelines.metrics.catalog import rate
from pipelines.segments import SEGMENT_DIMENSIONS, Segment

WindowKeyed = dict[tuple[str, tuple[str, ...]], dict[str, Any]]


@dataclass(frozen=True)
class WindowData:
    """What the rules read of one window: aggregate rows, rate tests and drift rows."""

    window_start: datetime
    rows: Sequence[Mapping[str, Any]]
    tests: Mapping[tuple[str, tuple[str, ...]], Mapping[str, Any]]  # (rate id, segment values)
    drift: Mapping[tuple[str, tuple[str, ...]], Mapping[str, Any]]  # (distribution, segment)


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
