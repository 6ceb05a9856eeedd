"""One measured run of the real probe engine against the bench's targets.

Owns: building the engine the daemon builds (`LocalEngine`, or the worker engine from
`fastcheck.daemon.workers.make_engine` when `workers` > 1), counting its results per
check kind, the probe latency histogram, CPU and memory readings of the engine's
processes, the once-a-second progress callback, and stopping early on request.
Must not: start or remove targets (targets.py), format output (report.py), or schedule
or run probes itself — the engine does, exactly as in the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fastcheck.bench.layout import Kind
from fastcheck.model import Config
from fastcheck.probeplan import ProbePlan
from fastcheck.probes.result import ProbeResult
from fastcheck.scheduler import LagHistogram

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True)
class KindCounts:
    checks: int = 0
    ok: int = 0
    failed: int = 0


@dataclass(slots=True)
class Progress:
    elapsed_s: float
    checks: int
    rate: float  # checks/s over the last tick
    failed: int
    lag_p99_s: float


@dataclass(slots=True)
class RunResult:
    """What one run measured (seconds, bytes)."""

    duration_s: float
    workers: int
    engine: str
    counts: dict[Kind, KindCounts]
    down_targets: int  # targets whose last result was a failure
    never_answered: int  # targets without any result
    cpu_user_s: float
    cpu_system_s: float
    targets_cpu_s: float  # the target servers' CPU (not the engine's)
    start_lag: LagHistogram
    wake_lag: LagHistogram
    latency: LagHistogram
    missed_runs: int
    rss_bytes: int
    peak_rss_bytes: int
    implementations: dict[str, str]
    interrupted: bool
    load_average: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))

    @property
    def checks(self) -> int:
        return sum(c.checks for c in self.counts.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.counts.values())

    @property
    def checks_per_s(self) -> float:
        return self.checks / self.duration_s if self.duration_s > 0 else 0.0


# ----------------------------------------------------------------------- process readings


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(word) for word in handle.read().split())
        except OSError:
            continue
    return found


def _cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a live process, (0, 0) if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _engine_cpu(workers: Iterable[int]) -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    user, system = usage.ru_utime, usage.ru_stime
    for pid in workers:
        u, s = _cpu(pid)
        user += u
        system += s
    return user, system


# ----------------------------------------------------------------------------- the run


def _make_engine(loop: asyncio.AbstractEventLoop, plan: ProbePlan, config: Config,
                 on_result: Callable[[int, ProbeResult], None], workers: int,
                 max_in_flight: int | None) -> object:
    if workers == 1:
        from fastcheck.daemon.engine import LocalEngine

        return LocalEngine(loop, plan, config, on_result, bootstrap_s=0.0,
                           max_in_flight=max_in_flight)
    from fastcheck.daemon.workers import make_engine  # may be absent: the caller checks

    return make_engine(loop, plan, config, on_result, workers=workers, bootstrap_s=0.0,
                       max_in_flight=max_in_flight)


async def run(config: Config, plan: ProbePlan, kinds: dict[int, Kind], *, duration_s: float,
              workers: int, server_pids: Iterable[int], stop: asyncio.Event,
              max_in_flight: int | None = None,
              progress: Callable[[Progress], None] | None = None) -> RunResult:
    """Runs the engine over `plan` for `duration_s` (or until `stop` is set)."""
    loop = asyncio.get_running_loop()
    counts = {kind: KindCounts() for kind in set(kinds.values())}
    by_probe = [counts[kinds[pid]] for pid in range(max(kinds) + 1)] if kinds else []
    last_ok = bytearray(len(by_probe))
    answered = bytearray(len(by_probe))
    latency = LagHistogram()
    record = latency.record
    engine: object = None
    total = 0

    def on_result(probe_id: int, result: ProbeResult) -> None:
        nonlocal total
        total += 1
        tally = by_probe[probe_id]
        tally.checks += 1
        if result.ok:
            tally.ok += 1
            last_ok[probe_id] = 1
        else:
            tally.failed += 1
            last_ok[probe_id] = 0
        answered[probe_id] = 1
        record(result.latency_s)
        engine.accept(probe_id)  # type: ignore[attr-defined]

    engine = _make_engine(loop, plan, config, on_result, workers, max_in_flight)
    servers = set(server_pids)
    started = time.perf_counter()
    engine.start(plan)  # type: ignore[attr-defined]
    try:
        # Worker processes (if any) exist once the engine started; their start-up CPU
        # before this reading is not counted.
        worker_pids = [pid for pid in _children(os.getpid()) if pid not in servers]
        user0, system0 = _engine_cpu(worker_pids)
        servers_cpu0 = sum(sum(_cpu(pid)) for pid in servers)
        end = started + duration_s
        seen, tick_at = 0, started
        while not stop.is_set():
            now = time.perf_counter()
            if now >= end:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(1.0, end - now))
            now = time.perf_counter()
            if progress is not None and now - tick_at >= 0.5:
                stats = engine.stats()  # type: ignore[attr-defined]
                progress(Progress(now - started, total, (total - seen) / (now - tick_at),
                                  sum(c.failed for c in counts.values()),
                                  stats.start_lag.quantile(0.99)))
                seen, tick_at = total, now
        duration = time.perf_counter() - started
        stats = engine.stats()  # type: ignore[attr-defined]
        user1, system1 = _engine_cpu(worker_pids)
        servers_cpu1 = sum(sum(_cpu(pid)) for pid in servers)
        rss = _rss(os.getpid()) + sum(_rss(pid) for pid in worker_pids)
        checks = {kind: KindCounts(c.checks, c.ok, c.failed) for kind, c in counts.items()}
    finally:
        engine.close()  # type: ignore[attr-defined]
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss)
    return RunResult(
        duration_s=duration, workers=workers, engine=type(engine).__name__, counts=checks,
        down_targets=sum(1 for a, ok in zip(answered, last_ok, strict=True) if a and not ok),
        never_answered=len(answered) - sum(answered),
        cpu_user_s=user1 - user0, cpu_system_s=system1 - system0,
        targets_cpu_s=servers_cpu1 - servers_cpu0, start_lag=stats.start_lag,
        wake_lag=stats.wake_lag, latency=latency, missed_runs=stats.missed_runs,
        rss_bytes=rss, peak_rss_bytes=peak, implementations=dict(stats.implementations),
        interrupted=stop.is_set(), load_average=os.getloadavg())

