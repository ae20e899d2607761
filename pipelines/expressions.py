"""Spark column expressions built once per Spark context and reused by every micro-batch.

Building an expression is Python work per node (one call into the JVM each), and the
contract checks and histogram bins have thousands of nodes: rebuilding them for every batch
would be a fixed cost of seconds. Expressions are unresolved, so one instance serves every
DataFrame of the context that built it; a new context (a test session, a restarted driver)
builds them again.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


def per_spark_context(build: Callable[[], T]) -> Callable[[], T]:
    """`build()` once per active Spark context; later calls return the same value."""
    built: dict[int, T] = {}

    @wraps(build)
    def get() -> T:
        from pyspark import SparkContext

        key = id(SparkContext._active_spark_context)  # noqa: SLF001 - expressions live in its JVM
        if key not in built:
            built.clear()
            built[key] = build()
        return built[key]

    return get
