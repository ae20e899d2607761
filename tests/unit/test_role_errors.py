"""`safewatch warehouse roles` against a server that cannot be reached: one line naming the
setting to change, no traceback and no password (a refused role: integration tests).
"""

from __future__ import annotations

import socket

import pytest

from jobs.cli import main
from pipelines.errors import InfraError
from pipelines.infra.postgres import RolePlan, create_roles
from pipelines.warehouse.engine import make_engine

SECRET = "adm1n-s3cret"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: refused


def test_an_unreachable_server_is_one_line_without_the_passwords(monkeypatch, capsys):
    url = f"postgresql+psycopg://admin:{SECRET}@127.0.0.1:{_closed_port()}/wh"
    plan = RolePlan(writer_password="wr1ter-pw", analyst_password="an4lyst-pw")
    with pytest.raises(InfraError) as err:
        create_roles(make_engine(url), plan, log=lambda _m: None)
    message = str(err.value)
    assert "\n" not in message and "check warehouse.url" in message
    for secret in (SECRET, "wr1ter-pw", "an4lyst-pw"):
        assert secret not in message

    monkeypatch.setenv("SAFEWATCH_WAREHOUSE__URL", url)
    monkeypatch.setenv("SAFEWATCH_WRITER_PASSWORD", "wr1ter-pw")
    assert main(["warehouse", "roles"]) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1
    assert out.err.startswith("safewatch: error: could not set up the warehouse roles on ")
    assert "Traceback" not in out.err and SECRET not in out.err + out.out
    assert "wr1ter-pw" not in out.err + out.out
