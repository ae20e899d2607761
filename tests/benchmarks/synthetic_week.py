"""A seeded, realistic week of traffic with known incidents, at the level of counts.

The ground truth of the alert-quality benchmark (tests/benchmarks/bench_alert_quality.py):
what the streaming job would have written to the warehouse, micro-batch by micro-batch, for
a week of traffic into which incidents of every kind the default alert rules cover were
injected, each with its kind, segment, start, end and size. Replaying a week through Spark
would take days; this module draws the individual events as numpy arrays (vectorised, no
per-event Python) and aggregates them exactly as the job does, so that the benchmark can
drive the real warehouse sink, drift and alert code with them.

Pure and deterministic: no I/O, no clock, no `hash()`; everything is drawn from numpy
Generators seeded from the seed (`np.random.SeedSequence([seed, ...])`), so a seed gives the
same week on every machine. Seeds for tuning rules (`TUNING_SEEDS`) are kept apart from the
seeds the acceptance figures are reported on (`ACCEPTANCE_SEEDS`).

The world (`plan_week`)
- Segments are product_surface x model_version x locale (the job's default dimensions).
  Regular ones come from the synthetic population's catalogue (chat, api, search, agent;
  their live model versions; seven locales, agent in four), with volumes from ~20 to
  ~550 events per 5-minute window on average, following a diurnal cycle peaking in each
  locale's afternoon (amplitude 70 %) and a quieter weekend (x0.7). Special segments:
  * a model rollout: chat / atlas-l-2026.12.0 in three locales takes 0 -> 50 % of the
    traffic of chat / atlas-l-2026.10.2 over a day from 40 % of the period; it refuses a
    little more (x1.3) and more of its refusals are partial (safe completions): a benign
    shift, not an incident (a latency shift is not drawn: only the outcome histogram is
    emitted, the one distribution a default rule reads);
  * a prompt release on api (refusals x1.25 from 25 % of the period on): benign, in place;
  * two new segments (voice / atlas-v-2026.11.0) that start at 55 % of the period and are
    harmful from their first window for 3-8 hours (recorded as harmful_rate incidents);
  * two tiny segments (a beta of agent in fr-FR and es-ES): about 2 and 0.4 events per
    window, too small for any one-window rule.
- Users: each segment has its own pool, with Pareto(1.3) activity (a few prolific users
  make a large share of the events) and per-user propensities for harmful output,
  refusals, injection and jailbreak attempts drawn from Beta distributions around the
  segment's rates (concentration `USER_CONCENTRATION`), so outcomes cluster by user.
- Base rates per segment: the synthetic generator's `BaseRates` (harmful output 0.2 %,
  refusals 3.5 %, injection attempts 0.6-3 % by feature mix, 3 % of them succeeding,
  jailbreak attempts 0.5 % with 4 % success, PII in 0.02 % of outputs, 0.2 % errors), each
  times a per-segment lognormal factor (sd 0.35); 0.3 % of records are schema violations
  (counted in events_seen only: telemetry incompleteness). No redaction failure happens
  outside an incident.
- Benign disturbances: a surface-wide traffic drop (to 15-30 % for 1-3 hours), a locale
  that goes silent for 30-60 minutes, late data (2.5 % of events a minute or two late,
  0.5 % 4-40 minutes late; bursts in which a locale's events are held back for 5-25
  minutes and delivered at once), and bursts of duplicates (removed by the job by event
  id: never counted, only reported as duplicate rows).
- Incidents (`Incident`): `incidents_per_kind` of every kind in `KINDS` (24 for a week,
  scaled with the period), in segments drawn with weight sqrt(volume), never overlapping
  another incident of the same segment (one hour apart at least), none in the first six
  hours of the period (the baselines' warm-up) nor in its last 20 minutes. Rate kinds
  multiply the rate by a factor drawn log-uniformly in [1.5, 10] over 3 minutes to 4 hours
  (injection campaigns and jailbreak waves come from 3-30 attacking users); an abusive user
  sends 1-10 requests a minute for 5 minutes to 2 hours, 30-90 % of them flagged; event
  kinds inject 1-12 single events over 1-60 minutes, the incident spanning its first to
  its last event (see `KINDS`). Each incident carries the expected count of the quantity
  it moves (`AFFECTED`) in its segment over [start, end], without it and with it
  (`baseline_count`, `incident_count`), computed from the plan as the events are drawn: the
  ground truth of what is detectable at all (tests.benchmarks.alert_oracle.oracle_power).

The output (`iter_slices`): per trigger interval of ARRIVAL time, a `Slice` with the rows
the job would add to segment_window_agg (window of the EVENT time, segment, every counter
of `counter_ids()`, and `bucket_sums`: counter id -> list of B per-user-bucket sums of the
`bucket_counter_ids()` counters, all-zero counters left out, as the warehouse stores them),
the outcome histogram rows, and the batch's ledger figures (records, late, duplicates,
newest event time). An event is late, and dropped, when its event time is behind the
watermark left by the slices before it (newest event time so far minus `watermark`), as
the job drops it; events that arrive after the period never arrive.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.metrics.buckets import BUCKETS, user_bucket
from pipelines.metrics.catalog import POLICY_CATEGORIES, bucket_counter_ids, counter_ids
from pipelines.metrics.distributions import distribution
from pipelines.segments import ALL_DIMENSIONS_VALUE, SEGMENT_DIMENSIONS
from pipelines.synth.rates import BaseRates

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

TUNING_SEEDS = (1, 2, 3)
"""Seeds to tune alert rules on."""
ACCEPTANCE_SEEDS = (1001, 1002, 1003)
"""Seeds the acceptance figures are reported on: never tune on them."""

DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday, 00:00 UTC
DIMENSIONS = ("product_surface", "model_version", "locale")
DEFAULT_SEGMENTS = 46

# Incident kinds: rate kinds multiply a rate of the segment; event kinds inject single events.
RATE_KINDS = (
    "harmful_rate",  # harmful output rate (every category) x m
    "violence_spike",  # outputs flagged for violence x m
    "self_harm_spike",  # outputs flagged for self-harm x m
    "injection_campaign",  # injection attempts x m, from a few attacking users
    "jailbreak_success",  # jailbreak success rate x m, attempts x 1-20 from a few attackers
    "refusal_spike",  # refusal rate x m (over-blocking after a release)
    "telemetry_incomplete",  # records missing required safety fields x m
    "outcome_shift",  # requests not answered (error, safe completion) x m
)
# One abusive user sending violating requests: concentrated abuse, not a regression.
ACTOR_KINDS = ("abusive_user",)
EVENT_KINDS = (
    "redaction_failure",  # 1-6 events whose free text still held personal data
    "injection_success",  # 1-8 successful injections
    "pii_output",  # 2-12 outputs with personal data
)
KINDS = RATE_KINDS + ACTOR_KINDS + EVENT_KINDS
# The quantity an incident of each kind moves (`Incident.baseline_count`, `incident_count`):
# a counter of segment_window_agg, or what else counts it.
AFFECTED = {
    "harmful_rate": "violations",
    "violence_spike": "violations_violence",
    "self_harm_spike": "violations_self_harm",
    "injection_campaign": "injection_attempts",
    "jailbreak_success": "jailbreak_successes",
    "refusal_spike": "refusals",
    "telemetry_incomplete": "events_seen - telemetry_complete",  # schema violations
    "outcome_shift": "outcome bins other than answered",  # refused, blocked, safe, error
    "abusive_user": "violations",
    "redaction_failure": "redaction_failures",
    "injection_success": "injection_successes",
    "pii_output": "pii_outputs",
}

WARMUP = timedelta(hours=6)  # no incident starts before: the baselines fill
TAIL = timedelta(minutes=20)  # no incident ends after period end - TAIL
MULTIPLIER_RANGE = (1.5, 10.0)
RATE_DURATION = (timedelta(minutes=3), timedelta(hours=4))
EVENT_DURATION = (timedelta(minutes=1), timedelta(hours=1))
EVENT_COUNTS = {"redaction_failure": (1, 6), "injection_success": (1, 8), "pii_output": (2, 12)}
ABUSE_DURATION = (timedelta(minutes=5), timedelta(hours=2))
ABUSE_REQUESTS_PER_MINUTE = (1.0, 10.0)  # log-uniform
ABUSE_VIOLATING = (0.3, 0.9)  # share of the abuser's requests flagged, uniform
SAME_SEGMENT_GAP = timedelta(hours=1)

TOTAL_PER_WINDOW = 4000.0  # events per 5-minute window over all regular segments, on average
EVENTS_PER_USER = 15.0  # events per user over the period, on average
USER_CONCENTRATION = 100.0  # Beta concentration of per-user propensities
SEGMENT_RATE_SD = 0.35  # lognormal sd of a segment's base rates around BaseRates
INCOMPLETE_RATE = 0.003  # records missing a required safety field (schema violations)
DIURNAL_AMPLITUDE = 0.7
WEEKEND_FACTOR = 0.7
ATTACKERS = (3, 30)  # users behind an injection campaign or a jailbreak wave

_RATES = BaseRates()
_CATEGORY_WEIGHTS = np.array([0.12, 0.25, 0.15, 0.01, 0.15, 0.08, 0.14, 0.03, 0.07])
_CATEGORY_CUM = np.cumsum(_CATEGORY_WEIGHTS) / _CATEGORY_WEIGHTS.sum()
_VIOLENCE = POLICY_CATEGORIES.index("violence")
_SELF_HARM = POLICY_CATEGORIES.index("self_harm")
_PRIVACY = POLICY_CATEGORIES.index("privacy")
_PARTIAL_STYLE = 0.15  # refusals that are partial (a safe completion), BaseRates' styles
_OUTCOMES = distribution("outcome").values  # answered, refused, blocked, safe_completion, error
_ANSWERED, _REFUSED, _BLOCKED, _SAFE, _ERROR = range(5)
_CHUNK_S = 3600  # events are drawn an hour of event time at a time

# Surfaces: (share of traffic, {model version: share}, injection attempt rate of its
# feature mix, locales or None for all).
_SURFACES: dict[str, tuple[float, dict[str, float], float, tuple[str, ...] | None]] = {
    "chat": (
        0.45,
        {"atlas-l-2026.10.2": 0.8, "atlas-l-2026.11.0": 0.2},
        0.9 * _RATES.injection_attempt + 0.1 * _RATES.injection_attempt_rag,
        None,
    ),
    "search": (
        0.22,
        {"atlas-s-2026.08.1": 1.0},
        0.8 * _RATES.injection_attempt_rag + 0.2 * _RATES.injection_attempt,
        None,
    ),
    "api": (
        0.20,
        {"atlas-l-2026.10.2": 0.7, "atlas-l-2026.09.5": 0.3},
        0.75 * _RATES.injection_attempt + 0.25 * _RATES.injection_attempt_rag,
        None,
    ),
    "agent": (
        0.13,
        {"atlas-agent-2026.10.0": 1.0},
        _RATES.injection_attempt_agent,
        ("en-US", "en-GB", "de-DE", "ja-JP"),
    ),
}
# Locales: (share of traffic, hour of the daily peak in UTC).
_LOCALES: dict[str, tuple[float, float]] = {
    "en-US": (0.38, 19.0),
    "en-GB": (0.10, 14.0),
    "de-DE": (0.12, 13.0),
    "fr-FR": (0.10, 13.0),
    "ja-JP": (0.10, 5.0),
    "es-ES": (0.08, 14.0),
    "pt-BR": (0.12, 18.0),
}
# Further locales, for --segments beyond the default catalogue.
_EXTRA_LOCALES: dict[str, tuple[float, float]] = {
    "it-IT": (0.05, 13.0),
    "ko-KR": (0.05, 5.0),
    "hi-IN": (0.03, 9.0),
    "nl-NL": (0.03, 13.0),
    "pl-PL": (0.03, 13.0),
    "tr-TR": (0.02, 12.0),
    "sv-SE": (0.02, 13.0),
    "zh-TW": (0.02, 5.0),
}
ROLLOUT_VERSION = "atlas-l-2026.12.0"
ROLLOUT_FROM = "atlas-l-2026.10.2"
ROLLOUT_LOCALES = ("en-US", "de-DE", "ja-JP")
NEW_SEGMENTS = (
    ("voice", "atlas-v-2026.11.0", "en-US", 120.0),
    ("voice", "atlas-v-2026.11.0", "de-DE", 25.0),
)
TINY_SEGMENTS = (
    ("agent", "atlas-agent-2026.10.0", "fr-FR", 2.0),
    ("agent", "atlas-agent-2026.10.0", "es-ES", 0.4),
)
SPECIAL_SEGMENTS = len(ROLLOUT_LOCALES) + len(NEW_SEGMENTS) + len(TINY_SEGMENTS)

# The counters of one event, in `counter_ids()` order, and their column in the event matrix.
COUNTERS = counter_ids()
BUCKET_COUNTERS = bucket_counter_ids()
_COL = {c: i for i, c in enumerate(COUNTERS)}
_BUCKET_COLS = np.array([_COL[c] for c in BUCKET_COUNTERS])


@dataclass(frozen=True)
class SegmentSpec:
    """One segment of the week: its values, volume and rates.

    `volume` is the mean number of events per 5-minute window at the period's average
    diurnal and weekly level (before its start, a rollout's share or a traffic drop).
    `role`: regular, rollout (takes traffic from `parent`), new (starts at `starts`,
    harmful from its first window), tiny. `rates` holds the segment's base probabilities.
    """

    index: int
    values: tuple[str, str, str]
    volume: float
    peak_hour: float
    role: str
    rates: dict[str, float]
    users: int
    starts: float = 0.0  # seconds into the period
    parent: int | None = None

    @property
    def label(self) -> str:
        return " / ".join(self.values)

    def segment(self) -> dict[str, str]:
        return dict(zip(DIMENSIONS, self.values, strict=True))


@dataclass(frozen=True)
class Incident:
    """One injected incident: the ground truth a page is matched against.

    `multiplier`: for a rate kind the factor on the segment's rate (for a segment harmful
    from its first window, its rate over the reference harmful rate, as it has no baseline
    of its own); for an event kind, (expected events of the kind in the segment over the
    incident without it + injected events) / that expectation (inf when none are expected).
    `baseline` is the segment's base rate of the affected quantity, `events` the number of
    injected events (event kinds), `attempt_factor` how much more a jailbreak wave attempts.
    An event kind's start and end are its first and last injected event; an abusive user's
    multiplier is the segment's harmful output rate with the abuser over the rate without.

    `baseline_count` and `incident_count`: the expected number of events of the affected
    quantity (`AFFECTED`: harmful outputs, refusals, injection attempts, ...) in the segment
    over [start, end] without the incident and with it, as the generator draws them (its
    traffic, its users' propensities, the records it counts: schema violations count
    nothing), given the plan. Given the plan, the count is Poisson with mean
    `incident_count`, except for an event kind's injected events, which are certain
    (`incident_count` = `baseline_count` + `events`). A segment harmful from its first
    window has no baseline of its own: its `baseline_count` is at the reference harmful
    rate, as its multiplier is. See `_counts` for each kind.
    """

    id: str
    kind: str
    segment: tuple[str, str, str]
    segment_index: int
    start: datetime
    end: datetime
    multiplier: float
    baseline: float
    volume: float  # the segment's expected events per 5-minute window during the incident
    events: int = 0
    attempt_factor: float = 1.0
    from_first_window: bool = False
    requests_per_minute: float = 0.0  # abusive_user: the abuser's requests
    violating_share: float = 0.0  # abusive_user: share of them flagged
    baseline_count: float = 0.0  # expected events of the affected quantity, without it
    incident_count: float = 0.0  # ... and with it
    event_times: tuple[float, ...] = field(default=(), repr=False)  # event kinds, seconds

    @property
    def event_level(self) -> bool:
        return self.kind in EVENT_KINDS

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True)
class Episode:
    """A benign disturbance of the week (not an incident): for the report."""

    kind: str  # rollout, prompt_release, traffic_drop, silence, late_burst, duplicate_burst
    what: str  # the segments or locale it touches
    start: datetime
    end: datetime
    detail: str = ""


@dataclass(frozen=True)
class WeekPlan:
    """Everything drawn before the events: segments, incidents, disturbances, users."""

    seed: int
    start: datetime
    seconds: int
    window: timedelta
    trigger: timedelta
    watermark: timedelta
    segments: tuple[SegmentSpec, ...]
    incidents: tuple[Incident, ...]
    episodes: tuple[Episode, ...]
    # Per user (global index): segment, activity weight, bucket, propensity factors.
    user_segment: IntArray = field(repr=False)
    user_bucket: IntArray = field(repr=False)
    user_factors: FloatArray = field(repr=False)  # (users, 4): harm, refusal, injection, jb
    user_cum: tuple[FloatArray, ...] = field(repr=False)  # per segment: cumulative activity
    user_offset: IntArray = field(repr=False)  # first global user index of each segment
    attackers: dict[str, IntArray] = field(repr=False)  # incident id -> its users
    drops: tuple[tuple[float, float, float, tuple[int, ...]], ...] = field(repr=False)
    late_bursts: tuple[tuple[float, float, float, tuple[int, ...]], ...] = field(repr=False)
    dup_bursts: tuple[tuple[float, float, float, int], ...] = field(repr=False)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    @property
    def days(self) -> float:
        return self.seconds / 86400

    @property
    def slices(self) -> int:
        return int(self.seconds // self.trigger.total_seconds())


@dataclass
class WeekTotals:
    """Running totals of what `iter_slices` drew and emitted (for checks and the report)."""

    drawn: int = 0  # records drawn (duplicates not included)
    aggregated: int = 0
    incomplete: int = 0  # schema violations: events_seen only
    late: int = 0  # behind the watermark when they arrived: dropped
    unarrived: int = 0  # would arrive after the period
    duplicates: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))


@dataclass(frozen=True)
class Slice:
    """One micro-batch: the records that arrived in [start, end), as the job would commit
    them at `end` (the simulated clock of its derivation).
    """

    index: int
    start: datetime
    end: datetime
    aggregates: list[dict[str, Any]]
    histograms: list[dict[str, Any]]
    arrived: int  # records that arrived, duplicates not included
    aggregated: int
    incomplete: int
    late: int
    duplicates: int
    max_event_time: datetime | None


# -- the plan ---------------------------------------------------------------------------


def _rng(seed: int, *purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *purpose]))


def _regular_catalogue(count: int) -> list[tuple[tuple[str, str, str], float, float]]:
    """(values, volume, peak hour) of `count` regular segments: the catalogue's segments
    spread over its volume range when fewer, further locales' segments when more.
    """

    def combos(locales: dict[str, tuple[float, float]]) -> list[Any]:
        out = []
        for surface, (share, versions, _, only) in _SURFACES.items():
            served = {k: v for k, v in locales.items() if only is None or k in only}
            norm = sum(v[0] for k, v in _LOCALES.items() if only is None or k in only)
            for version, version_share in versions.items():
                for locale, (locale_share, peak) in served.items():
                    volume = TOTAL_PER_WINDOW * share * version_share * locale_share / norm
                    out.append(((surface, version, locale), volume, peak))
        return sorted(out, key=lambda x: -x[1])

    base = combos(_LOCALES)
    if count <= len(base):
        picks = np.unique(np.round(np.linspace(0, len(base) - 1, count)).astype(int))
        return [base[i] for i in picks]
    extra = combos(_EXTRA_LOCALES)
    if count > len(base) + len(extra):
        msg = f"at most {len(base) + len(extra) + SPECIAL_SEGMENTS} segments are available"
        raise ValueError(msg)
    return base + extra[: count - len(base)]


def _segment_rates(rng: np.random.Generator, injection: float) -> dict[str, float]:
    def f() -> float:
        return float(np.exp(rng.normal(0.0, SEGMENT_RATE_SD) - SEGMENT_RATE_SD**2 / 2))

    return {
        "harmful": _RATES.harmful_output * f(),
        "refusal": _RATES.refusal * f(),
        "injection": injection * f(),
        "injection_success": _RATES.injection_success * f(),
        "jailbreak": _RATES.jailbreak_attempt * f(),
        "jailbreak_success": _RATES.jailbreak_success * f(),
        "pii": _RATES.pii_in_output * f(),
        "error": _RATES.error * f(),
        "incomplete": INCOMPLETE_RATE * f(),
        "partial": _PARTIAL_STYLE,
        "refusal_factor": 1.0,
    }


def plan_week(
    seed: int,
    *,
    days: float = 7.0,
    segments: int = DEFAULT_SEGMENTS,
    start: datetime = DEFAULT_START,
    window: timedelta = timedelta(minutes=5),
    trigger: timedelta = timedelta(seconds=30),
    watermark: timedelta = timedelta(minutes=10),
    incidents_per_kind: int | None = None,
) -> WeekPlan:
    """Draw the week of `seed`: segments, users, incidents and disturbances (see the module).

    `days` is rounded to whole hours (at least 12); `segments` (at least 30) counts the
    special segments (`SPECIAL_SEGMENTS`) too; `incidents_per_kind` defaults to 24 per
    week, scaled with the period (at least 3). `start` must fall on a window boundary and
    `trigger` must divide the window.
    """
    seconds = int(round(days * 24)) * 3600
    if seconds < 12 * 3600:
        msg = "the period must be at least 12 hours (days >= 0.5)"
        raise ValueError(msg)
    if segments < 30:
        msg = "at least 30 segments"
        raise ValueError(msg)
    w_s, t_s = window.total_seconds(), trigger.total_seconds()
    if t_s <= 0 or w_s % t_s or _CHUNK_S % w_s:
        msg = "the trigger interval must divide the window, and the window an hour"
        raise ValueError(msg)
    if start.tzinfo is None or start.timestamp() % w_s:
        msg = "start must be timezone-aware and on a window boundary"
        raise ValueError(msg)
    rng = _rng(seed, 0)
    windows = seconds / w_s
    specs: list[SegmentSpec] = []

    def add(values: tuple[str, str, str], volume: float, peak: float, role: str, **kw: Any) -> None:
        injection = _SURFACES.get(values[0], (0, {}, _RATES.injection_attempt, None))[2]
        rates = _segment_rates(rng, injection)
        users = max(20, int(volume * windows / EVENTS_PER_USER))
        specs.append(SegmentSpec(len(specs), values, volume, peak, role, rates, users, **kw))

    for values, volume, peak in _regular_catalogue(segments - SPECIAL_SEGMENTS):
        add(values, volume, peak, "regular")
    rollout_at = 0.40 * seconds
    for locale in ROLLOUT_LOCALES:
        parent = next((s for s in specs if s.values == ("chat", ROLLOUT_FROM, locale)), None)
        if parent is None:
            continue
        add(
            ("chat", ROLLOUT_VERSION, locale),
            parent.volume,
            parent.peak_hour,
            "rollout",
            starts=rollout_at,
            parent=parent.index,
        )
        specs[-1].rates.update(refusal_factor=1.3, partial=0.30)
    new_at = 0.55 * seconds
    for surface, version, locale, volume in NEW_SEGMENTS:
        add((surface, version, locale), volume, _LOCALES[locale][1], "new", starts=new_at)
    for surface, version, locale, volume in TINY_SEGMENTS:
        add((surface, version, locale), volume, _LOCALES[locale][1], "tiny")
    # The prompt release on api: refusals x1.25 from 25 % of the period on (benign).
    release_at = 0.25 * seconds

    users = _draw_users(seed, rng, specs)
    episodes: list[Episode] = []
    at = start.__add__
    for s in specs:
        if s.role == "rollout":
            episodes.append(
                Episode(
                    "rollout",
                    s.label,
                    at(timedelta(seconds=rollout_at)),
                    at(timedelta(seconds=rollout_at + 86400)),
                    "0 -> 50 % of chat / " + ROLLOUT_FROM + "; refusals x1.3, "
                    "partial refusals 15 -> 30 %",
                )
            )
    episodes.append(
        Episode(
            "prompt_release",
            "api / *",
            at(timedelta(seconds=release_at)),
            at(timedelta(seconds=seconds)),
            "refusals x1.25",
        )
    )

    drops = _draw_drops(rng, specs, seconds)
    for lo, hi, level, segs in drops:
        what = "silence" if level == 0.0 else "traffic_drop"
        names = sorted({specs[g].values[0] if level else specs[g].values[2] for g in segs})
        episodes.append(
            Episode(
                what,
                ", ".join(names),
                at(timedelta(seconds=lo)),
                at(timedelta(seconds=hi)),
                f"traffic x{level:.2f}",
            )
        )
    late_bursts = _draw_late_bursts(rng, specs, seconds)
    for lo, hi, delay, segs in late_bursts:
        episodes.append(
            Episode(
                "late_burst",
                specs[segs[0]].values[2],
                at(timedelta(seconds=lo)),
                at(timedelta(seconds=hi)),
                f"held back, delivered {delay / 60:.0f} min after",
            )
        )
    dup_bursts = _draw_dup_bursts(rng, specs, seconds)
    for lo, hi, share, g in dup_bursts:
        episodes.append(
            Episode(
                "duplicate_burst",
                specs[g].label,
                at(timedelta(seconds=lo)),
                at(timedelta(seconds=hi)),
                f"{share:.0%} of events resent",
            )
        )

    per_kind = incidents_per_kind
    if per_kind is None:
        per_kind = max(3, int(round(24 * seconds / (7 * 86400))))
    mixes = [_Mix.of(users, s.index) for s in specs]
    incidents = _draw_incidents(rng, specs, seconds, per_kind, start, drops, release_at, mixes)
    attackers: dict[str, IntArray] = {}
    extra_segment: list[int] = []
    extra_keys: list[str] = []
    for inc in incidents:
        if inc.kind in ("injection_campaign", "jailbreak_success", "abusive_user"):
            n = (
                1
                if inc.kind == "abusive_user"
                else int(rng.integers(ATTACKERS[0], ATTACKERS[1] + 1))
            )
            first = len(users[0]) + len(extra_segment)
            attackers[inc.id] = np.arange(first, first + n, dtype=np.int64)
            extra_segment += [inc.segment_index] * n
            extra_keys += [f"week-{seed}-attacker-{inc.id}-{j}" for j in range(n)]
    user_segment = np.concatenate([users[0], np.asarray(extra_segment, dtype=np.int64)])
    user_buckets = np.concatenate(
        [users[1], np.asarray([user_bucket(k) for k in extra_keys], dtype=np.int64)]
    )
    user_factors = np.concatenate([users[2], np.ones((len(extra_segment), 4))])
    return WeekPlan(
        seed=seed,
        start=start,
        seconds=seconds,
        window=window,
        trigger=trigger,
        watermark=watermark,
        segments=tuple(specs),
        incidents=tuple(incidents),
        episodes=tuple(sorted(episodes, key=lambda e: e.start)),
        user_segment=user_segment,
        user_bucket=user_buckets,
        user_factors=user_factors,
        user_cum=users[3],
        user_offset=users[4],
        attackers=attackers,
        drops=tuple(drops),
        late_bursts=tuple(late_bursts),
        dup_bursts=tuple(dup_bursts),
    )


def _draw_users(
    seed: int, rng: np.random.Generator, specs: Sequence[SegmentSpec]
) -> tuple[IntArray, IntArray, FloatArray, tuple[FloatArray, ...], IntArray]:
    """Per user: segment, bucket, propensity factors; per segment: cumulative activity and
    the first user index. Each user key is hashed once (`user_bucket`).
    """
    segs, buckets, factors, cums, offsets = [], [], [], [], []
    first = 0
    for s in specs:
        n = s.users
        offsets.append(first)
        first += n
        activity = rng.pareto(1.3, n) + 1.0
        cums.append(np.cumsum(activity))
        segs.append(np.full(n, s.index, dtype=np.int64))
        buckets.append(
            np.fromiter((user_bucket(f"week-{seed}-{s.index}-{i}") for i in range(n)), np.int64, n)
        )
        f = np.empty((n, 4))
        for j, name in enumerate(("harmful", "refusal", "injection", "jailbreak")):
            p = min(0.5, s.rates[name])
            kappa = USER_CONCENTRATION
            f[:, j] = rng.beta(kappa * p, kappa * (1 - p), n) / p
        factors.append(f)
    return (
        np.concatenate(segs),
        np.concatenate(buckets),
        np.concatenate(factors),
        tuple(cums),
        np.asarray(offsets, dtype=np.int64),
    )


def _draw_drops(
    rng: np.random.Generator, specs: Sequence[SegmentSpec], seconds: int
) -> list[tuple[float, float, float, tuple[int, ...]]]:
    """A surface-wide traffic drop and a silent locale: (from, to, level, segments)."""
    drops = []
    surface = str(rng.choice(["search", "api", "chat"]))
    lo = float(rng.uniform(0.1, 0.85) * seconds)
    hi = lo + float(rng.uniform(1, 3)) * 3600
    level = float(rng.uniform(0.15, 0.30))
    drops.append(
        (lo, min(hi, seconds), level, tuple(s.index for s in specs if s.values[0] == surface))
    )
    locale = str(rng.choice(["fr-FR", "es-ES", "en-GB"]))
    lo = float(rng.uniform(0.1, 0.9) * seconds)
    hi = lo + float(rng.uniform(30, 60)) * 60
    drops.append(
        (lo, min(hi, seconds), 0.0, tuple(s.index for s in specs if s.values[2] == locale))
    )
    return drops


def _draw_late_bursts(
    rng: np.random.Generator, specs: Sequence[SegmentSpec], seconds: int
) -> list[tuple[float, float, float, tuple[int, ...]]]:
    """Episodes in which a locale's events are held back and delivered at once."""
    out = []
    for _ in range(max(1, int(round(3 * seconds / (7 * 86400))))):
        locale = str(rng.choice(list(_LOCALES)))
        lo = float(rng.uniform(0.05, 0.95) * seconds)
        hi = lo + float(rng.uniform(5, 25)) * 60
        delay = float(rng.uniform(1, 8)) * 60  # delivered this long after `hi`
        segs = tuple(s.index for s in specs if s.values[2] == locale)
        out.append((lo, min(hi, seconds), delay, segs))
    return out


