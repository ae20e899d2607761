"""Run the data-quality suite on one micro-batch (a flat pandas frame) with Great Expectations.

`BatchValidator` builds the GX objects once (an in-memory context, a pandas data source with a
whole-dataframe batch definition, the suite and a validation definition) and then validates
one frame per call, sampling it down to `max_rows` so that the cost per batch is bounded.

GX is configured to stay silent and local: the context is ephemeral with in-memory stores and
no data-docs site (nothing is written to disk), progress bars are off in the context's
`progress_bars` config, and analytics are off in its `analytics_enabled` config. Nothing reads
or sets environment variables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.errors import SafewatchError

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite, ValidationDefinition
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import EphemeralDataContext

__all__ = [
    "BatchValidator",
    "ExpectationOutcome",
    "FailedExpectation",
    "QualityError",
    "QualityResult",
]

# Counts only: the default SUMMARY format also returns up to 20 offending values, which here
# may be raw personal data (an e-mail in user_id) and cost a value_counts per expectation.
_RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 0}


class QualityError(SafewatchError):
    """The suite could not be run on a frame: a column is missing or an expectation raised."""


@dataclass(frozen=True)
class FailedExpectation:
    """An expectation that failed on the validated rows.

    `unexpected_percent` is as GX reports it: the share of non-null validated values (of all
    validated values for the not-null expectation), in percent.
    """

    expectation_type: str
    column: str | None
    unexpected_count: int
    unexpected_percent: float


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation on the validated rows; `element_count` counts those rows."""

    expectation_type: str
    column: str | None
    success: bool
    unexpected_count: int
    unexpected_percent: float
    element_count: int


