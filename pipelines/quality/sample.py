"""The Great Expectations suite on a batch's quality sample: the parsed events that the
counting pass drew (`pipelines.stream.sampling`), as Arrow, and the rows the ledger keeps of
the outcome.

Building the suite takes seconds: `prepare` starts it in the background before the job's
first batch, and `validate` waits for it (or builds it, if it was not prepared).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.settings import QualitySettings


class SampleValidation:
    """Validates sampled parsed events with the suite, by the settings' quality section."""

    def __init__(self, settings: QualitySettings) -> None:
        self.settings = settings
        self._validator: Future[Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def prepare(self) -> None:
        """Start building the suite in the background (it takes seconds): the streaming
        job calls this before its query starts, so the first batch need not wait.
        """
        if self.settings.enabled and self._validator is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="safewatch-quality")
            self._validator = pool.submit(self.build)
            pool.shutdown(wait=False)

    def build(self) -> Any:
        """The suite's validator, built now."""
        from pipelines.quality.runner import BatchValidator
        from pipelines.quality.suite import load_suite

        return BatchValidator(
            load_suite(),
            max_rows=self.settings.max_rows,
            seed=self.settings.sample_seed,
            max_text_chars=self.settings.max_text_chars,
        )

    def validate(self, sample: Any, total: int) -> Any:
        """Run the suite on the sampled parsed events (`total` of them in the batch)."""
        from pipelines.quality.suite import leaf_columns
        from schemas import event_schema

        if self._validator is None or self._validator.exception() is not None:
            # Not prepared, or the background build failed: build here (and raise here).
            self._validator = Future()
            self._validator.set_result(self.build())
        validator = self._validator.result()
        if total == 0 or sample is None:
            return None
        columns: dict[str, Any] = {}
        for leaf in leaf_columns(event_schema("1")):
            values: Any = sample
            for part in leaf.path:
                values = pc.struct_field(values, part)
            if leaf.node.get("format") == "date-time":
                values = pa.array([_iso_millis(t) for t in values.to_pylist()], pa.string())
            columns[leaf.column] = values
        # Arrow, not pandas: the validator cuts long strings before converting.
        return validator.validate(pa.table(columns), total_rows=total)


def _iso_millis(t: datetime | None) -> str | None:
    """A date-time as the event carries it, to the millisecond (as the suite reads it)."""
    if t is None:
        return None
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def quality_rows(quality: Any) -> list[dict[str, Any]]:
    """The ledger's rows of a validation outcome (table `quality_results`), one per expectation."""
    if quality is None:
        return []
    rows = []
    for row in quality.to_rows():
        rows.append(
            {
                "expectation_type": row["expectation_type"],
                "column_name": row.get("column") or "",
                "success": bool(row["success"]),
                "element_count": int(row.get("element_count") or 0),
                "unexpected_count": int(row.get("unexpected_count") or 0),
                "unexpected_percent": float(row.get("unexpected_percent") or 0.0),
                "rows_total": quality.rows_total,
                "rows_validated": quality.rows_validated,
                "sampled": quality.sampled,
            }
        )
    return rows