def _draw_dup_bursts(
    rng: np.random.Generator, specs: Sequence[SegmentSpec], seconds: int
) -> list[tuple[float, float, float, int]]:
    """Episodes in which a client resends a share of a segment's events (duplicates)."""
    out = []
    regular = [s.index for s in specs if s.role == "regular"]
    for _ in range(max(1, int(round(5 * seconds / (7 * 86400))))):
        g = int(rng.choice(regular))
        lo = float(rng.uniform(0.05, 0.95) * seconds)
        hi = lo + float(rng.uniform(2, 15)) * 60
        out.append((lo, min(hi, seconds), float(rng.uniform(0.3, 0.8)), g))
    return out


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _base_rate(spec: SegmentSpec, kind: str) -> float:
    r = spec.rates
    return {
        "harmful_rate": r["harmful"],
        "abusive_user": r["harmful"],
        "violence_spike": r["harmful"] * _CATEGORY_WEIGHTS[_VIOLENCE],
        "self_harm_spike": r["harmful"] * _CATEGORY_WEIGHTS[_SELF_HARM],
        "injection_campaign": r["injection"],
        "jailbreak_success": r["jailbreak_success"],
        "refusal_spike": r["refusal"] * r["refusal_factor"],
        "telemetry_incomplete": r["incomplete"],
        "outcome_shift": _not_answered(spec),
        "redaction_failure": 0.0,
        "injection_success": r["injection"] * r["injection_success"],
        "pii_output": r["pii"],
    }[kind]


