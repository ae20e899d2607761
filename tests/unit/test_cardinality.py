"""Cardinality control: admit values up to a limit, fold the rest into `other`."""

import copy
import random
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.cardinality import Admission, admit, fold, value_counts

RESERVED = {"other", "*", "unknown"}  # written out here, independent of the module


# --- admit -----------------------------------------------------------------------------------


def test_existing_admissions_are_kept_without_events_in_the_batch():
    allowed, new = admit({"model": ["a", "b"]}, {"model": {"c": 5}}, {"model": 3})
    assert allowed == {"model": frozenset({"a", "b", "c"})}
    assert new == [Admission("model", "c", 5)]


def test_existing_admissions_over_a_lowered_limit_are_all_kept():
    allowed, new = admit({"model": {"a", "b", "c"}}, {"model": {"a": 1, "d": 100}}, {"model": 2})
    assert allowed == {"model": frozenset({"a", "b", "c"})}
    assert new == []


def test_new_values_are_admitted_by_events_desc_then_value_asc():
    counts = {"x": 5, "y": 9, "b": 5, "a": 5, "z": 1, "c": 5}
    allowed, new = admit({}, {"model": counts}, {"model": 3})
    assert new == [
        Admission("model", "y", 9),
        Admission("model", "a", 5),
        Admission("model", "b", 5),
    ]
    assert allowed == {"model": frozenset({"y", "a", "b"})}


def test_an_already_admitted_value_is_not_admitted_again_nor_counted_twice():
    allowed, new = admit({"model": {"a"}}, {"model": {"a": 50, "b": 2, "c": 1}}, {"model": 2})
    assert new == [Admission("model", "b", 2)]
    assert allowed == {"model": frozenset({"a", "b"})}


def test_reserved_values_are_never_admitted_and_do_not_count_against_the_limit():
    counts = {"other": 1000, "*": 900, "unknown": 800, "a": 1, "b": 2}
    allowed, new = admit({"locale": {"other", "*", "en"}}, {"locale": counts}, {"locale": 3})
    # 'en' uses one of the three places; the reserved values use none.
    assert new == [Admission("locale", "b", 2), Admission("locale", "a", 1)]
    assert allowed == {"locale": frozenset({"en", "a", "b"})}
    assert not (allowed["locale"] & RESERVED)


def test_a_dimension_at_its_limit_admits_nothing():
    allowed, new = admit(
        {"model": {"a", "b"}, "locale": set()},
        {"model": {"c": 100, "d": 50}, "locale": {"en": 3}},
        {"model": 2, "locale": 1},
    )
    assert allowed == {"model": frozenset({"a", "b"}), "locale": frozenset({"en"})}
    assert new == [Admission("locale", "en", 3)]


def test_a_zero_limit_admits_nothing():
    allowed, new = admit({}, {"model": {"a": 1}}, {"model": 0})
    assert allowed == {"model": frozenset()}
    assert new == []


def _reference_admit(admitted, batch_counts, limits):
    """Straightforward restatement of the admission rule, per dimension."""
    allowed, new = {}, {}
    for dim, counts in batch_counts.items():
        keep = {v for v in admitted.get(dim, ()) if v not in RESERVED}
        fresh = [(v, n) for v, n in counts.items() if v not in keep and v not in RESERVED]
        fresh.sort(key=lambda vn: (-vn[1], vn[0]))
        taken = fresh[: max(limits[dim] - len(keep), 0)]
        allowed[dim] = keep | {v for v, _ in taken}
        new[dim] = taken
    return allowed, new


_values = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "other", "*", "unknown"])
_dims = st.sampled_from(["model", "locale", "region"])


@settings(max_examples=200, deadline=None)
@given(
    admitted=st.dictionaries(_dims, st.sets(_values, max_size=5)),
    batch_counts=st.dictionaries(_dims, st.dictionaries(_values, st.integers(1, 5), max_size=8)),
    limit=st.integers(0, 6),
    seed=st.integers(0, 1000),
)
def test_admit_matches_reference_and_ignores_insertion_order(admitted, batch_counts, limit, seed):
    limits = dict.fromkeys(("model", "locale", "region"), limit)
    allowed, new = admit(admitted, batch_counts, limits)

    want_allowed, want_new = _reference_admit(admitted, batch_counts, limits)
    assert {d: set(v) for d, v in allowed.items()} == want_allowed
    by_dim = defaultdict(list)
    for a in new:
        by_dim[a.dimension].append((a.value, a.events))
    assert {d: by_dim.get(d, []) for d in batch_counts} == want_new
    for a in new:
        assert a.events == batch_counts[a.dimension][a.value]
        assert a.value not in RESERVED
        assert a.value not in admitted.get(a.dimension, set())
    for dim, values in allowed.items():
        non_reserved_before = set(admitted.get(dim, ())) - RESERVED
        assert non_reserved_before <= values
        assert len(values) <= max(limit, len(non_reserved_before))

    # Same content, other insertion order: same decision.
    rnd = random.Random(seed)
    dims = list(batch_counts)
    rnd.shuffle(dims)
    shuffled = {}
    for d in dims:
        items = list(batch_counts[d].items())
        rnd.shuffle(items)
        shuffled[d] = dict(items)
    allowed2, new2 = admit(
        {d: sorted(v, reverse=True) for d, v in admitted.items()}, shuffled, limits
    )
    assert allowed2 == allowed
    assert set(new2) == set(new)
    for d in batch_counts:
        assert [a for a in new2 if a.dimension == d] == [a for a in new if a.dimension == d]


