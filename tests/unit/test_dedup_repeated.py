"""Which records repeat an event id (pipelines.stream.dedup.repeated), against a direct
walk of the records in (partition, offset) order.
"""

from __future__ import annotations

import random

import pyarrow as pa

from pipelines.stream.dedup import repeated


def _ids(rows):
    return pa.table(
        {
            "event_id": pa.array([r[0] for r in rows], pa.string()),
            "partition": pa.array([r[1] for r in rows], pa.int32()),
            "offset": pa.array([r[2] for r in rows], pa.int64()),
        }
    )


def _reference(rows, seen):
    counted, marks = set(seen), []
    for event_id, partition, offset in sorted(rows, key=lambda r: (r[1], r[2])):
        if event_id in counted:
            marks.append((partition, offset))
        counted.add(event_id)
    return marks


def test_first_record_of_an_id_is_kept_unless_an_earlier_batch_counted_it():
    rows = [("b", 1, 5), ("a", 0, 9), ("a", 0, 3), ("c", 2, 0), ("b", 0, 7), ("d", 1, 1)]
    # a: kept at (0, 3), repeated at (0, 9); b: kept at (0, 7), repeated at (1, 5);
    # d was counted by an earlier batch; c is unique.
    assert repeated(_ids(rows), ["d", "zzz"]) == [(0, 9), (1, 1), (1, 5)]
    assert repeated(_ids([]), ["a"]) == []
    assert repeated(_ids(rows[:1]), []) == []


def test_random_batches_match_a_direct_walk():
    rng = random.Random(4)
    for _ in range(50):
        n = rng.randrange(0, 400)
        pool = [f"id-{i}" for i in range(rng.randrange(1, 300))]
        coordinates = rng.sample([(p, o) for p in range(3) for o in range(500)], n)
        rows = [(rng.choice(pool), p, o) for p, o in coordinates]
        seen = rng.sample(pool, rng.randrange(0, min(20, len(pool)) + 1))
        assert repeated(_ids(rows), seen) == _reference(rows, seen)
