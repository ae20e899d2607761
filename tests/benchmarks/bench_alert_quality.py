"""Benchmark: alert quality of the default rules on a synthetic week with known incidents.

For each seed, a week of traffic is drawn by tests.benchmarks.synthetic_week (diurnal and weekly
cycles, ~46 segments from <1 to ~550 events per 5-minute window, prolific users, a model
rollout, a prompt release, a traffic drop, late data and duplicates, and 24 incidents of
every kind the default rules cover, each with a known start, end and size) and replayed
through the job's own warehouse and alert code, micro-batch by micro-batch:

1. a fresh SQLite warehouse (make_engine, migrate) in a temporary directory, a
   WarehouseSink, the alert rules (alerts/rules by default) in an AlertEngine built as the
   job builds it (jobs/streaming_aggregator.alerting) but with no channel (nothing is
   delivered anywhere; no outbox rows), and the default Settings;
2. for every trigger interval of arrival time (30 s by default) with records, the slice's
   counts are committed as one batch (WarehouseSink.commit of a BatchResult with its own
   batch id and offset range; the watermark moves to the newest event time so far minus
   the watermark delay, pipelines.watermark.advance), then derived as the job derives
   (the job's ClosedWindowSteps inside WarehouseSink.derive: drift and rate
   tests of the windows the watermark closed, the rules on them, and the early rules on
   the open windows), with the simulated clock (the slice's end) as `now`;
3. the pages are the transitions to firing in alert_history (recorded_at = simulated
   time), scored against the incidents by tests.benchmarks.alert_scoring: precision, recall
   (all incidents, and those >= 3x baseline), time to page (median, p90) and false pages
   per week per 50 segments, per rule, per incident kind and overall, and the targets;
   beside them, recall over the *detectable* incidents (>= 3x baseline and an oracle
   detection probability >= 50 %: the power of a Poisson count test that knows the
   incident's segment, start, end and baseline exactly, at the false-page budget; see
   tests.benchmarks.alert_oracle), as no rule can page on the others without paging on noise.

Seeds: the default seeds (1001 1002 1003) are the held-apart acceptance seeds; --tuning
uses the tuning seeds (1 2 3) instead. Tune rules on the tuning seeds only.

    .venv/bin/python tests/benchmarks/bench_alert_quality.py                  # 1001 1002 1003
    .venv/bin/python tests/benchmarks/bench_alert_quality.py --seeds 1001 --days 2
    .venv/bin/python tests/benchmarks/bench_alert_quality.py --tuning --rules my_rules.yaml

A benchmark that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.alert_oracle import oracle_power, oracle_time  # noqa: E402
from tests.benchmarks.alert_scoring import (  # noqa: E402
    Incident,
    Page,
    Quality,
    QualityReport,
    TargetResult,
    Targets,
    check_targets,
    default_grace,
    detectable_target,
    score,
)
from tests.benchmarks.synthetic_week import (  # noqa: E402
    ACCEPTANCE_SEEDS,
    DEFAULT_SEGMENTS,
    EVENT_KINDS,
    KINDS,
    TUNING_SEEDS,
    WeekTotals,
    describe_plan,
    iter_slices,
    plan_week,
)

# Which incident kinds a page of each default rule rightly points at (a page overlapping
# one of them in its segment is true), and the kind each rule is meant for (its recall).
_HARMFUL = frozenset(
    {"harmful_rate", "violence_spike", "self_harm_spike", "jailbreak_success", "abusive_user"}
)
COVERS: dict[str, frozenset[str]] = {
    "HarmfulOutputRateHigh": _HARMFUL,
    "HarmfulOutputSustained": _HARMFUL,
    "ViolenceViolationSpike": _HARMFUL - {"self_harm_spike"},
    "SelfHarmViolationSpike": _HARMFUL - {"violence_spike"},
    # One actor behind most violations; a jailbreak wave comes from a few attackers too.
    "ConcentratedAbuse": _HARMFUL,
    "PIILeakInOutput": frozenset({"pii_output"}),
    "RedactionFailures": frozenset({"redaction_failure"}),
    "InjectionCampaign": frozenset({"injection_campaign", "injection_success"}),
    "InjectionCampaignSustained": frozenset({"injection_campaign", "injection_success"}),
    "InjectionSuccess": frozenset({"injection_success", "injection_campaign"}),
    "JailbreakSuccess": frozenset({"jailbreak_success"}),
    # A jailbreak wave is mostly failed attempts, which the model refuses.
    "RefusalSpike": frozenset({"refusal_spike", "jailbreak_success"}),
    "OutcomeDistributionShift": _HARMFUL | {"outcome_shift", "refusal_spike"},
    "OutcomeShareDoubled": _HARMFUL | {"outcome_shift", "refusal_spike"},
    "TelemetryIncomplete": frozenset({"telemetry_incomplete"}),
}
PRIMARY: dict[str, frozenset[str]] = {
    "HarmfulOutputRateHigh": frozenset({"harmful_rate"}),
    "HarmfulOutputSustained": frozenset({"harmful_rate"}),
    "ViolenceViolationSpike": frozenset({"violence_spike"}),
    "SelfHarmViolationSpike": frozenset({"self_harm_spike"}),
    "ConcentratedAbuse": frozenset({"abusive_user"}),
    "PIILeakInOutput": frozenset({"pii_output"}),
    "RedactionFailures": frozenset({"redaction_failure"}),
    "InjectionCampaign": frozenset({"injection_campaign"}),
    "InjectionCampaignSustained": frozenset({"injection_campaign"}),
    "InjectionSuccess": frozenset({"injection_success"}),
    "JailbreakSuccess": frozenset({"jailbreak_success"}),
    "RefusalSpike": frozenset({"refusal_spike"}),
    "OutcomeDistributionShift": frozenset({"outcome_shift"}),
    "OutcomeShareDoubled": frozenset({"outcome_shift"}),
    "TelemetryIncomplete": frozenset({"telemetry_incomplete"}),
}
QUERY_ID = "bench-alert-quality"
TOPIC = "bench.alert-quality"


def _say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# -- one seed -------------------------------------------------------------------------------


@dataclass
class Timings:
    generate: float = 0.0
    commit: float = 0.0
    derive: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    batches: int = 0
    derivations: int = 0


@dataclass
class SeedResult:
    seed: int
    days: float
    segments: int
    pages: list[Page]
    incidents: list[Incident]
    incident_meta: dict[str, dict[str, Any]]
    totals: dict[str, Any]
    timings: dict[str, Any]
    transitions_to_firing: int
    plan_text: str
    seconds: float
    warehouse: str | None
    severity: dict[str, str] = field(default_factory=dict)
    trigger_s: float = 30.0


def _settings(trigger_s: float) -> Any:
    from pipelines.settings import Settings, StreamSettings

    base = Settings()
    if trigger_s == 30.0:
        return base
    stream = StreamSettings(
        **{**base.stream.model_dump(), "trigger_interval": f"{trigger_s:g} seconds"}
    )
    return base.model_copy(update={"stream": stream})


@contextmanager
def _timed(store: dict[str, float], name: str) -> Iterator[None]:
    t = time.perf_counter()
    try:
        yield
    finally:
        store[name] += time.perf_counter() - t


def run_seed(
    seed: int,
    *,
    days: float,
    trigger_s: float,
    segments: int,
    rules_paths: Sequence[str],
    keep: Path | None = None,
    progress_hours: float = 6.0,
) -> SeedResult:
    """Draw the week of `seed`, replay it through the warehouse and alert code, and return
    its pages and incidents.
    """
    from jobs.streaming_aggregator import window_steps
    from pipelines import watermark as wmark
    from pipelines.alerting.engine import AlertEngine
    from pipelines.alerting.loader import load_rules
    from pipelines.durations import parse_duration
    from pipelines.segments import parse_segment
    from pipelines.stream.heap import paused, settle
    from pipelines.warehouse.batch_result import BatchResult, OffsetRange
    from pipelines.warehouse.engine import make_engine
    from pipelines.warehouse.migrate import migrate
    from pipelines.warehouse.sink import WarehouseSink
    from pipelines.warehouse.tables import as_utc

    started = time.perf_counter()
    settings = _settings(trigger_s)
    window = parse_duration(settings.stream.window)
    watermark = parse_duration(settings.stream.watermark)
    trigger = parse_duration(settings.stream.trigger_interval)
    plan = plan_week(
        seed,
        days=days,
        segments=segments,
        window=window,
        trigger=trigger,
        watermark=watermark,
    )
    plan_text = describe_plan(plan)
    _say(f"seed {seed}: planned in {time.perf_counter() - started:.1f} s\n{plan_text}")

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-alert-quality-{seed}-", dir=keep))
    db = tmp / "warehouse.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine, log=lambda _m: None)
    sink = WarehouseSink(engine, users_lg_k=settings.privacy.users_sketch_lg_k)
    sink.set_min_distinct_users(settings.privacy.min_distinct_users)
    sink.sync_distribution_bins()
    paths = [p if Path(p).is_absolute() else str(REPO / p) for p in rules_paths]
    rules = load_rules([Path(p) for p in paths])
    a = settings.alerting
    # As jobs/streaming_aggregator.alerting builds it, without channels: no notice is
    # queued or delivered.
    alerts = AlertEngine(
        rules,
        sink.tables,
        settings.stream.dimensions,
        channels=(),
        window=window,
        ttl_windows=a.ttl_windows,
        runbook_base_url=a.runbook_base_url,
    )
    unknown = sorted({r.name for r in rules} - set(COVERS))
    if unknown:
        _say(f"rules {unknown} cover no incident kind here: every page of theirs is false")
    severity = {r.name: r.severity for r in rules}
    steps = window_steps(settings, sink, alerts)
    timings = Timings()
    totals = WeekTotals()
    stages: dict[str, float] = timings.stages

    def stage(name: str) -> Any:
        return _timed(stages, name)

    wm: datetime | None = None
    offset = 0
    fired = 0
    pages_so_far = 0
    next_report = plan.start + timedelta(hours=progress_hours)
    settle()
    slices = iter_slices(plan, totals, parts=window // parse_duration(settings.stream.early_slice))
    while True:
        t = time.perf_counter()
        with paused():
            sl = next(slices, None)
        timings.generate += time.perf_counter() - t
        if sl is None:
            break
        now = sl.end
        if sl.end >= next_report:
            elapsed = time.perf_counter() - started
            done = (sl.end - plan.start) / (plan.end - plan.start)
            _say(
                f"seed {seed}: {sl.end:%a %H:%M} simulated ({done:.0%}), {elapsed:.0f} s, "
                f"{timings.batches} batches, {pages_so_far} page(s) so far, "
                f"ETA {elapsed / max(done, 1e-9) - elapsed:.0f} s"
            )
            next_report += timedelta(hours=progress_hours)
        records = sl.arrived + sl.duplicates
        if not records:
            continue  # Spark runs no micro-batch when nothing arrived
        before = wm
        wm = wmark.advance(wm, sl.max_event_time, watermark)
        result = BatchResult(
            query_id=QUERY_ID,
            batch_id=sl.index,
            topic=TOPIC,
            started_at=now,
            input_rows=records,
            late_rows=sl.late,
            aggregated_rows=sl.aggregated,
            watermark_before=before,
            watermark_after=wm,
            offsets=[OffsetRange(TOPIC, 0, offset, offset + records - 1, records)],
            aggregates=sl.aggregates,
            rejected_by_reason={"schema_violation": sl.incomplete} if sl.incomplete else {},
            duplicate_rows=sl.duplicates,
            dlq_rows=sl.incomplete + sl.late,
            max_event_time=sl.max_event_time,
            histograms=sl.histograms,
        )
        offset += records
        derives = steps.needed(before, wm, sl.aggregated)
        found: list[Any] = []
        with paused():
            t = time.perf_counter()
            sink.commit(result, now=now, derive=None if derives else _nothing)
            timings.commit += time.perf_counter() - t
            timings.batches += 1
            if derives:

                def derive(
                    conn: Any,
                    before: Any = before,
                    after: Any = wm,
                    now: Any = now,
                    batch_id: int = sl.index,
                    found: list[Any] = found,
                ) -> None:
                    done = steps.run(
                        conn,
                        before=before,
                        after=after,
                        now=lambda: now,
                        query_id=QUERY_ID,
                        batch_id=batch_id,
                        stage=stage,
                    )
                    found.extend(done.get("alerts", []))

                t = time.perf_counter()
                try:
                    sink.derive(QUERY_ID, sl.index, derive, now=now, quality=None)
                except BaseException:
                    steps.forget()
                    raise
                timings.derive += time.perf_counter() - t
                timings.derivations += 1
        new = sum(1 for x in found if x.to_status == "firing")
        fired += new
        pages_so_far += new

    pages = _pages(engine, sink.tables, parse_segment, as_utc, severity)
    # Each incident's oracle detection probability: the budget of the seed's period and
    # segments, shared by every incident kind; an event kind's injected events are certain.
    power = {
        i.id: oracle_power(
            i.baseline_count,
            i.incident_count,
            i.duration,
            period=timedelta(seconds=plan.seconds),
            segments=len(plan.segments),
            kinds=len(KINDS),
            injected=i.events,
        )
        for i in plan.incidents
    }
    incidents = [
        Incident(
            id=f"{seed}:{i.id}",
            kind=i.kind,
            segment=tuple(
                zip(("product_surface", "model_version", "locale"), i.segment, strict=True)
            ),
            start=i.start,
            end=i.end,
            multiplier=i.multiplier,
            event_level=i.event_level,
            oracle_power=power[i.id],
        )
        for i in plan.incidents
    ]
    meta = {
        f"{seed}:{i.id}": {
            "volume": i.volume,
            "events": i.events,
            "from_first_window": i.from_first_window,
            "attempt_factor": i.attempt_factor,
            "baseline": i.baseline,
            "baseline_count": i.baseline_count,
            "incident_count": i.incident_count,
            "oracle_power": power[i.id],
        }
        for i in plan.incidents
    }
    engine.dispose()
    kept: str | None = str(db) if keep is not None else None
    if keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - started
    _say(
        f"seed {seed}: replayed {timings.batches} batches in {seconds:.0f} s "
        f"(generate {timings.generate:.0f} s, commit {timings.commit:.0f} s, derive "
        f"{timings.derive:.0f} s: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items())
        + f"); {len(pages)} page(s)"
    )
    return SeedResult(
        seed=seed,
        days=plan.days,
        segments=len(plan.segments),
        pages=pages,
        incidents=incidents,
        incident_meta=meta,
        totals={
            "drawn": totals.drawn,
            "aggregated": totals.aggregated,
            "incomplete": totals.incomplete,
            "late": totals.late,
            "unarrived": totals.unarrived,
            "duplicates": totals.duplicates,
        },
        timings={
            "generate": timings.generate,
            "commit": timings.commit,
            "derive": timings.derive,
            "stages": dict(stages),
            "batches": timings.batches,
            "derivations": timings.derivations,
        },
        transitions_to_firing=fired,
        plan_text=plan_text,
        seconds=seconds,
        warehouse=kept,
        severity=severity,
        trigger_s=trigger_s,
    )


def _nothing(conn: Any) -> None:
    """A batch with nothing to derive is marked derived at once (as the job does)."""


def _pages(
    engine: Any,
    tables: Any,
    parse_segment: Callable[[str], Any],
    as_utc: Callable[[Any], Any],
    severity: dict[str, str],
) -> list[Page]:
    """Every transition to firing recorded in alert_history, as pages at `recorded_at`."""
    from sqlalchemy import select

    h = tables.alert_history
    stmt = select(h).where(h.c.to_status == "firing").order_by(h.c.recorded_at, h.c.id)
    pages = []
    with engine.connect() as conn:
        for r in conn.execute(stmt).mappings():
            value = "n/a" if r["value"] is None else f"{r['value']:.2%}"
            base = "" if r["baseline_rate"] is None else f", baseline {r['baseline_rate']:.2%}"
            drift = "" if r["drift_value"] is None else f", drift {r['drift_value']:.3g}"
            detail = (
                f"{value} ({r['numerator']}/{r['denominator']}{base}{drift}); window "
                f"{as_utc(r['window_start']):%H:%M}; {'early' if r['early'] else 'closed'}; "
                f"{severity.get(r['rule'], '?')}"
            )
            pages.append(
                Page(
                    rule=r["rule"],
                    segment=parse_segment(r["segment"]),
                    at=as_utc(r["recorded_at"]),
                    window_start=as_utc(r["window_start"]),
                    early=bool(r["early"]),
                    detail=detail,
                )
            )
    return pages


# -- reporting ------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}" if x in (0.0, 1.0) else f"{x:.1%}"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _frac(a: int, b: int) -> str:
    return f"{a}/{b}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _quality_row(q: Quality, sev: str = "") -> list[str]:
    return [
        q.name,
        sev,
        str(q.pages),
        str(q.true_pages),
        _pct(q.precision),
        str(q.incidents),
        str(q.paged),
        f"{_pct(q.recall_big)} ({_frac(q.paged_big, q.incidents_big)})",
        _pct(q.recall),
        _dur(q.time_to_page.median),
        _dur(q.time_to_page.p90),
        f"{q.false_per_week_per_50:.1f}",
    ]


def report(
    title: str,
    rep: QualityReport,
    meta: dict[str, dict[str, Any]],
    severity: dict[str, str],
    incidents: Sequence[Incident],
    pages: Sequence[Page],
    missed_examples: int = 3,
) -> list[str]:
    out = [f"=== {title} ==="]
    header = [
        "rule",
        "sev",
        "pages",
        "true",
        "precision",
        "incidents",
        "paged",
        f"recall >={rep.min_multiplier:g}x",
        "recall all",
        "median ttp",
        "p90 ttp",
        "false/wk/50seg",
    ]
    rows = [_quality_row(q, severity.get(q.name, "")) for q in rep.rules]
    rows.append(_quality_row(rep.overall, ""))
    out.append(_table(header, rows, set(range(2, 12))))
    out.append(
        "(per rule: incidents/paged/recall over the kind(s) the rule is meant for, paged by "
        "that rule; true pages may match any kind the rule covers. 'all': every page, every "
        "incident paged by any rule. ttp = time to page from the incident's start.)"
    )
    out.append("")
    header = [
        "incident kind",
        "incidents",
        "paged",
        f"recall >={rep.min_multiplier:g}x",
        "recall all",
        f"detectable >={rep.min_multiplier:g}x",
        "x1.5-3",
        "x3-6",
        "x6-10",
        ">=x10",
        "<100 ev/win",
        ">=100 ev/win",
        "median ttp",
        "p90 ttp",
    ]
    rows = []
    first = {i: rep.first_page[i] for i in rep.first_page}
    for q in rep.kinds:
        subjects = [i for i in incidents if i.kind == q.name]

        def share(sel: Callable[[Incident], bool], subjects: list[Incident] = subjects) -> str:
            chosen = [i for i in subjects if sel(i)]
            if not chosen:
                return "-"
            return _frac(sum(1 for i in chosen if first[i.id] is not None), len(chosen))

        rows.append(
            [
                q.name,
                str(q.incidents),
                str(q.paged),
                f"{_pct(q.recall_big)} ({_frac(q.paged_big, q.incidents_big)})",
                _pct(q.recall),
                _detectable_cell(q),
                share(lambda i: i.multiplier < 3),
                share(lambda i: 3 <= i.multiplier < 6),
                share(lambda i: 6 <= i.multiplier < 10),
                share(lambda i: i.multiplier >= 10),
                share(lambda i: meta[i.id]["volume"] < 100),
                share(lambda i: meta[i.id]["volume"] >= 100),
                _dur(q.time_to_page.median),
                _dur(q.time_to_page.p90),
            ]
        )
    out.append(_table(header, rows, set(range(1, 14))))
    out.append(
        "(paged by any rule covering the kind; x.. = incidents by size against their "
        "baseline (event kinds: (expected + injected) / expected); ev/win = the segment's "
        "expected events per 5-minute window during the incident; detectable = recall "
        f"(paged/incidents) over the incidents >= {rep.min_multiplier:g}x whose oracle "
        f"detection probability is >= {rep.min_power * 100:g} %: the power of a Poisson count test "
        "that knows the segment, start, end and baseline, at the false-page budget; see "
        "tests/benchmarks/alert_oracle.py)"
    )
    r, e = rep.time_to_page_rate, rep.time_to_page_event
    out.append(
        f"time to page, rate incidents: median {_dur(r.median)}, p90 {_dur(r.p90)} "
        f"({r.count} paged); Sev-1 event incidents ({', '.join(EVENT_KINDS)}): median "
        f"{_dur(e.median)}, p90 {_dur(e.p90)} ({e.count} paged)"
    )
    large = [i for i in incidents if meta[i.id]["volume"] >= 100]
    big = [i for i in large if i.multiplier >= rep.min_multiplier]
    paged_big = sum(1 for i in big if rep.first_page[i.id] is not None)
    paged_large = sum(1 for i in large if rep.first_page[i.id] is not None)
    out.append(
        f"recall in segments with >= 100 events per window during the incident: "
        f"{_pct(paged_big / len(big) if big else None)} of incidents >= "
        f"{rep.min_multiplier:g}x ({paged_big}/{len(big)}), "
        f"{_pct(paged_large / len(large) if large else None)} of all ({paged_large}/{len(large)})"
    )
    out.append(_detectable_line(rep))
    o, op, tp = rep.oracle_time_rate, rep.oracle_time_rate_paged, rep.time_to_page_rate_paged
    out.append(
        f"the oracle's time to detect rate incidents (with {rep.min_power * 100:g} % "
        f"probability; tests/benchmarks/alert_oracle.py): median {_dur(o.median)}, p90 "
        f"{_dur(o.p90)} over the {o.count} detectable ones; on the {op.count} paged ones that "
        f"it detects: oracle median {_dur(op.median)}, rules' median time to page "
        f"{_dur(tp.median)}"
    )
    early = sum(1 for p in rep.first_page.values() if p is not None and p.early)
    paged = sum(1 for p in rep.first_page.values() if p is not None)
    out.append(f"first pages that were early (open window): {early} of {paged}")
    out.append("")
    out.append("Targets (default rule set):")
    targets = Targets()
    for t in check_targets(rep, targets):
        line = _target_line(t)
        if t.name.startswith("median time to page, rate") and o.median is not None:
            line += f"; the oracle's median over the detectable ones: {o.median:.1f}"
        out.append(line)
        if t.name.startswith("recall of incidents"):
            # Beside, not instead of, the recall of every incident >= 3x.
            out.append(_target_line(detectable_target(rep, targets)))
    out.append("")
    # False pages: by rule and segment, with examples.
    by_rule: dict[str, list[Page]] = defaultdict(list)
    for p in rep.false_pages:
        by_rule[p.rule].append(p)
    if by_rule:
        out.append("False pages by rule (most first), with the segments that drew most:")
        for rule, ps in sorted(by_rule.items(), key=lambda kv: -len(kv[1])):
            segs = Counter(" / ".join(v for _, v in p.segment if _ != "seed") for p in ps)
            top = ", ".join(f"{s} x{n}" for s, n in segs.most_common(3))
            early = sum(1 for p in ps if p.early)
            out.append(f"  {rule}: {len(ps)} ({early} early): {top}")
            for p in ps[:2]:
                seg = " / ".join(v for d, v in p.segment if d != "seed")
                out.append(f"      e.g. {p.at:%a %H:%M:%S} {seg}: {p.detail}")
        out.append("")
    # Missed incidents: per kind, a few examples.
    missed: dict[str, list[Incident]] = defaultdict(list)
    for i in rep.missed:
        missed[i.kind].append(i)
    if missed:
        which = "every one" if missed_examples <= 0 else f"up to {missed_examples} per kind"
        out.append(
            f"Missed incidents by kind ({which}: the detectable ones first, by oracle power, "
            "then the largest):"
        )
        for kind in KINDS:
            ms = missed.get(kind, [])
            if not ms:
                continue

            def detectable(i: Incident) -> bool:
                return (
                    i.multiplier >= rep.min_multiplier
                    and i.oracle_power is not None
                    and i.oracle_power >= rep.min_power
                )

            ms = sorted(
                ms,
                key=lambda i: (
                    not detectable(i),
                    -(i.oracle_power or 0.0) if detectable(i) else 0.0,
                    -min(i.multiplier, 1e9),
                ),
            )
            found = sum(map(detectable, ms))
            out.append(f"  {kind}: {len(ms)} missed, {found} of them detectable")
            for i in ms if missed_examples <= 0 else ms[:missed_examples]:
                m = meta[i.id]
                seg = " / ".join(v for d, v in i.segment if d != "seed")
                size = (
                    f"{m['events']} event(s), x{i.multiplier:.3g}"
                    if i.event_level
                    else f"x{i.multiplier:.2f}"
                )
                extra = (
                    f", attempts x{m['attempt_factor']:.1f}" if kind == "jailbreak_success" else ""
                )
                length = _dur((i.end - i.start).total_seconds())
                out.append(
                    f"      {i.id} {seg} {i.start:%a %H:%M}+{length}"
                    f": {size}{extra}, baseline {m['baseline']:.3%}, ~{m['volume']:.0f} "
                    f"events/window; {_counts_text(m)}, oracle power {_pct(i.oracle_power)}"
                )
        out.append("")
    del pages
    return out


def _detectable_cell(q: Quality) -> str:
    """Recall over the detectable incidents (paged/incidents), 'n/a' when unknown."""
    if q.incidents_big_unknown:
        return "n/a"
    return f"{_pct(q.recall_detectable)} ({_frac(q.paged_detectable, q.incidents_detectable)})"


def _detectable_line(rep: QualityReport) -> str:
    """How many incidents >= min_multiplier are detectable, and the recall among them."""
    o = rep.overall
    what = (
        f"detectable incidents (>= {rep.min_multiplier:g}x baseline, oracle power >= "
        f"{rep.min_power * 100:g} %)"
    )
    if o.incidents_big_unknown:
        return (
            f"{what}: n/a (oracle power unknown for {o.incidents_big_unknown} of "
            f"{o.incidents_big} incidents >= {rep.min_multiplier:g}x: seeds saved before it "
            "was computed)"
        )
    return (
        f"{what}: {o.incidents_detectable} of {o.incidents_big} incidents >= "
        f"{rep.min_multiplier:g}x; recall among them {_pct(o.recall_detectable)} "
        f"({_frac(o.paged_detectable, o.incidents_detectable)})"
    )


def _target_line(t: TargetResult) -> str:
    value = (
        "n/a"
        if t.value is None
        else f"{t.value:.1%}"
        if "recall" in t.name or "precision" in t.name
        else f"{t.value:.1f}"
    )
    return f"  {'met   ' if t.met else 'MISSED'}  {t.name}: {value} (target {t.target})"


def _counts_text(m: dict[str, Any]) -> str:
    """An incident's expected counts of its affected quantity ('n/a' for old seeds)."""
    base, with_it = m.get("baseline_count"), m.get("incident_count")
    if base is None or with_it is None:
        return "expected count n/a"
    return f"expected count {base:.3g} -> {with_it:.3g}"


