import re
from pathlib import Path

import pytest

from pipelines.errors import ConfigError
from pipelines.settings import Settings, settings_reference

REPO = Path(__file__).resolve().parents[2]


def test_environment_overrides_file_and_file_overrides_defaults(tmp_path):
    config = tmp_path / "sw.toml"
    config.write_text(
        '[stream]\nwindow = "1 minute"\ndimensions = ["locale"]\n[kafka]\npartitions = 4\n'
    )
    settings = Settings.load(config, environ={"SAFEWATCH_KAFKA__PARTITIONS": "6"})
    assert settings.stream.window == "1 minute"
    assert settings.stream.dimensions == ("locale",)
    assert settings.kafka.partitions == 6
    assert settings.stream.watermark == "10 minutes"  # default kept


def test_dimensions_from_a_comma_separated_variable():
    settings = Settings.load(environ={"SAFEWATCH_STREAM__DIMENSIONS": "risk_tier, locale"})
    assert settings.stream.dimensions == ("risk_tier", "locale")


def test_unknown_dimension_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="unknown segment dimension"):
        Settings.load(environ={"SAFEWATCH_STREAM__DIMENSIONS": "colour"})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.toml", environ={})


def test_secrets_are_not_printed():
    settings = Settings.load(
        environ={"SAFEWATCH_WAREHOUSE__URL": "postgresql+psycopg://u:hunter2@db/sw"}
    )
    assert "hunter2" not in settings.model_dump_json()
    assert "hunter2" not in repr(settings)


def test_settings_reference_in_docs_is_current():
    assert (REPO / "docs" / "settings.md").read_text() == settings_reference() + "\n"


