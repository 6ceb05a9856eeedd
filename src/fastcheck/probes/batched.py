"""The asyncio shell the batched probers share: a reader on an engine's descriptor and one
timer at or before the engine's next deadline.

Owns: ``DeadlineTimer`` (one loop timer kept at or before the earliest deadline it is
given; a timer that turns out early just polls and re-arms, which is cheaper than moving
it on every change) and ``EngineProber``, the base of the one-engine probers (``TcpProber``,
``HttpBatchProber``): it watches the engine's ``fileno()``, keeps the timer at its
``next_deadline()``, hands ``_deliver(now)`` each wake-up's time and closes the engine.
Must not: know what an engine checks or what its results mean (the subclasses' ``_deliver``
does), decide health, schedule checks, or read any clock but the one it is given.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["DeadlineTimer", "Engine", "EngineProber"]


class Engine(Protocol):
    """What the shell needs of an engine."""

    def fileno(self) -> int: ...

    def next_deadline(self) -> float | None: ...

    def close(self) -> None: ...


E = TypeVar("E", bound=Engine)


class DeadlineTimer:
    """One timer on ``loop`` at or before the earliest deadline given to ``arm``; when it
    fires, ``callback(now)`` runs with ``now`` never earlier than that deadline.

    ``clock`` None means ``loop.time`` and a timer set with ``call_at(deadline)``; another
    clock gets ``call_later(deadline - clock())``.
    """

    __slots__ = ("_at", "_callback", "_clock", "_handle", "_loop", "_on_loop_clock")

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float] | None,
                 callback: Callable[[float], None]) -> None:
        self._loop = loop
        self._on_loop_clock = clock is None
        self._clock = loop.time if clock is None else clock
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf  # the armed timer's deadline; inf when none is armed

    def arm(self, deadline: float | None) -> None:
        """Make sure the timer fires at or before ``deadline`` (None: nothing to wait for;
        a later timer may stay armed, firing it early is harmless)."""
        if deadline is None or deadline >= self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = deadline
        if self._on_loop_clock:
            self._handle = self._loop.call_at(deadline, self._fire)
        else:
            delay = max(0.0, deadline - self._clock())
            self._handle = self._loop.call_later(delay, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = math.inf

    def _fire(self) -> None:
        # A loop may fire a timer slightly before its time (uvloop rounds to milliseconds);
        # the deadline has come all the same, so never report an earlier clock than it.
        now = max(self._clock(), self._at)
        self._handle = None
        self._at = math.inf
        self._callback(now)


class EngineProber(Generic[E]):
    """The loop side of one batched engine: subclasses implement ``_deliver(now)`` (poll
    the engine, report, then call ``_arm``) and their own ``start``."""

    __slots__ = ("_clock", "_closed", "_engine", "_fd", "_loop", "_on_result", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_result: Callable[..., None],
                 engine: E, clock: Callable[[], float] | None = None) -> None:
        self._loop = loop
        self._on_result = on_result
        self._engine = engine
        self._clock = loop.time if clock is None else clock
        self._timer = DeadlineTimer(loop, clock, self._deliver)
        self._fd = engine.fileno()
        loop.add_reader(self._fd, self._on_readable)
        self._closed = False

    @property
    def engine(self) -> E:
        return self._engine

    def close(self) -> None:
        """Stop watching the engine, cancel the timer and close the engine. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._timer.cancel()
        self._engine.close()

    def _arm(self) -> None:
        """Keep the timer at or before the engine's next deadline."""
        self._timer.arm(self._engine.next_deadline())

    def _on_readable(self) -> None:
        self._deliver(self._clock())

    def _deliver(self, now: float) -> None:
        raise NotImplementedError
