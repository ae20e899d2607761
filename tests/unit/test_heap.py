"""pipelines.stream.heap.settle: what is alive at set-up leaves the collector's walks, once
per process, and garbage made afterwards is still collected. In a fresh interpreter, so
that this test session's own objects do not count.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROGRAM = """
import gc, weakref
import pyarrow, numpy  # a worker's set-up: tens of thousands of tracked objects
from pipelines.stream.heap import settle

before = len(gc.get_objects())
settle()
frozen = gc.get_freeze_count()
assert frozen >= 0.9 * before, (frozen, before)
assert len(gc.get_objects()) < 0.05 * before, (len(gc.get_objects()), before)


class Node:
    pass


a, b = Node(), Node()
a.other, b.other = b, a  # a cycle: only the collector frees it
gone = weakref.ref(a)
del a, b
assert gone() is not None
gc.collect()
assert gone() is None, "a cycle made after settle() was not collected"

settle()
assert gc.get_freeze_count() == frozen, "settle() froze again"
print("ok", before, frozen)
"""


def test_settle_freezes_the_set_up_once_and_later_garbage_is_still_collected():
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    _, before, frozen = done.stdout.split()
    assert int(before) > 10_000 and int(frozen) > 10_000


def test_paused_keeps_the_collector_off_inside_only_and_restores_it_on_error():
    import gc

    import pytest

    from pipelines.stream.heap import paused

    assert gc.isenabled()
    with paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError, match="boom"), paused():
        raise ValueError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused():
            pass
        assert not gc.isenabled(), "paused() enabled a collector that was off before it"
    finally:
        gc.enable()
