"""Alert rules as code: the YAML files under alerts/rules/, loaded into frozen `Rule`s.

The format is documented in docs/alert-rules.md. Loading is strict: an unknown key, a
metric or distribution the catalog does not know, a dimension that is not a segment
dimension, a template field that does not exist, or two rules with the same name raise a
`RuleError` naming the file, the line (of the offending key), the rule and the field. The
YAML is read as a node tree (`yaml.compose`) rather than as plain dicts so that every value
keeps its line.

Templates (`summary`, `description`) are `str.format` strings over the fields of
`template_fields`; `render_template` formats them, printing ``n/a`` for a value that is
missing (no baseline, no rate test, no traffic), whatever its format spec.
"""

from __future__ import annotations

import difflib
import math
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import yaml
from yaml.constructor import SafeConstructor

from pipelines.alerting.errors import RuleError
from pipelines.durations import parse_duration
from pipelines.metrics.catalog import RATES
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.metrics.stats import rate_ratio_p_value, wilson_interval
from pipelines.settings import SEGMENT_DIMENSIONS

Match = Literal["any", "all"]
Direction = Literal["up", "down", "any"]
Severity = Literal["sev1", "sev2", "sev3", "sev4"]
Evidence = Literal["users", "events"]

MATCHES: tuple[Match, ...] = ("all", "any")
DIRECTIONS: tuple[Direction, ...] = ("up", "down", "any")
SEVERITIES: tuple[Severity, ...] = ("sev1", "sev2", "sev3", "sev4")
EVIDENCE: tuple[Evidence, ...] = ("users", "events")

# Columns of segment_window_drift (fields of pipelines.drift.stats.DistributionDrift).
# Distances and test statistics grow with drift, so a rule fires when one is `above` a
# limit; p-values shrink with it, so a rule fires when one is `below` a limit.
DRIFT_STATISTICS_ABOVE = ("psi", "js_distance", "chi2_statistic", "ks_statistic", "wasserstein")
DRIFT_STATISTICS_BELOW = ("chi2_p_value", "ks_p_value", "doubling_p_value")
DRIFT_STATISTICS = DRIFT_STATISTICS_ABOVE + DRIFT_STATISTICS_BELOW
# Only computed for ordered (numeric) distributions; NULL for categorical ones.
ORDERED_ONLY_STATISTICS = frozenset({"ks_statistic", "ks_p_value", "wasserstein"})
# Statistics bounded by 1; the others (psi, chi2_statistic, wasserstein) are unbounded.
_UNIT_STATISTICS = frozenset(
    {"js_distance", "ks_statistic", "chi2_p_value", "ks_p_value", "doubling_p_value"}
)

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
LABEL_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Label names a notifier sets from the rule itself; a rule's `labels` may not redefine them
# (nor the names of its `by` dimensions, which label each alert with its segment).
RESERVED_LABELS = ("alertname", "rule", "metric", "severity", "owner", "runbook", "segment")
# `by: stored` evaluates a rule per stored segment, whatever `stream.dimensions` holds; the
# job binds it (`bind_rules`). Its templates cannot name single dimensions (use {segment}),
# and no extra label may be named like a dimension.
STORED_KEYWORD = "stored"
STORED: tuple[str, ...] = ("<stored>",)

DEFAULT_MIN_EVENTS = 30

# Whether a rule is evaluated early (on the still-open window, after every micro-batch) when
# its YAML has no `early` key: pages (sev1, sev2) should arrive as soon as the evidence is
# conclusive; tickets (sev3, sev4) can wait for the window to close.
EARLY_BY_SEVERITY: Mapping[Severity, bool] = MappingProxyType(
    {"sev1": True, "sev2": True, "sev3": False, "sev4": False}
)
# Bound on the probability that one segment's open window fires early while the segment's
# rate is at or below the rule's reference (pipelines.alerting.sequential.rate_exceeds).
# It holds however often the window is looked at, but per (rule, segment, window): the
# chances add up. One segment sitting right at its reference all day has 288 windows, so at
# most 0.29 chance of an early false page a day at 0.001 (at 0.05 the bound says nothing);
# a rule has tens to hundreds of segments, and there are several early rules. Healthy
# segments sit well below the reference (limits are set at incident-sized levels), where
# the chance is far smaller than the bound, but only a small alpha keeps the sum small.
EARLY_ALPHA = 0.001
# The longest `horizons` a rule may have: each closing window re-reads that many stored
# windows (288 five-minute windows a day).
MAX_HORIZON = timedelta(days=1)

