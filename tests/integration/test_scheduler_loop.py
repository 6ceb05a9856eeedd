"""The scheduler's asyncio driver on a real event loop, under uvloop and stock asyncio.

A fake fast prober answers each probe after 0–5 ms; the driver must start every probe on
its slot (small planned-vs-actual lag) without drifting, and honour the limits.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Callable

import pytest
import uvloop

from fastcheck.daemon.driver import SchedulerDriver
from fastcheck.scheduler import Scheduler

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def runner(request: pytest.FixtureRequest):
    with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
        yield runner


class FakeProber:
    """Answers every probe after a random 0–5 ms, as a fast engine would."""

    def __init__(self, driver_ref: list[SchedulerDriver], seed: int = 1) -> None:
        self._driver = driver_ref
        self._rng = random.Random(seed)
        self.starts: Counter[int] = Counter()
        self.first_start: dict[int, float] = {}
        self.last_start: dict[int, float] = {}
        self.running: dict[str, int] = Counter()
        self.peak = 0
        self.peak_per_target = 0

    def start(self, probe_id: int) -> None:
        driver = self._driver[0]
        now = driver.time()
        self.starts[probe_id] += 1
        self.first_start.setdefault(probe_id, now)
        self.last_start[probe_id] = now
        target = f"t{probe_id % 50}"
        self.running[target] += 1
        self.peak = max(self.peak, sum(self.running.values()))
        self.peak_per_target = max(self.peak_per_target, self.running[target])
        driver.loop.call_later(self._rng.uniform(0.0, 0.005), self._done, probe_id, target)

    def _done(self, probe_id: int, target: str) -> None:
        self.running[target] -= 1
        self._driver[0].finished(probe_id)


async def drive(probes: int, interval: float, seconds: float, **limits) -> tuple:
    ref: list[SchedulerDriver] = []
    prober = FakeProber(ref)
    driver = SchedulerDriver(Scheduler(random.Random(3), **limits), prober.start)
    ref.append(driver)
    for probe_id in range(probes):
        driver.add(probe_id, interval, warmup_s=interval, target=f"t{probe_id % 50}")
    driver.start()
    await asyncio.sleep(seconds)
    driver.close()
    return driver, prober, driver.time()


def test_2000_probes_at_200ms_start_on_time_without_drift(runner):
    probes, interval, seconds = 2000, 0.2, 2.0
    driver, prober, closed = runner.run(drive(probes, interval, seconds))
    stats = driver.scheduler.stats()

    assert len(prober.starts) == probes
    # every probe ran once per slot from its first start until the driver closed: ±1
    # (-1 only for a slot that came due in the instant the driver closed)
    exact = 0
    for probe_id, count in prober.starts.items():
        expected = math.floor((closed - prober.first_start[probe_id]) / interval) + 1
        assert abs(count - expected) <= 1, (probe_id, count, expected)
        assert count >= seconds / interval - 1
        exact += count == expected
        # last start on the cadence of the first: no drift accumulated
        span = prober.last_start[probe_id] - prober.first_start[probe_id]
        assert abs(span - (count - 1) * interval) < 0.05
    assert exact >= 0.98 * probes
    assert stats.starts == sum(prober.starts.values())
    assert stats.missed_runs == 0
    assert stats.lag_p99_s < 0.05, stats
    assert stats.lag_p50_s < 0.01, stats
    print(f"\nstarts={stats.starts} lag p50={stats.lag_p50_s * 1e3:.2f} ms "
          f"p99={stats.lag_p99_s * 1e3:.2f} ms max={stats.lag_max_s * 1e3:.2f} ms "
          f"wake p99={driver.wake_lag.quantile(0.99) * 1e3:.2f} ms")


def test_limits_hold_on_a_real_loop(runner):
    driver, prober, _ = runner.run(drive(500, 0.05, 0.5, max_in_flight=16, per_target=2))
    assert prober.peak == 16
    assert prober.peak_per_target <= 2
    stats = driver.scheduler.stats()
    assert stats.starts > 500


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def test_retry_and_remove_through_the_driver(runner):
    async def scenario() -> tuple[list[tuple[int, float]], float, SchedulerDriver]:
        ref: list[SchedulerDriver] = []
        starts: list[tuple[int, float]] = []

        def start(probe_id: int) -> None:
            starts.append((probe_id, ref[0].time()))
            if probe_id == 2:
                ref[0].remove(2)  # removed while in flight
            ref[0].loop.call_soon(ref[0].finished, probe_id)

        driver = SchedulerDriver(Scheduler(random.Random(1)), start)
        ref.append(driver)
        driver.add(1, 10.0)
        driver.add(2, 0.01)
        driver.start()
        await until(lambda: len(starts) == 2 and driver.scheduler.in_flight == 0)
        asked = driver.time()
        assert driver.reschedule(1, 0.05)  # a retry long before the 10 s slot
        await until(lambda: len(starts) == 3)
        await asyncio.sleep(0.05)  # time for probe 2 to come back, were it not removed
        driver.close()
        return starts, asked, driver

    starts, asked, driver = runner.run(scenario())
    assert [probe_id for probe_id, _ in starts] in ([1, 2, 1], [2, 1, 1])
    assert 0.05 - 0.002 <= starts[2][1] - asked < 0.05 + 0.1
    assert driver.scheduler.in_flight == 0
    assert driver.scheduler.reschedules == 1


def test_a_failing_start_callback_does_not_leak_capacity(runner):
    async def scenario() -> SchedulerDriver:
        def start(probe_id: int) -> None:
            raise RuntimeError("engine refused")

        driver = SchedulerDriver(Scheduler(random.Random(1), max_in_flight=1), start)
        driver.add(1, 0.01)
        driver.start()
        await until(lambda: driver.start_errors >= 3)
        driver.close()
        return driver

    driver = runner.run(scenario())
    assert driver.scheduler.in_flight == 0
    assert driver.scheduler.starts == driver.start_errors
