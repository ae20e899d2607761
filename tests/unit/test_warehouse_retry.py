"""Riding out a warehouse outage (pipelines/warehouse/retry.py): which errors are waited
for, the waits, the budget, and the message when it is spent. The errors are the ones the
drivers raise, produced for real where that is possible (SQLite's lock and read-only file,
a PostgreSQL port nobody listens on).
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from pipelines.settings import Settings, WarehouseSettings
from pipelines.warehouse.retry import (
    RetryPolicy,
    WarehouseUnavailableError,
    WarehouseWriteError,
    is_transient,
    retrying,
    short_error,
)


class FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def locked_error(tmp_path: Path) -> OperationalError:
    """SQLite's 'database is locked', for real: a second writer with no busy timeout."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
    except OperationalError as exc:
        return exc
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
    pytest.fail("the second writer was not refused")


def refused_error() -> OperationalError:
    """PostgreSQL's driver on a port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = create_engine(
        f"postgresql+psycopg://nobody:s3cret@127.0.0.1:{port}/db",
        connect_args={"connect_timeout": 2},
    )
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    pytest.fail("a connection to a closed port succeeded")


def read_only_db(tmp_path: Path) -> tuple[Engine, Path]:
    """An SQLite file with a table `t`, and an engine that opens it read-only (which binds
    root too, unlike file permissions).
    """
    path = tmp_path / "ro.db"
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    setup.commit()
    setup.close()
    return create_engine(f"sqlite:///file:{path}?mode=ro&uri=true"), path


def test_what_is_worth_waiting_for(tmp_path: Path) -> None:
    locked = locked_error(tmp_path)
    assert "locked" in str(locked.orig) and is_transient(locked)
    refused = refused_error()
    assert is_transient(refused)
    # Waiting does not fix a read-only file, a missing table or a broken constraint.
    read_only, path = read_only_db(tmp_path)
    engine = create_engine(f"sqlite:///{path}")
    errors = []
    for e, sql in ((read_only, "INSERT INTO t VALUES (1)"), (engine, "SELECT * FROM missing")):
        with pytest.raises(OperationalError) as info, e.begin() as conn:
            conn.execute(text(sql))
        errors.append(info.value)
    assert "readonly" in str(errors[0].orig) and "no such table" in str(errors[1].orig)
    assert not any(map(is_transient, errors))
    writable = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with writable.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with pytest.raises(IntegrityError) as dup, writable.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert not is_transient(dup.value)
    assert not is_transient(ValueError("not a database error"))
    for e in (engine, read_only, writable):
        e.dispose()


def test_the_short_error_is_the_drivers_first_line_without_the_password() -> None:
    refused = refused_error()
    shown = short_error(refused)
    assert "\n" not in shown and "s3cret" not in shown
    assert "127.0.0.1" in shown  # where it tried: what on-call needs
    assert "SQL" not in shown  # not SQLAlchemy's statement and background link


def test_waits_double_up_to_the_maximum() -> None:
    waits = RetryPolicy(budget_s=100, initial_s=1, max_s=10).waits()
    assert [next(waits) for _ in range(7)] == [1, 2, 4, 8, 10, 10, 10]
    with pytest.raises(ValueError, match="initial_s"):
        RetryPolicy(initial_s=5, max_s=1)
    with pytest.raises(ValueError, match="budget_s"):
        RetryPolicy(budget_s=-1)


def test_it_recovers_when_the_database_comes_back(tmp_path: Path) -> None:
    error = locked_error(tmp_path)
    fake = FakeTime()
    calls: list[int] = []
    lines: list[str] = []

    def work() -> str:
        calls.append(1)
        if len(calls) <= 3:
            raise error
        return "committed"

    got = retrying(
        work, policy=RetryPolicy(budget_s=60, initial_s=1, max_s=30), what="committing batch 7",
        target="sqlite:///x.db", log=lines.append, sleep=fake.sleep, clock=fake.clock,
    )  # fmt: skip
    assert got == "committed" and len(calls) == 4
    assert fake.slept == [1, 2, 4]
    assert len(lines) == 4
    assert lines[0].startswith("warehouse: committing batch 7 failed (database is locked)")
    assert "trying again in 1 s (0 s of the 60 s retry budget used)" in lines[0]
    assert "3 s of the 60 s" in lines[2]
    assert lines[-1] == "warehouse: reachable again, committing batch 7 done after 4 tries (7 s)"


def test_it_stops_with_one_clear_line_when_the_budget_is_spent() -> None:
    error = refused_error()
    fake = FakeTime()
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise error

    with pytest.raises(WarehouseUnavailableError) as info:
        retrying(
            work, policy=RetryPolicy(budget_s=20, initial_s=2, max_s=8), what="committing batch 3",
            target="postgresql+psycopg://nobody:***@127.0.0.1/db", log=lambda _m: None,
            sleep=fake.sleep, clock=fake.clock,
        )  # fmt: skip
    # Waits 2, 4, 8, then the 6 s left of the budget; the try after it fails at 20 s.
    assert fake.slept == [2, 4, 8, 6]
    assert len(calls) == 5
    message = str(info.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(
        "the warehouse postgresql+psycopg://nobody:***@127.0.0.1/db was unreachable for 20 s "
        "while committing batch 3 (5 tries; last error: "
    )
    assert "SAFEWATCH_WAREHOUSE__RETRY_BUDGET_S (now 20)" in message
    assert info.value.__cause__ is error


def test_a_budget_of_zero_stops_at_the_first_failure_and_other_errors_pass_through() -> None:
    error = refused_error()
    fake = FakeTime()

    def refused() -> None:
        raise error

    with pytest.raises(
        WarehouseUnavailableError,
        match=r"for 0 s while reading \(1 try; last error: connection failed",
    ):
        retrying(refused, policy=RetryPolicy(budget_s=0), what="reading", target="db",
                 log=lambda _m: None, sleep=fake.sleep, clock=fake.clock)  # fmt: skip
    assert fake.slept == []

    def wrong() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        retrying(wrong, policy=RetryPolicy(), what="reading", target="db",
                 log=lambda _m: None, sleep=fake.sleep, clock=fake.clock)  # fmt: skip
    assert fake.slept == []


def test_the_policy_comes_from_the_settings_and_bad_waits_are_refused() -> None:
    policy = RetryPolicy.of(Settings().warehouse)
    assert policy == RetryPolicy(300.0, 1.0, 30.0)
    custom = WarehouseSettings(retry_budget_s=60, retry_initial_s=0.5, retry_max_s=4)
    assert RetryPolicy.of(custom) == RetryPolicy(60.0, 0.5, 4.0)
    with pytest.raises(ValueError, match="retry_max_s .* must be at least retry_initial_s"):
        WarehouseSettings(retry_initial_s=10, retry_max_s=5)


def test_a_write_the_database_refuses_for_good_is_one_line_not_a_wait(tmp_path: Path) -> None:
    read_only, _ = read_only_db(tmp_path)
    fake = FakeTime()

    def insert() -> None:
        with read_only.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))

    with pytest.raises(WarehouseWriteError) as info:
        retrying(insert, policy=RetryPolicy(), what="committing batch 4",
                 target="sqlite:///ro.db", log=lambda _m: None, sleep=fake.sleep,
                 clock=fake.clock)  # fmt: skip
    assert fake.slept == []  # not waited for
    message = str(info.value)
    assert message.startswith(
        "the warehouse sqlite:///ro.db refused committing batch 4: attempt to write a readonly "
        "database. Nothing of it was committed"
    )
    assert "\n" not in message
    read_only.dispose()
