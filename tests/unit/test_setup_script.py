"""infra/setup.sh: a lock that no longer matches pyproject.toml is refused with one line that
says what to run, before anything is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_stale_lock_is_refused_in_one_line_without_colour(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    shutil.copy(REPO / "infra" / "setup.sh", tmp_path / "infra" / "setup.sh")
    shutil.copy(REPO / "uv.lock", tmp_path / "uv.lock")
    pyproject = (REPO / "pyproject.toml").read_text()
    # A new dependency the lock has never seen.
    changed = pyproject.replace("dependencies = [\n", 'dependencies = [\n    "tomli-w>=1.0",\n', 1)
    assert changed != pyproject
    (tmp_path / "pyproject.toml").write_text(changed)
    run = subprocess.run(
        ["bash", "infra/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "setup: uv.lock does not match pyproject.toml; refresh it with: make lock "
        "(then commit uv.lock)"
    )
    assert not (tmp_path / ".venv" / "bin" / "safewatch").exists()  # nothing installed
    assert not re.search(r"\x1b\[", run.stdout + run.stderr)  # not a terminal: no colour
