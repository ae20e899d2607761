"""Cardinality control: a dimension keeps at most N distinct values; the rest become `other`.

A producer that puts a request id or a free-form string into a segment field would otherwise
make one warehouse row per event. Each grouped dimension has a limit; the values admitted so
far are kept in the warehouse (`dimension_values`) and stay admitted. A batch admits its new
values, most events first (ties by value), while the dimension is under its limit; every
other new value is folded into `other` before the batch is written. The decision depends
only on the stored admissions and the batch itself, so a replayed batch folds the same way.

The streaming job applies the limits on the executors already (pipelines.stream.counting
`ValueLimits`), so that a flood of new values never reaches the driver, and decides the
admissions here from the exact counts of the new values; the backfill folds the rows it
collected; the Prometheus exporter limits the values of its rate label by the same
`admit`. Pure functions; no Spark and no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.segments import OTHER_VALUE, RESERVED_VALUES


@dataclass(frozen=True)
class Admission:
    dimension: str
    value: str
    events: int


def admit(
    admitted: Mapping[str, Iterable[str]],
    batch_counts: Mapping[str, Mapping[str, int]],
    limits: Mapping[str, int],
    reserved: frozenset[str] = RESERVED_VALUES,
) -> tuple[dict[str, frozenset[str]], list[Admission]]:
    """The values each dimension keeps after this batch, and the batch's new admissions.

    `batch_counts[dim][value]` is the batch's records per value; `limits[dim]` the most
    values `dim` may hold (`reserved` values are never admitted and do not count against
    it).
    """
    allowed: dict[str, frozenset[str]] = {}
    new: list[Admission] = []
    for dim, counts in batch_counts.items():
        keep = set(admitted.get(dim, ())) - reserved
        room = limits[dim] - len(keep)
        candidates = sorted(
            ((v, n) for v, n in counts.items() if v not in keep and v not in reserved),
            key=lambda vn: (-vn[1], vn[0]),
        )
        for value, events in candidates[: max(room, 0)]:
            keep.add(value)
            new.append(Admission(dim, value, events))
        allowed[dim] = frozenset(keep)
    return allowed, new


def value_counts(
    rows: Iterable[Mapping[str, Any]], dimensions: Sequence[str], weight: str
) -> dict[str, dict[str, int]]:
    """Per dimension, the sum of `weight` per value over aggregate rows."""
    out: dict[str, dict[str, int]] = {d: {} for d in dimensions}
    for row in rows:
        for d in dimensions:
            v = row[d]
            out[d][v] = out[d].get(v, 0) + int(row[weight])
    return out


def fold(
    rows: Sequence[dict[str, Any]],
    allowed: Mapping[str, frozenset[str]],
    key: Sequence[str],
    *,
    add: Sequence[str],
    merge: Mapping[str, Callable[[list[Any]], Any]] | None = None,
) -> list[dict[str, Any]]:
    """Rows with every value outside `allowed` (per dimension) replaced by `other`, and rows
    that now share `key` combined: `add` columns summed, `merge` columns combined by their
    function over the list of values; other columns taken from the first row.

    Rows that need no folding come back unchanged (the same objects, in order).
    """
    merge = merge or {}

    def mapped(row: dict[str, Any]) -> dict[str, Any]:
        changes = {
            d: OTHER_VALUE
            for d, ok in allowed.items()
            if row[d] not in ok and row[d] not in RESERVED_VALUES
        }
        return {**row, **changes} if changes else row

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        m = mapped(row)
        groups.setdefault(tuple(m[c] for c in key), []).append(m)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        combined = dict(group[0])
        for c in add:
            combined[c] = sum(int(r[c]) for r in group)
        for c, combine in merge.items():
            combined[c] = combine([r[c] for r in group])
        out.append(combined)
    return out
