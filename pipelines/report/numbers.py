"""How the weekly report writes its numbers, in one place (pure: numbers in, text out).

The report is read by people who are not statisticians, so every rate, interval and change
has the same form:

- two significant digits: '0.31 %', '0.0064 %', '4.0 %', '23 %'; the trailing zero of
  '4.0 %' is kept, so that every figure carries the same precision;
- near 100 % the digits go to the distance from 100 %, at most two decimals: '99.95 %',
  '99.99 %' — never '99.9911 %';
- nothing finer than 0.0001 % (one in a million): a smaller rate reads '< 0.0001 %';
- a rate that is not exactly 0 never reads '0 %', one below 100 % never reads '100 %';
- an interval is rounded outwards (its lower end down, its upper end up), so the interval
  shown always holds the one computed, and an upper end just above a target never reads as
  the target itself: '0.25–0.38 %';
- a change is in percentage points with a sign: '+0.050 pp', '−1.3 pp';
- the ticks of a chart's axis share their decimals, as few as show them exactly: '0.25 %',
  '0.50 %';
- counts have thousands separators, and a sentence about '0 segments' is not written at
  all (see `count`, used with a test for zero by the caller).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from pipelines.metrics.catalog import RateValue

SIGNIFICANT = 2  # digits of every rate, interval end and change
FINEST = 4  # decimals of a percentage at most: 0.0001 % is one in a million
NEAR_100_DECIMALS = 2  # '99.99 %': the distance from 100 % is not spelled out further
NONE = "–"  # no value (shown where a number would be)

_HUNDRED = Decimal(100)
_HALF = Decimal(50)


def _decimals(x: Decimal) -> int:
    """Decimals that give `x` (a percentage, 0 < x < 100) its significant digits: those of
    x itself below 50 %, of 100 % - x above.
    """
    if x < _HALF:
        return max(0, min(FINEST, SIGNIFICANT - 1 - x.adjusted()))
    return max(0, min(NEAR_100_DECIMALS, SIGNIFICANT - 1 - (_HUNDRED - x).adjusted()))


def _quantize(x: Decimal, decimals: int, rounding: str) -> Decimal:
    return x.quantize(Decimal(1).scaleb(-decimals), rounding=rounding)


def _percent_number(value: float, rounding: str) -> str:
    """`value` (a proportion) as a percentage without the unit; see the module docstring."""
    x = Decimal(repr(float(value))) * _HUNDRED
    if x <= 0:
        return "0"
    if x >= _HUNDRED:
        return "100"
    decimals = _decimals(x)
    q = _quantize(x, decimals, rounding)
    if 0 < q < _HALF and _decimals(q) < decimals:  # 9.96 -> 10.0 -> '10': two digits again
        q = _quantize(q, _decimals(q), rounding)
    if q >= _HUNDRED:  # 99.996 would read as 100 %; an upper end may
        if rounding == ROUND_CEILING:
            return "100"
        return f"{_quantize(x, NEAR_100_DECIMALS, ROUND_FLOOR):f}"
    if q <= 0:
        if rounding == ROUND_FLOOR:
            return "0"
        return f"< {Decimal(1).scaleb(-FINEST):f}"
    return f"{q:f}"


def percent(value: float | None) -> str:
    """A proportion as a percentage: '0.31 %', '0.0064 %', '4.0 %', '99.99 %', '100 %';
    '–' for None.
    """
    if value is None:
        return NONE
    return f"{_percent_number(value, ROUND_HALF_EVEN)} %"


def interval(lower: float, upper: float) -> str:
    """A 95 % interval, rounded outwards: '0.25–0.38 %', '0–0.058 %', '99.99–100 %'."""
    return f"{_percent_number(lower, ROUND_FLOOR)}–{_percent_number(upper, ROUND_CEILING)} %"


def upper_end(value: float) -> str:
    """The upper end of an interval alone, rounded up as in `interval`: '0.058 %'."""
    return f"{_percent_number(value, ROUND_CEILING)} %"


def lower_end(value: float) -> str:
    """The lower end of an interval alone, rounded down as in `interval`: '99.2 %'."""
    return f"{_percent_number(value, ROUND_FLOOR)} %"


def rate(v: RateValue) -> str:
    """A rate with its 95 % interval: '0.31 % (0.25–0.38 %)'; 'no data' without events."""
    if v.value is None:
        return "no data"
    return f"{percent(v.value)} ({interval(v.lower, v.upper)})"


def points(difference: float | None) -> str:
    """A difference of two proportions in percentage points: '+0.050 pp', '−1.3 pp',
    '±0 pp'; '–' for None.
    """
    if difference is None:
        return NONE
    x = abs(Decimal(repr(float(difference)))) * _HUNDRED
    if x == 0:
        return "±0 pp"
    sign = "+" if difference > 0 else "−"
    decimals = max(0, min(FINEST, SIGNIFICANT - 1 - x.adjusted()))
    q = _quantize(x, decimals, ROUND_HALF_EVEN)
    if q != 0 and max(0, SIGNIFICANT - 1 - q.adjusted()) < decimals:
        q = _quantize(q, max(0, SIGNIFICANT - 1 - q.adjusted()), ROUND_HALF_EVEN)
    if q == 0:
        return f"< {sign}{Decimal(1).scaleb(-FINEST):f} pp"
    return f"{sign}{q:f} pp"


def target(value: float | None, *, higher_is_worse: bool) -> str:
    """A target as configured, without padding zeros: '< 0.1 %', '> 98 %'; '–' for None."""
    if value is None:
        return NONE
    x = (Decimal(repr(float(value))) * _HUNDRED).normalize()
    return f"{'<' if higher_is_worse else '>'} {x:f} %"


def axis_percents(values: Sequence[float]) -> list[str]:
    """Tick labels of one chart axis (proportions): the same decimals for every tick, as few
    as show each tick exactly (up to `FINEST`), and the unit as everywhere: '0.25 %',
    '0.50 %'; '99.75 %', '100.00 %'.
    """
    xs = [Decimal(repr(float(v))) * _HUNDRED for v in values]
    decimals = FINEST
    for d in range(FINEST + 1):
        step = Decimal(1).scaleb(-d)
        if all(abs(_quantize(x, d, ROUND_HALF_EVEN) - x) < step / 1000 for x in xs):
            decimals = d
            break
    return [f"{_quantize(x, decimals, ROUND_HALF_EVEN) + 0:f} %" for x in xs]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 segment', '2 segments', '1,250 events' (`plural` for irregular nouns)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def times(ratio: float) -> str:
    """A ratio of two volumes with two significant digits: '5.8', '12', '150'."""
    x = Decimal(repr(float(ratio)))
    if x <= 0:
        return "0"
    decimals = max(0, SIGNIFICANT - 1 - x.adjusted())
    q = _quantize(x, decimals, ROUND_HALF_EVEN)
    return f"{q:f}" if q.adjusted() < SIGNIFICANT else f"{int(q):,}"
