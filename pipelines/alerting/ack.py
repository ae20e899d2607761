"""Acknowledging a firing alert: an `acknowledged` row in alert_history (for MTTA)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection

from pipelines.alerting import store
from pipelines.segments import parse_segment, segment_label
from pipelines.warehouse.tables import Tables, as_utc


@dataclass(frozen=True)
class Acknowledged:
    rule: str
    segment: str  # values joined by " / "
    firing_since: datetime


def acknowledge(
    conn: Connection,
    tables: Tables,
    *,
    rule: str | None,
    segment: str | None,
    by: str,
    now: datetime,
    note: str = "",
) -> list[Acknowledged]:
    """Acknowledge the firing alerts matching `rule` and `segment` (None: any).

    `segment` is matched against the label `value / value / ...`. Each firing episode is
    acknowledged once: a second acknowledgement of the same episode is a no-op. Returns
    the episodes acknowledged now.
    """
    done = []
    for s in store.firing_states(conn, tables, rule):
        label = segment_label(parse_segment(s["segment"]))
        if segment is not None and label != segment:
            continue
        firing = store.firing_transition(conn, tables, s["rule"], s["segment"], s["firing_since"])
        if firing is None:
            continue
        if store.is_acknowledged(conn, tables, s["rule"], s["segment"], firing["window_start"]):
            continue
        row = {c: firing[c] for c in firing.keys() if c not in ("id",)}
        row.update(
            from_status="firing",
            to_status="acknowledged",
            summary=f"acknowledged by {by}",
            description=note,
            recorded_at=now,
            query_id=None,
            batch_id=None,
        )
        store.add_transition(conn, tables, row)
        since = as_utc(s["firing_since"])
        assert since is not None
        done.append(Acknowledged(s["rule"], label, since))
    return done
