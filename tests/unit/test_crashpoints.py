"""Crash points (pipelines/crashpoints.py): armed only by the environment variable, and
then the whole process group dies with SIGKILL, children included (the JVM of a real job).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipelines.crashpoints import ENV, POINTS, armed, crash_point

SCRIPT = """
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(60)"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print(child.pid, flush=True)
from pipelines.crashpoints import crash_point
crash_point("in-commit", 3)
print("survived", flush=True)
"""


def test_armed_reads_name_and_batch_from_the_spec() -> None:
    assert armed("in-commit", 3, "committed:1, in-commit:3")
    assert not armed("in-commit", 31, "in-commit:3")
    assert not armed("committed", 3, "in-commit:3")
    assert not armed("in-commit", 3, "")
    with pytest.raises(ValueError, match="unknown crash point 'in-comit'"):
        crash_point("in-comit", 3)
    assert set(POINTS) == {"dlq-written", "in-commit", "committed", "before-derive"}


def _run(env_value: str | None) -> tuple[subprocess.CompletedProcess[str], int]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if env_value is not None:
        env[ENV] = env_value
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
        start_new_session=True, timeout=60, check=False,
    )  # fmt: skip
    return done, int(done.stdout.split()[0])


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A killed child is a zombie until init reaps it; it is dead all the same.
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_an_armed_point_kills_the_whole_group_and_an_unarmed_one_does_nothing() -> None:
    killed, child = _run("in-commit:3")
    assert killed.returncode == -signal.SIGKILL
    assert "survived" not in killed.stdout
    assert _gone(child)  # the child of the group died with it
    other, child = _run("in-commit:4")
    assert other.returncode == 0 and "survived" in other.stdout
    os.kill(child, signal.SIGKILL)
    unset, child = _run(None)
    assert unset.returncode == 0 and "survived" in unset.stdout
    os.kill(child, signal.SIGKILL)