def _not_answered(spec: SegmentSpec) -> float:
    """Share of a segment's requests not answered: refused, blocked, errors."""
    r = spec.rates
    return (
        r["refusal"] * r["refusal_factor"]
        + r["harmful"] * _RATES.block_given_violation
        + r["error"]
    )


def _draw_incidents(
    rng: np.random.Generator,
    specs: Sequence[SegmentSpec],
    seconds: int,
    per_kind: int,
    start: datetime,
    drops: Sequence[tuple[float, float, float, tuple[int, ...]]],
    release_at: float,
    mixes: Sequence[_Mix],
) -> list[Incident]:
    """The incidents of every kind (see the module docstring), each with its expected counts
    (`_counts`); `mixes` holds each segment's users as its events pick them.
    """

    def counted(inc: Incident) -> Incident:
        spec = specs[inc.segment_index]
        base, with_it = _counts(inc, spec, specs, mixes[spec.index], drops, start, release_at)
        return replace(inc, baseline_count=base, incident_count=with_it)

    busy: dict[int, list[tuple[float, float]]] = {s.index: [] for s in specs}
    incidents: list[Incident] = []
    gap = SAME_SEGMENT_GAP.total_seconds()
    # The segments harmful from their first window.
    for s in specs:
        if s.role != "new":
            continue
        hours = float(rng.uniform(3, 8))
        rate = 0.06 if s.volume >= 100 else 0.09
        lo, hi = s.starts, min(float(seconds) - TAIL.total_seconds(), s.starts + hours * 3600)
        busy[s.index].append((lo - gap, hi + gap))
        incidents.append(
            counted(
                Incident(
                    id=f"new-{s.index}",
                    kind="harmful_rate",
                    segment=s.values,
                    segment_index=s.index,
                    start=start + timedelta(seconds=lo),
                    end=start + timedelta(seconds=hi),
                    multiplier=rate / _RATES.harmful_output,
                    baseline=_RATES.harmful_output,
                    volume=_expected_events(s, specs, lo, hi, drops, start) / (hi - lo) * 300.0,
                    from_first_window=True,
                )
            )
        )
    weights = np.sqrt(np.array([s.volume for s in specs]))
    lo_s, hi_s = WARMUP.total_seconds(), float(seconds) - TAIL.total_seconds()
    for kind in KINDS:
        for k in range(per_kind):
            for _attempt in range(200):
                g = int(rng.choice(len(specs), p=weights / weights.sum()))
                spec = specs[g]
                if kind in EVENT_KINDS:
                    duration = _log_uniform(rng, *(d.total_seconds() for d in EVENT_DURATION))
                elif kind in ACTOR_KINDS:
                    duration = _log_uniform(rng, *(d.total_seconds() for d in ABUSE_DURATION))
                else:
                    duration = _log_uniform(rng, *(d.total_seconds() for d in RATE_DURATION))
                # A new segment's own incident comes first; a rollout has to grow first.
                settle = {"new": 8 * 3600, "rollout": 12 * 3600}.get(spec.role, 0)
                earliest = max(lo_s, spec.starts + settle)
                if earliest + duration > hi_s:
                    continue
                t0 = float(rng.uniform(earliest, hi_s - duration))
                t1 = t0 + duration
                if any(a < t1 + gap and t0 - gap < b for a, b in busy[g]):
                    continue
                busy[g].append((t0, t1))
                break
            else:
                continue
            multiplier = _log_uniform(rng, *MULTIPLIER_RANGE)
            events, attempt_factor = 0, 1.0
            per_minute = share = 0.0
            times: tuple[float, ...] = ()
            base = _base_rate(spec, kind)
            volume = _expected_events(spec, specs, t0, t1, drops, start)
            per_window = volume / (t1 - t0) * 300.0
            if kind in EVENT_KINDS:
                lo_n, hi_n = EVENT_COUNTS[kind]
                events = int(rng.integers(lo_n, hi_n + 1))
                times = tuple(sorted(float(x) for x in rng.uniform(t0, t1, events)))
                t0, t1 = times[0], times[-1]
                expected = base * volume
                multiplier = math.inf if expected <= 0 else (expected + events) / expected
            if kind in ACTOR_KINDS:
                per_minute = _log_uniform(rng, *ABUSE_REQUESTS_PER_MINUTE)
                share = float(rng.uniform(*ABUSE_VIOLATING))
                extra = per_minute * (t1 - t0) / 60.0
                expected = base * volume
                multiplier = (expected + extra * share) / expected * volume / (volume + extra)
            if kind == "jailbreak_success":
                attempt_factor = _log_uniform(rng, 1.0, 20.0)
                multiplier = min(multiplier, 0.95 / spec.rates["jailbreak_success"])
            if kind == "refusal_spike":
                factor = spec.rates["refusal_factor"] * (
                    1.25 if _api_after(spec, t0, release_at) else 1.0
                )
                multiplier = min(multiplier, 0.9 / (spec.rates["refusal"] * factor))
            incidents.append(
                counted(
                    Incident(
                        id=f"{kind}-{k}",
                        kind=kind,
                        segment=spec.values,
                        segment_index=g,
                        start=start + timedelta(seconds=t0),
                        end=start + timedelta(seconds=t1),
                        multiplier=multiplier,
                        baseline=base,
                        volume=per_window,
                        events=events,
                        attempt_factor=attempt_factor,
                        requests_per_minute=per_minute,
                        violating_share=share,
                        event_times=times,
                    )
                )
            )
    return sorted(incidents, key=lambda i: (i.start, i.id))


