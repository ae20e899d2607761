"""`safewatch report weekly --pdf` without a working Chromium: one line saying what to do,
exit status 2, no traceback; and the sandbox flag Chromium needs as root, only as root.
"""

from __future__ import annotations

import os
import stat

import pytest

from jobs.cli import main
from pipelines.report.browser import chromium_command
from tests import report_week


def _run(capsys, monkeypatch, tmp_path, path: str, url: str | None = None):
    monkeypatch.chdir(tmp_path)  # no safewatch.toml of the repository
    monkeypatch.setenv("PATH", path)
    env = report_week.environ(url or f"sqlite:///{tmp_path / 'wh.db'}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "reports"
    week = str(report_week.WEEK)
    code = main(["report", "weekly", "--week", week, "--out", str(out), "--pdf"])
    return code, capsys.readouterr().err, out


def test_pdf_without_chromium_is_one_line_naming_the_package(capsys, monkeypatch, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    code, err, out = _run(capsys, monkeypatch, tmp_path, str(empty))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("safewatch: error: Chromium not found")
    assert "chromium" in lines[0].split("install", 1)[1]  # what to install
    assert "Traceback" not in err
    assert not out.exists()  # said before anything was written


def test_pdf_with_a_failing_chromium_is_one_line_too(capsys, monkeypatch, tmp_path):
    url, engine = report_week.warehouse(tmp_path)
    engine.dispose()
    fake = tmp_path / "bin" / "chromium"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    code, err, out = _run(capsys, monkeypatch, tmp_path, f"{fake.parent}{os.pathsep}/bin", url)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines == ["safewatch: error: chromium failed (3): cannot open display"]
    assert (out / f"safety-posture-{report_week.WEEK}.html").is_file()  # the HTML is kept
    assert not list(out.glob("*.pdf")) and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(("euid", "sandboxed"), [(0, False), (1000, True)])
def test_no_sandbox_only_as_root(euid, sandboxed):
    cmd = chromium_command("/usr/bin/chromium", "/tmp/p", ["--dump-dom", "x"], euid=euid)
    assert ("--no-sandbox" not in cmd) == sandboxed
    assert cmd[0] == "/usr/bin/chromium" and cmd[-2:] == ["--dump-dom", "x"]
    assert "--headless" in cmd
