"""A local Prometheus (Debian's `prometheus`) for tests and local trials, and promtool helpers.

It scrapes the streaming job's `/metrics` on 127.0.0.1:`metrics_port` every 5 s, evaluates the
rule files matching `prometheus_rules` every 5 s and sends firing alerts to the Alertmanager
at `alertmanager_url`. Everything it owns lives in `<data_dir>/prometheus/`: `prometheus.yml`
(rewritten on every start), `data/` (the TSDB), `prometheus.pid` and `prometheus.log`.
Production runs its own Prometheus; this one only makes the alert path testable end to end.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from pipelines.errors import ConfigError, InfraError
from pipelines.files import write_atomically
from pipelines.infra.service import LocalServer, find_binary
from pipelines.redact import redact_url
from pipelines.settings import AlertingSettings

SCRAPE_JOB = "safewatch"
_PORT_SETTING = "SAFEWATCH_ALERTING__PROMETHEUS_PORT"


def prometheus_config(
    settings: AlertingSettings, *, rule_files: str | Path, alertmanager_url: str
) -> dict[str, Any]:
    """Scrape 127.0.0.1:`metrics_port` and evaluate `rule_files` (a glob) every 5 s.

    Firing alerts go to `alertmanager_url` (API v2); its user information, if any, becomes
    Prometheus' `basic_auth` (the file is then readable by its owner only).

    Raises ConfigError when `alertmanager_url` is not an http(s) URL with a host.
    """
    am = urlsplit(alertmanager_url)
    if am.scheme not in ("http", "https") or not am.netloc:
        msg = (
            f"alertmanager URL {redact_url(alertmanager_url)!r} is not http(s)://host:port; "
            "check SAFEWATCH_ALERTING__ALERTMANAGER_URL"
        )
        raise ConfigError(msg)
    alertmanager: dict[str, Any] = {
        "scheme": am.scheme,
        "api_version": "v2",
        "static_configs": [{"targets": [am.netloc.rpartition("@")[2]]}],
    }
    if am.username is not None:
        alertmanager["basic_auth"] = {
            "username": unquote(am.username),
            "password": unquote(am.password or ""),
        }
    if am.path.strip("/"):
        alertmanager["path_prefix"] = am.path
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(rule_files)],
        "alerting": {"alertmanagers": [alertmanager]},
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{settings.metrics_port}"]}],
            }
        ],
    }


class LocalPrometheus(LocalServer):
    """Writes the config, starts, stops and reports on a local Prometheus.

    `data_dir`, `port` and `alertmanager_url` override the settings (e.g. for tests on free
    ports); relative paths, including the `prometheus_rules` glob, are resolved against the
    working directory at construction. `binary` defaults to `prometheus` on PATH.
    """

    name = "Prometheus"
    binaries = ("prometheus",)
    package = "prometheus"
    port_setting = _PORT_SETTING

    def __init__(
        self,
        settings: AlertingSettings,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        alertmanager_url: str | None = None,
        log: Callable[[str], None] = print,
        binary: str | None = None,
    ) -> None:
        self.settings = settings
        root = Path(data_dir) if data_dir is not None else settings.data_dir
        folder = root.expanduser().absolute() / "prometheus"
        self.alertmanager_url = alertmanager_url or settings.alertmanager_url
        self.rule_files = Path(settings.prometheus_rules).expanduser().absolute()
        super().__init__(
            folder,
            port if port is not None else settings.prometheus_port,
            folder / "prometheus.yml",
            timeout_s=settings.start_timeout_s,
            log=log,
            binary=binary,
        )

    def write_config(self) -> Path:
        """Write `prometheus.yml` from the settings and return its path."""
        config = prometheus_config(
            self.settings, rule_files=self.rule_files, alertmanager_url=self.alertmanager_url
        )
        header = "# Written by Safewatch (pipelines/infra/prometheus.py); edits are overwritten.\n"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.config_file, header + yaml.safe_dump(config, sort_keys=False), 0o600)
        return self.config_file

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",  # POST /-/reload picks up changed rule files
            "--log.level=info",
        ]

    def hint(self, binary: str) -> str:
        return f"{self.log_file}; check the rule files {self.rule_files} with promtool"


def promtool_check_config(
    path: str | Path, *, promtool: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`promtool check config <path>` (also checks the rule files it names).

    Returns the finished process (check `returncode`; the findings are in stdout/stderr);
    raises InfraError when promtool is not installed.
    """
    return _promtool(["check", "config", str(path)], promtool)


def promtool_check_rules(
    paths: Sequence[str | Path], *, promtool: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`promtool check rules <paths…>`: syntax and PromQL of Prometheus rule files.

    Returns the finished process (check `returncode`); raises InfraError when promtool is not
    installed and ValueError when `paths` is empty.
    """
    return _promtool(["check", "rules", *_paths(paths)], promtool)


def promtool_test_rules(
    paths: Sequence[str | Path], *, promtool: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`promtool test rules <paths…>`: run rule unit-test files (input series, expected alerts).

    Returns the finished process (check `returncode`); raises InfraError when promtool is not
    installed and ValueError when `paths` is empty.
    """
    return _promtool(["test", "rules", *_paths(paths)], promtool)


def _paths(paths: Sequence[str | Path]) -> list[str]:
    if isinstance(paths, (str, Path)) or not paths:
        msg = f"promtool needs a non-empty list of files, got {paths!r}"
        raise ValueError(msg)
    return [str(p) for p in paths]


def _promtool(args: list[str], promtool: str | None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(promtool) if promtool else None
    if promtool and exe is None:
        msg = f"promtool {promtool!r} not found or not executable"
        raise InfraError(msg)
    exe = exe or find_binary(("promtool",), "prometheus", "promtool=")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, check=False)