# Fields every template may use, besides the names of the rule's `by` dimensions.
TEMPLATE_FIELDS = (
    "rule",
    "metric",
    "segment",
    "value",
    "lower",
    "upper",
    "numerator",
    "denominator",
    "baseline",
    "q_value",
    "window_start",
    "windows",
    "severity",
)


@dataclass(frozen=True)
class Threshold:
    """Fires when the rate's Wilson 95 % lower bound is > `above`, or its upper bound < `below`.

    Exactly one of the two is set. Testing the bound rather than the point estimate means a
    few events with a high rate do not fire: the interval is still wide. `min_events`: the
    threshold also needs at least this many events in the rate's denominator (a volume
    guard of its own, for a rule whose other condition, a `rise`, needs none).
    `until_baseline`: the threshold counts only while the segment's baseline holds fewer
    than this many events (None: always): a limit for new segments, where a `rise` has
    nothing to compare with, that gives way to the rise once the segment has a history
    (a limit near the normal level of some segments would page on their noise).
    """

    above: float | None = None
    below: float | None = None
    min_events: int = 0
    until_baseline: int | None = None

    def applies(self, denominator: int, baseline: tuple[int, int] | None) -> bool:
        """Whether the threshold takes part: enough events, and no history yet when
        `until_baseline` is set.
        """
        if denominator < self.min_events:
            return False
        if self.until_baseline is None:
            return True
        return baseline is None or baseline[1] < self.until_baseline

    def __post_init__(self) -> None:
        if (self.above is None) == (self.below is None):
            msg = "a threshold needs exactly one of above and below"
            raise ValueError(msg)

    def holds(self, lower: float, upper: float) -> bool:
        if self.above is not None:
            return lower > self.above
        assert self.below is not None
        return upper < self.below

    def passed(self, numerator: int, denominator: int) -> bool:
        """Whether the point estimate is past the limit (a shorter horizon of a rule with
        `horizons`: still burning); False with no events.
        """
        if denominator <= 0:
            return False
        value = numerator / denominator
        if self.above is not None:
            return value > self.above
        assert self.below is not None
        return value < self.below


@dataclass(frozen=True)
class Change:
    """Fires on a significant change of the rate against its baseline (a rate-test row).

    The BH q-value is <= `max_q`, the sign of current - baseline agrees with `direction`
    (`any`: either sign, but not 0) and its absolute value is >= `min_difference`.
    """

    max_q: float
    direction: Direction
    min_difference: float = 0.0

    def holds(self, q_value: float | None, difference: float | None) -> bool:
        if q_value is None or difference is None or q_value > self.max_q:
            return False
        if self.direction == "up" and difference <= 0:
            return False
        if self.direction == "down" and difference >= 0:
            return False
        return difference != 0 and abs(difference) >= self.min_difference


@dataclass(frozen=True)
class Rise:
    """Fires when the rate is shown to be more than `factor` times the segment's baseline.

    The p-value of "rate <= factor x baseline" (pipelines.metrics.stats.rate_ratio_p_value:
    the exact conditional test for a ratio of Poisson rates, on the window's counts divided
    by their design effect, against the baseline's counts from the rate test) is at most
    `alpha`. Unlike `change`, which asks whether the rate moved at all, it asks whether it
    moved by an incident-sized factor: a benign shift (a release that refuses 20 % more)
    never fires however much traffic shows it, and a few events in a small segment can
    fire when its baseline says they almost never happen. No baseline: false.
    """

    factor: float
    alpha: float

    def __post_init__(self) -> None:
        if not (self.factor >= 1.0 and math.isfinite(self.factor)):
            msg = f"a rise factor must be a number >= 1, got {self.factor}"
            raise ValueError(msg)
        if not 0.0 < self.alpha <= 0.5:
            msg = f"a rise alpha must be between 0 and 0.5, got {self.alpha}"
            raise ValueError(msg)

    def p_value(
        self,
        numerator: int,
        denominator: int,
        baseline: tuple[int, int] | None,
        design_effect: float = 1.0,
    ) -> float | None:
        """The test's p-value (None without a baseline). `design_effect` >= 1 (inf: the
        events cannot be told apart from one actor's) shrinks the window's counts to their
        effective number.
        """
        if baseline is None or baseline[1] <= 0:
            return None
        if not design_effect >= 1.0:
            msg = f"design_effect must be >= 1, got {design_effect}"
            raise ValueError(msg)
        if math.isinf(design_effect):
            return 1.0
        return rate_ratio_p_value(
            numerator / design_effect,
            denominator / design_effect,
            baseline[0],
            baseline[1],
            self.factor,
        )

    def holds(
        self,
        numerator: int,
        denominator: int,
        baseline: tuple[int, int] | None,
        design_effect: float = 1.0,
    ) -> bool:
        p = self.p_value(numerator, denominator, baseline, design_effect)
        return p is not None and p <= self.alpha

    def reference(self, baseline: tuple[int, int] | None) -> float | None:
        """The rate an open window must be shown to exceed to fire early: `factor` x the
        Wilson 95 % upper bound of the baseline rate (the bound, not the estimate, so that
        a short or empty baseline does not make a single event conclusive). None without a
        baseline.
        """
        if baseline is None or baseline[1] <= 0:
            return None
        return min(1.0, self.factor * wilson_interval(baseline[0], baseline[1])[1])


