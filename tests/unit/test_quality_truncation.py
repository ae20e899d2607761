"""The quality suite never holds a huge string: the sample's texts are cut, verdicts unchanged.

The reference is the same suite run with no cut at all (`max_text_chars` larger than any
value) on the same events: every expectation's counts must be identical.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from pipelines.quality.runner import BatchValidator, cut_strings, text_limits
from pipelines.quality.sample import SampleValidation
from pipelines.quality.suite import flatten_events, load_suite
from pipelines.settings import Settings
from pipelines.synth import generate_events

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MB = 1_000_000


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return list(
        generate_events(seed=11, start=START, duration=timedelta(seconds=60), rate_per_s=10.0)
    )


@pytest.fixture(scope="module")
def cut() -> BatchValidator:
    return BatchValidator(load_suite())  # max_text_chars: the default, 2,000


@pytest.fixture(scope="module")
def uncut() -> BatchValidator:
    return BatchValidator(load_suite(), max_text_chars=10 * MB)


def _huge(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with 1 MB texts: free text, a segment value, an id, an enum, a list item."""
    bad = copy.deepcopy(events)
    for i in (0, 1, 6):
        bad[i]["excerpts"] = {}
    bad[0]["excerpts"]["prompt"] = "p" * MB
    bad[1]["excerpts"]["response"] = "é" * MB
    bad[2]["segment"]["locale"] = "l" * MB
    bad[3]["user_id"] = "a" * MB  # hex, but far longer than 64: the pattern still fails
    bad[4]["segment"]["risk_tier"] = "ga" * (MB // 2)
    bad[5]["moderation"]["flagged_categories"] = ["hate", "h" * MB]
    bad[6]["excerpts"]["prompt"] = "q" * 2_001  # just over the contract's 2,000
    return bad


def _arrow(events: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pandas(flatten_events(events), preserve_index=False)


def _longest_string(frame: pd.DataFrame) -> dict[str, int]:
    out = {}
    for name in frame.columns:
        lengths = [
            len(s)
            for v in frame[name]
            for s in ([v] if isinstance(v, str) else list(v) if hasattr(v, "__len__") else [])
            if isinstance(s, str)
        ]
        out[name] = max(lengths, default=0)
    return out


def _seen_by_the_suite(validator: BatchValidator, monkeypatch) -> list[pd.DataFrame]:
    seen: list[pd.DataFrame] = []
    evaluate = validator._prepared.evaluate

    def spy(frame: pd.DataFrame) -> Any:
        seen.append(frame)
        return evaluate(frame)

    monkeypatch.setattr(validator._prepared, "evaluate", spy)
    return seen


def test_huge_texts_are_cut_and_every_verdict_is_unchanged(events, cut, uncut, monkeypatch):
    bad = _huge(events)
    seen = _seen_by_the_suite(cut, monkeypatch)
    result = cut.validate(_arrow(bad))
    longest = _longest_string(seen[0])
    limits = text_limits(load_suite(), 2_000)
    assert max(longest.values()) <= 2_001
    assert all(n <= limits.get(c, 2_000) for c, n in longest.items())
    assert longest["excerpts__prompt"] == longest["excerpts__response"] == 2_001
    assert longest["segment__locale"] == 2_000
    assert longest["moderation__flagged_categories"] == 2_000
    reference = uncut.validate(flatten_events(bad))
    assert result.to_rows() == reference.to_rows()
    failed = {(f.expectation_type, f.column): f.unexpected_count for f in result.failed}
    assert failed == {  # what was injected, judged as on the whole values
        ("expect_column_value_lengths_to_be_between", "excerpts__prompt"): 2,
        ("expect_column_value_lengths_to_be_between", "excerpts__response"): 1,
        ("expect_column_value_lengths_to_be_between", "segment__locale"): 1,
        ("expect_column_values_to_match_regex", "user_id"): 1,
        ("expect_column_value_lengths_to_be_between", "user_id"): 1,
        ("expect_column_values_to_be_in_set", "segment__risk_tier"): 1,
    }


def test_a_pandas_frame_is_cut_too_with_the_same_verdicts(events, cut, uncut, monkeypatch):
    frame = flatten_events(_huge(events))
    seen = _seen_by_the_suite(cut, monkeypatch)
    assert cut.validate(frame).to_rows() == uncut.validate(frame).to_rows()
    assert max(_longest_string(seen[0]).values()) == 2_001
    assert len(frame.loc[0, "excerpts__prompt"]) == MB  # the caller's frame is left alone


def test_normal_events_get_the_same_verdicts_and_the_same_frame(events, cut, uncut, monkeypatch):
    seen = _seen_by_the_suite(cut, monkeypatch)
    result = cut.validate(_arrow(events))
    assert result.success
    assert result.to_rows() == uncut.validate(flatten_events(events)).to_rows()
    pd.testing.assert_frame_equal(seen[0], flatten_events(events), check_dtype=False)


def test_text_limits_keep_what_each_expectation_needs():
    suite = load_suite()
    limits = text_limits(suite, 2_000)
    assert limits["excerpts__prompt"] == 2_001  # maxLength 2,000: a cut value stays too long
    assert limits["segment__locale"] == 2_000
    small = text_limits(suite, 100)
    assert small["excerpts__prompt"] == 2_001
    assert small["user_id"] == 100  # maxLength 64 + 1 is below the bound
    assert small["segment__locale"] == 100


def test_cut_strings_on_arrow_cuts_by_characters_and_keeps_nulls():
    table = pa.table(
        {
            "t": pa.array(["x" * MB, None, "short", "😀" * 300]),
            "l": pa.array([["a" * 500, "b"], None, [], ["😀" * 300]], pa.list_(pa.string())),
            "n": pa.array([1, 2, None, 4]),
        }
    )
    frame = cut_strings(table, {"t": 200}, 100)
    assert frame["t"].tolist() == ["x" * 200, None, "short", "😀" * 200]
    assert [None if v is None else list(v) for v in frame["l"]] == [
        ["a" * 100, "b"],
        None,
        [],
        ["😀" * 100],
    ]
    assert frame["n"].tolist()[:2] == [1, 2]


def test_the_streaming_job_passes_the_setting(tmp_path):
    settings = Settings.load(
        environ={
            "SAFEWATCH_QUALITY__MAX_TEXT_CHARS": "300",
            "SAFEWATCH_WAREHOUSE__URL": f"sqlite:///{tmp_path / 'wh.db'}",
        }
    )
    assert settings.quality.max_text_chars == 300
    validator = SampleValidation(settings.quality).build()
    assert validator.max_text_chars == 300
    assert validator.text_limits["segment__locale"] == 300


def test_the_jobs_typed_sample_is_cut_with_the_same_verdicts(events, uncut, monkeypatch):
    """The streaming job's path: the sampled parsed events as Arrow structs, event_time typed."""
    bad = _huge(events)
    typed = copy.deepcopy(bad)
    for e in typed:
        e["event_time"] = datetime.fromisoformat(e["event_time"].replace("Z", "+00:00"))
    quality = SampleValidation(Settings.load(environ={}).quality)
    validator = quality.build()
    quality._validator = _done(validator)
    seen = _seen_by_the_suite(validator, monkeypatch)
    result = quality.validate(pa.array(typed), len(typed))
    assert max(_longest_string(seen[0]).values()) == 2_001
    assert result.to_rows() == uncut.validate(flatten_events(bad)).to_rows()


def _done(value: Any) -> Any:
    from concurrent.futures import Future

    future: Future[Any] = Future()
    future.set_result(value)
    return future
