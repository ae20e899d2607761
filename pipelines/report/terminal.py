"""Tables for the terminal (`safewatch show`, `safewatch drift`, the demo): segments ranked by
a rate, the worst segment's timeline, significant changes against the baseline, every rate
of the catalog and the ledger's accounting, read from the warehouse and printed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pipelines.metrics.catalog import QUANTILES, RATES, counter_ids, rate_value
from pipelines.metrics.catalog import rate as catalog_rate
from pipelines.metrics.distributions import distribution, histogram_quantile
from pipelines.metrics.summary import summarize_segments
from pipelines.report.text import bar, format_table, percent, rate_text
from pipelines.settings import Settings
from pipelines.warehouse.engine import describe
from pipelines.warehouse.migrate import open_warehouse
from pipelines.warehouse.queries import (
    aggregate_rows,
    histogram_totals,
    ledger_rows,
    significant_changes,
)


def print_segments(
    settings: Settings, *, top: int, min_events: int, timeline: bool, rate_id: str
) -> None:
    """The segments of the configured warehouse ranked by their peak `rate_id` per window,
    the worst one's timeline, the significant changes and every rate; or that it is empty.
    """
    engine = open_warehouse(settings.warehouse, reader=True)
    dims = settings.stream.dimensions
    rows = aggregate_rows(engine, dimension_set=",".join(dims))
    if not rows:
        print(
            f"The warehouse {describe(engine)} has no aggregates for dimensions "
            f"{','.join(dims)} yet: the job writes them (`safewatch run`)."
        )
        return
    summaries = summarize_segments(rows, dims, peak_rate=rate_id, min_events=min_events)
    print_accounting(engine)
    first = min(r["window_start"] for r in rows)
    last = max(r["window_end"] for r in rows)
    print(
        f"\nSegments by peak {rate_id} per window (windows with >= {min_events} events), "
        f"{first:%Y-%m-%d %H:%M}-{last:%H:%M} UTC:\n"
    )
    rate = catalog_rate(rate_id)
    paired = catalog_rate("refusal_rate" if rate_id != "refusal_rate" else "violation_rate")
    table = []
    for s in summaries[:top]:
        peak = rate_text(*s.peak_counts) if s.peak_counts else "-"
        table.append(
            [
                *s.segment,
                s.totals["events"],
                rate_text(s.totals[rate.numerator], s.totals[rate.denominator]),
                peak,
                f"{s.peak_window_start:%H:%M}" if s.peak_window_start else "-",
                rate_text(s.totals[paired.numerator], s.totals[paired.denominator]),
            ]
        )
    print(
        format_table(
            [
                *dims,
                "events",
                f"{rate_id} [95% CI]",
                "peak window [95% CI]",
                "peak at",
                f"{paired.id} [95% CI]",
            ],
            table,
        )
    )
    if len(summaries) > top:
        print(f"... and {len(summaries) - top} more segments (--top to show more)")
    if timeline and summaries and summaries[0].peak_rate is not None:
        worst = summaries[0]
        where = dict(zip(dims, worst.segment, strict=True))
        seg_rows = [r for r in rows if all(r[d] == v for d, v in where.items())]
        ratios = [
            int(r[rate.numerator]) / r[rate.denominator] for r in seg_rows if r[rate.denominator]
        ]
        scale = max(ratios, default=0.0)
        print(f"\nTimeline of {', '.join(f'{k}={v}' for k, v in where.items())}:\n")
        print(
            format_table(
                ["window (UTC)", rate.denominator, rate.numerator, f"{rate_id} [95% CI]", ""],
                [
                    [
                        f"{r['window_start']:%H:%M}-{r['window_end']:%H:%M}",
                        r[rate.denominator],
                        r[rate.numerator],
                        rate_text(r[rate.numerator], r[rate.denominator]),
                        bar(
                            r[rate.numerator] / r[rate.denominator] if r[rate.denominator] else 0.0,
                            scale,
                        ),
                    ]
                    for r in seg_rows
                ],
            )
        )
    print_changes(engine, dims, limit=8)
    print_kpis(engine, rows, dims)


def print_kpis(engine: Any, rows: list[dict[str, Any]], dims: Sequence[str]) -> None:
    """Every rate of the catalog over all windows and segments, with its 95 % interval."""
    totals = dict.fromkeys(counter_ids(), 0)
    for r in rows:
        for c in totals:
            totals[c] += int(r[c])
    table = []
    for rate in RATES:
        v = rate_value(rate.id, totals)
        if v.denominator == 0:
            continue
        table.append(
            [
                rate.id,
                v.numerator,
                v.denominator,
                percent(v.value),
                percent(v.lower),
                percent(v.upper),
            ]
        )
    print("\nAll segments, all windows: every rate with its Wilson 95 % interval\n")
    print(format_table(["rate", "numerator", "denominator", "rate", "95% low", "95% high"], table))
    quantiles = []
    for q in QUANTILES:
        d = distribution(q.distribution)
        counts = [0] * d.bins
        for hist in histogram_totals(
            engine, dimension_set=",".join(dims), distribution=d.id
        ).values():
            for b, n in hist.items():
                counts[b] += n
        value = histogram_quantile(d, counts, q.q)
        if value is not None:
            quantiles.append(f"{q.id} {value:,.0f} {d.unit}".strip())
    if quantiles:
        print("\nLatency (from the merged histograms): " + ", ".join(quantiles))


def print_changes(engine: Any, dims: Sequence[str], *, limit: int, max_q: float = 0.05) -> None:
    """The most significant rate changes against the baseline, BH across every rate test."""
    changes = significant_changes(engine, dimension_set=",".join(dims), max_q=max_q, limit=limit)
    fdr = f"false discovery rate <= {max_q * 100:g} % across all {changes.tests:,} rate tests"
    if not changes.rows:
        print(f"\nNo rate differs from its baseline at a {fdr} in the windows with drift.")
        return
    print(f"\nSignificant changes against the baseline ({fdr}), most significant first:\n")
    table = []
    for c in changes.rows:
        table.append(
            [
                f"{c['window_start']:%H:%M}",
                *[c[d] for d in dims],
                c["rate_id"],
                f"{rate_text(c['current_numerator'], c['current_denominator'])} "
                f"of {c['current_denominator']}",
                f"{rate_text(c['baseline_numerator'], c['baseline_denominator'])} "
                f"of {c['baseline_denominator']}",
                f"{c['listing_q']:.1e}",
            ]
        )
    print(
        format_table(
            ["window", *dims, "rate", "in the window [95% CI]", "baseline [95% CI]", "q"],
            table,
        )
    )


def print_accounting(engine: Any) -> None:
    """One paragraph from the ledger: what came in and where it went."""
    ledger = ledger_rows(engine)
    if not ledger:
        return
    rejected: dict[str, int] = {}
    for row in ledger:
        for reason, n in json.loads(row["rejected_by_reason"] or "{}").items():
            rejected[reason] = rejected.get(reason, 0) + n
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) or "none"
    print(
        f"\nLedger: {len(ledger)} micro-batches, {sum(r['input_rows'] for r in ledger)} records: "
        f"{sum(r['aggregated_rows'] for r in ledger)} aggregated, "
        f"{sum(r['late_rows'] for r in ledger)} late, "
        f"{sum(r['duplicate_rows'] for r in ledger)} duplicates, rejected: {reasons}."
    )
