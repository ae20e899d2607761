"""Invalid settings are reported without quoting a secret value."""

from __future__ import annotations

import traceback

import pytest

from pipelines.errors import ConfigError
from pipelines.settings import Settings


def _error(tmp_path, environ, toml=None) -> ConfigError:
    config = None
    if toml is not None:
        config = tmp_path / "safewatch.toml"
        config.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Settings.load(config, environ=environ)
    return caught.value


def _everything_shown(error: ConfigError) -> str:
    """The message and the traceback a crash would print, cause and context included."""
    return "".join(traceback.format_exception(error))


def test_an_invalid_secret_option_is_named_but_not_quoted(tmp_path):
    error = _error(tmp_path, {"SAFEWATCH_KAFKA__CLIENT_OPTIONS": '{"ssl.key.password": 918273645}'})
    assert str(error) == (
        "invalid settings: kafka.client_options.ssl.key.password: Input should be a valid string"
    )
    assert "918273645" not in _everything_shown(error)


def test_an_invalid_secret_field_from_the_file_is_named_but_not_quoted(tmp_path):
    error = _error(tmp_path, {}, toml="[warehouse]\nurl = 564738291\n")
    assert "warehouse.url: Input should be a valid string" in str(error)
    assert "564738291" not in _everything_shown(error)


def test_other_invalid_values_are_quoted_with_url_credentials_masked(tmp_path):
    error = _error(
        tmp_path,
        {
            "SAFEWATCH_ALERTING__ALERTMANAGER_PORT": "http://am:Pw-SENTINEL@h",
            "SAFEWATCH_ALERTING__REQUEST_TIMEOUT_S": "soon",
        },
    )
    assert str(error) == (
        "invalid settings: alerting.request_timeout_s: Input should be a valid number, unable "
        "to parse string as a number (got 'soon'); alerting.alertmanager_port: Input should be "
        "a valid integer, unable to parse string as an integer (got 'http://***@h')"
    )
    assert "Pw-SENTINEL" not in _everything_shown(error)
