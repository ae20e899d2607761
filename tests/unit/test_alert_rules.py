"""Alert rule files load into the right values, and every mistake names its file, line and field.

Each YAML text below is written so that its line numbers can be read off: line 1 is the
first line after the opening quotes.
"""

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.alerting.errors import RuleError
from pipelines.alerting.loader import load_rule_file, load_rules, parse_rules
from pipelines.alerting.model import DRIFT_STATISTICS, Change, Drift, Rule, Threshold
from pipelines.alerting.templates import render_template
from pipelines.drift.stats import DistributionDrift
from pipelines.errors import SafewatchError

VALID = """\
rules:
  - name: HarmfulOutputRateHigh
    metric: violation_rate
    by: [product_surface, model_version, locale]
    match: any
    condition:
      threshold:
        above: 1e-3
      change:
        max_q: 0.01
        direction: up
        min_difference: 0.002
      drift:
        distribution: outcome
        statistic: psi
        above: 0.25
    min_events: 200
    for: 2
    keep_firing_for: 1
    severity: sev2
    owner: trust-safety-oncall
    runbook: runbooks/harmful-output-rate.md
    summary: "Harmful output rate {value:.2%} in {segment}"
    description: |
      {numerator} of {denominator} in {locale}, baseline {baseline:.2%}, q = {q_value:.3g}
    labels: {team: trust-safety, tier: "1"}

  - name: TelemetryIncomplete
    metric: telemetry_completeness
    by: []
    condition:
      threshold: {below: 0.98}
      change: {max_q: 0.05}
    severity: sev3
    owner: data-platform
    runbook: runbooks/telemetry.md
    summary: "{metric} {value:.1%} ({segment})"
  - name: LatencyShift
    metric: block_rate
    by: [model_version]
    condition:
      drift: {distribution: latency_ms, statistic: ks_p_value, below: 0.001}
    severity: sev4
    owner: platform
    runbook: https://runbooks.example/latency
    summary: latency moved in {model_version}
"""

