"""Scheduler and probe-plan cost at farm scale, on a simulated clock (no event loop).

- 20,000 probes at a 1 s interval driven through the sans-IO scheduler: µs of scheduling
  overhead per probe start (due + finished + next_deadline, amortised), with instant runs
  and with 50 ms runs under global/per-target limits and jitter;
- memory held by 50,000 scheduled checks (tracemalloc);
- planning the probes of a 2,000 × 20 farm, and re-planning it on a reload.

Figures: `python -m pytest bench/test_bench_scheduler.py --benchmark-enable -s`; they are
also in each case's `extra_info`. Nothing is asserted about speed or memory. With
benchmarks disabled (the normal suite) each case runs once, on a shorter simulated span.
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from heapq import heappop, heappush

import pytest

from fastcheck.config.loader import load_text
from fastcheck.probeplan import diff_plans, plan_probes
from fastcheck.scheduler import Scheduler
from fastcheck.synthetic import farm

PROBES, INTERVAL = 20_000, 1.0
MEMORY_PROBES = 50_000
T0 = 1000.0


def _scheduler(**options) -> Scheduler:
    sched = Scheduler(random.Random(1), **options)
    for probe_id in range(PROBES):
        sched.add(probe_id, T0, INTERVAL, warmup_s=INTERVAL, target=f"10.0.{probe_id % 5000}")
    return sched


def _run_instant(sched: Scheduler, seconds: float) -> int:
    """Every run finishes the moment it starts; the clock jumps deadline to deadline."""
    end = T0 + seconds
    due, finished, next_deadline = sched.due, sched.finished, sched.next_deadline
    starts = 0
    while (now := next_deadline()) is not None and now < end:
        for probe_id in due(now):
            finished(probe_id, now)
            starts += 1
    return starts


def _run_with_duration(sched: Scheduler, seconds: float, duration: float) -> int:
    """Runs take `duration`; finishes and deadlines interleave on the simulated clock."""
    end = T0 + seconds
    running: list[tuple[float, int]] = []
    starts = 0
    while True:
        deadline = sched.next_deadline()
        now = min(deadline if deadline is not None else end,
                  running[0][0] if running else end)
        if now >= end:
            return starts
        while running and running[0][0] <= now:
            sched.finished(heappop(running)[1], now)
        for probe_id in sched.due(now):
            heappush(running, (now + duration, probe_id))
            starts += 1


def _measure(benchmark, run, make, seconds: float) -> None:
    best: list[float] = []

    def once(sched: Scheduler) -> int:
        began = time.perf_counter()
        starts = run(sched, seconds)
        best.append((time.perf_counter() - began) / starts * 1e6)
        benchmark.extra_info["starts"] = starts
        return starts

    starts = benchmark.pedantic(once, setup=lambda: ((make(),), {}), rounds=3, iterations=1)
    assert starts >= PROBES * (seconds - 1)
    benchmark.extra_info["us_per_start"] = round(min(best), 3)
    print(f"\n{benchmark.name}: {min(best):.2f} µs per start, {starts} starts")


def _seconds(benchmark) -> float:
    return 2.0 if benchmark.disabled else 10.0


@pytest.mark.benchmark(group="scheduler-20000")
def test_overhead_per_start_instant_runs(benchmark):
    _measure(benchmark, _run_instant, _scheduler, _seconds(benchmark))


@pytest.mark.benchmark(group="scheduler-20000")
def test_overhead_per_start_with_limits_and_jitter(benchmark):
    """50 ms runs, at most 2,000 in flight and 2 per target, ±10 % jitter."""
    def run(sched: Scheduler, seconds: float) -> int:
        return _run_with_duration(sched, seconds, 0.05)

    def make() -> Scheduler:
        return _scheduler(max_in_flight=2000, per_target=2, jitter=0.1)

    _measure(benchmark, run, make, _seconds(benchmark))


@pytest.mark.benchmark(group="scheduler-memory")
def test_memory_of_50000_scheduled_checks(benchmark):
    targets = [f"172.16.{i // 250}.{i % 250}" for i in range(MEMORY_PROBES)]  # owned by the plan

    def build() -> tuple[int, int]:
        gc.collect()
        tracemalloc.start()
        try:
            sched = Scheduler(random.Random(1), per_target=4, jitter=0.1)
            for probe_id in range(MEMORY_PROBES):
                sched.add(probe_id + 10**6, T0, 5.0, 5.0, targets[probe_id])
            added = tracemalloc.get_traced_memory()[0]
            now = T0
            while (deadline := sched.next_deadline()) is not None and deadline < T0 + 6.0:
                now = deadline
                for probe_id in sched.due(now):
                    sched.finished(probe_id, now)  # a full cycle: every heap entry renewed
            cycled, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        benchmark.extra_info.update(
            probes=MEMORY_PROBES, mib_after_add=round(added / 2**20, 2),
            mib_after_cycle=round(cycled / 2**20, 2), mib_peak=round(peak / 2**20, 2),
            bytes_per_probe=round(cycled / MEMORY_PROBES))
        return added, cycled

    added, cycled = benchmark.pedantic(build, rounds=1, iterations=1)
    print(f"\n50,000 scheduled checks: {added / 2**20:.1f} MiB after add, "
          f"{cycled / 2**20:.1f} MiB after a full cycle ({cycled / MEMORY_PROBES:.0f} B each)")


@pytest.fixture(scope="module")
def farm_configs():
    return (load_text(farm(2000, 20))[0], load_text(farm(2000, 20, revision=1))[0])


@pytest.mark.benchmark(group="probeplan-2000x20")
def test_plan_farm(benchmark, farm_configs):
    config, _ = farm_configs
    plan = benchmark.pedantic(plan_probes, args=(config,), rounds=3, iterations=1)
    assert plan.check_count == 40_000
    benchmark.extra_info["probes"] = len(plan)


@pytest.mark.benchmark(group="probeplan-2000x20")
def test_replan_and_diff_on_reload(benchmark, farm_configs):
    old_config, new_config = farm_configs
    old = plan_probes(old_config)

    def reload():
        new = plan_probes(new_config, previous=old)
        return new, diff_plans(old, new)

    _, change = benchmark.pedantic(reload, rounds=3, iterations=1)
    assert change.added and change.removed and change.kept
    benchmark.extra_info.update(added=len(change.added), removed=len(change.removed),
                                kept=change.kept)
