"""The data-quality suite: kept in sync with the contract, passes valid events, counts defects.

The defects are injected into known rows of generated (valid) events, so the expected failing
expectations and their counts come from the injection, not from GX.
"""

from __future__ import annotations

import copy
import socket
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipelines.contract.validate import validate_event
from pipelines.quality.runner import BatchValidator, QualityError
from pipelines.quality.suite import (
    SUITE_PATH,
    flatten_events,
    load_suite,
    render_suite,
    suite_from_json_schema,
)
from pipelines.synth import generate_events
from schemas import event_schema

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    # ~2,000 events: 200 s at 10 events/s.
    return list(
        generate_events(seed=7, start=START, duration=timedelta(seconds=200), rate_per_s=10.0)
    )


@pytest.fixture(scope="module")
def validator() -> BatchValidator:
    return BatchValidator(load_suite())


def _failures(result: Any) -> dict[tuple[str, str | None], int]:
    return {(f.expectation_type, f.column): f.unexpected_count for f in result.failed}


# --- the suite as data -------------------------------------------------------------------


def test_committed_suite_equals_the_one_generated_from_the_contract() -> None:
    generated = suite_from_json_schema(event_schema("1"))
    hint = "regenerate with: .venv/bin/python -m pipelines.quality.suite"
    assert load_suite() == generated, hint
    assert SUITE_PATH.read_text(encoding="utf-8") == render_suite(generated), hint


def test_each_column_has_at_most_one_expectation_of_a_type() -> None:
    # (expectation_type, column) is the key of a quality row in the warehouse.
    keys = [
        (e["type"], e["kwargs"]["column"])
        for e in suite_from_json_schema(event_schema("1"))["expectations"]
    ]
    assert len(keys) == len(set(keys))


def test_suite_holds_the_contract_rules() -> None:
    by_key = {
        (e["type"], e["kwargs"]["column"]): e["kwargs"]
        for e in suite_from_json_schema(event_schema("1"))["expectations"]
    }
    hex64 = "^[0-9a-f]{64}$"
    for column in ("tenant_id", "user_id", "session_id"):
        assert by_key[("expect_column_values_to_match_regex", column)]["regex"] == hex64
    uuid_pattern = event_schema("1")["properties"]["event_id"]["pattern"]
    assert by_key[("expect_column_values_to_match_regex", "event_id")]["regex"] == uuid_pattern
    assert by_key[("expect_column_values_to_be_in_set", "schema_version")]["value_set"] == ["1"]
    assert by_key[("expect_column_values_to_be_between", "request__latency_ms")] == {
        "column": "request__latency_ms",
        "min_value": 0,
    }
    assert by_key[("expect_column_values_to_be_between", "moderation__scores__violence")] == {
        "column": "moderation__scores__violence",
        "min_value": 0,
        "max_value": 1,
    }
    assert by_key[("expect_column_values_to_be_in_set", "segment__risk_tier")]["value_set"] == [
        "internal",
        "beta",
        "ga",
        "regulated",
    ]
    # Nullable or optional leaves are not required; the map has no column at all.
    assert ("expect_column_values_to_not_be_null", "injection__source") not in by_key
    assert ("expect_column_values_to_not_be_null", "excerpts__prompt") not in by_key
    assert ("expect_column_values_to_not_be_null", "segment__locale") in by_key
    assert not any(column.startswith("privacy__entity_counts") for _, column in by_key)
    # A date-time is a timestamp after Spark parses it: not-null only, no regex.
    assert ("expect_column_values_to_match_regex", "event_time") not in by_key


def test_flatten_events_gives_one_column_per_leaf(events: list[dict[str, Any]]) -> None:
    frame = flatten_events(events[:5])
    assert len(frame) == 5
    assert frame.loc[0, "segment__locale"] == events[0]["segment"]["locale"]
    assert frame.loc[0, "request__latency_ms"] == events[0]["request"]["latency_ms"]
    violence = events[0]["moderation"]["scores"]["violence"]
    assert frame.loc[0, "moderation__scores__violence"] == violence
    assert isinstance(frame.loc[0, "moderation__flagged_categories"], list)
    assert "privacy__entity_counts" not in frame.columns
    assert "excerpts__prompt" in frame.columns


