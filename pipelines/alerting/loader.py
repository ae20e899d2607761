"""Alert rule files: the YAML under alerts/rules/, read into `Rule`s with line numbers.

The format is documented in docs/alert-rules.md. Loading is strict: an unknown key, a
metric or distribution the catalog does not know, a dimension that is not a segment
dimension, a template field that does not exist, or two rules with the same name raise a
`RuleError` naming the file, the line (of the offending key), the rule and the field. The
YAML is read as a node tree (`yaml.compose`) rather than as plain dicts so that every value
keeps its line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import yaml
from yaml.constructor import SafeConstructor

from pipelines.alerting.errors import RuleError, did_you_mean
from pipelines.alerting.model import (
    DEFAULT_MIN_EVENTS,
    DIRECTIONS,
    DRIFT_STATISTICS,
    DRIFT_STATISTICS_ABOVE,
    DRIFT_STATISTICS_BELOW,
    EVIDENCE,
    LABEL_PATTERN,
    MATCHES,
    MAX_HORIZON,
    NAME_PATTERN,
    ORDERED_ONLY_STATISTICS,
    RESERVED_LABELS,
    SEVERITIES,
    STORED,
    STORED_KEYWORD,
    UNIT_STATISTICS,
    Change,
    Direction,
    Drift,
    Evidence,
    Match,
    Rise,
    Rule,
    Severity,
    Threshold,
)
from pipelines.alerting.templates import TEMPLATE_FIELDS, template_problem
from pipelines.durations import parse_duration
from pipelines.metrics.catalog import RATES
from pipelines.metrics.distributions import DISTRIBUTIONS
from pipelines.segments import SEGMENT_DIMENSIONS

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


class _RuleFile:
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
                    f"unknown key{did_you_mean(key, keys)}; expected one of: {', '.join(keys)}",
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
                f"must be one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}",
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
        problem = template_problem(value, allowed)
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
            hint = did_you_mean(metric, _RATE_IDS) or f"; known: {', '.join(_RATE_IDS)}"
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
                    f"unknown segment dimension {value!r}"
                    f"{did_you_mean(value, SEGMENT_DIMENSIONS)}; "
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
            hint = did_you_mean(dist_id, known) or f"; known: {', '.join(known)}"
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
        elif statistic in UNIT_STATISTICS:
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
    return _RuleFile(where).rules(root)


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
