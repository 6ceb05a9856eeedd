"""Runs a sans-IO `Scheduler` on an asyncio event loop (stock asyncio or uvloop).

Owns: the one loop timer armed at `scheduler.next_deadline()`, reading the loop clock for
the scheduler, calling `start_probe(id)` for due probes, and the wake-up lag histogram
(how late the loop fired the timer).
Must not: decide when anything runs (the scheduler does), run or interpret probes (the
`start_probe` callback starts one; whoever gets its result calls `finished`), or own any
state beyond the timer.

Every scheduler mutation goes through the driver (`add`, `remove`, `finished`,
`reschedule`, `set_interval`) so the timer is re-armed when the next deadline moves.
A loop may fire a timer up to its clock resolution early (uvloop keeps time in whole
milliseconds); such a wake-up counts as on time: probes due by the armed deadline start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

from fastcheck.scheduler import LagHistogram, Scheduler

log = logging.getLogger(__name__)

StartProbe = Callable[[int], object]


class SchedulerDriver:
    """The scheduler's asyncio shell: `start()`, then feed it `finished(id)` per result."""

    def __init__(self, scheduler: Scheduler, start_probe: StartProbe, *,
                 loop: asyncio.AbstractEventLoop | None = None, batch: int = 512,
                 resolution_s: float = 0.001) -> None:
        self.scheduler = scheduler
        self._start_probe = start_probe
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._batch = batch
        self._resolution = resolution_s
        self._timer: asyncio.Handle | None = None
        self._armed_at = 0.0
        self._running = False
        self._firing = False
        self.wake_lag = LagHistogram()
        self.start_errors = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def time(self) -> float:
        return self._loop.time()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._running = True
        self._arm()

    def close(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------ scheduler calls

    def add(self, probe_id: int, interval_s: float, warmup_s: float = 0.0,
            target: Hashable | None = None) -> None:
        self.scheduler.add(probe_id, self._loop.time(), interval_s, warmup_s, target)
        self._arm()

    def remove(self, probe_id: int) -> bool:
        return self.scheduler.remove(probe_id)  # never makes a deadline earlier

    def set_interval(self, probe_id: int, interval_s: float) -> None:
        self.scheduler.set_interval(probe_id, self._loop.time(), interval_s)
        self._arm()

    def finished(self, probe_id: int) -> bool:
        known = self.scheduler.finished(probe_id, self._loop.time())
        self._arm()
        return known

    def reschedule(self, probe_id: int, delay_s: float) -> bool:
        moved = self.scheduler.reschedule(probe_id, self._loop.time(), delay_s)
        if moved:
            self._arm()
        return moved

    # ------------------------------------------------------------------ the timer

    def _arm(self) -> None:
        if not self._running or self._firing:
            return  # _fire re-arms when it is done
        deadline = self.scheduler.next_deadline()
        timer = self._timer
        if deadline is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        if timer is not None:
            if self._armed_at <= deadline:
                return  # the earlier wake-up will re-arm
            timer.cancel()
        self._armed_at = deadline
        self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop_now = self._loop.time()
        armed = self._armed_at
        late = loop_now - armed
        self.wake_lag.record(late)
        now = armed if -self._resolution <= late < 0.0 else loop_now
        self._firing = True
        try:
            ids = self.scheduler.due(now, self._batch)
            start_probe = self._start_probe
            for probe_id in ids:
                try:
                    start_probe(probe_id)
                except Exception:
                    self.start_errors += 1
                    log.exception("starting probe %s failed", probe_id)
                    self.scheduler.finished(probe_id, now)
        finally:
            self._firing = False
        if len(ids) >= self._batch and self._running:
            # More may be due: let I/O in first, then go on where this batch stopped.
            self._armed_at = now
            self._timer = self._loop.call_soon(self._fire)
            return
        self._arm()