def test_flatten_events_of_nothing_has_every_column() -> None:
    frame = flatten_events([])
    assert len(frame) == 0
    assert {"event_id", "segment__locale", "excerpts__response"} <= set(frame.columns)


# --- validation --------------------------------------------------------------------------


def test_generated_events_are_valid_and_pass(
    events: list[dict[str, Any]], validator: BatchValidator
) -> None:
    assert all(not validate_event(e) for e in events[:200])
    result = validator.validate(flatten_events(events))
    assert result.success
    assert result.failed == []
    assert result.rows_total == result.rows_validated == len(events)
    assert not result.sampled
    assert result.expectations == validator.expectation_count == len(load_suite()["expectations"])


def _corrupted(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    bad = copy.deepcopy(events)
    for i in range(0, 7):
        bad[i]["request"]["latency_ms"] = -5
    for i in range(10, 13):
        bad[i]["segment"]["risk_tier"] = "prod"
    for i in range(20, 24):
        bad[i]["user_id"] = f"jane.doe{i}@example.com"
    for i in range(30, 32):
        bad[i]["segment"]["locale"] = None
    return bad


def test_injected_defects_fail_exactly_their_expectations(
    events: list[dict[str, Any]], validator: BatchValidator
) -> None:
    n = len(events)
    result = validator.validate(flatten_events(_corrupted(events)))
    assert not result.success
    assert _failures(result) == {
        ("expect_column_values_to_be_between", "request__latency_ms"): 7,
        ("expect_column_values_to_be_in_set", "segment__risk_tier"): 3,
        ("expect_column_values_to_match_regex", "user_id"): 4,
        ("expect_column_values_to_not_be_null", "segment__locale"): 2,
    }
    percents = {f.column: f.unexpected_percent for f in result.failed}
    assert percents["request__latency_ms"] == pytest.approx(100 * 7 / n)
    assert percents["segment__locale"] == pytest.approx(100 * 2 / n)


def test_to_rows_gives_one_row_per_expectation(
    events: list[dict[str, Any]], validator: BatchValidator
) -> None:
    result = validator.validate(flatten_events(_corrupted(events)))
    rows = result.to_rows()
    assert len(rows) == result.expectations
    assert set(rows[0]) == {
        "expectation_type",
        "column",
        "success",
        "unexpected_count",
        "unexpected_percent",
        "element_count",
    }
    assert all(r["element_count"] == len(events) for r in rows)
    assert sum(not r["success"] for r in rows) == 4
    latency = next(
        r
        for r in rows
        if r["column"] == "request__latency_ms"
        and r["expectation_type"] == "expect_column_values_to_be_between"
    )
    assert (latency["success"], latency["unexpected_count"]) == (False, 7)


def test_results_carry_counts_not_offending_values(
    events: list[dict[str, Any]], validator: BatchValidator
) -> None:
    # A raw e-mail in user_id must not travel into results bound for the warehouse.
    result = validator.validate(flatten_events(_corrupted(events)))
    assert "@" not in repr(result)


def test_results_are_not_kept_between_batches(
    events: list[dict[str, Any]], validator: BatchValidator
) -> None:
    frame = flatten_events(events[:100])
    for _ in range(3):
        validator.validate(frame)
    assert validator._context.validation_results_store.list_keys() == []


def test_a_missing_column_is_an_error_naming_it(
    events: list[dict[str, Any]], validator: BatchValidator
) -> None:
    frame = flatten_events(events[:10]).drop(columns=["segment__locale"])
    with pytest.raises(QualityError, match="segment__locale"):
        validator.validate(frame)


def test_an_expectation_that_raises_inside_gx_is_an_error() -> None:
    suite = {
        "name": "t",
        "meta": {},
        "expectations": [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "a", "min_value": 0},
            }
        ],
    }
    with pytest.raises(QualityError, match="expect_column_values_to_be_between on column 'a'"):
        BatchValidator(suite).validate(pd.DataFrame({"a": ["x", "y"]}))