# --- value_counts ----------------------------------------------------------------------------


def test_value_counts_sums_the_weight_per_dimension_value():
    rows: list[dict[str, Any]] = [
        {"model": "m1", "locale": "en", "events_seen": 3},
        {"model": "m1", "locale": "de", "events_seen": 4},
        {"model": "m2", "locale": "en", "events_seen": 5},
        {"model": "other", "locale": "en", "events_seen": "2"},
    ]
    assert value_counts(rows, ["model", "locale"], "events_seen") == {
        "model": {"m1": 7, "m2": 5, "other": 2},
        "locale": {"en": 10, "de": 4},
    }


def test_value_counts_of_no_rows_lists_every_dimension():
    assert value_counts([], ["model", "locale"], "events") == {"model": {}, "locale": {}}


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"a": _values, "b": _values, "w": st.integers(0, 10_000), "x": st.integers()}
        ),
        max_size=40,
    )
)
def test_value_counts_matches_a_reference_sum(rows):
    expected: dict[str, dict[str, int]] = {"a": {}, "b": {}}
    for r in rows:
        for d in ("a", "b"):
            expected[d][r[d]] = expected[d].get(r[d], 0) + r["w"]
    assert value_counts(rows, ["a", "b"], "w") == expected


# --- fold ------------------------------------------------------------------------------------

DIMS = ("d1", "d2", "d3")
KEY = ("window", *DIMS)
ADD = ("events", "violations")


def merge_users(sketches):
    return tuple(sorted(u for s in sketches for u in s))


def _reference_map(row, allowed):
    return tuple(
        row[c] if c not in allowed or row[c] in allowed[c] or row[c] in RESERVED else "other"
        for c in KEY
    )


_dim_value = st.sampled_from(["v0", "v1", "v2", "v3", "v4", "v5", "other", "*", "unknown"])
_row_key = st.tuples(st.integers(0, 2), _dim_value, _dim_value, _dim_value)


@st.composite
def fold_inputs(draw):
    keys = draw(st.lists(_row_key, unique=True, max_size=30))
    rows = []
    for k in keys:
        row = dict(zip(KEY, k, strict=True))
        row["events"] = draw(st.integers(0, 1000))
        row["violations"] = draw(st.integers(0, 1000))
        row["users"] = tuple(sorted(draw(st.lists(st.integers(0, 50), max_size=4))))
        row["label"] = draw(st.text(max_size=3))
        rows.append(row)
    allowed = draw(
        st.dictionaries(
            st.sampled_from(DIMS),
            st.frozensets(st.sampled_from(["v0", "v1", "v2", "v3", "v4", "v5"])),
        )
    )
    return rows, allowed


@settings(max_examples=300, deadline=None)
@given(fold_inputs())
def test_fold_matches_a_reference(inputs):
    rows, allowed = inputs
    before = copy.deepcopy(rows)
    out = fold(rows, allowed, KEY, add=ADD, merge={"users": merge_users})
    assert rows == before  # the input rows are not modified

    # Reference: group the original rows by their mapped key.
    groups = defaultdict(list)
    for r in rows:
        groups[_reference_map(r, allowed)].append(r)

    out_keys = [tuple(r[c] for c in KEY) for r in out]
    assert len(out_keys) == len(set(out_keys))
    assert set(out_keys) == set(groups)

    for col in ADD:
        assert sum(r[col] for r in out) == sum(r[col] for r in rows)
    for r in out:
        group = groups[tuple(r[c] for c in KEY)]
        for col in ADD:
            assert r[col] == sum(g[col] for g in group)
        assert r["users"] == tuple(sorted(u for g in group for u in g["users"]))
        assert r["label"] == group[0]["label"]  # other columns: from the first row
        for d, ok in allowed.items():
            assert r[d] in ok | RESERVED, (d, r[d])

    # Rows that need no folding and share their key with no other row: the same objects,
    # in their original order.
    untouched = [
        r
        for r in rows
        if _reference_map(r, allowed) == tuple(r[c] for c in KEY)
        and len(groups[_reference_map(r, allowed)]) == 1
    ]
    returned = [r for r in out if any(r is u for u in untouched)]
    assert len(returned) == len(untouched)
    assert all(a is b for a, b in zip(returned, untouched, strict=True))


