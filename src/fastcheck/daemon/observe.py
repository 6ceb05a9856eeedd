"""What the runtime tells the outside world while it runs: the observer hooks.

Owns: the `Observer` base class (every hook a no-op) that systemd notification, metrics
and the status endpoint subclass, and `Observers`, which fans one call out to many and
keeps a failing observer from ever stopping the daemon (it is logged and switched off).
Must not: change the runtime. Observers read what they are given and the runtime's
read-only views (`runtime.status()`, `runtime.engine.stats()`, `runtime.counters`).

Order of calls during a run: `open` (before the first table is applied), `started` (the
first table is applied and probing has begun), then any number of `results`, `events`,
`applied`, `repaired`, `reload_started` / `reload_finished`; finally `stopping` (the stop
begins), and `close` after the daemon has released its services.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from fastcheck.ipvs.backend import OpFailure
from fastcheck.ipvs.ops import Op
from fastcheck.probes.result import ProbeResult

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger("fastcheck")

Batch = Sequence[tuple[int, ProbeResult]]


class Observer:
    """Subclass and override what you need; every hook runs on the daemon's loop and
    must return quickly (no blocking I/O)."""

    name = "observer"

    async def open(self, runtime: Runtime) -> None:
        """Before the first table is applied: bind sockets, start timers."""

    def started(self, runtime: Runtime) -> None:
        """The first table is applied and probing has started."""

    def results(self, runtime: Runtime, batch: Batch) -> None:
        """Probe results as handed to health, probe ids still in the plan only."""

    def events(self, runtime: Runtime, events: Sequence[Any]) -> None:
        """Health events (see fastcheck.health.events)."""

    def applied(self, runtime: Runtime, ops: Sequence[Op], failures: Sequence[OpFailure],
                why: str) -> None:
        """IPVS operations sent (`why`: start, health, repair, reload, stop)."""

    def repaired(self, runtime: Runtime, ops: int) -> None:
        """A drift-repair pass found the kernel table different and sent `ops`."""

    def reload_started(self, runtime: Runtime) -> None: ...

    def reload_finished(self, runtime: Runtime, ok: bool, duration_s: float) -> None:
        """`ok` False: the new file was refused (the old one runs on) or removals failed."""

    def stopping(self, runtime: Runtime) -> None: ...

    async def close(self) -> None: ...


class Observers:
    """Many observers behind one; an observer that raises is logged and dropped."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers = list(observers)

    def __len__(self) -> int:
        return len(self._observers)

    def _call(self, hook: str, *args: Any) -> None:
        for observer in list(self._observers):
            try:
                getattr(observer, hook)(*args)
            except Exception:
                log.exception("%s failed in %s; it is switched off", observer.name, hook)
                self._observers.remove(observer)

    async def open(self, runtime: Runtime) -> None:
        """Opens every observer; when one fails, closes those already open and re-raises
        (the caller reports it and starts nothing)."""
        opened: list[Observer] = []
        try:
            for observer in list(self._observers):
                await observer.open(runtime)
                opened.append(observer)
        except BaseException:
            await Observers(opened).close()
            raise

    def started(self, runtime: Runtime) -> None:
        self._call("started", runtime)

    def results(self, runtime: Runtime, batch: Batch) -> None:
        self._call("results", runtime, batch)

    def events(self, runtime: Runtime, events: Sequence[Any]) -> None:
        self._call("events", runtime, events)

    def applied(self, runtime: Runtime, ops: Sequence[Op], failures: Sequence[OpFailure],
                why: str) -> None:
        self._call("applied", runtime, ops, failures, why)

    def repaired(self, runtime: Runtime, ops: int) -> None:
        self._call("repaired", runtime, ops)

    def reload_started(self, runtime: Runtime) -> None:
        self._call("reload_started", runtime)

    def reload_finished(self, runtime: Runtime, ok: bool, duration_s: float) -> None:
        self._call("reload_finished", runtime, ok, duration_s)

    def stopping(self, runtime: Runtime) -> None:
        self._call("stopping", runtime)

    async def close(self) -> None:
        for observer in list(self._observers):
            try:
                await observer.close()
            except Exception:
                log.exception("%s failed to close", observer.name)