def test_an_unknown_expectation_type_is_refused() -> None:
    suite = {
        "name": "t",
        "meta": {},
        "expectations": [{"type": "expect_column_to_be_nice", "kwargs": {"column": "a"}}],
    }
    with pytest.raises(QualityError, match="expect_column_to_be_nice"):
        BatchValidator(suite)


def test_an_expectation_whose_metric_fails_is_named_among_others() -> None:
    suite = {
        "name": "t",
        "meta": {},
        "expectations": [
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "b"}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "a", "min_value": 0},
            },
        ],
    }
    frame = pd.DataFrame({"a": ["x", "y"], "b": [1, None]})
    with pytest.raises(QualityError, match="expect_column_values_to_be_between on column 'a'"):
        BatchValidator(suite).validate(frame)


# --- the same results as a full GX run --------------------------------------------------------

# What BatchValidator asked GX for before it prepared the suite once: the values metric included.
_FULL_RUN_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0}


def _full_gx_run_rows(validator: BatchValidator, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The suite run on `frame` by GX's own ValidationDefinition.run, as to_rows() rows."""
    import great_expectations as gx

    context = validator._context
    batch_definition = (
        context.data_sources.get("safewatch")
        .get_asset("micro_batch")
        .get_batch_definition("whole_frame")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=f"reference_{uuid.uuid4().hex}", data=batch_definition, suite=validator._suite
        )
    )
    results = definition.run(batch_parameters={"dataframe": frame}, result_format=_FULL_RUN_FORMAT)
    rows = []
    for result in results.results:
        assert not result.exception_info.get("raised_exception"), result.exception_info
        config = result.expectation_config
        assert config is not None
        rows.append(
            {
                "expectation_type": config.type,
                "column": config.kwargs.get("column"),
                "success": bool(result.success),
                "unexpected_count": int(result.result.get("unexpected_count") or 0),
                "unexpected_percent": float(result.result.get("unexpected_percent") or 0.0),
                "element_count": int(result.result.get("element_count") or 0),
            }
        )
    return rows


def _broken_like_spark(events: list[dict[str, Any]]) -> pd.DataFrame:
    """A frame with a defect for every kind of expectation, in the dtypes Spark's toPandas gives.

    Nullable integers become float64 with NaN, nullable booleans object with None, arrays
    numpy arrays.
    """
    frame = flatten_events(_corrupted(events))
    frame["moderation__flagged_categories"] = [
        np.array(v, dtype=object) for v in frame["moderation__flagged_categories"]
    ]
    frame["tool_calls__total"] = frame["tool_calls__total"].astype("float64")
    frame.loc[40:44, "tool_calls__total"] = np.nan
    frame.loc[45:46, "tool_calls__total"] = -1.0
    frame["refusal__refused"] = frame["refusal__refused"].astype(object)
    frame.loc[50:52, "refusal__refused"] = None
    frame.loc[60:65, "moderation__scores__hate"] = 1.5
    frame.loc[70:71, "excerpts__response"] = "x" * 2001
    frame.loc[80:88, "event_id"] = "not-a-uuid"
    frame.loc[90, "schema_version"] = "2"
    return frame


def test_results_equal_a_full_gx_run_on_every_kind_of_defect(
    events: list[dict[str, Any]],
) -> None:
    validator = BatchValidator(load_suite())
    frame = _broken_like_spark(events)
    n = len(frame)
    rows = validator.validate(frame).to_rows()
    assert rows == _full_gx_run_rows(validator, frame)
    kinds = {e["type"] for e in load_suite()["expectations"]}
    assert {r["expectation_type"] for r in rows if not r["success"]} == kinds
    # Independently of GX: not-null counts every null among all rows, the other checks count
    # offending non-null values among non-null ones.
    by_key = {(r["expectation_type"], r["column"]): r for r in rows}
    total = by_key[("expect_column_values_to_be_between", "tool_calls__total")]
    assert (total["unexpected_count"], total["element_count"]) == (2, n)
    assert total["unexpected_percent"] == pytest.approx(100 * 2 / (n - 5))
    refused = by_key[("expect_column_values_to_not_be_null", "refusal__refused")]
    assert refused["unexpected_count"] == int(frame["refusal__refused"].isna().sum()) == 3
    assert refused["unexpected_percent"] == pytest.approx(100 * 3 / n)
    hate = by_key[("expect_column_values_to_be_between", "moderation__scores__hate")]
    assert hate["unexpected_count"] == int((frame["moderation__scores__hate"] > 1).sum()) == 6
    response = by_key[("expect_column_value_lengths_to_be_between", "excerpts__response")]
    assert response["unexpected_count"] == 2
    event_id = by_key[("expect_column_values_to_match_regex", "event_id")]
    assert event_id["unexpected_count"] == 9


