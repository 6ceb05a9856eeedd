"""The probe engine as the runtime sees it: schedule the plan's probes, run them, report.

Owns: the `ProbeEngine` protocol (what the runtime needs to drive probing: start with a
plan, follow a reload's plan diff, move a probe's next run where health wants it, accept
each result, close,
and report `EngineStats`), and `LocalEngine`, the in-process engine: one `Scheduler`, its
`SchedulerDriver` and one `ProbeRunner` on the runtime's loop.
Must not: decide health or touch IPVS. Results go to `on_result(probe_id, result)`; the
runtime hands each back through `accept(probe_id)` before acting on it, which tells the
engine the run is over and whether the probe is still part of the plan.

Other engines (worker processes sharding the plan, `fastcheck.daemon.workers`) have the
same surface, so the runtime and `fastcheck bench` run either without knowing which.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fastcheck.model import Config
from fastcheck.probeplan import PlanDiff, ProbePlan
from fastcheck.probes.result import ProbeResult
from fastcheck.probes.runner import ProbeRunner
from fastcheck.scheduler import LagHistogram, Scheduler

OnResult = Callable[[int, ProbeResult], None]


@dataclass(slots=True)
class EngineStats:
    """What an engine reports about itself; lag figures in seconds.

    `start_lag` is how late probes started against their slots (the scheduler's view,
    including waits for concurrency limits); `wake_lag` is how late the loop woke the
    scheduler. With several workers the histograms are merged.
    """

    workers: int
    probes: int
    running: int
    started: int
    missed_runs: int
    start_lag: LagHistogram = field(default_factory=LagHistogram)
    wake_lag: LagHistogram = field(default_factory=LagHistogram)
    # implementation per hot path ("c" or "py"), as `fastcheck._ext._select` chose them
    implementations: dict[str, str] = field(default_factory=dict)


class ProbeEngine(Protocol):
    def start(self, plan: ProbePlan) -> None:
        """Schedules every probe of `plan` and starts probing."""
        ...

    def reload(self, plan: ProbePlan, config: Config, changes: PlanDiff) -> None:
        """Follows a reload: new probes start, removed ones stop, retimed ones move."""
        ...

    def reschedule(self, probe_id: int, delay_s: float) -> None:
        """health/ wants the next run of `probe_id` in `delay_s` (a retry, or an owner's own
        cadence), earlier or later than its next slot; the cadence goes on from there."""
        ...

    def accept(self, probe_id: int) -> bool:
        """A result of `probe_id` reached the runtime: the run is over. False when the
        probe is no longer in the plan (a late result across a reload): ignore it."""
        ...

    def close(self) -> None: ...

    def stats(self) -> EngineStats: ...


def implementations() -> dict[str, str]:
    from fastcheck._ext._select import implementations as chosen

    return dict(chosen())


class LocalEngine:
    """Scheduler, driver and runner on the caller's loop (one process)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, plan: ProbePlan, config: Config,
                 on_result: OnResult, *, rng: random.Random | None = None,
                 max_in_flight: int | None = None, bootstrap_s: float = 1.0) -> None:
        from fastcheck.daemon.driver import SchedulerDriver

        self.loop = loop
        self.scheduler = Scheduler(rng or random.Random(), max_in_flight=max_in_flight,
                                   bootstrap_s=bootstrap_s)
        self.runner = ProbeRunner(loop, plan, config, on_result)
        self.driver = SchedulerDriver(self.scheduler, self.runner.start, loop=loop)
        self._probes = len(plan)

    def start(self, plan: ProbePlan) -> None:
        self.driver.start()
        for probe in plan.probes.values():
            self.driver.add(probe.id, probe.interval_s, probe.warmup_s, target=probe.host)

    def reload(self, plan: ProbePlan, config: Config, changes: PlanDiff) -> None:
        self.runner.update(plan, config)
        for probe_id in changes.removed:
            self.driver.remove(probe_id)
        for probe in changes.retimed:
            self.driver.set_interval(probe.id, probe.interval_s)
        for probe in changes.added:
            self.driver.add(probe.id, probe.interval_s, probe.warmup_s, target=probe.host)
        self._probes = len(plan)

    def reschedule(self, probe_id: int, delay_s: float) -> None:
        self.driver.reschedule(probe_id, delay_s)

    def accept(self, probe_id: int) -> bool:
        return self.driver.finished(probe_id)

    def close(self) -> None:
        self.driver.close()
        self.runner.close()

    def stats(self) -> EngineStats:
        scheduler = self.scheduler
        return EngineStats(workers=1, probes=self._probes, running=self.runner.running,
                           started=scheduler.starts, missed_runs=scheduler.missed_runs,
                           start_lag=scheduler.lag, wake_lag=self.driver.wake_lag,
                           implementations=implementations())
