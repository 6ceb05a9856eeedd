"""Observers: a failing observer never stops the daemon; a failed open closes the rest."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from fastcheck.daemon.observe import Observer, Observers
from fastcheck.errors import FastcheckError


class Recorder(Observer):
    def __init__(self, name: str, fail_open: bool = False, fail_hook: bool = False) -> None:
        self.name = name
        self.calls: list[str] = []
        self.fail_open = fail_open
        self.fail_hook = fail_hook

    async def open(self, runtime: Any) -> None:
        if self.fail_open:
            raise FastcheckError(f"{self.name}: cannot listen")
        self.calls.append("open")

    def started(self, runtime: Any) -> None:
        if self.fail_hook:
            raise RuntimeError("boom")
        self.calls.append("started")

    async def close(self) -> None:
        self.calls.append("close")


def test_failed_open_closes_the_observers_already_open() -> None:
    first, second, third = Recorder("a"), Recorder("b", fail_open=True), Recorder("c")
    with pytest.raises(FastcheckError, match="b: cannot listen"):
        asyncio.run(Observers([first, second, third]).open(None))
    assert first.calls == ["open", "close"]
    assert third.calls == []  # never opened, never closed


def test_a_raising_hook_is_logged_and_switched_off(caplog: pytest.LogCaptureFixture) -> None:
    bad, good = Recorder("bad", fail_hook=True), Recorder("good")
    observers = Observers([bad, good])
    with caplog.at_level(logging.ERROR, logger="fastcheck"):
        observers.started(None)
        observers.started(None)
    assert good.calls == ["started", "started"]
    assert len(observers) == 1
    assert sum("bad failed in started" in r.getMessage() for r in caplog.records) == 1
