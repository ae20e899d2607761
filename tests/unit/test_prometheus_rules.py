"""The Prometheus rules and config are valid, tested, and every alert is documented."""

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipelines.infra.prometheus import (
    promtool_check_config,
    promtool_check_rules,
    promtool_test_rules,
)
from pipelines.monitoring import JobMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((REPO_ROOT / "alerts" / "prometheus").glob("*.rules.yml"))
TESTS = sorted((REPO_ROOT / "alerts" / "prometheus").glob("*.tests.yml"))
CONFIG = REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"
PIPELINE_ALERTS = {
    "SafewatchPipelineStalled",
    "SafewatchBatchesFailing",
    "SafewatchDeadLetterRateHigh",
    "SafewatchConsumerLagHigh",
    "SafewatchNotificationsFailing",
    "SafewatchRedactionFailures",
}


def _alerting_rules() -> list[tuple[Path, dict]]:
    return [
        (path, rule)
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def _ok(proc) -> None:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"


def test_there_are_rule_and_test_files():
    assert RULES
    assert TESTS


def test_promtool_checks_the_rule_files():
    _ok(promtool_check_rules(RULES))


def test_promtool_unit_tests_of_the_rules_pass():
    _ok(promtool_test_rules(TESTS))


def test_every_rules_file_is_unit_tested():
    tested = {
        (path.parent / name).resolve()
        for path in TESTS
        for name in yaml.safe_load(path.read_text())["rule_files"]
    }
    assert set(RULES) <= tested


def test_example_config_passes_promtool_and_loads_the_rules():
    proc = promtool_check_config(CONFIG)
    _ok(proc)
    assert "pipeline.rules.yml" in proc.stdout + proc.stderr


def test_pipeline_alerts_are_the_documented_ones():
    assert {rule["alert"] for _, rule in _alerting_rules()} == PIPELINE_ALERTS


@pytest.mark.parametrize(
    ("path", "rule"),
    _alerting_rules(),
    ids=[f"{p.name}:{r['alert']}:{i}" for i, (p, r) in enumerate(_alerting_rules())],
)
def test_alert_has_severity_summary_description_and_its_runbook(path, rule):
    name = rule["alert"]
    assert rule.get("labels", {}).get("severity") in ("sev1", "sev2", "sev3", "sev4"), name
    annotations = rule.get("annotations", {})
    assert annotations.get("summary", "").strip(), name
    assert annotations.get("description", "").strip(), name
    assert annotations.get("runbook_url") == f"runbooks/{name}.md"


@pytest.mark.parametrize("name", sorted(PIPELINE_ALERTS))
def test_every_alert_is_in_the_observability_docs(name):
    assert f"`{name}`" in (REPO_ROOT / "docs" / "observability.md").read_text()


def test_every_alert_has_a_unit_test():
    tested = {
        case["alertname"]
        for path in TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == PIPELINE_ALERTS


def test_rules_only_name_metrics_the_exporter_exports():
    registry = CollectorRegistry()
    metrics = JobMetrics(registry)
    metrics.set_lag("safety.interactions.v1", 1)
    exported = {s.name for family in registry.collect() for s in family.samples}
    named = {
        name
        for _, rule in _alerting_rules()
        for name in re.findall(r"\bsafewatch_[a-z_]+", rule["expr"])
    }
    assert named
    assert named <= exported, named - exported
