"""When each probe runs: a sans-IO deadline heap with jitter, concurrency limits and lag metrics.

Owns: every scheduled probe's next deadline and in-flight state, the global and per-target
concurrency limits, and the start-lag statistics (`LagHistogram`, counters).
Must not: read a clock (time comes in as `now`), do I/O, import asyncio, run probes or
interpret their results — health/ decides retries and each owner's cadence, and says
when it wants the next run via `reschedule`.

Shape: `add`/`remove`, then `due(now)` → probe ids to start, `finished(id, now)` when a
run is over, `reschedule(id, now, delay)` when health wants the next run elsewhere than
the next slot, and `next_deadline()` for the driver's one timer.

Timing rules:
- First run: `now + bootstrap_s + uniform(0, warmup_s)` (keepalived: 1 s bootstrap delay
  plus `rand() * warmup`); the daemon passes `bootstrap_s=1.0`, warmup 0 → at once.
- Runs follow slots `anchor + n * interval`; `finished` schedules the next *slot* after
  the run's planned one, never `finish + interval`, so intervals cannot drift. A run that
  overran whole intervals skips to the first slot not in the past and counts the slots it
  swallowed as missed runs.
- Jitter: each regular run's deadline is its slot ± `jitter` × interval (uniform; never
  before the previous run's end). It moves single runs, never the slots, so it cannot
  accumulate. First runs (warmup spreads them) and retries are not jittered.
- `reschedule(id, now, delay)`: the next run moves to `now + delay`, earlier *or later*
  than its slot (a `delay_before_retry` longer than `delay_loop` is honoured), and the
  cadence re-anchors there — keepalived's "delay_loop after the retry", without drift.
  health/ asks once per result with the earliest time any owner of the probe wants it.
  A request while a run is in flight is dropped: it was about the previous result, and
  the run in flight brings health a new one to decide on.
- Limits: a due probe whose global or per-target capacity is taken waits; it starts as
  soon as capacity frees, in deadline order, and the wait counts in its lag.
- `remove` while in flight is safe: the run keeps its capacity until `finished(id)`
  (which then returns False), and nothing else is scheduled for it.

Memory: one slotted record per probe plus one heap tuple (≈ 0.4 kB per probe including
the dict entry; see bench/test_bench_scheduler.py for the measured figure).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush

# ------------------------------------------------------------------------- lag histogram


def _log_bounds(lowest: float, highest: float, per_decade: int) -> tuple[float, ...]:
    decades = round(math.log10(highest / lowest))
    return tuple(lowest * 10 ** (i / per_decade) for i in range(decades * per_decade + 1))


# 10 µs … 100 s, 10 buckets per decade (≈ 26 % wide): 71 upper bounds, 72 buckets.
LAG_BOUNDS_S = _log_bounds(1e-5, 100.0, 10)


class LagHistogram:
    """Fixed-bucket histogram of non-negative durations: O(1) memory, quantiles ≤ 26 % high.

    Bucket i counts values in (bounds[i-1], bounds[i]]; the last bucket is open-ended.
    Count, sum and max are exact.
    """

    __slots__ = ("bounds", "count", "counts", "max", "total")

    def __init__(self, bounds: tuple[float, ...] = LAG_BOUNDS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, value: float) -> None:
        if value < 0.0:
            value = 0.0
        # bisect_right on the bounds puts a value equal to a bound in the bucket above;
        # nudge so that bucket i is (bounds[i-1], bounds[i]].
        index = bisect_right(self.bounds, value)
        if index and self.bounds[index - 1] == value:
            index -= 1
        self.counts[index] += 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile, capped at the exact max."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} outside [0, 1]")
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                upper = self.bounds[index] if index < len(self.bounds) else self.max
                return min(upper, self.max)
        return self.max  # pragma: no cover - counts sum to count

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0


# ----------------------------------------------------------------------------- scheduler


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot of the scheduler's counters (lag figures in seconds)."""

    scheduled: int  # probes known to the scheduler
    in_flight: int  # runs started and not finished (removed probes' runs included)
    starts: int
    missed_runs: int  # slots swallowed by runs that overran their interval
    reschedules: int  # reschedule requests that moved a run (retries, owners' cadences)
    capacity_waits: int  # due() calls that stopped at the global limit with work due
    target_waits: int  # due probes parked behind their target's limit
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    lag_mean_s: float


