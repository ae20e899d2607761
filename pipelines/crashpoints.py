"""Named instants at which the job can be made to die as `kill -9` would, for fault tests.

The fault-injection suite (tests/faults/) must hit the instants that chance rarely hits:
inside a batch's commit transaction, between the commit and Spark's checkpoint write, after
the dead-letter write and before the commit, between a commit and its derivation. The job
calls `crash_point(name, batch_id)` at each; when the environment variable
`SAFEWATCH_CRASH_AT` lists ``name:batch_id`` (comma-separated), the job's whole process
group (the Python driver, its JVM and Spark's Python workers, started by the suite in a
session of their own) gets SIGKILL there. Unset, as in every real run, it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "SAFEWATCH_CRASH_AT"
POINTS = (
    "dlq-written",  # the batch's dead letters are in Kafka; nothing of it is committed
    "in-commit",  # every statement of the commit ran; the transaction is not committed
    "committed",  # committed; Spark has not written the batch to its checkpoint
    "before-derive",  # committed; its drift, rules and notices not yet derived
)


def armed(name: str, batch_id: int, spec: str | None = None) -> bool:
    """Whether `spec` (default: the environment variable) asks for a crash at `name` in
    batch `batch_id`.
    """
    spec = os.environ.get(ENV, "") if spec is None else spec
    return f"{name}:{batch_id}" in {s.strip() for s in spec.split(",") if s.strip()}


def crash_point(name: str, batch_id: int) -> None:
    """Die here, with the whole process group, if asked to (see the module docstring)."""
    if name not in POINTS:
        msg = f"unknown crash point {name!r}; known: {POINTS}"
        raise ValueError(msg)
    if armed(name, batch_id):
        os.killpg(os.getpgrp(), signal.SIGKILL)