def _api_after(spec: SegmentSpec, t: float, release_at: float) -> bool:
    return spec.values[0] == "api" and t >= release_at


def _expected_events(
    spec: SegmentSpec,
    specs: Sequence[SegmentSpec],
    t0: float,
    t1: float,
    drops: Sequence[tuple[float, float, float, tuple[int, ...]]],
    start: datetime,
) -> float:
    """Expected events of the segment in [t0, t1) (from its traffic intensity)."""
    times = np.linspace(t0, t1, 13)
    lam = _intensity(spec, specs, times, drops, start)
    return float(lam.mean() * (t1 - t0))


# -- expected counts of the affected quantity (Incident.baseline_count, incident_count) --

Drops = Sequence[tuple[float, float, float, tuple[int, ...]]]
_NORMALISED_WEIGHTS = _CATEGORY_WEIGHTS / _CATEGORY_WEIGHTS.sum()


def _flagged_in(col: int) -> float:
    """P(an output is flagged in category `col` | it is flagged): its first category, or
    its second one (drawn in `_outcomes` with probability `second_category`).
    """
    w = float(_NORMALISED_WEIGHTS[col])
    return w + (1.0 - w) * w * _RATES.second_category


# A flagged output flagged for privacy alone is not blocked (`_outcomes`).
_PRIVACY_ONLY = float(_NORMALISED_WEIGHTS[_PRIVACY]) * (
    1.0 - _RATES.second_category + _RATES.second_category * float(_NORMALISED_WEIGHTS[_PRIVACY])
)


