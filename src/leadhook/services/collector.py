"""Keep the cyclic garbage collector out of a large unit of work while it runs.

A batch of 1,000 creates keeps every lead, event and row it builds alive until its answer is
written: tens of thousands of new container objects, each 700 of which set off a young
collection that walks all the survivors so far, every tenth an older one, now and then a full
one. In-process that was 12 ms of a 1,000-lead batch's ~107 ms of CPU (`bench/profiles.md`,
the sixteenth round), and none of it found garbage: a behaviour's objects hold no cycles and
are freed by their reference counts as soon as the answer is sent.

`paused()` turns automatic collection off for the span of such a unit and back on after it,
as it was. Collection is process-wide, so overlapping pauses (PostgreSQL's writer threads)
are counted and the last one out turns it back on. Objects the unit leaves behind are
counted as usual and collected by the first collection after it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    """Run the block with automatic garbage collection off (unless it was off already)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
