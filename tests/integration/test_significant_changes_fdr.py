"""The significant-changes listing controls its false discovery rate across everything it
lists from, on SQLite and PostgreSQL.

`segment_window_rate_tests` is filled as the drift job would (per-window, per-rate
Benjamini-Hochberg in `q_value`) with uniform null p-values over many windows, rates and
segments, plus a few planted strong signals. The expected listing is computed independently
with scipy's `false_discovery_control` over every p-value of the dimension set.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import Engine, insert, select

from pipelines.metrics.catalog import RATES
from pipelines.metrics.rate_tests import benjamini_hochberg
from pipelines.report.terminal import print_changes
from pipelines.segments import SEGMENT_DIMENSIONS
from pipelines.warehouse.queries import significant_changes
from pipelines.warehouse.tables import Tables, as_utc
from tests.integration.alert_windows import warehouse_engine

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
RATE_IDS = tuple(r.id for r in RATES[:3])
LOCALES = ("de-DE", "en-GB", "en-US", "fr-FR", "ja-JP")
MAX_Q = 0.05
WINDOWS = 200  # x 3 rates x 5 locales: 3,000 rate tests per dimension set
MIXED = ("product_surface", "locale")  # nulls plus the planted signals
NULL = ("locale",)  # nulls only
# (window, rate, locale) -> p-value of a real change; distinct, so their q-values are too.
PLANTED = {
    (17, RATE_IDS[0], "de-DE"): 1e-15,
    (83, RATE_IDS[1], "fr-FR"): 1e-13,
    (120, RATE_IDS[2], "en-US"): 1e-11,
    (199, RATE_IDS[0], "ja-JP"): 1e-9,
}

Key = tuple[datetime, str, str]  # window_start, rate_id, locale


def fill(
    engine: Engine,
    rng: np.random.Generator,
    dims: tuple[str, ...],
    *,
    windows: int,
    planted: Mapping[tuple[int, str, str], float] | None = None,
) -> dict[Key, dict[str, Any]]:
    """Rate tests of every window x rate x locale of dimension set `dims`, as the job stores
    them: one in ten insufficient (NULL statistics), the others a uniform p-value unless
    planted, and q_value Benjamini-Hochberg per window and rate across the locales."""
    now = datetime.now(UTC)
    records: dict[Key, dict[str, Any]] = {}
    for w in range(windows):
        start = T0 + w * WINDOW
        for rate in RATE_IDS:
            family = []
            for locale in LOCALES:
                p = (planted or {}).get((w, rate, locale))
                insufficient = p is None and rng.random() < 0.1
                if p is None and not insufficient:
                    p = float(rng.random())
                trials = 10 if insufficient else int(rng.integers(100, 400))
                successes = int(rng.integers(0, trials // 10 + 1))
                family.append(
                    {
                        "window_start": start,
                        "dimension_set": ",".join(dims),
                        **dict.fromkeys(SEGMENT_DIMENSIONS, "*"),
                        **({"product_surface": "chat"} if "product_surface" in dims else {}),
                        "locale": locale,
                        "rate_id": rate,
                        "baseline": "trailing 7 days",
                        "status": "insufficient_data" if insufficient else "ok",
                        "current_numerator": successes,
                        "current_denominator": trials,
                        "baseline_numerator": 5,
                        "baseline_denominator": 1000,
                        "difference": None if insufficient else successes / trials - 0.005,
                        "z": None if p is None else float(stats.norm.isf(p / 2)),
                        "p_value": p,
                        "computed_at": now,
                    }
                )
            qs = benjamini_hochberg([r["p_value"] for r in family])
            for r, q in zip(family, qs, strict=True):
                r["q_value"] = q
                records[(start, rate, r["locale"])] = r
    with engine.begin() as conn:
        conn.execute(insert(Tables(engine).rate_tests), list(records.values()))
    return records


def reference(records: Mapping[Key, dict[str, Any]]) -> dict[Key, float]:
    """Key -> listing-wide q of every test scipy's BH keeps at MAX_Q."""
    keys = [k for k, r in records.items() if r["p_value"] is not None]
    q = stats.false_discovery_control([records[k]["p_value"] for k in keys], method="bh")
    return {k: float(v) for k, v in zip(keys, q, strict=True) if v <= MAX_Q}


def count_tests(records: Mapping[Key, dict[str, Any]]) -> int:
    return sum(r["p_value"] is not None for r in records.values())


def old_selection(engine: Engine, dims: tuple[str, ...]) -> set[Key]:
    """What the listing used to be: the stored per-window q_value <= MAX_Q."""
    t = Tables(engine).rate_tests
    stmt = select(t.c.window_start, t.c.rate_id, t.c.locale).where(
        t.c.dimension_set == ",".join(dims), t.c.q_value <= MAX_Q
    )
    with engine.connect() as conn:
        return {(as_utc(w), rate, locale) for w, rate, locale in conn.execute(stmt)}