@dataclass(frozen=True)
class _Mix:
    """A segment's users as its (non-forced) events pick them: the share of its events each
    user makes (activity; sums to 1) and their propensity factors (harm, refusal, injection,
    jailbreak), as `_pick_users` and `_outcomes` use them.
    """

    weight: FloatArray
    factors: FloatArray

    @classmethod
    def of(
        cls,
        users: tuple[IntArray, IntArray, FloatArray, tuple[FloatArray, ...], IntArray],
        g: int,
    ) -> _Mix:
        """Segment `g`'s mix, from `_draw_users`' output."""
        cum = users[3][g]
        first = int(users[4][g])
        weight = np.diff(cum, prepend=0.0) / cum[-1]
        return cls(weight, users[2][first : first + len(cum)])

    def mean(self, per_user: FloatArray) -> float:
        """The expectation of a per-user probability over the segment's events."""
        # einsum, not a BLAS dot: no thread start-up for one dot product.
        return float(np.einsum("i,i->", self.weight, per_user))


def _per_event(
    quantity: str,
    spec: SegmentSpec,
    mix: _Mix,
    *,
    refusal_factor: float,
    harmful: float | None = None,
    harm_m: float = 1.0,
    spike_m: float = 1.0,
    refusal_m: float = 1.0,
    incomplete_m: float = 1.0,
    shift_m: float = 1.0,
) -> FloatArray:
    """Per user of the segment: the probability that a (non-forced) event of theirs counts
    in `quantity` (an `AFFECTED` quantity, or jailbreak_attempts), as `_outcomes` draws it.

    `harmful` replaces the segment's harmful rate (a segment harmful from its first window);
    the `_m` factors are an incident's: on the harmful rate, a category spike's extra flags
    (violence or self-harm, by `quantity`), the refusal rate, the schema violation rate and
    the share not answered. `refusal_factor` is the segment's (rollout, prompt release).
    Counters count complete records only: every quantity but incomplete is times the share
    of complete records.
    """
    r = spec.rates
    f = mix.factors
    p_incomplete = min(1.0, r["incomplete"] * incomplete_m)
    if quantity == "incomplete":
        return np.full(len(f), p_incomplete)
    ok = 1.0 - p_incomplete
    if quantity == "pii_outputs":
        return np.full(len(f), ok * min(1.0, r["pii"]))
    if quantity == "redaction_failures":
        return np.zeros(len(f))
    if quantity in ("injection_attempts", "injection_successes"):
        inj = np.minimum(1.0, r["injection"] * f[:, 2])
        success = min(1.0, r["injection_success"]) if quantity == "injection_successes" else 1.0
        return ok * inj * success
    p_jb = np.minimum(1.0, r["jailbreak"] * f[:, 3])
    if quantity == "jailbreak_attempts":
        return ok * p_jb
    # Jailbreak states (none, failed, succeeded): their weight, P(flagged), P(refused | not).
    p_jbs = min(0.95, r["jailbreak_success"])
    p_harm = np.minimum(1.0, (r["harmful"] if harmful is None else harmful) * f[:, 0] * harm_m)
    p_ref = np.minimum(0.95, r["refusal"] * refusal_factor * f[:, 1] * refusal_m)
    states = (
        (1.0 - p_jb, p_harm, p_ref),
        (p_jb * (1.0 - p_jbs), p_harm, np.full(len(f), min(0.95, _RATES.refusal_given_jailbreak))),
        (p_jb * p_jbs, np.full(len(f), _RATES.violation_given_jailbreak), p_ref),
    )
    flagged = sum(w * v for w, v, _ in states)
    if quantity == "violations":
        return np.asarray(ok * flagged, np.float64)
    if quantity in ("violations_violence", "violations_self_harm"):
        col = _VIOLENCE if quantity == "violations_violence" else _SELF_HARM
        extra = min(1.0, max(0.0, r["harmful"] * _CATEGORY_WEIGHTS[col] * (spike_m - 1.0)))
        return np.asarray(ok * (1.0 - (1.0 - flagged * _flagged_in(col)) * (1.0 - extra)))
    refused = sum(w * (1.0 - v) * p for w, v, p in states)
    if quantity == "refusals":
        return np.asarray(ok * refused, np.float64)
    if quantity != "not_answered":
        msg = f"unknown quantity {quantity!r}"
        raise ValueError(msg)
    plain = sum(w * (1.0 - v) * (1.0 - p) for w, v, p in states)
    blocked = flagged * (1.0 - _PRIVACY_ONLY) * _RATES.block_given_violation
    error = plain * min(1.0, r["error"])
    # The outcome shift turns answered, unflagged requests into errors or safe completions.
    base = _not_answered(spec)
    shift = min(1.0, max(0.0, base * (shift_m - 1.0) / max(1e-9, 1.0 - base)))
    return np.asarray(ok * (blocked + refused + error + (plain - error) * shift), np.float64)


def _normal_events(
    spec: SegmentSpec,
    specs: Sequence[SegmentSpec],
    t0: float,
    t1: float,
    drops: Drops,
    start: datetime,
) -> float:
    """Expected non-forced events of the segment with event time in [t0, t1], as
    `_draw_chunk` draws them: Poisson per minute at the intensity of its middle, uniform in
    the minute.
    """
    if t1 <= t0:
        return 0.0
    edges = np.arange(math.floor(t0 / 60.0), math.ceil(t1 / 60.0) + 1, dtype=np.float64) * 60.0
    overlap = np.minimum(edges[1:], t1) - np.maximum(edges[:-1], t0)
    lam = _intensity(spec, specs, edges[:-1] + 30.0, drops, start)
    return float(lam @ np.clip(overlap, 0.0, None))