# One valid rule; tests replace one line of it to make one mistake at a known line.
BASE = """\
rules:
  - name: HarmfulOutputHigh
    metric: violation_rate
    by: [product_surface, locale]
    condition:
      threshold:
        above: 0.001
    severity: sev2
    owner: trust-safety-oncall
    runbook: runbooks/harmful-output-rate.md
    summary: "Harmful output rate {value:.2%} in {segment}"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def with_line(line_no: int, new: str, text: str = BASE) -> str:
    """`text` with line `line_no` (1-based) replaced by `new` (which may span lines)."""
    lines = text.splitlines()
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


def error_of(tmp_path: Path, text: str, name: str = "safety.yaml") -> RuleError:
    path = write(tmp_path, name, text)
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert info.value.path == str(path)
    return info.value


# --- valid files -------------------------------------------------------------------------


def test_valid_file_loads_every_value_and_the_defaults(tmp_path):
    path = write(tmp_path, "safety.yaml", VALID)
    harmful, telemetry, latency = load_rule_file(path)

    assert harmful == Rule(
        name="HarmfulOutputRateHigh",
        metric="violation_rate",
        by=("product_surface", "model_version", "locale"),
        match="any",
        threshold=Threshold(above=0.001),  # 1e-3, a string to YAML 1.1, read as a number
        change=Change(max_q=0.01, direction="up", min_difference=0.002),
        drift=Drift(distribution="outcome", statistic="psi", above=0.25),
        min_events=200,
        for_windows=2,
        keep_firing_for=1,
        severity="sev2",
        owner="trust-safety-oncall",
        runbook="runbooks/harmful-output-rate.md",
        summary="Harmful output rate {value:.2%} in {segment}",
        description="{numerator} of {denominator} in {locale}, baseline {baseline:.2%}, "
        "q = {q_value:.3g}\n",
        labels={"team": "trust-safety", "tier": "1"},
    )
    assert (harmful.path, harmful.line) == (str(path), 2)

    # Defaults: match all, min_events 30, for 1, keep_firing_for 0, no description or labels;
    # a change without direction watches the direction in which the rate gets worse
    # (completeness is better when higher, so: down).
    assert telemetry == Rule(
        name="TelemetryIncomplete",
        metric="telemetry_completeness",
        by=(),
        threshold=Threshold(below=0.98),
        change=Change(max_q=0.05, direction="down", min_difference=0.0),
        severity="sev3",
        owner="data-platform",
        runbook="runbooks/telemetry.md",
        summary="{metric} {value:.1%} ({segment})",
    )
    assert (telemetry.match, telemetry.min_events, telemetry.for_windows) == ("all", 30, 1)
    assert (telemetry.keep_firing_for, telemetry.description, dict(telemetry.labels)) == (0, "", {})
    assert telemetry.line == 28

    assert latency.drift == Drift(distribution="latency_ms", statistic="ks_p_value", below=0.001)
    assert latency.threshold is None and latency.change is None
    assert latency.runbook == "https://runbooks.example/latency"
    assert latency.line == 38


def test_rules_are_frozen():
    (rule,) = parse_rules(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.name = "Other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        rule.labels["team"] = "x"  # type: ignore[index]


def test_directory_loads_its_yaml_files_in_name_order(tmp_path):
    write(tmp_path, "b.yaml", with_line(2, "  - name: Second"))
    write(tmp_path, "a.yaml", with_line(2, "  - name: First"))
    write(tmp_path, "notes.txt", "not a rule file")
    rules = load_rules([tmp_path])
    assert [(r.name, Path(r.path).name) for r in rules] == [
        ("First", "a.yaml"),
        ("Second", "b.yaml"),
    ]


def test_templates_render_with_missing_values_as_n_a():
    text = "{value:.2%} of {denominator}, baseline {baseline:.2%} at {window_start:%H:%M}"
    when = datetime(2026, 11, 2, 14, 5, tzinfo=UTC)
    values = {"value": 0.0123, "denominator": 800, "baseline": None, "window_start": when}
    assert render_template(text, values) == "1.23% of 800, baseline n/a at 14:05"


def test_the_documented_example_is_a_valid_rule_file():
    doc = (Path(__file__).parents[2] / "docs" / "alert-rules.md").read_text(encoding="utf-8")
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    harmful, telemetry = parse_rules(example, "docs/alert-rules.md")
    assert (harmful.name, harmful.match, harmful.for_windows) == ("HarmfulOutputRateHigh", "any", 2)
    assert (telemetry.by, telemetry.threshold) == ((), Threshold(below=0.98))


def test_drift_statistics_are_the_drift_table_columns():
    columns = {f.name for f in dataclasses.fields(DistributionDrift)}
    assert set(DRIFT_STATISTICS) <= columns


# --- errors: file, line, rule, field -----------------------------------------------------


def test_error_message_reads_file_line_rule_field():
    text = with_line(7, "        above: 2")
    with pytest.raises(RuleError) as info:
        parse_rules(text, "alerts/rules/safety.yaml")
    assert str(info.value) == (
        "alerts/rules/safety.yaml:7: rule HarmfulOutputHigh: field condition.threshold.above: "
        "must be between 0 and 1, got 2"
    )
    assert isinstance(info.value, SafewatchError)
    assert (info.value.line, info.value.rule, info.value.field) == (
        7,
        "HarmfulOutputHigh",
        "condition.threshold.above",
    )


def test_yaml_syntax_error_names_its_line(tmp_path):
    err = error_of(tmp_path, with_line(9, "    owner: trust: safety"))
    assert err.line == 9
    assert "invalid YAML" in err.reason and "mapping values are not allowed" in err.reason
    assert err.rule is None


def test_unclosed_flow_list_names_where_it_started(tmp_path):
    err = error_of(tmp_path, with_line(4, "    by: [product_surface, locale"))
    # The parser notices at the next key (line 5); the message says where the list began.
    assert err.line == 5
    assert "started on line 4" in err.reason


@pytest.mark.parametrize(
    ("line_no", "new", "field", "reason"),
    [
        (8, "    severty: sev2", "severty", "unknown key (did you mean severity?)"),
        (7, "        abov: 0.001", "condition.threshold.abov", "unknown key (did you mean above?)"),
        (3, "    metric: violaton_rate", "metric", "unknown rate 'violaton_rate' (did you mean"),
        (4, "    by: [product_surface, local]", "by[1]", "unknown segment dimension 'local'"),
        (4, "    by: locale", "by", "must be a list of segment dimensions"),
        (8, "    severity: sev5", "severity", "must be one of sev1, sev2, sev3, sev4"),
        (10, "    runbook: ''", "runbook", "must not be empty"),
        (9, "    owner:", "owner", "must be a string, got nothing (null)"),
        (11, '    summary: "rate {vlaue:.2%}"', "summary", "unknown template field {vlaue}"),
        (11, '    summary: "rate {value:d}"', "summary", "invalid template"),
        (11, '    summary: "rate {}"', "summary", "positional fields"),
        (11, '    summary: "{value.real}"', "summary", "attribute and index access"),
        # a dimension the rule is not evaluated by is not a template field
        (11, '    summary: "{model_version}"', "summary", "unknown template field"),
    ],
)
def test_mistake_is_reported_at_its_line_and_field(tmp_path, line_no, new, field, reason):
    err = error_of(tmp_path, with_line(line_no, new))
    assert (err.line, err.rule, err.field) == (line_no, "HarmfulOutputHigh", field)
    assert reason in err.reason
    assert str(err).startswith(f"{err.path}:{line_no}: rule HarmfulOutputHigh: field {field}: ")


def test_unknown_metric_with_nothing_close_lists_the_known_rates(tmp_path):
    err = error_of(tmp_path, with_line(3, "    metric: zzz"))
    assert err.line == 3
    assert "known: violation_rate," in err.reason and "telemetry_completeness" in err.reason


def test_threshold_with_both_bounds_points_at_the_second(tmp_path):
    text = with_line(7, "        above: 0.001\n        below: 0.5")
    err = error_of(tmp_path, text)
    assert (err.line, err.field) == (8, "condition.threshold.below")
    assert "either above or below, not both" in err.reason


def test_threshold_with_no_bound(tmp_path):
    err = error_of(
        tmp_path, with_line(6, "      threshold: {}").replace("        above: 0.001\n", "")
    )
    assert (err.line, err.field) == (6, "condition.threshold")
    assert "needs one of above, below" in err.reason


def test_empty_condition(tmp_path):
    text = with_line(5, "    condition: {}").replace("      threshold:\n        above: 0.001\n", "")
    err = error_of(tmp_path, text)
    assert (err.line, err.field) == (5, "condition")
    assert "at least one of threshold, change, drift" in err.reason


def test_missing_condition_points_at_the_rule(tmp_path):
    text = BASE.replace("    condition:\n      threshold:\n        above: 0.001\n", "")
    err = error_of(tmp_path, text)
    assert (err.line, err.rule, err.field) == (2, "HarmfulOutputHigh", "condition")
    assert err.reason == "missing (required)"


def test_unknown_key_before_the_name_still_names_the_rule(tmp_path):
    body = "\n".join(BASE.splitlines()[3:])  # from `by:` on
    text = f"rules:\n  - metrc: violation_rate\n    name: HarmfulOutputHigh\n{body}\n"
    err = error_of(tmp_path, text)
    assert (err.line, err.rule, err.field) == (2, "HarmfulOutputHigh", "metrc")
    assert "unknown key (did you mean metric" in err.reason


def test_boolean_where_a_number_is_expected(tmp_path):
    err = error_of(tmp_path, with_line(7, "        above: yes"))
    assert (err.line, err.field) == (7, "condition.threshold.above")
    assert "must be a number, got yes (a boolean)" in err.reason


@pytest.mark.parametrize(
    ("drift", "field", "reason"),
    [
        ("{distribution: outcom, statistic: psi, above: 0.2}", "condition.drift.distribution",
         "unknown distribution 'outcom' (did you mean outcome?)"),
        ("{distribution: outcome, statistic: ks_statistic, above: 0.2}",
         "condition.drift.statistic", "ks_statistic needs ordered (numeric) bins"),
        ("{distribution: outcome, statistic: chi2_p_value, above: 0.2}", "condition.drift.above",
         "chi2_p_value shrinks with drift: use below"),
        ("{distribution: outcome, statistic: psi, below: 0.2}", "condition.drift.below",
         "psi grows with drift: use above"),
        ("{distribution: outcome, statistic: psi, above: -1}", "condition.drift.above",
         "must be a finite number at least 0"),
        ("{distribution: outcome, statistic: mean, above: 1}", "condition.drift.statistic",
         "must be one of psi, js_distance"),
    ],
)  # fmt: skip
def test_drift_mistakes(tmp_path, drift, field, reason):
    text = with_line(6, f"      drift: {drift}").replace("        above: 0.001\n", "")
    err = error_of(tmp_path, text)
    assert (err.line, err.field) == (6, field)
    assert reason in err.reason


def test_label_mistakes(tmp_path):
    err = error_of(tmp_path, BASE + "    labels: {locale: de-DE}\n")
    assert (err.line, err.field) == (12, "labels.locale")
    assert "reserved" in err.reason
    err = error_of(tmp_path, BASE + "    labels:\n      team: trust\n      tier: 1\n")
    assert (err.line, err.field) == (14, "labels.tier")
    assert "must be a string (quote it), got 1 (an integer)" in err.reason


def test_duplicate_key_within_a_rule(tmp_path):
    err = error_of(tmp_path, BASE + "    severity: sev1\n")
    assert (err.line, err.field) == (12, "severity")
    assert err.reason == "duplicate key (first on line 8)"


def test_duplicate_names_in_one_file(tmp_path):
    second = "\n".join(BASE.splitlines()[1:]) + "\n"
    err = error_of(tmp_path, BASE + second)
    assert (err.line, err.rule, err.field) == (12, "HarmfulOutputHigh", "name")
    assert "first defined on line 2" in err.reason


def test_duplicate_names_across_files_name_both_files(tmp_path):
    first = write(tmp_path, "a.yaml", BASE)
    lines = BASE.splitlines()
    # b.yaml: line 2 defines Unique, line 12 HarmfulOutputHigh again.
    text = "\n".join(["rules:", "  - name: Unique", *lines[2:], *lines[1:]]) + "\n"
    second = write(tmp_path, "b.yaml", text)
    with pytest.raises(RuleError) as info:
        load_rules([first, second])
    err = info.value
    assert (err.path, err.line, err.rule, err.field) == (
        str(second),
        12,
        "HarmfulOutputHigh",
        "name",
    )
    assert f"first defined at {first}:2" in str(err)
    assert str(err).startswith(f"{second}:12: rule HarmfulOutputHigh: field name: ")


def test_top_level_mistakes(tmp_path):
    err = error_of(tmp_path, "")
    assert err.line is None and "empty file" in err.reason
    err = error_of(tmp_path, "rule:\n  - name: X\n")
    assert (err.line, err.field) == (1, "rule")
    err = error_of(tmp_path, "rules: {name: X}\n")
    assert (err.line, err.field) == (1, "rules")
    assert "must be a list of rules" in err.reason


def test_missing_path(tmp_path):
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path / "nope.yaml"])
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such file or directory"


# --- horizons ------------------------------------------------------------------------------


def test_horizons_are_read_as_sorted_distinct_durations(tmp_path):
    text = with_line(8, "    severity: sev2\n    horizons: [1 hour, 5 minutes, 60 minutes]")
    (rule,) = load_rules([write(tmp_path, "safety.yaml", text)])
    assert rule.horizons == (timedelta(minutes=5), timedelta(hours=1))
    (plain,) = load_rules([write(tmp_path, "plain.yaml", BASE)])
    assert plain.horizons == ()


@pytest.mark.parametrize(
    ("horizons", "reason"),
    [
        ("1 hour", "must be a list of durations, e.g. [5 minutes, 1 hour]"),
        ("[]", "must be a list of durations"),
        ("[an hour]", "'an hour' is not a duration such as '1 hour'"),
        ("[0 minutes]", "'0 minutes' is not a positive duration"),
        ("[1 hour, 2 days]", "'2 days' is longer than 1 day"),
    ],
)
def test_horizon_mistakes_name_the_line(tmp_path, horizons, reason):
    err = error_of(tmp_path, with_line(8, f"    severity: sev2\n    horizons: {horizons}"))
    assert (err.line, err.field) == (9, "horizons")
    assert reason in err.reason


def test_horizons_need_a_threshold_or_rise_condition_without_tests(tmp_path):
    text = with_line(7, "        above: 0.001\n      change: {max_q: 0.01}")
    text = text.replace("    severity: sev2\n", "    severity: sev2\n    horizons: [1 hour]\n")
    err = error_of(tmp_path, text)
    assert err.field == "horizons" and "threshold or rise condition" in err.reason
    with pytest.raises(ValueError, match="threshold or rise condition"):
        Rule(
            name="R", metric="violation_rate", by=("locale",), severity="sev2", owner="o",
            runbook="r", summary="s", change=Change(max_q=0.01, direction="up"),
            horizons=(timedelta(hours=1),),
        )  # fmt: skip


# --- concentrated ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False)])
def test_concentrated_is_read_as_a_boolean(tmp_path, value, expected):
    text = with_line(8, f"    severity: sev2\n    concentrated: {value}")
    (rule,) = load_rules([write(tmp_path, "safety.yaml", text)])
    assert rule.concentrated is expected
    (plain,) = load_rules([write(tmp_path, "plain.yaml", BASE)])
    assert plain.concentrated is None


def test_concentrated_mistake_names_the_line(tmp_path):
    err = error_of(tmp_path, with_line(8, "    severity: sev2\n    concentrated: sometimes"))
    assert (err.line, err.field) == (9, "concentrated")
