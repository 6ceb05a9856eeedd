"""Pausing Python's cyclic garbage collector while large, long-lived structures are built.

Owns: the `gc_paused()` context manager. A configuration of 40,000 real servers is a few
hundred thousand objects that all survive; letting the collector rescan them while they
are built costs more than building them. On exit the survivors are moved to the
collector's permanent generation (`gc.freeze`), so the first collection after the pause
does not rescan them all either. They are still freed by reference counting when the
last reference goes; only reference cycles among them would stay, and the configuration
model has none. The previous collector state is restored on exit.
Must not: be used around code that runs for the daemon's lifetime.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
