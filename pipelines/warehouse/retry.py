"""Ride out a transient warehouse outage (a restart, a failover) within a time budget.

Every write of the job is one transaction (a batch's commit, its derivation), so a
transaction that failed because the database went away left nothing behind and can simply
run again. `retrying` runs such a unit of work, and when it fails with an error that says
the database cannot be reached (`is_transient`) waits and tries again, the waits doubling
from `RetryPolicy.initial_s` up to `RetryPolicy.max_s`, until `RetryPolicy.budget_s` seconds
have passed since the first failure; then it raises `WarehouseUnavailableError`, one line
that says what failed, for how long, and what to do. Any other error is raised at once: a
permission, a constraint or a syntax error does not go away by waiting; the database's own
operational errors among them (SQLite's full disk or read-only file) as
`WarehouseWriteError`, one line that says what to fix.

The caller makes the unit of work safe to repeat: a commit whose acknowledgement was lost
may have been applied, so the sink checks its ledger before trying again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from pipelines.errors import SafewatchError
from pipelines.redact import redact_text
from pipelines.settings import WarehouseSettings

T = TypeVar("T")

# SQLite's own transient condition: another connection holds the lock past the busy timeout.
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")


class WarehouseUnavailableError(SafewatchError):
    """The warehouse stayed unreachable for the whole retry budget."""


class WarehouseWriteError(SafewatchError):
    """The warehouse refused the work for a reason waiting does not fix (a full disk, a
    read-only file).
    """


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying (`budget_s`, from the first failure; 0: never retry) and how
    long to wait between tries (doubling from `initial_s` up to `max_s`).
    """

    budget_s: float = 300.0
    initial_s: float = 1.0
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.budget_s < 0 or self.initial_s <= 0 or self.max_s < self.initial_s:
            msg = (
                "need budget_s >= 0 and 0 < initial_s <= max_s, got "
                f"{self.budget_s}, {self.initial_s}, {self.max_s}"
            )
            raise ValueError(msg)

    @classmethod
    def of(cls, settings: WarehouseSettings) -> RetryPolicy:
        """The policy of settings warehouse.retry_budget_s, retry_initial_s, retry_max_s."""
        return cls(settings.retry_budget_s, settings.retry_initial_s, settings.retry_max_s)

    def waits(self) -> Iterator[float]:
        """The waits before the second, third, ... try: initial_s, doubling, capped at max_s."""
        wait = self.initial_s
        while True:
            yield wait
            wait = min(wait * 2, self.max_s)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or went away mid-transaction
    (worth waiting for), rather than that the statement itself is wrong.

    A lost connection (SQLAlchemy marks it `connection_invalidated`), any OperationalError or
    InterfaceError of a server database (PostgreSQL's for refused connections, a server
    shutting down, a connection reset), and SQLite's "database is locked". Not SQLite's
    other OperationalErrors (a read-only file, a missing table): waiting does not fix them.
    """
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    module = type(exc.orig).__module__ if exc.orig is not None else ""
    if module.startswith("sqlite3"):
        text = str(exc.orig).lower()
        return any(s in text for s in _SQLITE_TRANSIENT)
    return True


def short_error(exc: BaseException) -> str:
    """The first line of the driver's message (not SQLAlchemy's statement and parameters),
    with anything that looks like a credential masked.
    """
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(orig).strip().splitlines() if line.strip()]
    return redact_text(lines[0] if lines else type(orig).__name__)


def retrying(
    work: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    target: str,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`work()`, tried again after transient failures (`is_transient`) until it succeeds or
    `policy.budget_s` seconds have passed since the first failure.

    `what` names the work in messages ("committing batch 12"), `target` the warehouse (its URL
    without password). Logs one line per failed try and one when it recovers. Raises
    WarehouseUnavailableError once the budget is spent (chained to the last error), and
    any other error as it is, except the database's own operational errors (a full disk,
    a read-only file, an I/O error), raised as WarehouseWriteError: one line that says so.
    """
    first_failure: float | None = None
    waits = policy.waits()
    tries = 0
    while True:
        tries += 1
        try:
            result = work()
        except Exception as exc:
            if not is_transient(exc):
                if isinstance(exc, OperationalError):
                    msg = (
                        f"the warehouse {target} refused {what}: {short_error(exc)}. Nothing "
                        "of it was committed: fix the cause (free space, make the database "
                        "writable) and restart the job; it resumes where it stopped"
                    )
                    raise WarehouseWriteError(msg) from exc
                raise
            now = clock()
            if first_failure is None:
                first_failure = now
            elapsed = now - first_failure
            reason = short_error(exc)
            left = policy.budget_s - elapsed
            if left <= 0:
                msg = (
                    f"the warehouse {target} was unreachable for {elapsed:.0f} s while "
                    f"{what} ({tries} {'try' if tries == 1 else 'tries'}; last error: "
                    f"{reason}). Nothing of it was "
                    "committed: restart the job once the database is back and it resumes "
                    "where it stopped, or allow longer outages with "
                    f"SAFEWATCH_WAREHOUSE__RETRY_BUDGET_S (now {policy.budget_s:g})"
                )
                raise WarehouseUnavailableError(msg) from exc
            wait = min(next(waits), left)
            log(
                f"warehouse: {what} failed ({reason}); trying again in {wait:.0f} s "
                f"({elapsed:.0f} s of the {policy.budget_s:g} s retry budget used)"
            )
            sleep(wait)
            continue
        if first_failure is not None:
            log(
                f"warehouse: reachable again, {what} done after {tries} tries "
                f"({clock() - first_failure:.0f} s)"
            )
        return result


__all__ = [
    "RetryPolicy",
    "WarehouseUnavailableError",
    "WarehouseWriteError",
    "is_transient",
    "retrying",
    "short_error",
]
