"""Generated Alertmanager and Prometheus configs, checked by the tools that ship with them.

No service is started: amtool and promtool (Debian's prometheus-alertmanager and prometheus
packages, installed by `infra/setup.sh --test`) validate the files.
"""

import shutil
import socket
import stat
import subprocess
import textwrap

import pytest
import yaml

from pipelines.errors import ConfigError, InfraError
from pipelines.infra.alertmanager import LocalAlertmanager
from pipelines.infra.prometheus import (
    LocalPrometheus,
    prometheus_config,
    promtool_check_config,
    promtool_check_rules,
    promtool_test_rules,
)
from pipelines.infra.service import find_binary
from pipelines.settings import AlertingSettings

HOOK = "https://hooks.example.org/services/T000/B000/secret-token"
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool not installed: run infra/setup.sh --test"
)
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed: run infra/setup.sh --test"
)


def _alertmanager_yml(tmp_path, **settings):
    server = LocalAlertmanager(AlertingSettings(**settings), tmp_path, 19193, log=lambda _m: None)
    return server.write_config()


def test_config_routes_every_alert_to_the_receiver_that_calls_the_webhook(tmp_path):
    path = _alertmanager_yml(tmp_path, webhook_url=HOOK)

    config = yaml.safe_load(path.read_text())

    assert config["route"]["receiver"] == "safewatch"
    assert config["route"]["group_wait"] == "1s"
    assert config["route"]["group_interval"] == "5s"
    assert config["route"]["repeat_interval"] == "1h"
    assert config["global"]["resolve_timeout"] == "5m"
    assert config["receivers"] == [
        {"name": "safewatch", "webhook_configs": [{"url": HOOK, "send_resolved": True}]}
    ]
    # The webhook URL is a secret: the file is for its owner only.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_config_without_webhook_keeps_alerts_in_alertmanager_only(tmp_path):
    config = yaml.safe_load(_alertmanager_yml(tmp_path).read_text())

    assert config["receivers"] == [{"name": "safewatch"}]
    assert config["route"]["receiver"] == "safewatch"


@needs_amtool
@pytest.mark.parametrize("webhook", [HOOK, None], ids=["webhook", "no-webhook"])
def test_amtool_accepts_the_generated_config(tmp_path, webhook):
    path = _alertmanager_yml(tmp_path, webhook_url=webhook)

    result = subprocess.run(
        ["amtool", "check-config", str(path)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "1 receivers" in result.stdout


def test_prometheus_config_scrapes_the_job_and_sends_alerts_to_alertmanager():
    config = prometheus_config(
        AlertingSettings(metrics_port=9108),
        rule_files="/srv/alerts/*.rules.yml",
        alertmanager_url="https://am.example.org:9443/alertmanager/",
    )

    assert config["scrape_configs"] == [
        {"job_name": "safewatch", "static_configs": [{"targets": ["127.0.0.1:9108"]}]}
    ]
    assert config["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}
    assert config["rule_files"] == ["/srv/alerts/*.rules.yml"]
    assert config["alerting"]["alertmanagers"] == [
        {
            "scheme": "https",
            "api_version": "v2",
            "static_configs": [{"targets": ["am.example.org:9443"]}],
            "path_prefix": "/alertmanager/",
        }
    ]


def test_prometheus_config_names_the_setting_of_a_url_without_scheme():
    with pytest.raises(ConfigError, match="SAFEWATCH_ALERTING__ALERTMANAGER_URL"):
        prometheus_config(AlertingSettings(), rule_files="r.yml", alertmanager_url="127.0.0.1:9193")


@needs_promtool
def test_promtool_accepts_the_generated_prometheus_config_without_rule_files(tmp_path):
    settings = AlertingSettings(prometheus_rules=str(tmp_path / "absent" / "*.rules.yml"))
    server = LocalPrometheus(settings, tmp_path, 19190, log=lambda _m: None)

    path = server.write_config()
    result = promtool_check_config(path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(path.read_text())["rule_files"] == [settings.prometheus_rules]


@needs_promtool
def test_promtool_checks_and_unit_tests_rule_files(tmp_path):
    rules = tmp_path / "safewatch.rules.yml"
    rules.write_text(
        textwrap.dedent(
            """\
            groups:
              - name: safewatch
                rules:
                  - alert: SafewatchJobDown
                    expr: up{job="safewatch"} == 0
                    for: 1m
                    labels: {severity: page}
                    annotations: {summary: "the streaming job's /metrics is down"}
            """
        )
    )
    tests = tmp_path / "safewatch.test.yml"
    tests.write_text(
        textwrap.dedent(
            f"""\
            rule_files: [{rules}]
            evaluation_interval: 1m
            tests:
              - interval: 1m
                input_series:
                  - series: 'up{{job="safewatch", instance="127.0.0.1:9108"}}'
                    values: '0x5'
                alert_rule_test:
                  - eval_time: 3m
                    alertname: SafewatchJobDown
                    exp_alerts:
                      - exp_labels:
                          severity: page
                          job: safewatch
                          instance: 127.0.0.1:9108
                        exp_annotations:
                          summary: "the streaming job's /metrics is down"
            """
        )
    )
    broken = tmp_path / "broken.rules.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: up ==\n")

    checked = promtool_check_rules([rules])
    tested = promtool_test_rules([tests])
    rejected = promtool_check_rules([broken])

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert rejected.returncode != 0
    assert "broken.rules.yml" in rejected.stdout + rejected.stderr


def test_promtool_helpers_name_a_missing_promtool(tmp_path):
    with pytest.raises(InfraError, match="promtool"):
        promtool_check_rules([tmp_path / "x.rules.yml"], promtool=str(tmp_path / "promtool"))
    with pytest.raises(ValueError, match="non-empty"):
        promtool_test_rules([])


def test_missing_binary_names_it_and_the_debian_package():
    with pytest.raises(InfraError, match="no-such-alertmanager.*prometheus-alertmanager"):
        find_binary(("no-such-alertmanager",), "prometheus-alertmanager")


def test_port_in_use_names_the_port_setting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # /bin/true stands in for the binary: the port is checked before anything runs.
        server = LocalAlertmanager(
            AlertingSettings(), tmp_path, port, log=lambda _m: None, binary="/bin/true"
        )

        with pytest.raises(InfraError, match="SAFEWATCH_ALERTING__ALERTMANAGER_PORT"):
            server.start()