@dataclass(frozen=True)
class QualityResult:
    """The quality of one micro-batch.

    Counts are those of the validated rows: when `sampled`, `rows_validated` of `rows_total`
    rows were drawn uniformly, and `unexpected_count * rows_total / rows_validated` estimates
    the count in the whole batch. `outcomes` has one entry per expectation, in suite order;
    `failed` lists the unsuccessful ones.
    """

    success: bool
    rows_total: int
    rows_validated: int
    sampled: bool
    expectations: int
    failed: list[FailedExpectation]
    elapsed_s: float
    outcomes: tuple[ExpectationOutcome, ...] = field(default=())

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per expectation, in suite order, for a warehouse table."""
        return [
            {
                "expectation_type": o.expectation_type,
                "column": o.column,
                "success": o.success,
                "unexpected_count": o.unexpected_count,
                "unexpected_percent": o.unexpected_percent,
                "element_count": o.element_count,
            }
            for o in self.outcomes
        ]


def _expectation_class_name(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


def _gx_suite(suite: dict[str, Any]) -> ExpectationSuite:
    import great_expectations as gx

    expectations = []
    for entry in suite["expectations"]:
        kind = entry["type"]
        cls = getattr(gx.expectations, _expectation_class_name(kind), None)
        if cls is None:
            msg = f"suite {suite['name']!r}: unknown GX expectation type {kind!r}"
            raise QualityError(msg)
        # Built one by one, not passed as dicts to ExpectationSuite, which logs and drops an
        # invalid expectation instead of raising.
        expectations.append(cls(**entry["kwargs"], meta=entry.get("meta") or {}))
    return gx.ExpectationSuite(name=suite["name"], expectations=expectations, meta=suite["meta"])


class BatchValidator:
    """Validates flat frames of events (see `pipelines.quality.suite`) against one suite.

    Construction pays the GX set-up once (import, context, data source, suite, validation
    definition); each `validate` call then costs only the validation. Each instance has its
    own in-memory GX context. Not thread-safe: use one per streaming query (foreachBatch runs
    batches one at a time on the driver).
    """

    def __init__(self, suite: dict[str, Any], *, max_rows: int = 20_000, seed: int = 0) -> None:
        if max_rows < 1:
            msg = f"max_rows must be at least 1, got {max_rows}"
            raise ValueError(msg)
        # Imported here: importing GX takes seconds, and readers of the suite or of
        # flatten_events (CLI, tests, Spark executors) should not pay it.
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self.max_rows = max_rows
        self.seed = seed
        self.columns: tuple[str, ...] = tuple(
            dict.fromkeys(
                e["kwargs"]["column"] for e in suite["expectations"] if "column" in e["kwargs"]
            )
        )
        config = DataContextConfig(
            # init_temp_docs_sites=False: no data-docs site, so nothing is ever rendered to disk.
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            # GX 1.x reads this or GX_ANALYTICS_ENABLED; the config is enough, so the process
            # environment is left alone. (1.24 no longer ships an analytics client at all; the
            # setting keeps earlier 1.x releases allowed by pyproject from phoning home.)
            analytics_enabled=False,
            # tqdm bars on stderr per metric-resolution pass, one set per batch, otherwise.
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        self._context: EphemeralDataContext = gx.get_context(
            mode="ephemeral", project_config=config
        )
        source = self._context.data_sources.add_pandas(name="safewatch")
        asset = source.add_dataframe_asset(name="micro_batch")
        batch_definition = asset.add_batch_definition_whole_dataframe(name="whole_frame")
        self._suite = self._context.suites.add(_gx_suite(suite))
        if len(self._suite.expectations) != len(suite["expectations"]):
            msg = (
                f"suite {suite['name']!r}: GX kept {len(self._suite.expectations)} of "
                f"{len(suite['expectations'])} expectations"
            )
            raise QualityError(msg)
        self._definition: ValidationDefinition = self._context.validation_definitions.add(
            gx.ValidationDefinition(
                name="micro_batch_quality", data=batch_definition, suite=self._suite
            )
        )

    @property
    def expectation_count(self) -> int:
        return len(self._suite.expectations)

    def validate(self, frame: pd.DataFrame, *, total_rows: int | None = None) -> QualityResult:
        """Validate `frame`, first sampled to at most `max_rows` rows.

        The sample is `frame.sample(n=max_rows, random_state=seed)`: the same frame and seed
        give the same rows. `total_rows` is the size of the batch `frame` was already drawn
        from, when the caller sampled it (e.g. on the Spark side); it defaults to len(frame).
        Raises ValueError when `total_rows < len(frame)`, and QualityError when a column of
        the suite is missing from `frame` or an expectation raised inside GX.
        """
        start = time.perf_counter()
        size = len(frame)
        rows_total = size if total_rows is None else total_rows
        if rows_total < size:
            msg = f"total_rows ({rows_total}) is smaller than the frame ({size} rows)"
            raise ValueError(msg)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            msg = f"frame lacks the suite columns {missing}; build it with flatten_events"
            raise QualityError(msg)
        if size > self.max_rows:
            frame = frame.sample(n=self.max_rows, random_state=self.seed)
        results = self._definition.run(
            batch_parameters={"dataframe": frame}, result_format=_RESULT_FORMAT
        )
        self._forget_results()
        outcomes = _outcomes(results)
        return QualityResult(
            success=all(o.success for o in outcomes),
            rows_total=rows_total,
            rows_validated=len(frame),
            sampled=len(frame) < rows_total,
            expectations=len(outcomes),
            failed=[
                FailedExpectation(
                    o.expectation_type, o.column, o.unexpected_count, o.unexpected_percent
                )
                for o in outcomes
                if not o.success
            ],
            elapsed_s=time.perf_counter() - start,
            outcomes=outcomes,
        )

    def _forget_results(self) -> None:
        # ValidationDefinition.run keeps every result in the context's results store; in a
        # stream that is one result per micro-batch, kept for the life of the job.
        store = self._context.validation_results_store
        for key in store.list_keys():
            store.remove_key(key)


def _exception_message(info: dict[str, Any] | None) -> str | None:
    # GX reports an exception either flat ({"raised_exception": ..., "exception_message": ...})
    # or, when a metric failed to resolve, as one such dict per metric id.
    if not info:
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message"))
    return None


def _outcomes(results: ExpectationSuiteValidationResult) -> tuple[ExpectationOutcome, ...]:
    outcomes = []
    for result in results.results:
        config = result.expectation_config
        kind = config.type if config is not None else "unknown"
        column = config.kwargs.get("column") if config is not None else None
        error = _exception_message(result.exception_info)
        if error is not None:
            msg = f"expectation {kind} on column {column!r} raised inside GX: {error}"
            raise QualityError(msg)
        detail = result.result or {}
        outcomes.append(
            ExpectationOutcome(
                expectation_type=kind,
                column=column,
                success=bool(result.success),
                unexpected_count=int(detail.get("unexpected_count") or 0),
                unexpected_percent=float(detail.get("unexpected_percent") or 0.0),
                element_count=int(detail.get("element_count") or 0),
            )
        )
    return tuple(outcomes)
