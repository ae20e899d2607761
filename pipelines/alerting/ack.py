"""Acknowledging a firing alert: an `acknowledged` row in alert_history (for MTTA)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from pipelines.alerting.engine import parse_segment
from pipelines.alerting.evaluate import segment_label
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
    state, history = tables.alert_state, tables.alert_history
    query = select(state).where(state.c.status == "firing")
    if rule is not None:
        query = query.where(state.c.rule == rule)
    done = []
    for s in conn.execute(query).mappings().all():
        label = segment_label(parse_segment(s["segment"]))
        if segment is not None and label != segment:
            continue
        firing = (
            conn.execute(
                select(history).where(
                    and_(
                        history.c.rule == s["rule"],
                        history.c.segment == s["segment"],
                        history.c.to_status == "firing",
                        history.c.window_start == s["firing_since"],
                    )
                )
            )
            .mappings()
            .first()
        )
        if firing is None:
            continue
        already = conn.execute(
            select(history.c.id).where(
                and_(
                    history.c.rule == s["rule"],
                    history.c.segment == s["segment"],
                    history.c.to_status == "acknowledged",
                    history.c.window_start == firing["window_start"],
                )
            )
        ).first()
        if already is not None:
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
        conn.execute(history.insert().values(**row))
        since = as_utc(s["firing_since"])
        assert since is not None
        done.append(Acknowledged(s["rule"], label, since))
    return done
