"""The process's policy for Python's cyclic garbage collector; the one module that touches it.

Owns:
- `paused()`: the collector off while large, long-lived structures are built (a
  configuration of 40,000 real servers is a few hundred thousand objects that all survive;
  letting the collector rescan them while they are built costs more than building them).
  Pauses nest and may overlap across threads (the reload reader unpickles in a worker
  thread while the loop runs): the collector is off from the first entry to the last exit,
  then back in the state it was in before the first.
- `settle()`: once the daemon has started, one full collection and then everything that
  survived goes to the permanent generation (`gc.freeze`), so the steady state's
  collections never rescan the configuration, the probe plan and the health state.
- `after_reload()`: after a reload's switch, the permanent generation is released, the
  previous configuration's and health state's reference cycles are collected, and what
  survives is frozen again; the permanent generation is the size of the state in force,
  not the sum of every state since start-up.
Used by the process shells only: the daemon's Runtime, the reload reader (its unpickling
thread and its child process) and the CLI commands. The pure modules (config/, model,
diff, probeplan, health/ ...) never call the collector.

Must not: be used around code that runs for the daemon's lifetime, or freeze while a
structure that will be dropped is still referenced by nobody but itself (that is what
made the permanent generation grow by a whole health state per reload).

The collector is one per interpreter, so the count of open pauses is one per process
too: the only module-level state in the daemon, and it mirrors the interpreter's own.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class _Pauses:
    """How many `paused()` blocks are open, and whether the collector ran before them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.was_enabled = False


_PAUSES = _Pauses()


@contextmanager
def paused(*, freeze: bool = False) -> Iterator[None]:
    """The collector off for the block (nestable, thread-safe).

    `freeze=True`: on exit, what was built goes to the permanent generation at once, so
    that the next young collection does not rescan it when the block ends before the
    structure is handed over (the reader's unpickling thread, the CLI's load). Whatever
    this freezes is released again by the next `after_reload()`; acyclic structures are
    freed by reference counting meanwhile, frozen or not."""
    with _PAUSES.lock:
        if _PAUSES.depth == 0:
            _PAUSES.was_enabled = gc.isenabled()
            gc.disable()
        _PAUSES.depth += 1
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        with _PAUSES.lock:
            _PAUSES.depth -= 1
            if _PAUSES.depth == 0 and _PAUSES.was_enabled:
                gc.enable()


@dataclass(frozen=True, slots=True)
class Collected:
    """What one `settle()`/`after_reload()` did (the Runtime logs it at debug)."""

    freed: int      # unreachable objects found by the collection
    took_s: float   # the collection and the freeze (the loop stalls this long)


def settle() -> Collected:
    """After start-up: collect once, then freeze the survivors (see the module docstring)."""
    began = time.perf_counter()
    freed = gc.collect()
    gc.freeze()
    return Collected(freed, time.perf_counter() - began)


def after_reload() -> Collected:
    """After a reload's switch: unfreeze, collect the previous state's cycles, freeze."""
    began = time.perf_counter()
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    return Collected(freed, time.perf_counter() - began)