def test_fold_with_nothing_to_fold_returns_the_same_rows():
    rows = [
        {"window": 0, "d1": "v0", "events": 1},
        {"window": 0, "d1": "other", "events": 2},
        {"window": 1, "d1": "*", "events": 3},
    ]
    out = fold(rows, {"d1": frozenset({"v0"})}, ("window", "d1"), add=["events"])
    assert len(out) == 3
    assert all(a is b for a, b in zip(out, rows, strict=True))


def test_fold_combines_a_folded_row_with_an_existing_other_row():
    rows = [
        {"window": 0, "d1": "other", "events": 2, "violations": 1},
        {"window": 0, "d1": "rare", "events": 5, "violations": 0},
        {"window": 0, "d1": "kept", "events": 7, "violations": 3},
    ]
    out = fold(rows, {"d1": frozenset({"kept"})}, ("window", "d1"), add=["events", "violations"])
    assert out == [
        {"window": 0, "d1": "other", "events": 7, "violations": 1},
        {"window": 0, "d1": "kept", "events": 7, "violations": 3},
    ]
    assert out[1] is rows[2]


def test_fold_leaves_dimensions_without_an_allowed_set_alone():
    rows = [{"window": 0, "d1": "x", "d2": "y", "events": 1}]
    out = fold(rows, {"d2": frozenset({"y"})}, ("window", "d1", "d2"), add=["events"])
    assert out[0] is rows[0]


# --- end to end ------------------------------------------------------------------------------


def test_a_thousand_values_with_limit_ten_keep_the_top_ten_and_fold_the_rest():
    rnd = random.Random(42)
    models = [f"model-{i:04d}" for i in range(1000)]
    weight = dict(zip(models, rnd.sample(range(1, 100_001), len(models)), strict=True))
    rows: list[dict[str, Any]] = []
    for window in (0, 1):
        for locale in ("en", "de"):
            for m in models:
                n = weight[m] + window + (locale == "de")
                rows.append(
                    {
                        "window": window,
                        "locale": locale,
                        "model_id": m,
                        "events_seen": n,
                        "violations": n % 7,
                        "users": (m,),
                    }
                )
    rnd.shuffle(rows)

    counts = value_counts(rows, ["model_id", "locale"], "events_seen")
    allowed, new = admit({}, counts, {"model_id": 10, "locale": 10})

    top10 = sorted(models, key=lambda m: -weight[m])[:10]  # weights are distinct: no ties
    assert allowed["model_id"] == frozenset(top10)
    assert [a.value for a in new if a.dimension == "model_id"] == top10
    for a in new:
        if a.dimension == "model_id":
            assert a.events == 4 * weight[a.value] + 4  # +0+0, +1, +1, +2 over the 4 keys
    assert allowed["locale"] == frozenset({"en", "de"})

    out = fold(
        rows,
        allowed,
        ("window", "locale", "model_id"),
        add=["events_seen", "violations"],
        merge={"users": merge_users},
    )
    assert len(out) == 10 * 4 + 4
    kept = [r for r in out if r["model_id"] != "other"]
    assert len(kept) == 40
    assert all(any(r is k for r in rows) for k in kept)
    assert {r["model_id"] for r in kept} == set(top10)

    others = {(r["window"], r["locale"]): r for r in out if r["model_id"] == "other"}
    assert set(others) == {(w, loc) for w in (0, 1) for loc in ("en", "de")}
    rest = [m for m in models if m not in set(top10)]
    for (window, locale), r in others.items():
        bump = window + (locale == "de")
        assert r["events_seen"] == sum(weight[m] + bump for m in rest)
        assert r["violations"] == sum((weight[m] + bump) % 7 for m in rest)
        assert r["users"] == tuple(sorted(rest))
    assert sum(r["events_seen"] for r in out) == sum(r["events_seen"] for r in rows)


@pytest.mark.parametrize("limit", [0, 1, 999, 1000, 5000])
def test_limits_around_the_number_of_distinct_values(limit):
    counts = {"model_id": {f"m{i:04d}": 1000 - i for i in range(1000)}}
    allowed, new = admit({}, counts, {"model_id": limit})
    expected = {f"m{i:04d}" for i in range(min(limit, 1000))}
    assert allowed["model_id"] == expected
    assert len(new) == len(expected)
