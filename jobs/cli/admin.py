"""`safewatch warehouse` (schema and roles) and `safewatch config` (the settings)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from jobs.cli.common import load_settings, log
from pipelines.settings import settings_reference, settings_shown


def cmd_warehouse(args: argparse.Namespace) -> int:

    from pipelines.warehouse.engine import describe, make_engine
    from pipelines.warehouse.migrate import migrate

    settings = load_settings(args)
    engine = make_engine(settings.warehouse.url.get_secret_value())
    if args.action == "roles":
        from pipelines.infra.postgres import RolePlan, create_roles

        plan = RolePlan(
            writer=args.writer,
            analyst=args.analyst,
            writer_password=os.environ.get("SAFEWATCH_WRITER_PASSWORD"),
            analyst_password=os.environ.get("SAFEWATCH_ANALYST_PASSWORD"),
        )
        create_roles(engine, plan, log=log)
        return 0
    applied = migrate(engine, log=log)
    log(f"warehouse {describe(engine)} is at the latest schema ({len(applied)} applied now)")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "docs":
        print(settings_reference())
        return 0
    settings = load_settings(args)
    print(settings_shown(settings))
    return 0


def add_warehouse(sub: Any) -> None:
    p = sub.add_parser(
        "warehouse",
        help="manage the warehouse schema and its PostgreSQL roles",
        description="migrate: apply pending migrations. roles (PostgreSQL, run with an admin "
        "login in SAFEWATCH_WAREHOUSE__URL): create or update the writer role (owns the "
        "tables; the job connects with it) and the analyst role (reads the v_* views only), "
        "then migrate. Passwords come from $SAFEWATCH_WRITER_PASSWORD and "
        "$SAFEWATCH_ANALYST_PASSWORD when set. See docs/warehouse.md#roles.",
    )
    p.add_argument("action", choices=["migrate", "roles"])
    p.add_argument("--writer", default="safewatch_writer", help="writer role name")
    p.add_argument("--analyst", default="safewatch_analyst", help="analyst role name")
    p.set_defaults(func=cmd_warehouse)


def add_config(sub: Any) -> None:
    p = sub.add_parser("config", help="show the effective settings or their reference")
    p.add_argument(
        "action", choices=["show", "docs"], help="show: effective values; docs: Markdown reference"
    )
    p.set_defaults(func=cmd_config)
