"""Run the data-quality suite on one micro-batch (a flat pandas frame) with Great Expectations.

`BatchValidator` builds the GX objects once (an in-memory context, a pandas data source with a
whole-dataframe batch definition, the suite) and prepares the suite for GX's pandas execution
engine: the expectations, the metrics each one reads and the graph of those metrics with their
dependencies. That preparation depends on the suite and the batch id only, never on the rows,
and a whole-dataframe batch definition gives every frame the same batch id, so it is done once.
Each `validate` call then cuts long strings (`text_limits`, `cut_strings`: a 1 MB free text
never reaches pandas or a regex), samples the frame down to `max_rows`, loads it into the
engine, lets GX resolve the metric graph on it and lets each expectation judge its metrics.

This is the work `ValidationDefinition.run` does, without what it repeats per call and a
stream does not use: deriving every expectation's metric dependencies twice and rebuilding the
graph (most of a small batch's cost), fingerprinting the frame by hashing all of its rows,
storing the result and wrapping it in result objects. The metrics and the verdicts are GX's:
the same metric providers on the same engine, and each expectation's own `_validate`.

GX is configured to stay silent and local: the context is ephemeral with in-memory stores and
no data-docs site (nothing is written to disk), progress bars are off in the context's
`progress_bars` config and in the metrics calculator, and analytics are off in its
`analytics_enabled` config. Nothing reads or sets environment variables.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import SafewatchError

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.validator.metric_configuration import MetricConfiguration
    from great_expectations.validator.validation_graph import (
        ExpectationValidationGraph,
        ValidationGraph,
    )

__all__ = [
    "BatchValidator",
    "ExpectationOutcome",
    "FailedExpectation",
    "QualityError",
    "QualityResult",
    "cut_strings",
    "text_limits",
]

# Counts only: the default SUMMARY format also returns up to 20 offending values, which here
# may be raw personal data (an e-mail in user_id) and cost a value_counts per expectation.
# exclude_unexpected_values: no value list at all, so the metric that only feeds it (one
# filtered copy of the whole frame per expectation) is left out of the graph.
_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "exclude_unexpected_values": True,
}


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


def text_limits(suite: dict[str, Any], max_text_chars: int) -> dict[str, int]:
    """Per column of the suite, the length its strings are cut to before validation.

    `max_text_chars`, raised where an expectation must still see a cut value as it saw the
    whole one: a length check up to N keeps N + 1 characters (too long stays too long), a
    value-set check keeps one more than its longest member (outside the set stays outside).
    A pattern check sees the first characters only; every pattern of the interaction-event
    suite is on a column whose length check is far shorter than the cut.
    """
    limits: dict[str, int] = {}
    for expectation in suite["expectations"]:
        kwargs = expectation["kwargs"]
        column = kwargs.get("column")
        if column is None:
            continue
        keep = max_text_chars
        if kwargs.get("max_value") is not None and "length" in _kind(expectation):
            keep = max(keep, int(kwargs["max_value"]) + 1)
        if "value_set" in kwargs:
            members = [len(v) for v in kwargs["value_set"] if isinstance(v, str)]
            keep = max(keep, max(members, default=0) + 1)
        limits[column] = max(limits.get(column, keep), keep)
    return limits


def _kind(expectation: dict[str, Any]) -> str:
    return str(expectation.get("type") or expectation.get("expectation_type") or "")


def _cut_arrow(values: pa.ChunkedArray, limit: int) -> pa.ChunkedArray:
    """Strings (also inside lists of strings) cut to `limit` characters; other types as they are."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        longest = pc.max(pc.utf8_length(values)).as_py()
        if longest is None or longest <= limit:
            return values
        return pc.utf8_slice_codeunits(values, 0, limit)
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
        pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)
    ):
        chunks = []
        for chunk in values.chunks:
            inner = _cut_arrow(pa.chunked_array([chunk.values], kind.value_type), limit)
            chunks.append(
                type(chunk).from_arrays(chunk.offsets, inner.combine_chunks(), mask=chunk.is_null())
            )
        return pa.chunked_array(chunks, kind)
    return values


