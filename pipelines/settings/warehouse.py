"""The settings of the warehouse (`[warehouse]`): where aggregates go, how long an analyst's
query may run, and how long the job keeps trying while the warehouse cannot be reached.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from pipelines.settings.types import Section


class WarehouseSettings(Section):
    """Where aggregates go: an SQLite file by default, PostgreSQL in production."""

    url: SecretStr = Field(
        SecretStr("sqlite:///var/warehouse.db"),
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host/db (never printed).",
    )
    query_timeout_s: float = Field(
        30.0,
        gt=0,
        description="`safewatch query` cancels a statement that runs longer than this "
        "(PostgreSQL statement_timeout, SQLite progress handler).",
    )
    query_allow_writer_login: bool = Field(
        False,
        description="Let `safewatch query` run as a PostgreSQL login that can write or signal "
        "other sessions (superuser, table owner, pg_signal_backend), with a warning; by default "
        "it refuses: use the analyst login.",
    )
    retry_budget_s: float = Field(
        300.0,
        ge=0,
        description="How long the job keeps trying when the warehouse cannot be reached (a "
        "restart, a failover), from the first failure, before it stops with an error; each "
        "batch's commit is one transaction, tried again whole. 0: stop at the first failure.",
    )
    retry_initial_s: float = Field(
        1.0,
        gt=0,
        description="The first wait between two tries while the warehouse cannot be reached; "
        "each wait doubles, up to warehouse.retry_max_s.",
    )
    retry_max_s: float = Field(
        30.0,
        gt=0,
        description="The longest wait between two tries while the warehouse cannot be reached.",
    )

    @model_validator(mode="after")
    def _retry_waits(self) -> WarehouseSettings:
        if self.retry_max_s < self.retry_initial_s:
            msg = (
                f"retry_max_s ({self.retry_max_s:g}) must be at least retry_initial_s "
                f"({self.retry_initial_s:g})"
            )
            raise ValueError(msg)
        return self