class _Probe:
    __slots__ = ("anchor", "deadline", "interval", "n", "running", "seq", "target")

    def __init__(self, interval: float, target: Hashable | None) -> None:
        self.interval = interval
        self.target = target
        self.anchor = 0.0  # slot n is anchor + n * interval
        self.n = 0
        self.deadline = 0.0  # planned start of the next (or, while running, current) run
        self.seq = 0  # heap entry that is current; others are stale
        self.running = False


class Scheduler:
    """Deadline heap of probe ids (see the module docstring for the rules)."""

    def __init__(self, rng: random.Random, *, max_in_flight: int | None = None,
                 per_target: int | None = None, jitter: float = 0.0,
                 bootstrap_s: float = 0.0) -> None:
        if not 0.0 <= jitter < 0.5:
            raise ValueError(f"jitter {jitter} outside [0, 0.5)")
        for name, limit in (("max_in_flight", max_in_flight), ("per_target", per_target)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be at least 1, got {limit}")
        self._rng = rng
        self._max_in_flight = max_in_flight if max_in_flight is not None else math.inf
        self._per_target = per_target
        self._jitter = jitter
        self._bootstrap = bootstrap_s
        self._probes: dict[int, _Probe] = {}
        self._heap: list[tuple[float, int, int]] = []  # (deadline, seq, probe id)
        self._seq = 0
        self._in_flight = 0
        self._zombies: dict[int, Hashable | None] = {}  # removed while running → target
        self._target_load: dict[Hashable, int] = {}
        self._target_wait: dict[Hashable, deque[tuple[float, int, int]]] = {}
        self.lag = LagHistogram()
        self.starts = 0
        self.missed_runs = 0
        self.reschedules = 0
        self.capacity_waits = 0
        self.target_waits = 0

    # ------------------------------------------------------------------ membership

    def __len__(self) -> int:
        return len(self._probes)

    def __contains__(self, probe_id: int) -> bool:
        return probe_id in self._probes

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def add(self, probe_id: int, now: float, interval_s: float, warmup_s: float = 0.0,
            target: Hashable | None = None) -> float:
        """Schedules a new probe; returns its first deadline.

        `target` is what the per-target limit counts against (normally the real server's
        address); None exempts the probe from it.
        """
        if probe_id in self._probes or probe_id in self._zombies:
            raise ValueError(f"probe {probe_id} is already scheduled or still running")
        if not interval_s > 0.0:
            raise ValueError(f"probe {probe_id}: interval must be positive, got {interval_s}")
        probe = _Probe(interval_s, target)
        self._probes[probe_id] = probe
        start = now + self._bootstrap
        if warmup_s > 0.0:
            start += self._rng.random() * warmup_s
        probe.anchor = start
        self._push(probe_id, probe, start, now, jitter=False)
        return probe.deadline

    def remove(self, probe_id: int) -> bool:
        """Forgets a probe; a run in flight keeps its capacity until `finished`."""
        probe = self._probes.pop(probe_id, None)
        if probe is None:
            return False
        if probe.running:
            self._zombies[probe_id] = probe.target
        # A heap or wait-queue entry left behind is stale and skipped when met; after a
        # mass removal (a reload) the heap is compacted rather than left to drain.
        if len(self._heap) > 2 * len(self._probes) + 1024:
            self._compact()
        return True

    def set_interval(self, probe_id: int, now: float, interval_s: float) -> None:
        """A reload changed the interval. A run in flight ends as planned and the next one
        comes one new interval after its start; a waiting run keeps its time unless that
        lies more than one new interval away (then it moves to now + interval)."""
        if not interval_s > 0.0:
            raise ValueError(f"probe {probe_id}: interval must be positive, got {interval_s}")
        probe = self._probes[probe_id]
        slot = probe.anchor + probe.n * probe.interval  # current run, or the pending one
        probe.interval = interval_s
        probe.n = 0
        if probe.running:
            probe.anchor = slot
            return
        latest = now + interval_s
        if slot <= latest:
            probe.anchor = slot
            if probe.deadline > latest:  # jitter of the old interval
                self._push(probe_id, probe, latest, now, jitter=False)
        else:
            probe.anchor = latest
            self._push(probe_id, probe, latest, now, jitter=False)

    # ------------------------------------------------------------------ the cycle

    def next_deadline(self) -> float | None:
        """When `due` next has work: None if nothing waits or all waits on capacity."""
        if self._in_flight >= self._max_in_flight:
            return None
        heap = self._heap
        probes = self._probes
        while heap:
            _, seq, probe_id = heap[0]
            probe = probes.get(probe_id)
            if probe is not None and probe.seq == seq:
                return heap[0][0]
            heappop(heap)
        return None

    def due(self, now: float, budget: int | None = None) -> list[int]:
        """Probes to start now, earliest deadline first, within capacity and `budget`."""
        started: list[int] = []
        heap = self._heap
        probes = self._probes
        limit = self._max_in_flight
        per_target = self._per_target
        room = budget if budget is not None else math.inf
        while heap and heap[0][0] <= now:
            if self._in_flight >= limit:
                self.capacity_waits += 1
                break
            if len(started) >= room:
                break
            entry = heappop(heap)
            probe_id = entry[2]
            probe = probes.get(probe_id)
            if probe is None or probe.seq != entry[1]:
                continue
            target = probe.target
            if per_target is not None and target is not None:
                load = self._target_load.get(target, 0)
                if load >= per_target:
                    self._target_wait.setdefault(target, deque()).append(entry)
                    self.target_waits += 1
                    continue
                self._target_load[target] = load + 1
            probe.running = True
            probe.seq = -1  # no heap entry is current while running
            self._in_flight += 1
            self.starts += 1
            self.lag.record(now - probe.deadline)
            started.append(probe_id)
        return started

    def finished(self, probe_id: int, now: float) -> bool:
        """A run is over: frees its capacity and schedules the next slot.

        Returns False for a probe removed meanwhile (or unknown, or not running).
        """
        probe = self._probes.get(probe_id)
        if probe is None or not probe.running:
            if probe_id in self._zombies:
                self._release(self._zombies.pop(probe_id))
            return False
        probe.running = False
        self._release(probe.target)
        interval = probe.interval
        behind = now - (probe.anchor + probe.n * interval)  # time since this run's slot
        skip = 1 if behind <= interval else math.ceil(behind / interval)
        if skip > 1:
            self.missed_runs += skip - 1
        probe.n += skip
        self._push(probe_id, probe, probe.anchor + probe.n * interval, now)
        return True

    def reschedule(self, probe_id: int, now: float, delay_s: float) -> bool:
        """health/ wants the next run `delay_s` from now (earlier or later than its slot).

        True if that moved the next run; False for an unknown probe, a run in flight (the
        request is stale, see the module docstring) or a run already planned then.
        """
        probe = self._probes.get(probe_id)
        if probe is None or probe.running:
            return False
        at = now + max(delay_s, 0.0)
        if at == probe.deadline:
            return False
        self.reschedules += 1
        probe.anchor = at
        probe.n = 0
        self._push(probe_id, probe, at, now, jitter=False)
        return True

    # ------------------------------------------------------------------ metrics

    def stats(self) -> SchedulerStats:
        lag = self.lag
        return SchedulerStats(
            scheduled=len(self._probes), in_flight=self._in_flight, starts=self.starts,
            missed_runs=self.missed_runs, reschedules=self.reschedules,
            capacity_waits=self.capacity_waits, target_waits=self.target_waits,
            lag_p50_s=lag.quantile(0.5), lag_p99_s=lag.quantile(0.99), lag_max_s=lag.max,
            lag_mean_s=lag.mean)

    # ------------------------------------------------------------------ internals

    def _push(self, probe_id: int, probe: _Probe, slot: float, now: float,
              jitter: bool = True) -> None:
        deadline = slot
        if jitter and self._jitter:
            deadline += (self._rng.random() * 2.0 - 1.0) * self._jitter * probe.interval
            if deadline < now:
                deadline = now
        probe.deadline = deadline
        self._seq += 1
        probe.seq = self._seq
        heappush(self._heap, (deadline, self._seq, probe_id))

    def _compact(self) -> None:
        probes = self._probes
        live = [entry for entry in self._heap
                if (probe := probes.get(entry[2])) is not None and probe.seq == entry[1]]
        heapify(live)
        self._heap = live

    def _release(self, target: Hashable | None) -> None:
        self._in_flight -= 1
        if self._per_target is None or target is None:
            return
        load = self._target_load[target] - 1
        if load:
            self._target_load[target] = load
        else:
            del self._target_load[target]
        waiting = self._target_wait.get(target)
        while waiting:
            entry = waiting.popleft()
            probe = self._probes.get(entry[2])
            if probe is not None and probe.seq == entry[1]:
                heappush(self._heap, entry)  # its old deadline: first in line again
                break
        if waiting is not None and not waiting:
            del self._target_wait[target]