def test_cluster_ports_from_comma_separated_variables():
    settings = Settings.load(
        environ={
            "SAFEWATCH_CLUSTER__KAFKA_PORTS": "31001, 31002, 31003",
            "SAFEWATCH_CLUSTER__KAFKA_CONTROLLER_PORTS": "31011,31012,31013",
        }
    )
    assert settings.cluster.kafka_ports == (31001, 31002, 31003)
    assert settings.cluster.bootstrap_servers == ("127.0.0.1:31001,127.0.0.1:31002,127.0.0.1:31003")
    assert settings.cluster.spark_master_url == "spark://127.0.0.1:7077"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SAFEWATCH_CLUSTER__KAFKA_PORTS": "31001,31002"}, "one port per broker"),
        (
            {
                "SAFEWATCH_CLUSTER__KAFKA_PORTS": "31001,31002",
                "SAFEWATCH_CLUSTER__KAFKA_CONTROLLER_PORTS": "31011,31012",
            },
            "needs at least as many brokers",
        ),
        ({"SAFEWATCH_CLUSTER__SPARK_WORKER_PORTS": "7078"}, "one port per worker"),
        ({"SAFEWATCH_CLUSTER__SPARK_MASTER_PORT": "29092"}, "more than one process"),
        ({"SAFEWATCH_CLUSTER__SPARK_WORKER_MEMORY": "lots"}, "JVM memory size"),
        ({"SAFEWATCH_CLUSTER__KAFKA_MIN_INSYNC_REPLICAS": "4"}, "cannot exceed"),
    ],
)
def test_inconsistent_cluster_settings_are_config_errors(environ, message):
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ=environ)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("5 minutes", "1 minute"),
        ("1 minute", "1 minute"),  # one slice: the window itself
        ("90 seconds", "90 seconds"),  # no whole minute divides it: no slices
        ("10 minutes", "1 minute"),
        ("1 hour", "5 minutes"),  # 60 one-minute slices are too many
        ("13 minutes", "13 minutes"),
    ],
)
def test_early_slice_default_fits_the_window(window, expected):
    settings = Settings.load(environ={"SAFEWATCH_STREAM__WINDOW": window})
    assert settings.stream.early_slice == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SAFEWATCH_STREAM__EARLY_SLICE": "70 seconds"}, "must be a whole number of seconds"),
        ({"SAFEWATCH_STREAM__EARLY_SLICE": "10 seconds"}, "30 slices; at most 12"),
        ({"SAFEWATCH_STREAM__EARLY_SLICE": "soon"}, "cannot read duration"),
        ({"SAFEWATCH_STREAM__WINDOW": "abc"}, "cannot read duration"),
    ],
)
def test_unusable_early_slice_is_a_config_error_saying_what_to_change(environ, message):
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ=environ)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SAFEWATCH_STREAM__WATERMARK", "abc", "stream.watermark: cannot read duration 'abc'"),
        ("SAFEWATCH_STREAM__TRIGGER_INTERVAL", "0 seconds", "must be positive"),
        ("SAFEWATCH_CONTRACT__MAX_FUTURE", "soon", "contract.max_future: cannot read"),
        ("SAFEWATCH_CONTRACT__MAX_AGE", "7 weeks", "contract.max_age: cannot read"),
        ("SAFEWATCH_DRIFT__LOOKBACK", "-1 day", "drift.lookback: cannot read"),
        ("SAFEWATCH_ALERTING__GROUP_WAIT", "1 second", "Alertmanager's form, e.g. '30s'"),
        ("SAFEWATCH_ALERTING__REPEAT_INTERVAL", "0s", "repeat_interval: duration '0s' must be"),
        ("SAFEWATCH_SPARK__DRIVER_MEMORY", "lots", "driver_memory: 'lots' is not a JVM memory"),
        ("SAFEWATCH_BROKER__HEAP", "512 MB", "broker.heap: '512 MB' is not a JVM memory size"),
        ("SAFEWATCH_SPARK__LOG_LEVEL", "LOUD", "spark.log_level"),
    ],
)
def test_every_duration_and_size_is_read_when_the_settings_load(variable, value, message):
    """A value the job would only trip over minutes later (a watermark Spark cannot read) is
    refused by `Settings.load`, naming the setting and what to write instead.
    """
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load(environ={variable: value})


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("SAFEWATCH_STREAM__WATERMARK", "90s", ("stream", "watermark"), "90s"),
        ("SAFEWATCH_ALERTING__GROUP_INTERVAL", "1h30m", ("alerting", "group_interval"), "1h30m"),
        ("SAFEWATCH_ALERTING__GROUP_WAIT", "0s", ("alerting", "group_wait"), "0s"),
        ("SAFEWATCH_SPARK__EXECUTOR_MEMORY", "2g", ("spark", "executor_memory"), "2g"),
        ("SAFEWATCH_SPARK__LOG_LEVEL", "error", ("spark", "log_level"), "ERROR"),
    ],
)
def test_valid_durations_and_sizes_are_kept_as_written(variable, value, field, expected):
    settings = Settings.load(environ={variable: value})
    assert getattr(getattr(settings, field[0]), field[1]) == expected


def test_a_misspelled_section_is_refused_with_the_closest_one():
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={"SAFEWATCH_STRAEM__WINDOW": "1 minute"})
    assert "SAFEWATCH_STRAEM__WINDOW names no settings section 'straem'" in str(info.value)
    assert "did you mean SAFEWATCH_STREAM__WINDOW?" in str(info.value)


def test_a_variable_without_a_section_is_refused():
    with pytest.raises(ConfigError, match="SAFEWATCH_WINDOW names no setting"):
        Settings.load(environ={"SAFEWATCH_WINDOW": "1 minute"})


def test_variables_that_are_not_settings_are_allowed():
    environ = {"SAFEWATCH_WRITER_PASSWORD": "x", "SAFEWATCH_CRASH_AT": "in-commit:3"}
    assert Settings.load(environ=environ).stream.window == "5 minutes"


def test_the_process_environment_is_checked_too(monkeypatch):
    monkeypatch.setenv("SAFEWATCH_KAKFA__PARTITIONS", "4")
    with pytest.raises(ConfigError, match="did you mean SAFEWATCH_KAFKA__PARTITIONS"):
        Settings.load()