def _attack_events(
    spec: SegmentSpec,
    specs: Sequence[SegmentSpec],
    t0: float,
    t1: float,
    drops: Drops,
    start: datetime,
) -> float:
    """The segment's expected events in [t0, t1] as `_draw_chunk` samples an injection
    campaign's or a jailbreak wave's attack events (to be times their rate): per hour, a
    10-second grid from the incident's first second in it, at the middle of each step.
    """
    total = 0.0
    for lo in range(int(t0 // _CHUNK_S) * _CHUNK_S, int(t1) + 1, _CHUNK_S):
        a, b = max(t0, lo), min(t1, lo + _CHUNK_S)
        if b <= a:
            continue
        grid = np.arange(a, b, 10.0)
        lam = _intensity(spec, specs, grid + 5.0, drops, start)
        total += float(lam @ np.minimum(10.0, b - grid))
    return total


def _counts(
    inc: Incident,
    spec: SegmentSpec,
    specs: Sequence[SegmentSpec],
    mix: _Mix,
    drops: Drops,
    start: datetime,
    release_at: float,
) -> tuple[float, float]:
    """(baseline_count, incident_count) of `inc`: the expected events of its `AFFECTED`
    quantity in its segment over [start, end] without it and with it (see `Incident`).

    - Rate kinds: the segment's events times the probability that one counts, the rate
      times `multiplier` (harmful_rate, refusal_spike, telemetry_incomplete, outcome_shift;
      a category spike's extra flags; a segment harmful from its first window at the
      reference rate times `multiplier`, its baseline at the reference rate).
    - injection_campaign: the attackers' extra attempts (rate x (multiplier - 1)) added.
    - jailbreak_success: (attempts, with the attackers' (attempt_factor - 1) x the attempt
      rate added) x the success rate, times `multiplier` (at most 95 %).
    - abusive_user: the abuser's requests x `violating_share` added to harmful outputs.
    - Event kinds: baseline + the injected `events`.
    """
    t0 = (inc.start - start).total_seconds()
    t1 = (inc.end - start).total_seconds()
    # The prompt release raises an api segment's refusals from `release_at` on.
    cut = min(max(release_at, t0), t1) if spec.values[0] == "api" else t1
    factor = spec.rates["refusal_factor"]
    phases = [
        (_normal_events(spec, specs, t0, cut, drops, start), factor),
        (_normal_events(spec, specs, cut, t1, drops, start), factor * 1.25),
    ]

    def normal(quantity: str, **m: Any) -> float:
        return sum(
            n * mix.mean(_per_event(quantity, spec, mix, refusal_factor=rf, **m))
            for n, rf in phases
            if n > 0
        )

    kind, m = inc.kind, inc.multiplier
    r = spec.rates
    if kind == "harmful_rate":
        ref = _RATES.harmful_output if inc.from_first_window else None
        return normal("violations", harmful=ref), normal("violations", harmful=ref, harm_m=m)
    if kind in ("violence_spike", "self_harm_spike"):
        quantity = AFFECTED[kind]
        return normal(quantity), normal(quantity, spike_m=m)
    if kind == "refusal_spike":
        return normal("refusals"), normal("refusals", refusal_m=m)
    if kind == "telemetry_incomplete":
        return normal("incomplete"), normal("incomplete", incomplete_m=m)
    if kind == "outcome_shift":
        return normal("not_answered"), normal("not_answered", shift_m=m)
    if kind == "abusive_user":
        base = normal("violations")
        return base, base + inc.requests_per_minute * (t1 - t0) / 60.0 * inc.violating_share
    if kind == "injection_campaign":
        base = normal("injection_attempts")
        attacks = _attack_events(spec, specs, t0, t1, drops, start) * r["injection"] * (m - 1.0)
        return base, base + attacks
    if kind == "jailbreak_success":
        attempts = normal("jailbreak_attempts")
        waves = _attack_events(spec, specs, t0, t1, drops, start) * r["jailbreak"]
        extra = waves * (inc.attempt_factor - 1.0)
        return (
            attempts * min(0.95, r["jailbreak_success"]),
            (attempts + extra) * min(0.95, r["jailbreak_success"] * m),
        )
    base = normal(AFFECTED[kind])  # event kinds
    return base, base + inc.events


# -- traffic ----------------------------------------------------------------------------


def _level(spec: SegmentSpec, times: FloatArray, start: datetime) -> FloatArray:
    """Diurnal and weekly level of traffic at `times` (seconds into the period), mean ~1."""
    abs_h = (start.timestamp() + times) / 3600.0
    hour = abs_h % 24.0
    diurnal = 1.0 + DIURNAL_AMPLITUDE * np.cos(2 * np.pi * (hour - spec.peak_hour) / 24.0)
    weekday = ((abs_h // 24.0) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    weekly = np.where(weekday >= 5, WEEKEND_FACTOR, 1.0)
    return diurnal * weekly / (5 + 2 * WEEKEND_FACTOR) * 7


def _intensity(
    spec: SegmentSpec,
    specs: Sequence[SegmentSpec],
    times: FloatArray,
    drops: Sequence[tuple[float, float, float, tuple[int, ...]]],
    start: datetime,
    rollout: FloatArray | None = None,
) -> FloatArray:
    """Expected events per second of `spec` at `times`."""
    per_s = spec.volume / 300.0 * _level(spec, times, start)
    if spec.role == "rollout":
        per_s = per_s * _rollout_share(spec, times)
    else:
        for child in specs:
            if child.parent == spec.index:
                per_s = per_s * (1.0 - _rollout_share(child, times))
                break
    if spec.role == "new":
        per_s = np.where(times >= spec.starts, per_s, 0.0)
    for lo, hi, level, segs in drops:
        if spec.index in segs:
            per_s = np.where((times >= lo) & (times < hi), per_s * level, per_s)
    return np.asarray(per_s, dtype=np.float64)


def _rollout_share(spec: SegmentSpec, times: FloatArray) -> FloatArray:
    return np.asarray(np.clip((times - spec.starts) / 86400.0, 0.0, 1.0) * 0.5, np.float64)


# -- events -----------------------------------------------------------------------------

# Forced kinds of injected events.
_NORMAL, _INJ_ATTACK, _JB_ATTACK, _PII, _REDACTION, _INJ_SUCCESS, _ABUSE = range(7)


@dataclass
class _Events:
    """Events of one chunk (arrays of equal length)."""

    t: FloatArray  # event time, seconds into the period
    seg: IntArray
    user: IntArray
    forced: IntArray
    incident: IntArray  # index into plan.incidents of the event's forcing incident, or -1

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def concat(cls, parts: Sequence[_Events]) -> _Events:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _EVENT_FIELDS))

    def take(self, idx: Any) -> _Events:
        return _Events(*(getattr(self, f)[idx] for f in _EVENT_FIELDS))


_EVENT_FIELDS = ("t", "seg", "user", "forced", "incident")


def _pick_users(plan: WeekPlan, rng: np.random.Generator, seg: IntArray) -> IntArray:
    users = np.empty(len(seg), dtype=np.int64)
    for g in np.unique(seg):
        mask = seg == g
        cum = plan.user_cum[g]
        local = np.searchsorted(cum, rng.random(int(mask.sum())) * cum[-1], side="right")
        users[mask] = plan.user_offset[g] + np.minimum(local, len(cum) - 1)
    return users


def _draw_chunk(plan: WeekPlan, chunk: int) -> _Events:
    """The events whose event time falls in chunk `chunk` (an hour)."""
    rng = _rng(plan.seed, 1, chunk)
    lo = chunk * _CHUNK_S
    minutes = np.asarray(lo + 60.0 * np.arange(_CHUNK_S // 60) + 30.0, dtype=np.float64)
    parts: list[_Events] = []
    counts = np.zeros((len(plan.segments), len(minutes)), dtype=np.int64)
    for s in plan.segments:
        lam = _intensity(s, plan.segments, minutes, plan.drops, plan.start) * 60.0
        counts[s.index] = rng.poisson(lam)
    seg = np.repeat(np.arange(len(plan.segments)), counts.sum(axis=1))
    minute = np.concatenate([np.repeat(np.arange(len(minutes)), c) for c in counts])
    t = lo + 60.0 * minute + 60.0 * rng.random(len(seg))
    n = len(seg)
    parts.append(
        _Events(
            t, seg, _pick_users(plan, rng, seg), np.zeros(n, np.int64), np.full(n, -1, np.int64)
        )
    )
    hi = lo + _CHUNK_S
    for i, inc in enumerate(plan.incidents):
        if inc.kind in EVENT_KINDS:
            # The injected events (drawn with the plan) of this chunk.
            times = np.asarray(inc.event_times, dtype=np.float64)
            times = times[(times >= lo) & (times < hi)]
            if not len(times):
                continue
            forced = {
                "pii_output": _PII,
                "redaction_failure": _REDACTION,
                "injection_success": _INJ_SUCCESS,
            }[inc.kind]
            g = np.full(len(times), inc.segment_index, np.int64)
            parts.append(
                _Events(
                    times,
                    g,
                    _pick_users(plan, rng, g),
                    np.full(len(times), forced, np.int64),
                    np.full(len(times), i, np.int64),
                )
            )
            continue
        t0 = (inc.start - plan.start).total_seconds()
        t1 = (inc.end - plan.start).total_seconds()
        if t1 <= lo or t0 >= hi:
            continue
        a, b = max(t0, lo), min(t1, hi)
        spec = plan.segments[inc.segment_index]
        if inc.kind == "abusive_user":
            k_events = rng.poisson(inc.requests_per_minute * (b - a) / 60.0)
            times = np.sort(rng.uniform(a, b, k_events))
            who = plan.attackers[inc.id]
            parts.append(
                _Events(
                    times,
                    np.full(len(times), inc.segment_index, np.int64),
                    np.full(len(times), who[0], np.int64),
                    np.full(len(times), _ABUSE, np.int64),
                    np.full(len(times), i, np.int64),
                )
            )
        elif inc.kind in ("injection_campaign", "jailbreak_success"):
            grid = np.arange(a, b, 10.0)
            if not len(grid):
                continue
            lam = _intensity(spec, plan.segments, grid + 5.0, plan.drops, plan.start) * 10.0
            if inc.kind == "injection_campaign":
                lam = lam * spec.rates["injection"] * (inc.multiplier - 1.0)
                forced = _INJ_ATTACK
            else:
                lam = lam * spec.rates["jailbreak"] * (inc.attempt_factor - 1.0)
                forced = _JB_ATTACK
            k = rng.poisson(lam)
            times = np.repeat(grid, k) + 10.0 * rng.random(int(k.sum()))
            times = times[times < b]
            who = plan.attackers[inc.id]
            parts.append(
                _Events(
                    times,
                    np.full(len(times), inc.segment_index, np.int64),
                    who[rng.integers(0, len(who), len(times))],
                    np.full(len(times), forced, np.int64),
                    np.full(len(times), i, np.int64),
                )
            )
    return _Events.concat(parts)


def _outcomes(
    plan: WeekPlan, chunk: int, ev: _Events
) -> tuple[npt.NDArray[np.int16], IntArray, BoolArray]:
    """Per event: the counter matrix (events x COUNTERS; 0/1), the outcome bin, and whether
    the record is a schema violation (incomplete: counted in events_seen only).
    """
    rng = _rng(plan.seed, 3, chunk)
    n = len(ev)
    specs = plan.segments
    g = ev.seg
    rate = {k: np.array([s.rates[k] for s in specs])[g] for k in specs[0].rates}
    fac = plan.user_factors[ev.user]
    m = {
        k: np.ones(n)
        for k in (
            "harmful",
            "violence",
            "self_harm",
            "jbs",
            "refusal",
            "incomplete",
            "not_answered",
        )
    }
    for inc in plan.incidents:
        t0 = (inc.start - plan.start).total_seconds()
        t1 = (inc.end - plan.start).total_seconds()
        lo = chunk * _CHUNK_S
        if t1 <= lo or t0 >= lo + _CHUNK_S:
            continue
        key = {
            "harmful_rate": "harmful",
            "violence_spike": "violence",
            "self_harm_spike": "self_harm",
            "jailbreak_success": "jbs",
            "refusal_spike": "refusal",
            "telemetry_incomplete": "incomplete",
            "outcome_shift": "not_answered",
        }.get(inc.kind)
        if key is None:
            continue
        mask = (g == inc.segment_index) & (ev.t >= t0) & (ev.t < t1)
        if inc.from_first_window:
            m[key][mask] *= (
                inc.multiplier * _RATES.harmful_output / specs[inc.segment_index].rates["harmful"]
            )
        else:
            m[key][mask] *= inc.multiplier
    # Benign: the prompt release on api.
    release = np.array([s.values[0] == "api" for s in specs])[g] & (ev.t >= 0.25 * plan.seconds)
    refusal_factor = rate["refusal_factor"] * np.where(release, 1.25, 1.0)

    u = rng.random((n, 16))
    forced = ev.forced
    jb = (u[:, 0] < rate["jailbreak"] * fac[:, 3]) | (forced == _JB_ATTACK)
    jbs = jb & (u[:, 1] < np.minimum(0.95, rate["jailbreak_success"] * m["jbs"]))
    inj = (u[:, 2] < rate["injection"] * fac[:, 2]) | np.isin(forced, (_INJ_ATTACK, _INJ_SUCCESS))
    injs = (inj & (u[:, 3] < rate["injection_success"])) | (forced == _INJ_SUCCESS)
    p_harm = np.minimum(1.0, rate["harmful"] * fac[:, 0] * m["harmful"])
    p_viol = np.where(jbs, _RATES.violation_given_jailbreak, p_harm)
    abuse = forced == _ABUSE
    if abuse.any():
        shares = np.array([inc.violating_share for inc in plan.incidents])
        p_viol = np.where(abuse, shares[np.maximum(ev.incident, 0)], p_viol)
    viol = u[:, 4] < p_viol
    flags = np.zeros((n, len(POLICY_CATEGORIES)), dtype=bool)
    first = np.searchsorted(_CATEGORY_CUM, u[:, 5], side="right").clip(
        0, len(POLICY_CATEGORIES) - 1
    )
    second = np.searchsorted(_CATEGORY_CUM, u[:, 6], side="right").clip(
        0, len(POLICY_CATEGORIES) - 1
    )
    rows = np.arange(n)
    flags[rows, first] = viol
    flags[rows, second] |= viol & (u[:, 7] < _RATES.second_category)
    # Category spikes: extra outputs flagged in that category (x m of its base rate).
    for col, key, r in ((_VIOLENCE, "violence", 8), (_SELF_HARM, "self_harm", 9)):
        share = _CATEGORY_WEIGHTS[col]
        extra = u[:, r] < rate["harmful"] * share * (m[key] - 1.0)
        flags[:, col] |= extra
    viol = np.asarray(flags.any(axis=1))
    privacy_only = viol & flags[:, _PRIVACY] & (flags.sum(axis=1) == 1)
    block = viol & ~privacy_only & (u[:, 10] < _RATES.block_given_violation)
    p_ref = np.where(
        jb & ~jbs,
        _RATES.refusal_given_jailbreak,
        rate["refusal"] * refusal_factor * fac[:, 1] * m["refusal"],
    )
    refused = ~viol & (u[:, 11] < np.minimum(0.95, p_ref))
    partial = refused & (u[:, 12] < rate["partial"])
    outcome = np.full(n, _ANSWERED, dtype=np.int64)
    outcome[block] = _BLOCKED
    outcome[refused & ~partial] = _REFUSED
    outcome[partial] = _SAFE
    plain = ~viol & ~refused
    error = plain & (u[:, 13] < rate["error"])
    outcome[error] = _ERROR
    # Outcome shift: answered requests turned into errors (70 %) or safe completions, so
    # that the share not answered is x m.
    base_na = np.array([_not_answered(s) for s in specs])[g]
    q = np.clip(base_na * (m["not_answered"] - 1.0) / np.maximum(1e-9, 1.0 - base_na), 0.0, 1.0)
    shift = (outcome == _ANSWERED) & ~viol & (u[:, 14] < q)
    to_error = shift & (u[:, 15] < 0.7)
    outcome[to_error] = _ERROR
    outcome[shift & ~to_error] = _SAFE
    agent = np.array([s.values[0] == "agent" for s in specs])[g]
    v = rng.random((n, 6))
    unauthorized = agent & (
        (v[:, 0] < 0.005) | (injs & (v[:, 1] < _RATES.unauthorized_given_injection))
    )
    pii = (v[:, 2] < rate["pii"]) | (forced == _PII)
    report = v[:, 3] < np.where(viol, _RATES.user_report_given_violation, _RATES.user_report)
    appeal = (block | refused) & (v[:, 4] < _RATES.appeal_overturned)
    incomplete = (v[:, 5] < np.minimum(1.0, rate["incomplete"] * m["incomplete"])) & (
        forced == _NORMAL
    )
    redaction = forced == _REDACTION

    c = np.zeros((n, len(COUNTERS)), dtype=np.int16)
    ok = ~incomplete

    def put(name: str, values: BoolArray) -> None:
        c[:, _COL[name]] = values & ok

    put("events", np.ones(n, dtype=bool))
    put("violations", viol)
    for j, cat in enumerate(POLICY_CATEGORIES):
        put(f"violations_{cat}", flags[:, j])
    put("unflagged_events", ~viol)
    put("blocks", block)
    put("refusals", refused)
    put("over_refusals", refused & ~viol)
    put("injection_attempts", inj)
    put("injection_successes", injs)
    put("jailbreak_attempts", jb)
    put("jailbreak_successes", jbs)
    put("tool_call_events", agent)
    put("unauthorized_tool_call_events", unauthorized)
    put("pii_outputs", pii)
    put("user_reports", report)
    put("blocked_or_refused", block | refused)
    put("appeal_overturns", appeal)
    c[:, _COL["events_seen"]] = 1
    c[:, _COL["telemetry_complete"]] = ok
    put("redaction_failures", redaction)
    outcome[incomplete] = -1
    return c, outcome, incomplete


def _lags(plan: WeekPlan, chunk: int, ev: _Events) -> FloatArray:
    """Seconds from each event's time to its arrival at the job."""
    rng = _rng(plan.seed, 4, chunk)
    n = len(ev)
    u = rng.random(n)
    lag = 0.5 + rng.exponential(2.0, n)
    slow = u < 0.025
    lag[slow] = rng.lognormal(math.log(60.0), 1.0, int(slow.sum()))
    very = u > 0.995
    lag[very] = rng.uniform(240.0, 2400.0, int(very.sum()))
    for lo, hi, delay, segs in plan.late_bursts:
        held = np.isin(ev.seg, segs) & (ev.t >= lo) & (ev.t < hi)
        lag[held] = np.maximum(lag[held], hi + delay - ev.t[held])
    return lag


def _duplicates(plan: WeekPlan, chunk: int, ev: _Events) -> IntArray:
    """Copies of each event that a client resent (the job drops them by event id)."""
    rng = _rng(plan.seed, 5, chunk)
    dups = np.zeros(len(ev), dtype=np.int64)
    for lo, hi, share, g in plan.dup_bursts:
        hit = (ev.seg == g) & (ev.t >= lo) & (ev.t < hi)
        k = int(hit.sum())
        dups[hit] = (rng.random(k) < share) * rng.integers(1, 4, k)
    return dups


# -- slices -----------------------------------------------------------------------------


@dataclass
class _Pending:
    """Drawn events that have not arrived yet, with what they count."""

    ev: _Events
    arrival: FloatArray
    counts: npt.NDArray[np.int16]
    outcome: IntArray
    incomplete: BoolArray
    dups: IntArray

    @classmethod
    def concat(cls, parts: Sequence[_Pending]) -> _Pending:
        return cls(
            _Events.concat([p.ev for p in parts]),
            np.concatenate([p.arrival for p in parts]),
            np.concatenate([p.counts for p in parts]),
            np.concatenate([p.outcome for p in parts]),
            np.concatenate([p.incomplete for p in parts]),
            np.concatenate([p.dups for p in parts]),
        )

    def take(self, idx: Any) -> _Pending:
        return _Pending(
            self.ev.take(idx),
            self.arrival[idx],
            self.counts[idx],
            self.outcome[idx],
            self.incomplete[idx],
            self.dups[idx],
        )


def iter_slices(
    plan: WeekPlan, totals: WeekTotals | None = None, *, parts: int = 1
) -> Iterator[Slice]:
    """The week's micro-batches in order (see the module docstring); `totals`, when given,
    is updated as slices are produced. Each aggregate row also holds `slice_sums`, the
    `bucket_sums` counters per `parts` equal parts of its window (stream.early_slice), as
    the job keeps them.
    """
    totals = totals if totals is not None else WeekTotals()
    trig = plan.trigger.total_seconds()
    w_s = plan.window.total_seconds()
    if parts < 1 or w_s % parts:
        msg = f"parts ({parts}) must divide the window's {w_s:g} seconds"
        raise ValueError(msg)
    wm_s = plan.watermark.total_seconds()
    dimension_set = ",".join(DIMENSIONS)
    template: dict[str, Any] = {
        "dimension_set": dimension_set,
        **dict.fromkeys(SEGMENT_DIMENSIONS, ALL_DIMENSIONS_VALUE),
        "users_sketch": None,
    }
    seg_values = [dict(zip(DIMENSIONS, s.values, strict=True)) for s in plan.segments]
    hist_template: list[dict[str, Any]] = [
        {
            "dimension_set": dimension_set,
            **dict.fromkeys(SEGMENT_DIMENSIONS, ALL_DIMENSIONS_VALUE),
            **seg_values[s.index],
            "distribution": "outcome",
        }
        for s in plan.segments
    ]
    windows: dict[int, tuple[datetime, datetime]] = {}
    newest = -math.inf  # newest event time (seconds) of the slices emitted so far
    pending: _Pending | None = None
    n_chunks = plan.seconds // _CHUNK_S
    n_seg = len(plan.segments)
    for chunk in range(n_chunks):
        ev = _draw_chunk(plan, chunk)
        counts, outcome, incomplete = _outcomes(plan, chunk, ev)
        lag = _lags(plan, chunk, ev)
        dups = _duplicates(plan, chunk, ev)
        totals.drawn += len(ev)
        part = _Pending(ev, ev.t + lag, counts, outcome, incomplete, dups)
        pending = part if pending is None else _Pending.concat([pending, part])
        horizon = (chunk + 1) * _CHUNK_S
        last = chunk == n_chunks - 1
        due = pending.arrival < horizon
        now = pending.take(due)
        pending = pending.take(~due)
        if last:
            totals.unarrived += len(pending.ev)
            pending = None
        first_slice = chunk * _CHUNK_S // int(trig)
        per_chunk = int(_CHUNK_S // trig)
        sl = (now.arrival // trig).astype(np.int64) - first_slice
        # Watermark before each slice: newest event time of the earlier slices - delay.
        valid = ~now.incomplete
        slice_max = np.full(per_chunk, -np.inf)
        np.maximum.at(slice_max, sl[valid], now.ev.t[valid])
        before = np.maximum.accumulate(np.concatenate([[newest], slice_max]))[:-1]
        newest = max(newest, float(slice_max.max()))
        late = now.ev.t < before[sl] - wm_s
        kept = ~late
        agg_mask = kept & valid
        reported_max = np.full(per_chunk, -np.inf)
        np.maximum.at(reported_max, sl[agg_mask], now.ev.t[agg_mask])
        # Group the counted records by (slice, window, segment).
        win = (now.ev.t // w_s).astype(np.int64)
        k_idx = np.flatnonzero(kept)
        key = (sl[k_idx] * (plan.seconds // int(w_s) + 2) + win[k_idx]) * n_seg + now.ev.seg[k_idx]
        order = np.argsort(key, kind="stable")
        k_idx, key = k_idx[order], key[order]
        uniq, starts = np.unique(key, return_index=True)
        sums = (
            np.add.reduceat(now.counts[k_idx].astype(np.int64), starts, axis=0)
            if len(k_idx)
            else np.zeros((0, len(COUNTERS)), np.int64)
        )
        group = np.repeat(np.arange(len(uniq)), np.diff(np.append(starts, len(k_idx))))
        # Per-bucket sums of the aggregated records.
        a_sel = ~now.incomplete[k_idx]
        b_key = group[a_sel] * BUCKETS + plan.user_bucket[now.ev.user[k_idx[a_sel]]]
        b_order = np.argsort(b_key, kind="stable")
        b_rows = k_idx[a_sel][b_order]
        b_uniq, b_starts = np.unique(b_key[b_order], return_index=True)
        bucket = np.zeros((len(uniq), len(BUCKET_COUNTERS), BUCKETS), dtype=np.int64)
        if len(b_rows):
            b_sums = np.add.reduceat(
                now.counts[b_rows][:, _BUCKET_COLS].astype(np.int64), b_starts, axis=0
            )
            bucket[b_uniq // BUCKETS, :, b_uniq % BUCKETS] = b_sums
        # Per-part sums of the aggregated records (the window's slices).
        a_rows = k_idx[a_sel]
        part_of = ((now.ev.t[a_rows] - win[a_rows] * w_s) * parts // w_s).astype(np.int64)
        flat = np.zeros((len(uniq) * parts, len(BUCKET_COUNTERS)), dtype=np.int64)
        np.add.at(
            flat,
            group[a_sel] * parts + part_of,
            now.counts[a_rows][:, _BUCKET_COLS].astype(np.int64),
        )
        sliced = flat.reshape(len(uniq), parts, len(BUCKET_COUNTERS))
        o_sel = now.outcome[k_idx] >= 0
        hist = np.bincount(
            group[o_sel] * len(_OUTCOMES) + now.outcome[k_idx][o_sel],
            minlength=len(uniq) * len(_OUTCOMES),
        ).reshape(len(uniq), len(_OUTCOMES))
        g_slice = uniq // ((plan.seconds // int(w_s) + 2) * n_seg)
        g_win = (uniq // n_seg) % (plan.seconds // int(w_s) + 2)
        g_seg = uniq % n_seg
        bounds = np.searchsorted(g_slice, np.arange(per_chunk + 1))
        arrived = np.bincount(sl, minlength=per_chunk)
        n_late = np.bincount(sl[late], minlength=per_chunk)
        n_incomplete = np.bincount(sl[kept & ~valid], minlength=per_chunk)
        n_agg = np.bincount(sl[agg_mask], minlength=per_chunk)
        n_dups = np.bincount(sl, weights=now.dups, minlength=per_chunk).astype(np.int64)
        totals.aggregated += int(n_agg.sum())
        totals.incomplete += int(n_incomplete.sum())
        totals.late += int(n_late.sum())
        totals.duplicates += int(n_dups.sum())
        for cid, v in zip(COUNTERS, sums.sum(axis=0).tolist() if len(sums) else [], strict=False):
            totals.counters[cid] += int(v)
        for j in range(per_chunk):
            index = first_slice + j
            rows: list[dict[str, Any]] = []
            hrows: list[dict[str, Any]] = []
            for gi in range(bounds[j], bounds[j + 1]):
                w = int(g_win[gi])
                if w not in windows:
                    ws = plan.start + timedelta(seconds=w * w_s)
                    windows[w] = (ws, ws + plan.window)
                ws, we = windows[w]
                s = int(g_seg[gi])
                row = dict(template)
                row.update(seg_values[s])
                row["window_start"], row["window_end"] = ws, we
                row.update(zip(COUNTERS, sums[gi].tolist(), strict=True))
                b = bucket[gi]
                nz = np.flatnonzero(b.any(axis=1))
                row["bucket_sums"] = {BUCKET_COUNTERS[c]: b[c].tolist() for c in nz}
                row["slice_sums"] = {BUCKET_COUNTERS[c]: sliced[gi, :, c].tolist() for c in nz}
                rows.append(row)
                for o in np.flatnonzero(hist[gi]):
                    hrow = dict(hist_template[s])
                    hrow["window_start"] = ws
                    hrow["bin"] = int(o)
                    hrow["count"] = int(hist[gi, o])
                    hrows.append(hrow)
            t_max = float(reported_max[j])
            yield Slice(
                index=index,
                start=plan.start + timedelta(seconds=index * trig),
                end=plan.start + timedelta(seconds=(index + 1) * trig),
                aggregates=rows,
                histograms=hrows,
                arrived=int(arrived[j]),
                aggregated=int(n_agg[j]),
                incomplete=int(n_incomplete[j]),
                late=int(n_late[j]),
                duplicates=int(n_dups[j]),
                max_event_time=None
                if t_max == -math.inf
                else plan.start + timedelta(seconds=t_max),
            )


def describe_plan(plan: WeekPlan) -> str:
    """A few lines on the week: segments by volume, incidents by kind, disturbances."""
    vols = sorted(s.volume for s in plan.segments)
    small = sum(1 for v in vols if v < 100)
    lines = [
        f"seed {plan.seed}: {plan.days:g} day(s) from {plan.start:%Y-%m-%d %H:%M} UTC, "
        f"{len(plan.segments)} segments ({small} with < 100 events per window on average; "
        f"{vols[0]:.1f} to {vols[-1]:.0f} per window), {len(plan.user_segment):,} users, "
        f"{len(plan.incidents)} incidents",
    ]
    by_kind: dict[str, int] = {}
    for inc in plan.incidents:
        by_kind[inc.kind] = by_kind.get(inc.kind, 0) + 1
    lines.append("incidents: " + ", ".join(f"{k} {v}" for k, v in by_kind.items()))
    for e in plan.episodes:
        lines.append(
            f"benign: {e.kind} {e.what} {e.start:%a %H:%M}-{e.end:%a %H:%M} {e.detail}".rstrip()
        )
    return "\n".join(lines)


__all__ = [
    "ACCEPTANCE_SEEDS",
    "DIMENSIONS",
    "EVENT_KINDS",
    "KINDS",
    "RATE_KINDS",
    "TUNING_SEEDS",
    "Episode",
    "Incident",
    "SegmentSpec",
    "Slice",
    "WeekPlan",
    "WeekTotals",
    "describe_plan",
    "iter_slices",
    "plan_week",
]
