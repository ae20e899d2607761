"""Distinct-user sketches merge across batches like a set union (within HLL error)."""

import datasketches as ds

from pipelines.metrics.sketches import estimate, merge_sketches


def _sketch(ids, lg_k=11):
    s = ds.hll_sketch(lg_k)
    for i in ids:
        s.update(str(i))
    return s.serialize_compact()


def test_merged_sketch_estimates_the_union_not_the_sum():
    a = _sketch(range(0, 3000))
    b = _sketch(range(2000, 5000))  # 1000 users in both
    merged, distinct = merge_sketches([a, None, b])
    assert abs(distinct - 5000) / 5000 < 0.05  # lg_k=11: ~2.3 % standard error
    assert estimate(merged) == distinct


def test_small_sets_are_exact():
    _, distinct = merge_sketches([_sketch(range(7)), _sketch(range(5, 19))])
    assert distinct == 19


def test_nothing_to_merge():
    assert merge_sketches([None, None]) == (None, 0)
