"""The collector policy: pauses nest and overlap across threads; after a reload the
previous state's cycles are freed and the permanent generation holds only what lives;
no pure module touches the collector."""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import fastcheck
from fastcheck.daemon import gcpolicy


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    if not was:
        gc.disable()


def test_pauses_nest_and_restore_the_collector(collector: None) -> None:
    with gcpolicy.paused():
        assert not gc.isenabled()
        with gcpolicy.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with gcpolicy.paused():
        pass
    assert not gc.isenabled()  # off before: stays off


def test_overlapping_pauses_in_two_threads(collector: None) -> None:
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with gcpolicy.paused():
            entered.set()
            leave.wait(5)

    thread = threading.Thread(target=other)
    with gcpolicy.paused():
        thread.start()
        entered.wait(5)
    assert not gc.isenabled()  # the other thread's pause is still open
    leave.set()
    thread.join(5)
    assert gc.isenabled()


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_after_reload_frees_frozen_cycles(collector: None) -> None:
    gc.collect()
    gc.freeze()
    old_state = [_Node() for _ in range(1000)]
    gc.freeze()  # as the old pure modules did, with the state in force still referenced
    frozen = gc.get_freeze_count()
    del old_state  # the reload switched: only cycles hold it now
    done = gcpolicy.after_reload()
    assert done.freed >= 1000
    assert gc.get_freeze_count() <= frozen - 1000
    assert not any(isinstance(item, _Node) for item in gc.get_objects())


def test_pure_modules_never_touch_the_collector() -> None:
    root = Path(fastcheck.__file__).parent
    pure = [*root.glob("config/*.py"), *root.glob("health/*.py"), *root.glob("ipvs/*.py"),
            root / "model.py", root / "diff.py", root / "probeplan.py", root / "scheduler.py"]
    assert pure
    for path in pure:
        text = path.read_text()
        assert not re.search(r"^\s*(import gc\b|from gc import|from fastcheck\.daemon)",
                             text, re.M), path