def _digest(paths: Sequence[str]) -> str:
    """A short digest of the rule files, to tell runs on different rules apart."""
    from pipelines.alerting.loader import rule_files

    h = hashlib.sha256()
    for f in rule_files([Path(p if Path(p).is_absolute() else REPO / p) for p in paths]):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _with_oracle_times(r: SeedResult) -> list[Incident]:
    """`r`'s incidents with their oracle time to detect (`oracle_time`, the same budget as
    their oracle power); None for a seed saved before the expected counts were kept.
    """
    out = []
    for i in r.incidents:
        m = r.incident_meta[i.id]
        if m.get("baseline_count") is None or m.get("incident_count") is None:
            out.append(i)
            continue
        t = oracle_time(
            m["baseline_count"],
            m["incident_count"],
            i.end - i.start,
            period=timedelta(days=r.days),
            segments=r.segments,
            kinds=len(KINDS),
            injected=m["events"],
        )
        out.append(replace(i, oracle_time=None if t is None else t.total_seconds()))
    return out


def _with_seed(seed: int, segment: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return (*segment, ("seed", str(seed)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Alert quality of the alert rules on synthetic weeks with known "
        "incidents: precision, recall, time to page and false pages per rule and overall "
        "(prints figures; the rules run through the real warehouse, drift and alert code).",
        epilog="Default seeds are the held-apart acceptance seeds "
        f"{' '.join(map(str, ACCEPTANCE_SEEDS))}; tune rules on the tuning seeds "
        f"({' '.join(map(str, TUNING_SEEDS))}, --tuning) only.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help=f"seeds to replay (default: the acceptance seeds {list(ACCEPTANCE_SEEDS)})",
    )
    group.add_argument(
        "--tuning",
        action="store_true",
        help=f"use the tuning seeds {list(TUNING_SEEDS)} instead of the acceptance seeds",
    )
    parser.add_argument(
        "--days",
        type=float,
        default=7.0,
        help="simulated days per seed (default 7; whole hours, >= 0.5)",
    )
    parser.add_argument(
        "--trigger",
        type=float,
        default=30.0,
        help="micro-batch interval in seconds (default 30, the job's); must "
        "divide the 5-minute window",
    )
    parser.add_argument(
        "--segments",
        type=int,
        default=DEFAULT_SEGMENTS,
        help=f"segments per week, special ones included (default {DEFAULT_SEGMENTS}; 30 or more)",
    )
    parser.add_argument(
        "--rules",
        nargs="+",
        default=None,
        help="alert rule files or directories (default: the setting "
        "alerting.rules, i.e. alerts/rules)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="seeds replayed in parallel processes (default 1)"
    )
    parser.add_argument(
        "--progress-hours",
        type=float,
        default=6.0,
        help="print progress every this many simulated hours (default 6)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep each seed's warehouse (SQLite) in this directory",
    )
    parser.add_argument(
        "--save",
        type=Path,
        default=None,
        help="pickle the replayed seeds' pages and incidents to this file (for --load)",
    )
    parser.add_argument(
        "--load",
        type=Path,
        nargs="+",
        default=None,
        help="score seeds pickled by --save instead of replaying (e.g. after changing the "
        "kinds a rule covers)",
    )
    parser.add_argument(
        "--missed-examples",
        type=int,
        default=3,
        help="missed incidents listed per kind, detectable ones first (default 3; 0: all)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the pages, incidents and figures to this JSON file",
    )
    args = parser.parse_args()
    seeds = list(TUNING_SEEDS) if args.tuning else list(args.seeds or ACCEPTANCE_SEEDS)
    if args.trigger <= 0 or 300 % args.trigger:
        parser.error("--trigger must divide 300 seconds")
    if args.days < 0.5:
        parser.error("--days must be at least 0.5")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    from pipelines.settings import Settings

    rules_paths = args.rules or list(Settings().alerting.rules)
    if args.tuning:
        kind = "tuning"
    elif set(seeds) <= set(ACCEPTANCE_SEEDS):
        kind = "acceptance"
    elif set(seeds) & set(ACCEPTANCE_SEEDS) and set(seeds) & set(TUNING_SEEDS):
        kind = "custom (mixes tuning and acceptance seeds!)"
    else:
        kind = "custom"
    if args.load:
        what = f"scoring the seeds saved in {', '.join(map(str, args.load))}"
    else:
        what = (
            f"{kind} seeds {seeds}; {args.days:g} day(s) each; trigger {args.trigger:g} s; "
            f"{args.segments} segments; rules {', '.join(rules_paths)} "
            f"(sha256 {_digest(rules_paths)})"
        )
    _say(f"{os.uname().nodename}: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {what}")
    started = time.perf_counter()
    kwargs = {
        "days": args.days,
        "trigger_s": args.trigger,
        "segments": args.segments,
        "rules_paths": rules_paths,
        "keep": args.keep,
        "progress_hours": args.progress_hours,
    }
    results: list[SeedResult] = []
    if args.load:
        for path in args.load:
            with path.open("rb") as f:
                results += pickle.load(f)  # noqa: S301 - files this script wrote
        _say(f"loaded seeds {[r.seed for r in results]} from {', '.join(map(str, args.load))}")
    elif args.jobs > 1 and len(seeds) > 1:
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(seeds))) as pool:
            futures = [pool.submit(run_seed, s, **kwargs) for s in seeds]
            results = [f.result() for f in futures]
    else:
        results = [run_seed(s, **kwargs) for s in seeds]
    if args.save is not None:
        with args.save.open("wb") as f:
            pickle.dump(results, f)
        _say(f"replayed seeds saved to {args.save}")
    severity: dict[str, str] = {}
    for r in results:
        severity.update(r.severity)
    from pipelines.durations import parse_duration

    trigger_s = results[0].trigger_s if results else args.trigger
    stream = _settings(trigger_s).stream
    grace = default_grace(
        parse_duration(stream.window),
        parse_duration(stream.watermark),
        parse_duration(stream.trigger_interval),
    )
    lines: list[str] = [""]
    all_pages: list[Page] = []
    all_incidents: list[Incident] = []
    meta: dict[str, dict[str, Any]] = {}
    for r in results:
        period = timedelta(days=r.days)
        incidents = _with_oracle_times(r)
        rep = score(
            r.pages,
            incidents,
            covers=COVERS,
            primary=PRIMARY,
            period=period,
            segments=r.segments,
            grace=grace,
            rules=list(severity),
        )
        t = r.totals
        lines.append(
            f"seed {r.seed}: {r.days:g} day(s), {r.segments} segments, {t['drawn']:,} records "
            f"drawn: {t['aggregated']:,} aggregated, {t['incomplete']:,} schema violations, "
            f"{t['late']:,} late (dropped), {t['unarrived']:,} after the period, "
            f"{t['duplicates']:,} duplicates; {r.timings['batches']:,} batches in "
            f"{r.seconds:.0f} s; {len(r.pages)} pages ({r.transitions_to_firing} transitions "
            "to firing returned by the derivations)"
        )
        lines += report(
            f"seed {r.seed} ({r.days:g} days)",
            rep,
            r.incident_meta,
            severity,
            incidents,
            r.pages,
            args.missed_examples,
        )
        all_pages += [replace(p, segment=_with_seed(r.seed, p.segment)) for p in r.pages]
        all_incidents += [replace(i, segment=_with_seed(r.seed, i.segment)) for i in incidents]
        meta.update(r.incident_meta)
    if len(results) > 1:
        period = timedelta(days=sum(r.days for r in results))
        segments = round(sum(r.segments for r in results) / len(results))
        rep = score(
            all_pages,
            all_incidents,
            covers=COVERS,
            primary=PRIMARY,
            period=period,
            segments=segments,
            grace=grace,
            rules=list(severity),
        )
        lines += report(
            f"all seeds {[r.seed for r in results]} pooled",
            rep,
            meta,
            severity,
            all_incidents,
            all_pages,
            args.missed_examples,
        )
    lines.append(
        f"grace after an incident's end: {grace.total_seconds() / 60:g} min (window + "
        f"watermark + trigger); incidents >= 3x: multiplier >= 3; total run time "
        f"{time.perf_counter() - started:.0f} s"
    )
    print("\n".join(lines), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(_as_json(results), indent=1, default=str))
        _say(f"pages, incidents and timings written to {args.json}")


def _as_json(results: Sequence[SeedResult]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        out.append(
            {
                "seed": r.seed,
                "days": r.days,
                "segments": r.segments,
                "totals": r.totals,
                "timings": r.timings,
                "seconds": r.seconds,
                "pages": [
                    {
                        "rule": p.rule,
                        "segment": dict(p.segment),
                        "at": p.at.isoformat(),
                        "early": p.early,
                        "detail": p.detail,
                    }
                    for p in r.pages
                ],
                "incidents": [
                    {
                        "id": i.id,
                        "kind": i.kind,
                        "segment": dict(i.segment),
                        "start": i.start.isoformat(),
                        "end": i.end.isoformat(),
                        "multiplier": None if math.isinf(i.multiplier) else i.multiplier,
                        # Seeds saved before the expected counts existed: unknown (null).
                        "baseline_count": None,
                        "incident_count": None,
                        **r.incident_meta[i.id],
                        "oracle_power": i.oracle_power,
                        "oracle_time_s": i.oracle_time,
                    }
                    for i in _with_oracle_times(r)
                ],
            }
        )
    return out


if __name__ == "__main__":
    main()