@dataclass(frozen=True)
class Drift:
    """Fires when a drift statistic of a distribution is > `above` (or a p-value < `below`)."""

    distribution: str
    statistic: str
    above: float | None = None
    below: float | None = None

    def __post_init__(self) -> None:
        if (self.above is None) == (self.below is None):
            msg = "a drift condition needs exactly one of above and below"
            raise ValueError(msg)

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.above is not None:
            return value > self.above
        assert self.below is not None
        return value < self.below


@dataclass(frozen=True)
class Rule:
    """One alert rule; see docs/alert-rules.md for the meaning of each field.

    `for_windows` is the YAML key `for`. `path` and `line` (of its `name` key) say where the
    rule was defined (None and 0 for a rule built in code) and take no part in equality.
    `early` (evaluate the still-open window too, see pipelines.alerting.evaluate
    .evaluate_early) may be left out or given as None: it is then set from the severity
    (`EARLY_BY_SEVERITY`), so after construction it is always a bool. It is the last field
    so that rules built in code with positional arguments keep working.
    """

    name: str
    metric: str
    by: tuple[str, ...]
    severity: Severity
    owner: str
    runbook: str
    summary: str
    threshold: Threshold | None = None
    change: Change | None = None
    drift: Drift | None = None
    match: Match = "all"
    min_events: int = DEFAULT_MIN_EVENTS
    for_windows: int = 1
    keep_firing_for: int = 0
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    path: str | None = field(default=None, compare=False)
    line: int = field(default=0, compare=False)
    early: bool | None = None
    horizons: tuple[timedelta, ...] = ()
    # True: the condition also needs the numerator concentrated in one user bucket (a
    # single actor, pipelines.alerting.evaluate.concentrated); False: it needs it not to
    # be; None: concentration plays no part.
    concentrated: bool | None = None
    # `condition.rise`: the rate shown to be more than `factor` x the segment's baseline.
    rise: Rise | None = None
    # "users": events of the same users count less (the rate of a user population: the
    # cluster-robust interval, the design effect); "events": every event is evidence on its
    # own (an attack, a leak: who sent them does not make them less real).
    evidence: Evidence = "users"

    def __post_init__(self) -> None:
        if (
            self.threshold is None
            and self.change is None
            and self.drift is None
            and self.rise is None
        ):
            msg = f"rule {self.name} needs at least one of threshold, change, drift and rise"
            raise ValueError(msg)
        if self.min_events < 1 or self.for_windows < 1 or self.keep_firing_for < 0:
            msg = f"rule {self.name}: need min_events >= 1, for >= 1, keep_firing_for >= 0"
            raise ValueError(msg)
        if self.horizons:
            horizons = tuple(sorted(set(self.horizons)))
            if horizons[0] <= timedelta(0):
                msg = f"rule {self.name}: horizons must be positive durations"
                raise ValueError(msg)
            if (
                (self.threshold is None and self.rise is None)
                or self.change is not None
                or self.drift is not None
            ):
                msg = (
                    f"rule {self.name}: horizons need a threshold or rise condition, without "
                    "change or drift (rate tests and drift statistics are per window)"
                )
                raise ValueError(msg)
            object.__setattr__(self, "horizons", horizons)
        if self.early is None:
            if self.severity not in EARLY_BY_SEVERITY:
                msg = (
                    f"rule {self.name}: severity {self.severity!r} is not one of "
                    f"{', '.join(SEVERITIES)}, so early has no default: give early=True or False"
                )
                raise ValueError(msg)
            object.__setattr__(self, "early", EARLY_BY_SEVERITY[self.severity])
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


