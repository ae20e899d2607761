"""Keep Python's cyclic garbage collector off the long-lived objects of a process.

A full collection walks every object the collector tracks. After the imports (pyarrow,
numpy and pandas in a Python worker; SQLAlchemy, pydantic and Great Expectations as well on
the driver) and the job's own set-up, that is a hundred thousand objects or more, which
never become garbage: a full collection took 0.07-0.25 s here. PySpark's daemon runs one
after every task of a reused Python worker (and the next task on that worker waits for it);
on the driver the collector's own full collections took about 0.25 s each, several per run.
`settle` collects once and then freezes what is alive (`gc.freeze`): later collections walk
only the objects made after.

During a batch the driver holds tens of thousands of rows as dicts (histograms, drift), which
the collector would walk again and again as they age (about 0.25 s per batch here), though
refcounting frees them when the batch ends: `paused` keeps the collector off for the batch.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_settled = False


def settle() -> None:
    """Collect, then exempt every object alive now from later collections; once per
    process (later calls do nothing). Call it when the process's set-up is done.
    """
    global _settled  # noqa: PLW0603 - once per process, by design
    if _settled:
        return
    gc.collect()
    gc.freeze()
    _settled = True


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside the block; what it left in cycles goes at the next
    collection after it (refcounting frees everything else as usual).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
