"""The root `Settings` object, its sections in order, and how it is loaded.

`Settings.load` reads, in increasing precedence: the defaults of each section, a TOML file
(`--config`, `$SAFEWATCH_CONFIG`, or `./safewatch.toml` when present), and environment
variables `SAFEWATCH_<SECTION>__<NAME>`. A variable that names no section is refused, and so
is an invalid value, with a `ConfigError` that names the file and the setting and leaves out
the value of a secret.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipelines.errors import ConfigError
from pipelines.redact import is_secret_key, redact_text
from pipelines.settings.alerting import AlertingSettings
from pipelines.settings.kafka import BrokerSettings, ClusterSettings, KafkaSettings
from pipelines.settings.report import ReportSettings
from pipelines.settings.stream import (
    ContractSettings,
    DriftSettings,
    PrivacySettings,
    QualitySettings,
    SparkSettings,
    StreamSettings,
)
from pipelines.settings.warehouse import WarehouseSettings


class Settings(BaseSettings):
    """All settings; see `safewatch config docs`."""

    model_config = SettingsConfigDict(
        env_prefix="SAFEWATCH_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    broker: BrokerSettings = BrokerSettings()
    cluster: ClusterSettings = ClusterSettings()
    spark: SparkSettings = SparkSettings()
    stream: StreamSettings = StreamSettings()
    contract: ContractSettings = ContractSettings()
    privacy: PrivacySettings = PrivacySettings()
    quality: QualitySettings = QualitySettings()
    drift: DriftSettings = DriftSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    alerting: AlertingSettings = AlertingSettings()
    report: ReportSettings = ReportSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @classmethod
    def load(
        cls, config_file: str | Path | None = None, environ: dict[str, str] | None = None
    ) -> Settings:
        """Settings from `config_file` (or $SAFEWATCH_CONFIG, or ./safewatch.toml) and env vars.

        Raises ConfigError naming the file and the setting when a value is invalid.
        """
        env = os.environ if environ is None else environ
        _check_variable_names(env)
        path = config_file or env.get("SAFEWATCH_CONFIG")
        if path is None and Path("safewatch.toml").is_file():
            path = "safewatch.toml"
        if path is not None and not Path(path).is_file():
            msg = f"config file {path} does not exist"
            raise ConfigError(msg)
        _CONFIG_FILE["path"] = Path(path) if path else None
        try:
            if environ is None:
                return cls()
            saved = dict(os.environ)
            try:
                for key in [k for k in os.environ if k.startswith("SAFEWATCH_")]:
                    del os.environ[key]
                os.environ.update({k: v for k, v in environ.items() if k.startswith("SAFEWATCH_")})
                return cls()
            finally:
                os.environ.clear()
                os.environ.update(saved)
        except ValidationError as exc:
            where = f" (file {path})" if path else ""
            msg = f"invalid settings{where}: {_validation_message(exc)}"
            raise ConfigError(msg) from None  # pydantic's own text quotes every input, secrets too
        except ValueError as exc:
            where = f" (file {path})" if path else ""
            msg = f"invalid settings{where}: {exc}"
            raise ConfigError(msg) from exc
        finally:
            _CONFIG_FILE["path"] = None


_CONFIG_FILE: dict[str, Path | None] = {"path": None}
# SAFEWATCH_* variables that are not settings: the config file, the PostgreSQL role
# passwords of `warehouse roles`, the fault suite's crash points (pipelines/crashpoints.py).
OTHER_VARIABLES = frozenset(
    {"SAFEWATCH_CONFIG", "SAFEWATCH_WRITER_PASSWORD", "SAFEWATCH_ANALYST_PASSWORD",
     "SAFEWATCH_CRASH_AT"}
)  # fmt: skip


def _check_variable_names(env: Mapping[str, str]) -> None:
    """Refuse a SAFEWATCH_* variable that names no section: pydantic would ignore it, and
    the setting it was meant for would silently keep its default.
    """
    sections = sorted(Settings.model_fields)
    for name in sorted(env):
        if not name.startswith("SAFEWATCH_") or name in OTHER_VARIABLES:
            continue
        section, sep, key = name.removeprefix("SAFEWATCH_").partition("__")
        if sep and key and section.lower() in sections:
            continue  # an unknown key inside a known section is refused by the section
        if not sep or not key:
            msg = (
                f"environment variable {name} names no setting: settings are "
                f"SAFEWATCH_<SECTION>__<NAME>, e.g. SAFEWATCH_STREAM__WINDOW"
            )
        else:
            close = difflib.get_close_matches(section.lower(), sections, n=1)
            hint = f"did you mean SAFEWATCH_{close[0].upper()}__{key}? " if close else ""
            msg = (
                f"environment variable {name} names no settings section {section.lower()!r}: "
                f"{hint}sections: {', '.join(sections)}"
            )
        raise ConfigError(msg)


def _validation_message(exc: ValidationError) -> str:
    """Each error as `section.setting: reason (got value)`. The value is left out when it is
    not a plain scalar or belongs to a secret: a SecretStr field, or a secret-looking name on
    its path (`kafka.client_options.ssl.key.password`); URL credentials in it are masked.
    """
    parts = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"]]
        reason = error["msg"].removeprefix("Value error, ")  # a validator's own message
        text = f"{'.'.join(loc)}: {redact_text(reason)}"
        value = error.get("input")
        if isinstance(value, str | int | float) and not _is_secret_setting(loc):
            text += f" (got {redact_text(repr(value))})"
        parts.append(text)
    return "; ".join(parts)


def _is_secret_setting(loc: list[str]) -> bool:
    if any(is_secret_key(part) for part in loc):
        return True
    section = Settings.model_fields.get(loc[0]) if loc else None
    if section is None or len(loc) < 2:
        return False
    assert isinstance(section.annotation, type) and issubclass(section.annotation, BaseModel)
    field = section.annotation.model_fields.get(loc[1])
    return field is not None and SecretStr in (field.annotation, *get_args(field.annotation))