def _cut_value(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value[:limit] if len(value) > limit else value
    if isinstance(value, list | tuple | np.ndarray) and _text_length(value) > limit:
        cut = [_cut_value(v, limit) for v in value]
        return np.array(cut, dtype=object) if isinstance(value, np.ndarray) else cut
    return value


def _text_length(value: Any) -> int:
    """The length of a string, or of the longest string in a list or array; 0 otherwise."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple | np.ndarray):
        return max((len(v) for v in value if isinstance(v, str)), default=0)
    return 0


def cut_strings(
    frame: pa.Table | pd.DataFrame, limits: Mapping[str, int], default: int
) -> pd.DataFrame:
    """`frame` as pandas, each string cut to its column's limit (`default` for the others).

    An Arrow table is cut before it is converted, so a huge string never becomes a Python
    object; a pandas frame is copied with its long strings cut.
    """
    if isinstance(frame, pa.Table):
        columns = {
            name: _cut_arrow(frame.column(name), limits.get(name, default))
            for name in frame.column_names
        }
        return pa.table(columns).to_pandas()
    out = frame
    for name in frame.columns:
        limit = limits.get(name, default)
        if frame[name].dtype == object and frame[name].map(_text_length).max() > limit:
            if out is frame:
                out = frame.copy()
            out[name] = frame[name].map(lambda v, n=limit: _cut_value(v, n))
    return out


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

    Construction pays the GX set-up once (import, context, data source, suite, the metric graph
    of the suite); each `validate` call then costs only the metrics on its rows and the
    verdicts. Each instance has its own in-memory GX context and execution engine. Not
    thread-safe: use one per streaming query (foreachBatch runs batches one at a time on the
    driver).
    """

    def __init__(
        self,
        suite: dict[str, Any],
        *,
        max_rows: int = 20_000,
        seed: int = 0,
        max_text_chars: int = 2_000,
    ) -> None:
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
        self.max_text_chars = max_text_chars
        self.text_limits = text_limits(suite, max_text_chars)
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
        self._suite: ExpectationSuite = self._context.suites.add(_gx_suite(suite))
        if len(self._suite.expectations) != len(suite["expectations"]):
            msg = (
                f"suite {suite['name']!r}: GX kept {len(self._suite.expectations)} of "
                f"{len(suite['expectations'])} expectations"
            )
            raise QualityError(msg)
        self._prepared = _PreparedSuite(self._context, batch_definition, self._suite, self.columns)

    @property
    def expectation_count(self) -> int:
        return len(self._suite.expectations)

    def validate(
        self, frame: pa.Table | pd.DataFrame, *, total_rows: int | None = None
    ) -> QualityResult:
        """Validate `frame` (Arrow or pandas), its strings cut (`cut_strings`, at
        `max_text_chars` or more per `text_limits`), then sampled to at most `max_rows` rows.

        The sample is `frame.sample(n=max_rows, random_state=seed)`: the same frame and seed
        give the same rows. `total_rows` is the size of the batch `frame` was already drawn
        from, when the caller sampled it (e.g. on the Spark side); it defaults to len(frame).
        Raises ValueError when `total_rows < len(frame)`, and QualityError when a column of
        the suite is missing from `frame` or an expectation raised inside GX.
        """
        start = time.perf_counter()
        names = frame.column_names if isinstance(frame, pa.Table) else list(frame.columns)
        missing = [c for c in self.columns if c not in names]
        if missing:
            msg = f"frame lacks the suite columns {missing}; build it with flatten_events"
            raise QualityError(msg)
        arrow = isinstance(frame, pa.Table)
        if arrow:  # cut before pandas holds the strings
            frame = cut_strings(frame, self.text_limits, self.max_text_chars)
        size = len(frame)
        rows_total = size if total_rows is None else total_rows
        if rows_total < size:
            msg = f"total_rows ({rows_total}) is smaller than the frame ({size} rows)"
            raise ValueError(msg)
        if size > self.max_rows:
            frame = frame.sample(n=self.max_rows, random_state=self.seed)
        if not arrow:  # only the sampled rows are scanned
            frame = cut_strings(frame, self.text_limits, self.max_text_chars)
        outcomes = self._prepared.evaluate(frame)
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


@dataclass(frozen=True)
class _PreparedExpectation:
    """One expectation bound to the batch id, with the metrics it reads (by the name it reads)."""

    kind: str
    column: str | None
    expectation: Expectation
    metrics: dict[str, MetricConfiguration]
    # This expectation's own metric graph, to tell which expectations a failed metric reaches.
    graph: ExpectationValidationGraph
    runtime_configuration: dict[str, Any]


class _PreparedSuite:
    """The suite prepared once for GX's pandas execution engine; `evaluate` runs it on a frame.

    Mirrors `Validator.graph_validate` (which `ValidationDefinition.run` calls per batch):
    the same expectation objects with the batch id in their kwargs, the same metric
    configurations and dependency graph, resolved by the same engine; only the parts that do
    not depend on the rows are built here instead of on every call.
    """

    def __init__(
        self,
        context: EphemeralDataContext,
        batch_definition: BatchDefinition[Any],
        suite: ExpectationSuite,
        columns: tuple[str, ...],
    ) -> None:
        from great_expectations.core.metric_function_types import (
            SummarizationMetricNameSuffixes,
        )
        from great_expectations.execution_engine import PandasExecutionEngine
        from great_expectations.expectations.expectation import ColumnMapExpectation
        from great_expectations.validator.metrics_calculator import MetricsCalculator
        from great_expectations.validator.validation_graph import (
            ExpectationValidationGraph,
            ValidationGraph,
        )

        # The validator GX would build for a frame, here for an empty one with the suite's
        # columns: it gives the engine (the data source's, kept for the life of the source),
        # the batch id every frame of this whole-dataframe batch definition gets, and the
        # expectation configurations as GX evaluates them (suite parameters substituted,
        # grouped by column: the order of the results).
        request = batch_definition.build_batch_request(
            batch_parameters={"dataframe": pd.DataFrame(columns=list(columns))}
        )
        validator = context.get_validator(batch_request=request)
        batch_id = validator.active_batch_id
        if not batch_id:
            msg = f"GX gave no batch id for the batch definition {batch_definition.name!r}"
            raise QualityError(msg)
        engine = validator.execution_engine
        if not isinstance(engine, PandasExecutionEngine):
            msg = f"expected GX's pandas execution engine, got {type(engine).__name__}"
            raise QualityError(msg)
        self._batch_id: str = batch_id
        self._engine: PandasExecutionEngine = engine
        self._runtime: dict[str, Any] = {"result_format": dict(_RESULT_FORMAT)}
        calculator = MetricsCalculator(execution_engine=self._engine, show_progress_bars=False)
        unexpected_values = f".{SummarizationMetricNameSuffixes.UNEXPECTED_VALUES.value}"
        self._graph: ValidationGraph = ValidationGraph(execution_engine=self._engine)
        self._expectations: list[_PreparedExpectation] = []
        configs = validator.process_expectations_for_validation(suite.expectation_configurations)
        for suite_config in configs:
            config = copy.deepcopy(suite_config)
            config.kwargs["batch_id"] = batch_id
            kind = config.type
            column = config.kwargs.get("column")
            try:
                expectation = config.to_domain_obj()
                dependencies = expectation.get_validation_dependencies(
                    execution_engine=self._engine,
                    runtime_configuration=copy.deepcopy(self._runtime),
                )
                # A column-map expectation reads its values metric only for the offending-value
                # list, which the result format excludes; its verdict and counts come from the
                # count metrics (checked against a full GX run in the tests).
                metrics = {
                    name: metric
                    for name, metric in dependencies.metric_configurations.items()
                    if not (
                        isinstance(expectation, ColumnMapExpectation)
                        and name.endswith(unexpected_values)
                    )
                }
                graph = calculator.build_metric_dependency_graph(
                    metric_configurations=list(metrics.values()),
                    runtime_configuration=self._runtime,
                )
            except Exception as err:
                msg = f"expectation {kind} on column {column!r} could not be prepared in GX: {err}"
                raise QualityError(msg) from err
            for edge in graph.edges:
                self._graph.add(edge)
            self._expectations.append(
                _PreparedExpectation(
                    kind=kind,
                    column=column,
                    expectation=expectation,
                    metrics=metrics,
                    graph=ExpectationValidationGraph(configuration=config, graph=graph),
                    runtime_configuration={"result_format": dependencies.result_format},
                )
            )

    def evaluate(self, frame: pd.DataFrame) -> tuple[ExpectationOutcome, ...]:
        """One outcome per expectation on `frame`, in the order GX reports them.

        Raises QualityError naming the first expectation whose metric failed to resolve or
        which raised while judging its metrics.
        """
        # The frame replaces the previous one under the same batch id; the engine's metric
        # cache keeps the previous frame's values under the same ids, but the graph below
        # resolves every metric it needs from scratch and only falls back on the cache for a
        # dependency it has not resolved, which a complete graph never lacks.
        self._engine.load_batch_data(self._batch_id, frame)
        resolved, aborted = self._graph.resolve(
            runtime_configuration=self._runtime, show_progress_bars=False
        )
        outcomes = []
        for prepared in self._expectations:
            kind, column = prepared.kind, prepared.column
            if aborted:
                error = _exception_message(prepared.graph.get_exception_info(metric_info=aborted))
                if error is not None:
                    msg = f"expectation {kind} on column {column!r} raised inside GX: {error}"
                    raise QualityError(msg)
            unresolved = [m.metric_name for m in prepared.metrics.values() if m.id not in resolved]
            if unresolved:
                # GX stops resolving the graph, logging only, on an error it cannot pin on one
                # metric.
                msg = (
                    f"expectation {kind} on column {column!r}: GX resolved no value for "
                    f"{unresolved}; see the GX log for the error that stopped it"
                )
                raise QualityError(msg)
            try:
                # _validate is the expectation's verdict on its metrics; metrics_validate, its
                # public wrapper, first derives the metric dependencies again (several
                # pydantic round trips per expectation, the main cost of a small batch).
                raw = prepared.expectation._validate(  # noqa: SLF001
                    metrics={name: resolved[m.id] for name, m in prepared.metrics.items()},
                    runtime_configuration=copy.deepcopy(prepared.runtime_configuration),
                    execution_engine=self._engine,
                )
            except Exception as err:
                msg = f"expectation {kind} on column {column!r} raised inside GX: {err}"
                raise QualityError(msg) from err
            if isinstance(raw, dict):
                success, detail = raw.get("success"), raw.get("result")
            else:
                success, detail = raw.success, raw.result
            outcomes.append(_outcome(kind, column, bool(success), detail or {}))
        return tuple(outcomes)


def _outcome(
    kind: str, column: str | None, success: bool, detail: dict[str, Any]
) -> ExpectationOutcome:
    return ExpectationOutcome(
        expectation_type=kind,
        column=column,
        success=success,
        unexpected_count=int(detail.get("unexpected_count") or 0),
        unexpected_percent=float(detail.get("unexpected_percent") or 0.0),
        element_count=int(detail.get("element_count") or 0),
    )


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
