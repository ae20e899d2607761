"""The Alembic environment of the warehouse migrations (schemas/warehouse/migrations).

Alembic runs this file for `alembic -c pipelines/warehouse/alembic/alembic.ini upgrade head`,
and `safewatch` runs it through Alembic at start; both do `run_env`.
"""

from typing import cast

from alembic import context
from alembic.runtime.environment import EnvironmentContext

from pipelines.warehouse.migrate import run_env

# `alembic.context` is a module that stands for the EnvironmentContext running this file.
run_env(cast(EnvironmentContext, context))