# --- templates -------------------------------------------------------------------------


class _Missing:
    """A value that does not exist in this window: prints n/a whatever the format spec."""

    def __format__(self, spec: str) -> str:
        return "n/a"

    def __str__(self) -> str:
        return "n/a"

    def __repr__(self) -> str:
        return "n/a"


MISSING = _Missing()


def template_fields(rule: Rule) -> tuple[str, ...]:
    """The fields `rule`'s templates may use: TEMPLATE_FIELDS and its `by` dimensions."""
    return TEMPLATE_FIELDS + (() if rule.by == STORED else rule.by)


def render_template(template: str, values: Mapping[str, object]) -> str:
    """`template` formatted with `values`; a None value prints as ``n/a``.

    Raises KeyError for a field missing from `values` (the loader guarantees that a rule's
    templates use only `template_fields(rule)`).
    """
    return template.format_map({k: MISSING if v is None else v for k, v in values.items()})


def _template_problem(template: str, allowed: Sequence[str]) -> str | None:
    """Why `template` is not a valid template over `allowed` fields, or None if it is."""
    try:
        names = list(_field_names(template))
    except ValueError as exc:
        return f"invalid template: {exc}"
    for name in names:
        if name == "" or name.isdigit():
            return "positional fields ({} or {0}) are not allowed: name a field"
        if "." in name or "[" in name:
            return f"field {{{name}}}: attribute and index access are not allowed"
        if name not in allowed:
            return f"unknown template field {{{name}}}{_suggest(name, allowed)}; allowed: " + (
                ", ".join(allowed)
            )
    dummy: dict[str, object] = {
        "rule": "Rule",
        "metric": "violation_rate",
        "segment": "chat / de-DE",
        "value": 0.5,
        "lower": 0.25,
        "upper": 0.75,
        "numerator": 1,
        "denominator": 2,
        "baseline": 0.5,
        "q_value": 0.01,
        "window_start": datetime(2026, 1, 1, tzinfo=UTC),
        "windows": 1,
        "severity": "sev1",
    }
    dummy.update({d: "value" for d in allowed if d not in dummy})
    try:
        render_template(template, dummy)
    except (ValueError, TypeError) as exc:
        return f"invalid template: {exc}"
    return None


def _field_names(template: str) -> Iterable[str]:
    for _, name, spec, _ in string.Formatter().parse(template):
        if name is not None:
            yield name
            if spec:
                yield from _field_names(spec)


# --- loading ---------------------------------------------------------------------------

_STR = "tag:yaml.org,2002:str"
_RATE_IDS = tuple(r.id for r in RATES)
_RATES = {r.id: r for r in RATES}
_DISTRIBUTIONS = {d.id: d for d in DISTRIBUTIONS}

_RULE_KEYS = (
    "name",
    "metric",
    "by",
    "match",
    "condition",
    "min_events",
    "for",
    "keep_firing_for",
    "early",
    "horizons",
    "concentrated",
    "evidence",
    "severity",
    "owner",
    "runbook",
    "summary",
    "description",
    "labels",
)
_RULE_REQUIRED = ("name", "metric", "by", "condition", "severity", "owner", "runbook", "summary")


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kinds = {
        "null": "nothing (null)",
        "bool": "a boolean",
        "int": "an integer",
        "float": "a number",
    }
    kind = kinds.get(node.tag.rsplit(":", 1)[-1])
    if kind is None:
        return f"{node.value!r}"
    # YAML 1.1 reads yes/no/on/off as booleans: show what was written and how it was read.
    return kind if kind.startswith("nothing") else f"{node.value} ({kind})"


Entry = tuple[yaml.Node, yaml.Node]  # (key node, value node)


