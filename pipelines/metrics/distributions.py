"""Mergeable distributions per window x segment: fixed-bin histograms and counts per value.

Each distribution has a stable id and a fixed list of bins, so the histogram of any set of
windows (a day, a baseline of four weeks, a union of segments) is the bin-wise sum of its
windows' histograms: drift and quantiles are computed from those sums, never from events,
and their cost does not grow with traffic.

- numeric: `edges` e0 < e1 < ... < eK give K bins [e_i, e_{i+1}); a value below e0 counts in
  the first bin and a value at or above eK in the last one (clipped, so no event is dropped).
  A bin's representative point (for Wasserstein distances) is its midpoint.
- categorical: one bin per value of `values`, in that order (the contract's enum).
- multi: like categorical for an array field; an event counts once in every bin whose value
  it holds, and once in the first bin (`none`) when the array is empty.

Changing the bins of a distribution breaks the sums across the change: give the new binning
a new id instead.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pipelines.metrics.catalog import POLICY_CATEGORIES

Kind = Literal["numeric", "categorical", "multi"]


@dataclass(frozen=True)
class Distribution:
    id: str
    description: str
    kind: Kind
    expression: str  # the dotted path of a field of the event: a number, a string or an array
    edges: tuple[float, ...] = ()
    values: tuple[str, ...] = ()
    unit: str = ""

    @property
    def bins(self) -> int:
        return len(self.edges) - 1 if self.kind == "numeric" else len(self.values)

    @property
    def ordered(self) -> bool:
        """Whether bins have an order (KS and Wasserstein make sense)."""
        return self.kind == "numeric"

    def points(self) -> tuple[float, ...]:
        """Midpoint of each numeric bin."""
        if self.kind != "numeric":
            msg = f"distribution {self.id} is {self.kind}: its bins have no points"
            raise ValueError(msg)
        return tuple((a + b) / 2 for a, b in zip(self.edges, self.edges[1:], strict=False))

    def bin_of(self, value: float | str) -> int:
        """The bin a value counts in (the Python twin of the Spark expression, for tests)."""
        if self.kind == "numeric":
            x = float(value)
            return min(max(bisect.bisect_right(self.edges, x) - 1, 0), self.bins - 1)
        return self.values.index(str(value))

    def bin_label(self, index: int) -> str:
        if self.kind == "numeric":
            return f"[{_fmt(self.edges[index])}, {_fmt(self.edges[index + 1])})"
        return self.values[index]


def _fmt(x: float) -> str:
    return f"{x:g}"


def _geometric(first: float, ratio: float, top: float) -> tuple[float, ...]:
    """0, first, first*ratio, ... up to the first edge >= top, each rounded to 3 significant
    digits (readable bin labels; the edges only need to be fixed, not exact powers).
    """
    edges = [0.0, first]
    while edges[-1] < top:
        nxt = edges[-1] * ratio
        digits = 2 - math.floor(math.log10(nxt))
        edges.append(round(nxt, digits))
    return tuple(edges)


_SCORE_EDGES = tuple(round(i * 0.05, 2) for i in range(21))
# Latency: 10 ms to 120 s in steps of 15 %: when the order statistics around a quantile
# share a bin (the usual case with many events), its estimate is within 15 % of the exact one.
LATENCY_EDGES = _geometric(10.0, 1.15, 120_000.0)
_TOKEN_EDGES = _geometric(1.0, 1.5, 1_000_000.0)

DISTRIBUTIONS: tuple[Distribution, ...] = (
    *(
        Distribution(
            f"score_{c}",
            f"Moderation classifier score for {c}.",
            "numeric",
            f"moderation.scores.{c}",
            edges=_SCORE_EDGES,
        )
        for c in POLICY_CATEGORIES
    ),
    Distribution(
        "injection_score", "Injection detector score.", "numeric", "injection.score", _SCORE_EDGES
    ),
    Distribution(
        "latency_ms",
        "End-to-end latency.",
        "numeric",
        "request.latency_ms",
        LATENCY_EDGES,
        unit="ms",
    ),
    Distribution("input_tokens", "Prompt tokens.", "numeric", "request.input_tokens", _TOKEN_EDGES),
    Distribution(
        "output_tokens", "Completion tokens.", "numeric", "request.output_tokens", _TOKEN_EDGES
    ),
    Distribution(
        "outcome",
        "What the user got.",
        "categorical",
        "request.outcome",
        values=("answered", "refused", "blocked", "safe_completion", "error"),
    ),
    Distribution(
        "moderation_action",
        "What moderation did with the output.",
        "categorical",
        "moderation.action",
        values=("allow", "flag", "block", "redact"),
    ),
    Distribution(
        "refusal_style",
        "How the model declined.",
        "categorical",
        "refusal.style",
        values=("none", "direct", "explained", "redirect", "partial"),
    ),
    Distribution(
        "flagged_category",
        "Policy categories flagged (an output can count in several; `none` when in none).",
        "multi",
        "moderation.flagged_categories",
        values=("none", *POLICY_CATEGORIES),
    ),
)


def distribution(distribution_id: str) -> Distribution:
    """The distribution with this id; KeyError naming the known ids otherwise."""
    for d in DISTRIBUTIONS:
        if d.id == distribution_id:
            return d
    msg = f"unknown distribution {distribution_id!r}; known: {[d.id for d in DISTRIBUTIONS]}"
    raise KeyError(msg)


def histogram_quantile(d: Distribution, counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of a numeric histogram, or None when it is empty.

    Like numpy's default ("linear") method, the quantile sits between the order statistics
    of rank floor(h) and floor(h) + 1, h = q * (n - 1). Each of those is placed inside its
    bin as if the bin's values were spread evenly ((j + 1) / (c + 1) of the way for the j-th
    of c values), then the two are interpolated. The exact quantile and the estimate both lie
    between the lower edge of the first one's bin and the upper edge of the second one's, so
    the error is at most the width of those bins (one bin when they share it); values clipped
    into the first or last bin aside.
    """
    if d.kind != "numeric":
        msg = f"distribution {d.id} is {d.kind}: it has no quantiles"
        raise ValueError(msg)
    if not 0.0 <= q <= 1.0:
        msg = f"quantile must be in [0, 1], got {q}"
        raise ValueError(msg)
    if len(counts) != d.bins:
        msg = f"{d.id} has {d.bins} bins, got {len(counts)} counts"
        raise ValueError(msg)
    total = sum(counts)
    if total == 0:
        return None

    def position(rank: int) -> float:
        cum = 0
        for i, c in enumerate(counts):
            if rank < cum + c:
                lo, hi = d.edges[i], d.edges[i + 1]
                return lo + (hi - lo) * (rank - cum + 1) / (c + 1)
            cum += c
        return d.edges[-1]  # not reached: rank < total

    h = q * (total - 1)
    below = math.floor(h)
    low = position(below)
    if below + 1 >= total:
        return low
    return low + (h - below) * (position(below + 1) - low)