def key(row: Mapping[str, Any]) -> Key:
    return (row["window_start"], row["rate_id"], row["locale"])


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def warehouse(request, tmp_path_factory):
    engine = warehouse_engine(request, tmp_path_factory.mktemp("fdr"), "fdr")
    rng = np.random.default_rng(20261120)
    mixed = fill(engine, rng, MIXED, windows=WINDOWS, planted=PLANTED)
    null = fill(engine, rng, NULL, windows=WINDOWS)
    yield engine, mixed, null
    engine.dispose()


def test_listing_is_bh_across_every_rate_test(warehouse):
    engine, mixed, _ = warehouse
    expected = reference(mixed)
    found = significant_changes(
        engine, dimension_set=",".join(MIXED), max_q=MAX_Q, limit=len(mixed)
    )
    assert found.tests == count_tests(mixed)
    assert {key(r) for r in found.rows} == set(expected)
    for r in found.rows:
        assert r["listing_q"] == pytest.approx(expected[key(r)], rel=1e-9)
        # The stored columns are those of the row, per-window q_value unchanged.
        stored = mixed[key(r)]
        assert {c: r[c] for c in ("p_value", "q_value", "status", "current_numerator")} == {
            c: stored[c] for c in ("p_value", "q_value", "status", "current_numerator")
        }
    # Most significant first, then the latest window.
    order = [(r["listing_q"], -r["window_start"].timestamp()) for r in found.rows]
    assert order == sorted(order)

    planted = {(T0 + w * WINDOW, rate, locale) for w, rate, locale in PLANTED}
    assert planted <= set(expected)
    listed_nulls = set(expected) - planted
    assert len(listed_nulls) <= 2
    # The old selection listed far more rows of this data, nulls among them.
    assert len(old_selection(engine, MIXED) - planted) > len(listed_nulls) + 5


def test_limit_keeps_the_most_significant(warehouse):
    engine, mixed, _ = warehouse
    expected = sorted(reference(mixed).items(), key=lambda kv: (kv[1], -kv[0][0].timestamp()))
    found = significant_changes(engine, dimension_set=",".join(MIXED), max_q=MAX_Q, limit=2)
    assert [key(r) for r in found.rows] == [k for k, _ in expected[:2]]
    assert found.tests == count_tests(mixed)


def test_null_data_lists_nothing_the_old_selection_listed_many(warehouse):
    engine, _, null = warehouse
    assert len(old_selection(engine, NULL)) > 5
    assert reference(null) == {}  # no real change, and BH over all of them finds none
    found = significant_changes(engine, dimension_set=",".join(NULL), max_q=MAX_Q, limit=100)
    assert found.rows == []
    assert found.tests == count_tests(null)


class _Sqlite:
    """Stands for the fixture request of `warehouse_engine`: a SQLite warehouse."""

    param = "sqlite"


def test_ties_are_broken_by_the_latest_window(tmp_path):
    """Equal p-values give equal q-values: the limit keeps the latest windows of the tie."""
    engine = warehouse_engine(_Sqlite(), tmp_path, "ties")
    rng = np.random.default_rng(7)
    tied = {(w, RATE_IDS[0], LOCALES[w % 5]): 1e-10 for w in range(2, 8)}
    records = fill(
        engine, rng, MIXED, windows=10, planted={**tied, (0, RATE_IDS[1], "de-DE"): 1e-14}
    )
    expected = reference(records)
    assert len(expected) >= 7
    found = significant_changes(engine, dimension_set=",".join(MIXED), max_q=MAX_Q, limit=4)
    assert [key(r) for r in found.rows] == [
        (T0, RATE_IDS[1], "de-DE"),
        *[(T0 + w * WINDOW, RATE_IDS[0], LOCALES[w % 5]) for w in (7, 6, 5)],
    ]
    engine.dispose()


def test_print_changes_names_the_tests_corrected_over(tmp_path, capsys):
    engine = warehouse_engine(_Sqlite(), tmp_path, "cli")
    rng = np.random.default_rng(11)
    null = fill(engine, rng, NULL, windows=20)
    planted = {(3, RATE_IDS[0], "de-DE"): 1e-12}
    mixed = fill(engine, rng, MIXED, windows=20, planted=planted)
    assert reference(null) == {}
    assert old_selection(engine, NULL)  # the old listing would have shown something

    print_changes(engine, list(NULL), limit=8)
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "No rate differs from its baseline at a false discovery rate <= 5 % across all "
        f"{count_tests(null):,} rate tests in the windows with drift."
    ]

    print_changes(engine, list(MIXED), limit=8)
    out = capsys.readouterr().out
    expected = reference(mixed)
    assert (
        "Significant changes against the baseline (false discovery rate <= 5 % across all "
        f"{count_tests(mixed):,} rate tests), most significant first:"
    ) in out
    lines = out.strip().splitlines()
    assert lines[2].split()[-1] == "q"
    body = lines[4:]
    assert len(body) == len(expected)
    (k,) = [k for k in expected if k[0] == T0 + 3 * WINDOW]
    row = next(line for line in body if line.startswith(f"{T0 + 3 * WINDOW:%H:%M}"))
    assert row.split()[-1] == f"{expected[k]:.1e}"
    assert row.split()[1:4] == ["chat", "de-DE", RATE_IDS[0]]
    engine.dispose()