class _Reader:
    """Reads one file's node tree; every error it raises carries file, line, rule, field."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rule: str | None = None
        self._constructor = SafeConstructor()

    def error(self, node: yaml.Node | None, field: str | None, reason: str) -> RuleError:
        line = None if node is None else node.start_mark.line + 1
        return RuleError(reason, path=self.path, line=line, rule=self.rule, field=field)

    def mapping(
        self,
        node: yaml.Node,
        where: str,
        keys: Sequence[str],
        required: Sequence[str] = (),
        *,
        key_node: yaml.Node | None = None,
    ) -> dict[str, Entry]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(
                key_node or node, where or None, f"must be a mapping, got {_kind(node)}"
            )
        out: dict[str, Entry] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag != _STR:
                raise self.error(k, where or None, f"keys must be strings, got {_kind(k)}")
            key = str(k.value)
            field = _join(where, key)
            if key in out:
                first = out[key][0].start_mark.line + 1
                raise self.error(k, field, f"duplicate key (first on line {first})")
            if key not in keys:
                raise self.error(
                    k,
                    field,
                    f"unknown key{_suggest(key, keys)}; expected one of: {', '.join(keys)}",
                )
            out[key] = (k, v)
        for key in required:
            if key not in out:
                raise self.error(node, _join(where, key), "missing (required)")
        return out

    def scalar(self, entry: Entry, field: str) -> Any:
        key, node = entry
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(key, field, f"must be a single value, got {_kind(node)}")
        return self._constructor.construct_object(node)

    def string(self, entry: Entry, field: str) -> str:
        value = self.scalar(entry, field)
        if not isinstance(value, str):
            raise self.error(entry[0], field, f"must be a string, got {_kind(entry[1])}")
        if not value.strip():
            raise self.error(entry[0], field, "must not be empty")
        return value

    def choice(self, entry: Entry, field: str, choices: Sequence[str]) -> str:
        value = self.string(entry, field)
        if value not in choices:
            raise self.error(
                entry[0],
                field,
                f"must be one of {', '.join(choices)}, got {value!r}{_suggest(value, choices)}",
            )
        return value

    def number(
        self, entry: Entry, field: str, low: float, high: float, *, low_open: bool = False
    ) -> float:
        key, node = entry
        value = self.scalar(entry, field)
        # PyYAML follows YAML 1.1, where 1e-3 (no dot) is a string; read it as the number
        # the author meant when it is written plain, not quoted.
        if isinstance(value, str) and isinstance(node, yaml.ScalarNode) and node.style is None:
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, field, f"must be a number, got {_kind(node)}")
        value = float(value)
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or value > high:
            if math.isinf(high):
                bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
                raise self.error(key, field, f"must be a finite number {bound}, got {value:g}")
            if low_open:
                reason = f"must be greater than {low:g} and at most {high:g}"
            else:
                reason = f"must be between {low:g} and {high:g}"
            raise self.error(key, field, f"{reason}, got {value:g}")
        return value

    def boolean(self, entry: Entry, field: str) -> bool:
        value = self.scalar(entry, field)
        if not isinstance(value, bool):
            raise self.error(entry[0], field, f"must be true or false, got {_kind(entry[1])}")
        return value

    def integer(self, entry: Entry, field: str, minimum: int) -> int:
        value = self.scalar(entry, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(entry[0], field, f"must be an integer, got {_kind(entry[1])}")
        if value < minimum:
            raise self.error(entry[0], field, f"must be at least {minimum}, got {value}")
        return value

    def template(self, entry: Entry, field: str, allowed: Sequence[str]) -> str:
        value = self.string(entry, field)
        problem = _template_problem(value, allowed)
        if problem is not None:
            raise self.error(entry[0], field, problem)
        return value

    # --- the rule ----------------------------------------------------------------------

    def rules(self, root: yaml.Node | None) -> list[Rule]:
        if root is None:
            msg = "empty file: expected a mapping with a `rules` list"
            raise RuleError(msg, path=self.path)
        top = self.mapping(root, "", ("rules",), ("rules",))
        key, items = top["rules"]
        if not isinstance(items, yaml.SequenceNode):
            raise self.error(key, "rules", f"must be a list of rules, got {_kind(items)}")
        rules: list[Rule] = []
        seen: dict[str, Rule] = {}
        for item in items.value:
            self.rule = None
            rule = self.one_rule(item)
            if rule.name in seen:
                self.rule = rule.name
                msg = f"duplicate rule name; first defined on line {seen[rule.name].line}"
                raise RuleError(
                    msg,
                    path=self.path,
                    line=rule.line,
                    rule=rule.name,
                    field="name",
                )
            seen[rule.name] = rule
            rules.append(rule)
        self.rule = None
        return rules

    def one_rule(self, node: yaml.Node) -> Rule:
        if isinstance(node, yaml.MappingNode):
            # Name the rule in every error, even those about keys written before `name`.
            for k, v in node.value:
                if (
                    isinstance(k, yaml.ScalarNode)
                    and k.value == "name"
                    and isinstance(v, yaml.ScalarNode)
                    and v.tag == _STR
                    and NAME_PATTERN.fullmatch(v.value)
                ):
                    self.rule = v.value
        m = self.mapping(node, "", _RULE_KEYS, _RULE_REQUIRED)
        name = self.string(m["name"], "name")
        if not NAME_PATTERN.fullmatch(name):
            raise self.error(
                m["name"][0],
                "name",
                f"{name!r} is not a valid name: a letter, then letters, digits or _",
            )
        metric = self.string(m["metric"], "metric")
        if metric not in _RATES:
            hint = _suggest(metric, _RATE_IDS) or f"; known: {', '.join(_RATE_IDS)}"
            raise self.error(m["metric"][0], "metric", f"unknown rate {metric!r}{hint}")
        by = self.dimensions(m["by"])
        threshold, change, drift, rise = self.condition(m["condition"], metric)
        match = self.choice(m["match"], "match", MATCHES) if "match" in m else "all"
        min_events = DEFAULT_MIN_EVENTS
        if "min_events" in m:
            min_events = self.integer(m["min_events"], "min_events", 1)
        for_windows = self.integer(m["for"], "for", 1) if "for" in m else 1
        keep_firing_for = 0
        if "keep_firing_for" in m:
            keep_firing_for = self.integer(m["keep_firing_for"], "keep_firing_for", 0)
        severity = self.choice(m["severity"], "severity", SEVERITIES)
        early = self.boolean(m["early"], "early") if "early" in m else None
        horizons = self.horizons(m["horizons"]) if "horizons" in m else ()
        concentrated = None
        if "concentrated" in m:
            concentrated = self.boolean(m["concentrated"], "concentrated")
        evidence = self.choice(m["evidence"], "evidence", EVIDENCE) if "evidence" in m else "users"
        if horizons and (
            (threshold is None and rise is None) or change is not None or drift is not None
        ):
            raise self.error(
                m["horizons"][0],
                "horizons",
                "needs a threshold or rise condition without change or drift: rate tests "
                "and drift statistics are computed per window, a threshold or a rise can be "
                "checked on any sum of windows",
            )
        owner = self.string(m["owner"], "owner")
        runbook = self.string(m["runbook"], "runbook")
        allowed = TEMPLATE_FIELDS + (() if by == STORED else by)
        summary = self.template(m["summary"], "summary", allowed)
        description = ""
        if "description" in m:
            description = self.template(m["description"], "description", allowed)
        labels = self.labels(m["labels"], by) if "labels" in m else {}
        return Rule(
            name=name,
            metric=metric,
            by=by,
            match=cast(Match, match),
            threshold=threshold,
            change=change,
            drift=drift,
            min_events=min_events,
            for_windows=for_windows,
            keep_firing_for=keep_firing_for,
            severity=cast(Severity, severity),
            owner=owner,
            runbook=runbook,
            summary=summary,
            description=description,
            labels=labels,
            path=self.path,
            line=m["name"][0].start_mark.line + 1,
            early=early,
            horizons=horizons,
            concentrated=concentrated,
            rise=rise,
            evidence=cast(Evidence, evidence),
        )

    def horizons(self, entry: Entry) -> tuple[timedelta, ...]:
        key, node = entry
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(
                key,
                "horizons",
                f"must be a list of durations, e.g. [5 minutes, 1 hour]; got {_kind(node)}",
            )
        out = []
        for item in node.value:
            text = item.value if isinstance(item, yaml.ScalarNode) else None
            try:
                duration = parse_duration(str(text))
            except ValueError:
                raise self.error(
                    item, "horizons", f"{text!r} is not a duration such as '1 hour'"
                ) from None
            if duration <= timedelta(0):
                raise self.error(item, "horizons", f"{text!r} is not a positive duration")
            if duration > MAX_HORIZON:
                raise self.error(
                    item,
                    "horizons",
                    f"{text!r} is longer than {MAX_HORIZON.days} day: every window closing "
                    "re-reads the stored windows of the longest horizon",
                )
            out.append(duration)
        return tuple(sorted(set(out)))

    def dimensions(self, entry: Entry) -> tuple[str, ...]:
        key, node = entry
        if isinstance(node, yaml.ScalarNode) and node.value == STORED_KEYWORD:
            return STORED
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(
                key,
                "by",
                f"must be a list of segment dimensions ([] for all traffic) or "
                f"{STORED_KEYWORD!r} (the job's stream.dimensions), got {_kind(node)}",
            )
        out: list[str] = []
        for i, item in enumerate(node.value):
            field = f"by[{i}]"
            value = self.string((item, item), field)
            if value not in SEGMENT_DIMENSIONS:
                raise self.error(
                    item,
                    field,
                    f"unknown segment dimension {value!r}{_suggest(value, SEGMENT_DIMENSIONS)}; "
                    f"known: {', '.join(SEGMENT_DIMENSIONS)}",
                )
            if value in out:
                raise self.error(item, field, f"dimension {value!r} is listed twice")
            out.append(value)
        return tuple(out)

    def condition(
        self, entry: Entry, metric: str
    ) -> tuple[Threshold | None, Change | None, Drift | None, Rise | None]:
        key, node = entry
        m = self.mapping(node, "condition", ("threshold", "change", "drift", "rise"), key_node=key)
        if not m:
            raise self.error(
                key, "condition", "needs at least one of threshold, change, drift, rise"
            )
        threshold = change = drift = rise = None
        if "threshold" in m:
            k, v = m["threshold"]
            keys = ("above", "below", "min_events", "until_baseline")
            t = self.mapping(v, "condition.threshold", keys, key_node=k)
            bound = self.one_bound(t, k, "condition.threshold")
            limit = self.number(t[bound], f"condition.threshold.{bound}", 0.0, 1.0)
            guard = 0
            if "min_events" in t:
                guard = self.integer(t["min_events"], "condition.threshold.min_events", 1)
            until = None
            if "until_baseline" in t:
                until = self.integer(t["until_baseline"], "condition.threshold.until_baseline", 1)
            threshold = Threshold(**{bound: limit}, min_events=guard, until_baseline=until)
        if "change" in m:
            k, v = m["change"]
            fields = ("max_q", "direction", "min_difference")
            c = self.mapping(v, "condition.change", fields, ("max_q",), key_node=k)
            # Default: the direction in which the rate gets worse.
            direction = "up" if _RATES[metric].higher_is_worse else "down"
            if "direction" in c:
                direction = self.choice(c["direction"], "condition.change.direction", DIRECTIONS)
            change = Change(
                max_q=self.number(c["max_q"], "condition.change.max_q", 0.0, 1.0, low_open=True),
                direction=cast(Direction, direction),
                min_difference=(
                    self.number(c["min_difference"], "condition.change.min_difference", 0.0, 1.0)
                    if "min_difference" in c
                    else 0.0
                ),
            )
        if "drift" in m:
            drift = self.drift(m["drift"])
        if "rise" in m:
            k, v = m["rise"]
            rise_keys = ("factor", "alpha")
            r = self.mapping(v, "condition.rise", rise_keys, rise_keys, key_node=k)
            rise = Rise(
                factor=self.number(r["factor"], "condition.rise.factor", 1.0, math.inf),
                alpha=self.number(r["alpha"], "condition.rise.alpha", 0.0, 0.5, low_open=True),
            )
        return threshold, change, drift, rise

    def one_bound(self, m: dict[str, Entry], key: yaml.Node, where: str) -> str:
        if "above" in m and "below" in m:
            raise self.error(
                m["below"][0], f"{where}.below", "give either above or below, not both"
            )
        if "above" not in m and "below" not in m:
            raise self.error(key, where, "needs one of above, below")
        return "above" if "above" in m else "below"

    def drift(self, entry: Entry) -> Drift:
        key, node = entry
        where = "condition.drift"
        fields = ("distribution", "statistic", "above", "below")
        m = self.mapping(node, where, fields, ("distribution", "statistic"), key_node=key)
        dist_id = self.string(m["distribution"], f"{where}.distribution")
        dist = _DISTRIBUTIONS.get(dist_id)
        if dist is None:
            known = tuple(_DISTRIBUTIONS)
            hint = _suggest(dist_id, known) or f"; known: {', '.join(known)}"
            raise self.error(
                m["distribution"][0],
                f"{where}.distribution",
                f"unknown distribution {dist_id!r}{hint}",
            )
        statistic = self.choice(m["statistic"], f"{where}.statistic", DRIFT_STATISTICS)
        if statistic in ORDERED_ONLY_STATISTICS and not dist.ordered:
            raise self.error(
                m["statistic"][0],
                f"{where}.statistic",
                f"{statistic} needs ordered (numeric) bins; {dist_id} is {dist.kind}",
            )
        bound = self.one_bound(m, key, where)
        wanted = "above" if statistic in DRIFT_STATISTICS_ABOVE else "below"
        if bound != wanted:
            grows = "grows" if wanted == "above" else "shrinks"
            raise self.error(
                m[bound][0], f"{where}.{bound}", f"{statistic} {grows} with drift: use {wanted}"
            )
        field = f"{where}.{bound}"
        if statistic in DRIFT_STATISTICS_BELOW:
            limit = self.number(m[bound], field, 0.0, 1.0, low_open=True)
        elif statistic in _UNIT_STATISTICS:
            limit = self.number(m[bound], field, 0.0, 1.0)
        else:
            limit = self.number(m[bound], field, 0.0, math.inf)
        return Drift(distribution=dist_id, statistic=statistic, **{bound: limit})

    def labels(self, entry: Entry, by: tuple[str, ...]) -> dict[str, str]:
        key, node = entry
        m = self.mapping_any(node, "labels", key)
        out: dict[str, str] = {}
        reserved = RESERVED_LABELS + (SEGMENT_DIMENSIONS if by == STORED else by)
        for name, (k, v) in m.items():
            field = f"labels.{name}"
            if not LABEL_PATTERN.fullmatch(name):
                raise self.error(
                    k, field, "a label name is letters, digits and _, not first a digit"
                )
            if name in reserved:
                raise self.error(
                    k, field, f"{name!r} is set from the rule; reserved: {', '.join(reserved)}"
                )
            value = self.scalar((k, v), field)
            if not isinstance(value, str):
                raise self.error(k, field, f"must be a string (quote it), got {_kind(v)}")
            out[name] = value
        return out

    def mapping_any(self, node: yaml.Node, where: str, key: yaml.Node) -> dict[str, Entry]:
        """A mapping with free string keys (no duplicates)."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(key, where, f"must be a mapping, got {_kind(node)}")
        names = [str(k.value) for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
        return self.mapping(node, where, names, key_node=key)


def parse_rules(text: str, path: str | Path = "<string>") -> list[Rule]:
    """The rules of one YAML document `text`; `path` is only used in errors and `Rule.path`.

    Raises RuleError (with the line) for invalid YAML or an invalid rule, including two
    rules of the same name in the text.
    """
    where = str(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = exc.problem or "cannot parse"
        if exc.context and exc.context_mark is not None:
            problem += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        msg = f"invalid YAML: {problem}"
        raise RuleError(msg, path=where, line=line) from exc
    except yaml.YAMLError as exc:
        msg = f"invalid YAML: {exc}"
        raise RuleError(msg, path=where) from exc
    return _Reader(where).rules(root)


def load_rule_file(path: str | Path) -> list[Rule]:
    """The rules of one file; RuleError if it cannot be read or holds an invalid rule."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        msg = f"cannot read the file: {reason}"
        raise RuleError(msg, path=str(path)) from exc
    return parse_rules(text, path)


def rule_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files `paths` name: a file as given, a directory's `*.yaml` sorted by name."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.glob("*.yaml") if f.is_file()))
        elif p.exists():
            files.append(p)
        else:
            msg = "no such file or directory"
            raise RuleError(msg, path=str(p))
    return files


def load_rules(paths: Sequence[str | Path]) -> list[Rule]:
    """Every rule of `paths` (files, or directories whose `*.yaml` are read in name order).

    Rule names are unique across all files: a second rule with a name already loaded raises
    RuleError at its own file and line, naming where the first one is.
    """
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for f in dict.fromkeys(rule_files(paths)):
        for rule in load_rule_file(f):
            first = seen.get(rule.name)
            if first is not None:
                msg = f"duplicate rule name; first defined at {first.path}:{first.line}"
                raise RuleError(
                    msg,
                    path=rule.path,
                    line=rule.line,
                    rule=rule.name,
                    field="name",
                )
            seen[rule.name] = rule
            rules.append(rule)
    return rules
