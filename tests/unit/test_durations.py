from datetime import timedelta

import pytest

from pipelines.durations import parse_duration, spark_interval


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5 minutes", timedelta(minutes=5)),
        ("30 seconds", timedelta(seconds=30)),
        ("1 hour", timedelta(hours=1)),
        ("90s", timedelta(seconds=90)),
        ("2 days", timedelta(days=2)),
        ("1.5 min", timedelta(seconds=90)),
    ],
)
def test_parse_duration_reads_number_and_unit(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "five minutes", "5 fortnights", "minutes 5"])
def test_parse_duration_rejects_unreadable_text_with_an_example(text):
    with pytest.raises(ValueError, match="e.g. '5 minutes'"):
        parse_duration(text)


def test_spark_interval_is_whole_seconds():
    assert spark_interval("5 minutes") == "300 seconds"
    with pytest.raises(ValueError, match="positive"):
        spark_interval("0 seconds")
