"""Leaky-view attacks by the analyst login on a real PostgreSQL server: nothing hidden leaks.

The analyst's own conditions can raise an error that quotes the row they run on, or call a
function that records it; a view without `security_barrier` lets the planner run them before
its k-anonymity filter, on the rows it hides, and planner settings choose the plan. Every
attack runs under several plans; a control shows each attack does leak once the barrier is
lifted, so the attacks are real.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, ProgrammingError

from pipelines.infra.postgres import RolePlan, create_roles
from pipelines.warehouse.engine import make_engine
from pipelines.warehouse.migrate import migrate
from pipelines.warehouse.sink import WarehouseSink
from pipelines.warehouse.tables import ANALYST_OBJECTS
from schemas.warehouse.migrations import m0014_suppressed_views
from tests.analyst_data import SEGMENTS, K, fill
from tests.unit.test_analyst_views import alert_rows, expected_alert_rows, fill_alerts

PLAN = RolePlan(writer="lk_writer", analyst="lk_analyst")
SMALL = next(s for s, users in SEGMENTS.items() if users < K)  # ('agent', 'fr-FR')

# view -> a condition that fails on a hidden row with an error quoting that row's values,
# and is harmless (0 = 0) on every row the view shows.
_BOOM = "CAST('LEAK|' || {} AS int)"
ATTACKS = {
    "v_segment_window": (
        f"CASE WHEN distinct_users < {K} THEN "
        + _BOOM.format("product_surface || '|' || locale || '|users=' || distinct_users "
                       "|| '|events=' || events || '|violations=' || violations")
        + " ELSE 0 END = 0"
    ),
    "v_segment_daily": (
        f"CASE WHEN locale = '{SMALL[1]}' THEN "
        + _BOOM.format("product_surface || '|' || locale") + " ELSE 0 END = 0"
    ),
    "v_segment_weekly": (
        f"CASE WHEN locale = '{SMALL[1]}' THEN "
        + _BOOM.format("product_surface || '|' || locale") + " ELSE 0 END = 0"
    ),
    "v_segment_window_drift": (
        f"CASE WHEN locale = '{SMALL[1]}' THEN "
        + _BOOM.format("product_surface || '|' || locale || '|psi=' || coalesce(psi, -1)")
        + " ELSE 0 END = 0"
    ),
    "v_segment_window_rate_tests": (
        f"CASE WHEN locale = '{SMALL[1]}' THEN "
        + _BOOM.format("product_surface || '|' || locale || '|n=' || current_numerator")
        + " ELSE 0 END = 0"
    ),
    "v_alert_history": (
        f"CASE WHEN segment LIKE '%{SMALL[1]}%' THEN "
        + _BOOM.format("segment || '|' || summary") + " ELSE 0 END = 0"
    ),
    "v_alert_state": (
        f"CASE WHEN segment LIKE '%{SMALL[1]}%' THEN "
        + _BOOM.format("segment || '|' || status") + " ELSE 0 END = 0"
    ),
}  # fmt: skip
PLANS = {
    "default": (),
    "no nestloop": ("enable_nestloop",),
    "no hashjoin": ("enable_hashjoin",),
    "no hash/merge join": ("enable_hashjoin", "enable_mergejoin"),
    "nestloop only, no seqscan": ("enable_hashjoin", "enable_mergejoin", "enable_seqscan"),
    "no hashagg": ("enable_hashagg",),
}


def _as(url: str, role: str) -> Engine:
    return make_engine(make_url(url).set(username=role).render_as_string(hide_password=False))


@pytest.fixture(scope="module")
def warehouse(postgres) -> Iterator[tuple[Engine, Engine]]:
    admin_url = postgres.create_database("leaks")
    admin = make_engine(admin_url)
    create_roles(admin, PLAN, log=lambda _m: None)
    writer, analyst = _as(admin_url, PLAN.writer), _as(admin_url, PLAN.analyst)
    migrate(writer)
    fill(WarehouseSink(writer))
    fill_alerts(writer)
    with writer.begin() as conn:  # fresh statistics: the planner's choices depend on them
        conn.execute(text("ANALYZE"))
    yield writer, analyst
    for e in (admin, writer, analyst):
        e.dispose()


def _attack(
    engine: Engine, view: str, plan: tuple[str, ...], *, barrier: bool = True
) -> tuple[str | None, str]:
    """Run the attack: (its error text or None, the text of the rows it returned)."""
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            if not barrier:
                conn.execute(text(f"ALTER VIEW {view} SET (security_barrier = false)"))
            for setting in plan:
                conn.execute(text(f"SET LOCAL {setting} = off"))
            rows = conn.execute(text(f"SELECT * FROM {view} WHERE {ATTACKS[view]}")).all()
            return None, repr(rows)
        except DBAPIError as exc:
            return str(exc.orig), ""
        finally:
            trans.rollback()


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("view", ATTACKS)
def test_an_erroring_condition_never_sees_a_hidden_row(warehouse, view, plan):
    _, analyst = warehouse
    error, rows = _attack(analyst, view, PLANS[plan])
    assert error is None  # the condition only ever ran on shown rows
    assert rows != "[]"  # and the shown rows came through
    assert SMALL[1] not in rows and SMALL[0] not in rows


@pytest.mark.parametrize("view", ATTACKS)
def test_control_the_same_attack_leaks_without_the_barrier(warehouse, view):
    writer, _ = warehouse
    leaked = [
        p for p in PLANS.values() if "LEAK|" in (_attack(writer, view, p, barrier=False)[0] or "")
    ]
    assert leaked, f"no plan leaked {view} without security_barrier: the attack proves nothing"


def test_every_analyst_view_is_a_security_barrier(warehouse):
    writer, _ = warehouse
    views = [n for n in ANALYST_OBJECTS if n.startswith("v_")]
    with writer.connect() as conn:
        options = dict(
            conn.execute(
                text("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:v)"),
                {"v": views},
            ).all()
        )
    assert set(options) == set(views)
    assert {v: "security_barrier=true" in (o or []) for v, o in options.items()} == dict.fromkeys(
        views, True
    )
    # Not attacked: views of batches (shown whole), and the counts of what the views hide,
    # which have a row per period x dimension set and no segment column to aim at.
    unsegmented = {"v_quality_results", "v_batch_ledger", *m0014_suppressed_views.VIEWS}
    assert set(ATTACKS) == set(views) - unsegmented


@pytest.mark.parametrize("statement", [
    "CREATE FUNCTION pg_temp.peek(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 "
    "AS $$ BEGIN RAISE NOTICE 'seen %', $1; RETURN true; END $$",
    "CREATE FUNCTION public.peek(text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$",
    "CREATE TEMP TABLE seen (x text)",
    "CREATE SCHEMA mine",
    "CREATE TABLE public.seen (x text)",
])  # fmt: skip
def test_the_analyst_cannot_create_a_function_or_any_object(warehouse, statement):
    _, analyst = warehouse
    with analyst.connect() as conn, pytest.raises(ProgrammingError) as err:
        conn.execute(text(statement))
    assert type(err.value.orig).__name__ == "InsufficientPrivilege"


@pytest.mark.parametrize("view", ["v_alert_history", "v_alert_state"])
def test_the_analyst_sees_alerts_of_segments_of_k_users_only(warehouse, view):
    _, analyst = warehouse
    assert alert_rows(analyst, view) == expected_alert_rows(view)


@pytest.mark.parametrize("view", ["v_segment_window", "v_segment_window_drift", "v_alert_history"])
def test_a_cheap_leaky_function_sees_shown_rows_only(warehouse, view):
    """The writer could make such a function (the analyst cannot, above); with the barrier
    it still runs on the rows the view shows only. The control shows it would see them all.
    """
    writer, analyst = warehouse
    column = "segment" if view == "v_alert_history" else "locale"
    with writer.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION peek(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 "
                "AS $$ BEGIN RAISE NOTICE 'seen %', $1; RETURN true; END $$"
            )
        )

    def seen(engine: Engine, *, barrier: bool) -> list[str]:
        notices: list[str] = []
        with engine.connect() as conn:
            conn.connection.driver_connection.add_notice_handler(  # type: ignore[union-attr]
                lambda d: notices.append(str(d.message_primary))
            )
            with conn.begin() as trans:
                if not barrier:
                    conn.execute(text(f"ALTER VIEW {view} SET (security_barrier = false)"))
                conn.execute(text(f"SELECT * FROM {view} WHERE peek({column})")).all()
                trans.rollback()
        return notices

    try:
        shown = seen(analyst, barrier=True)
        assert shown and not any(SMALL[1] in n for n in shown)
        assert any(SMALL[1] in n for n in seen(writer, barrier=False))  # control
    finally:
        with writer.begin() as conn:
            conn.execute(text("DROP FUNCTION peek(text)"))