def test_results_equal_a_full_gx_run_on_clean_and_empty_frames(
    events: list[dict[str, Any]],
) -> None:
    validator = BatchValidator(load_suite())
    for frame in (flatten_events(events[:300]), flatten_events([])):
        result = validator.validate(frame)
        assert result.success
        assert result.to_rows() == _full_gx_run_rows(validator, frame)


def test_a_frame_is_judged_on_its_own_rows_not_the_previous_ones(
    events: list[dict[str, Any]], validator: BatchValidator
) -> None:
    clean, broken = flatten_events(events), flatten_events(_corrupted(events))
    expected = {
        ("expect_column_values_to_be_between", "request__latency_ms"): 7,
        ("expect_column_values_to_be_in_set", "segment__risk_tier"): 3,
        ("expect_column_values_to_match_regex", "user_id"): 4,
        ("expect_column_values_to_not_be_null", "segment__locale"): 2,
    }
    assert _failures(validator.validate(broken)) == expected
    assert validator.validate(clean).failed == []
    assert _failures(validator.validate(broken)) == expected
    half = clean.iloc[: len(clean) // 2]
    assert {o.element_count for o in validator.validate(half).outcomes} == {len(half)}


# --- sampling ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.concat([flatten_events(events)] * 26, ignore_index=True).iloc[:50_000].copy()
    # Every 10th row is bad, so the sample holds about 500 of them.
    frame.loc[frame.index % 10 == 0, "request__latency_ms"] = -1.0
    return frame


def test_a_large_frame_is_sampled_to_max_rows(big_frame: pd.DataFrame) -> None:
    assert len(big_frame) == 50_000
    result = BatchValidator(load_suite(), max_rows=5_000, seed=3).validate(big_frame)
    assert (result.rows_total, result.rows_validated, result.sampled) == (50_000, 5_000, True)
    sample = big_frame.sample(n=5_000, random_state=3)
    expected = int((sample["request__latency_ms"] < 0).sum())
    assert 300 < expected < 700
    assert _failures(result) == {
        ("expect_column_values_to_be_between", "request__latency_ms"): expected
    }
    assert all(o.element_count == 5_000 for o in result.outcomes)


def test_sampling_is_deterministic_for_a_seed(big_frame: pd.DataFrame) -> None:
    first = BatchValidator(load_suite(), max_rows=5_000, seed=3)
    second = BatchValidator(load_suite(), max_rows=5_000, seed=3)
    a, b, c = first.validate(big_frame), first.validate(big_frame), second.validate(big_frame)
    assert a.failed == b.failed == c.failed
    assert a.to_rows() == b.to_rows() == c.to_rows()


def test_total_rows_reports_a_sample_taken_upstream(
    events: list[dict[str, Any]], validator: BatchValidator
) -> None:
    frame = flatten_events(events[:500])
    result = validator.validate(frame, total_rows=40_000)
    assert (result.rows_total, result.rows_validated, result.sampled) == (40_000, 500, True)
    with pytest.raises(ValueError, match="total_rows"):
        validator.validate(frame, total_rows=499)


def test_max_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        BatchValidator(load_suite(), max_rows=0)


# --- GX stays silent and local ---------------------------------------------------------------


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network connection attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


@pytest.mark.usefixtures("no_network")
def test_validator_writes_no_file_prints_nothing_and_opens_no_connection(
    events: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    capfd.readouterr()
    result = BatchValidator(load_suite()).validate(flatten_events(events[:300]))
    assert result.success
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [Path("tmp")]
    out, err = capfd.readouterr()
    assert out == ""
    assert "Calculating Metrics" not in err and "%|" not in err
