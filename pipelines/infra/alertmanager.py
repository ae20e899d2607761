"""A local Prometheus Alertmanager (Debian's `prometheus-alertmanager`) run as a detached process.

Everything it owns lives in `<data_dir>/alertmanager/`: `alertmanager.yml` (rewritten from the
settings on every start), `data/` (silences and notification log), `alertmanager.pid` and
`alertmanager.log` (its output of the current run). Clustering is switched off, so it listens
on 127.0.0.1:`port` only. Started, stopped and reported on as every server of its family
(`pipelines.infra.service.LocalServer`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipelines.files import write_atomically
from pipelines.infra.service import LocalServer
from pipelines.settings import AlertingSettings

# Debian's name first, then upstream's.
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
RECEIVER = "safewatch"
_PORT_SETTING = "SAFEWATCH_ALERTING__ALERTMANAGER_PORT"


def alertmanager_config(settings: AlertingSettings) -> dict[str, Any]:
    """Every alert routed to the one receiver `safewatch`, which calls `webhook_url` when set.

    Alerts are grouped by `alertname`; the timings come from the settings (`group_wait` 1s by
    default, so tests see notifications quickly).
    """
    receiver: dict[str, Any] = {"name": RECEIVER}
    if settings.webhook_url is not None:
        receiver["webhook_configs"] = [
            {"url": settings.webhook_url.get_secret_value(), "send_resolved": True}
        ]
    return {
        "global": {"resolve_timeout": settings.resolve_timeout},
        "route": {
            "receiver": RECEIVER,
            "group_by": ["alertname"],
            "group_wait": settings.group_wait,
            "group_interval": settings.group_interval,
            "repeat_interval": settings.repeat_interval,
        },
        "receivers": [receiver],
    }


def render_alertmanager_config(settings: AlertingSettings) -> str:
    """`alertmanager_config` as YAML text."""
    header = "# Written by Safewatch (pipelines/infra/alertmanager.py); edits are overwritten.\n"
    return header + yaml.safe_dump(alertmanager_config(settings), sort_keys=False)


class LocalAlertmanager(LocalServer):
    """Writes the config, starts, stops and reports on a local Alertmanager.

    `data_dir` (default `settings.data_dir`) and `port` (default `settings.alertmanager_port`)
    override the settings, e.g. for tests on free ports; relative paths are resolved against
    the working directory at construction. `binary` defaults to `prometheus-alertmanager` (or
    `alertmanager`) on PATH.
    """

    name = "Alertmanager"
    binaries = ALERTMANAGER_BINARIES
    package = "prometheus-alertmanager"
    port_setting = _PORT_SETTING

    def __init__(
        self,
        settings: AlertingSettings,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        log: Callable[[str], None] = print,
        binary: str | None = None,
    ) -> None:
        self.settings = settings
        root = Path(data_dir) if data_dir is not None else settings.data_dir
        folder = root.expanduser().absolute() / "alertmanager"
        super().__init__(
            folder,
            port if port is not None else settings.alertmanager_port,
            folder / "alertmanager.yml",
            timeout_s=settings.start_timeout_s,
            log=log,
            binary=binary,
        )

    def write_config(self) -> Path:
        """Write `alertmanager.yml` from the settings and return its path.

        The file is readable by its owner only: it may hold the webhook's secret URL.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.config_file, render_alertmanager_config(self.settings), 0o600)
        return self.config_file

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.path={self.data_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no HA gossip port (default 9094)
            "--log.level=info",
        ]

    def hint(self, binary: str) -> str:
        return f"{self.log_file}; is {binary} Alertmanager 0.25 or newer?"
