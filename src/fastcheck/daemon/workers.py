"""The probe engine spread over worker processes: `ShardedEngine`, and `make_engine`.

Owns: starting the probe worker processes (fresh interpreters, ``python -m
fastcheck.daemon.worker_main``: never a fork of a process running uvloop), sharding the
plan between them (by CRC-32 of the target host, see `workerwire.shard_of`: per-target
limits hold inside one worker and a reload keeps every probe on its worker), sending each
worker its share on start and reload, routing retries, handing every result to the one
`on_result` of the daemon, merging the workers' statistics, restarting a worker that died
or went silent for `stall_timeout_s` (at most `max_restarts` within `restart_window_s`,
then the daemon is stopped), and never leaving a child behind on `close()`.
Must not: decide health or touch IPVS (the daemon's Runtime stays the only owner of
both), read the configuration file, or block the loop except in `close()` (bounded).

Worker count (`make_engine(workers=…)`): an int ≥ 1 is used as given (1 = `LocalEngine`,
in process); None or "auto" means one worker per CPU (`os.cpu_count()`) when the initial
plan has at least `AUTO_MIN_PROBES` probes and the machine has more than one CPU, else
the in-process engine. Below a few thousand probes one loop has CPU to spare and workers
only add start-up time and a hop per result. The count holds for the daemon's life (a
reload never changes it).

Giving up: after `max_restarts` deaths within `restart_window_s` the engine logs a
critical line, closes, and calls `on_fatal(message)`; without `on_fatal` it sends the
daemon SIGTERM (its own stop path). Workers start from the thread that builds the engine
(the loop's): PR_SET_PDEATHSIG fires when that thread ends.

net_namespace: the daemon entered the namespace before anything else and keeps its file
descriptor open; each worker gets it (`--netns-fd`) and enters it before doing anything,
so restarts land in the same namespace even if its /run/netns name was removed meanwhile.

`max_in_flight` is the daemon-wide limit: each worker gets an equal share (rounded up).
The daemon hears each result after the worker's scheduler has already been told the run
finished, so `accept(probe_id)` only says whether the probe is still in the plan.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fastcheck.model import Config
from fastcheck.probeplan import PlanDiff, ProbePlan
from fastcheck.probes.runner import checks_by_probe
from fastcheck.scheduler import LagHistogram

from .engine import EngineStats, LocalEngine, OnResult, ProbeEngine, implementations
from .workerwire import Channel, ProbeSpec, decode_results, frame_of, split_plan

log = logging.getLogger("fastcheck")

AUTO_MIN_PROBES = 5000
CLOSE_TIMEOUT_S = 2.0
DEATH_WAIT_S = 2.0  # after a worker's channel closed, how long to wait for its exit status


class WorkerFailure(RuntimeError):
    """Workers keep dying: the engine gave up."""


def worker_count(requested: int | str | None, probes: int) -> int:
    """How many workers `make_engine` runs (see the module docstring for the rule)."""
    if requested is None or requested == "auto":
        cpus = os.cpu_count() or 1
        return cpus if cpus > 1 and probes >= AUTO_MIN_PROBES else 1
    if isinstance(requested, str):
        try:
            requested = int(requested)
        except ValueError:
            raise ValueError(f"workers must be a number or 'auto', not {requested!r}") \
                from None
    if requested < 1:
        raise ValueError(f"workers must be at least 1, got {requested}")
    return requested


def make_engine(loop: asyncio.AbstractEventLoop, plan: ProbePlan, config: Config,
                on_result: OnResult, *, workers: int | str | None,
                rng: random.Random | None = None, max_in_flight: int | None = None,
                bootstrap_s: float = 1.0,
                on_fatal: Callable[[str], None] | None = None,
                netns_fd: int | None = None) -> ProbeEngine:
    """`LocalEngine` for one worker, `ShardedEngine` for more (see `worker_count`);
    `netns_fd`: the network namespace (net_namespace) every worker enters first."""
    count = worker_count(workers, len(plan))
    if count == 1:
        return LocalEngine(loop, plan, config, on_result, rng=rng,
                           max_in_flight=max_in_flight, bootstrap_s=bootstrap_s)
    return ShardedEngine(loop, plan, config, on_result, workers=count, rng=rng,
                         max_in_flight=max_in_flight, bootstrap_s=bootstrap_s,
                         on_fatal=on_fatal, netns_fd=netns_fd)


def engine_factory(workers: int | str | None,
                   netns_fd: int | None = None) -> Callable[..., ProbeEngine]:
    """A `Runtime` engine_factory: (loop, plan, config, on_result, options, rng)."""

    def factory(loop: asyncio.AbstractEventLoop, plan: ProbePlan, config: Config,
                on_result: OnResult, options: Any, rng: random.Random | None, *,
                on_fatal: Callable[[str], None] | None = None) -> ProbeEngine:
        return make_engine(loop, plan, config, on_result, workers=workers, rng=rng,
                           max_in_flight=options.max_in_flight,
                           bootstrap_s=options.scheduler_bootstrap_s, on_fatal=on_fatal,
                           netns_fd=netns_fd)

    return factory


def exit_text(status: int | None) -> str:
    if status is None:
        return "no exit status (still running; killed)"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def _merge(into: LagHistogram, state: tuple[list[int], int, float, float]) -> None:
    counts, count, total, highest = state
    if len(counts) != len(into.counts):
        return  # pragma: no cover - same code on both ends
    into.counts = [a + b for a, b in zip(into.counts, counts, strict=True)]
    into.count += count
    into.total += total
    if highest > into.max:
        into.max = highest


class _Worker:
    """One worker process as the daemon sees it."""

    __slots__ = ("channel", "heard_at", "ids", "index", "last_stats", "process", "retries")

    def __init__(self, index: int, ids: list[int]) -> None:
        self.index = index
        self.ids = ids  # its probes
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        self.retries: list[tuple[int, float]] = []
        self.last_stats: dict[str, Any] | None = None
        self.heard_at = 0.0  # loop time of its last message (or of its start)


class ShardedEngine:
    """`ProbeEngine` over `workers` processes, each a `LocalEngine` on its own uvloop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, plan: ProbePlan, config: Config,
                 on_result: OnResult, *, workers: int, rng: random.Random | None = None,
                 max_in_flight: int | None = None, bootstrap_s: float = 1.0,
                 on_fatal: Callable[[str], None] | None = None, max_restarts: int = 5,
                 restart_window_s: float = 60.0, stats_interval_s: float = 0.25,
                 stall_timeout_s: float = 10.0, netns_fd: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.loop = loop
        self.workers = workers
        self._netns_fd = netns_fd  # kept open by the daemon for its whole life
        self._on_result = on_result
        self._on_fatal = on_fatal
        self._rng = rng or random.Random()
        self._per_worker_limit = (math.ceil(max_in_flight / workers)
                                  if max_in_flight is not None else None)
        self._bootstrap_s = bootstrap_s
        self._stats_interval_s = stats_interval_s
        self._max_restarts = max_restarts
        self._restart_window_s = restart_window_s
        self._restarts: deque[float] = deque()
        self._plan = plan
        self._config = config
        self._frame = frame_of(config)
        self._checks = checks_by_probe(plan, config)
        shares, self._where = split_plan(plan, workers)
        self._workers = [_Worker(i, share) for i, share in enumerate(shares)]
        self._retry_flush_armed = False
        self._retired = EngineStats(workers=workers, probes=0, running=0, started=0,
                                    missed_runs=0)
        self._closed = False
        self._stall_timeout_s = stall_timeout_s
        self._watchdog: asyncio.TimerHandle | None = None
        self.restarts = 0  # workers restarted so far

    # ------------------------------------------------------------------ ProbeEngine

    def start(self, plan: ProbePlan) -> None:
        if plan is not self._plan:
            self._plan = plan
            self._checks = checks_by_probe(plan, self._config)
            shares, self._where = split_plan(plan, self.workers)
            for worker, share in zip(self._workers, shares, strict=True):
                worker.ids = share
        self._watchdog = self.loop.call_later(self._stall_timeout_s / 4, self._watch)
        for worker in self._workers:
            self._spawn(worker)

    def reload(self, plan: ProbePlan, config: Config, changes: PlanDiff) -> None:
        """Sends each worker what changed in its share (and the new frame): a reload of
        a large farm moves kilobytes, not the whole plan."""
        old_where = self._where
        shares, self._where = split_plan(plan, self.workers)
        self._checks = checks = checks_by_probe(plan, config)
        self._plan, self._config, self._frame = plan, config, frame_of(config)
        added: list[list[ProbeSpec]] = [[] for _ in self._workers]
        retimed: list[list[tuple[int, float]]] = [[] for _ in self._workers]
        removed: list[list[int]] = [[] for _ in self._workers]
        where = self._where
        for probe in changes.added:
            added[where[probe.id]].append(
                (probe.id, probe.interval_s, probe.warmup_s, checks[probe.id]))
        for probe in changes.retimed:
            retimed[where[probe.id]].append((probe.id, probe.interval_s))
        for probe_id in changes.removed:
            index = old_where.get(probe_id)
            if index is not None:
                removed[index].append(probe_id)
        for worker, share in zip(self._workers, shares, strict=True):
            worker.ids = share  # what a restart starts with
            # Every worker hears of every reload: the frame (SSL, track files, globals)
            # may have changed for its probes.
            if worker.channel is not None:
                i = worker.index
                worker.channel.send(("reload", self._frame, added[i], removed[i],
                                     retimed[i]))

    def reschedule(self, probe_id: int, delay_s: float) -> None:
        index = self._where.get(probe_id)
        if index is None or self._closed:
            return
        self._workers[index].retries.append((probe_id, delay_s))
        if not self._retry_flush_armed:
            self._retry_flush_armed = True
            self.loop.call_soon(self._flush_retries)

    def accept(self, probe_id: int) -> bool:
        return probe_id in self._plan.probes

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for worker in self._workers:
            if worker.channel is not None:
                worker.channel.send(("close",))
                worker.channel.flush_blocking(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            process = worker.process
            if process is None:
                continue
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("probe worker %d (pid %d) did not stop in %.0f s; killing it",
                          worker.index, process.pid, CLOSE_TIMEOUT_S)
                process.kill()
                process.wait()
        for worker in self._workers:
            if worker.channel is not None:
                worker.channel.close()
                worker.channel = None

    def stats(self) -> EngineStats:
        """The workers' latest reports (each sends one every `stats_interval_s`) merged,
        plus the counts of workers that died and were replaced."""
        retired = self._retired
        merged = EngineStats(workers=self.workers, probes=len(self._plan), running=0,
                             started=retired.started, missed_runs=retired.missed_runs)
        _merge(merged.start_lag, _state(retired.start_lag))
        _merge(merged.wake_lag, _state(retired.wake_lag))
        found: dict[str, str] = {}
        for stats in self.worker_stats():
            if stats is None:
                continue
            merged.running += stats.running
            merged.started += stats.started
            merged.missed_runs += stats.missed_runs
            _merge(merged.start_lag, _state(stats.start_lag))
            _merge(merged.wake_lag, _state(stats.wake_lag))
            found.update(stats.implementations)
        merged.implementations = found or implementations()
        return merged

    def worker_stats(self) -> list[EngineStats | None]:
        """Each live worker's latest report (None before its first), in worker order."""
        return [_unpack(w.last_stats) if w.last_stats is not None else None
                for w in self._workers]

    @property
    def pids(self) -> list[int]:
        """The worker processes' pids (for tests and the status report)."""
        return [w.process.pid for w in self._workers if w.process is not None]

    # ------------------------------------------------------------------ processes

    def _spawn(self, worker: _Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "fastcheck.daemon.worker_main", "--fd",
                str(child.fileno()), "--index", str(worker.index), "--parent", str(os.getpid())]
        fds = [child.fileno()]
        if self._netns_fd is not None:
            argv += ["--netns-fd", str(self._netns_fd)]
            fds.append(self._netns_fd)
        try:
            worker.process = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL,
                                              close_fds=True)
        except OSError:
            parent.close()
            raise
        finally:
            child.close()
        worker.last_stats = None
        worker.heard_at = self.loop.time()
        worker.retries.clear()
        worker.channel = Channel(self.loop, parent, lambda m: self._on_message(worker, m),
                                 lambda: self._on_closed(worker))
        settings = {"seed": self._rng.randrange(2**63), "max_in_flight": self._per_worker_limit,
                    "bootstrap_s": self._bootstrap_s,
                    "stats_interval_s": self._stats_interval_s}
        probes, checks = self._plan.probes, self._checks
        specs = [(i, probes[i].interval_s, probes[i].warmup_s, checks[i]) for i in worker.ids]
        worker.channel.send(("start", settings, self._frame, specs))
        log.debug("probe worker %d started (pid %d, %d probes)", worker.index,
                  worker.process.pid, len(worker.ids))

    def _on_message(self, worker: _Worker, message: Any) -> None:
        worker.heard_at = self.loop.time()
        kind = message[0]
        if kind == "results":
            on_result = self._on_result
            for ids, result in decode_results(message[1]):
                for probe_id in ids:
                    on_result(probe_id, result)
        elif kind == "stats":
            worker.last_stats = message[1]
        else:
            log.error("probe worker %d sent an unknown message %r", worker.index, kind)

    def _on_closed(self, worker: _Worker) -> None:
        """The worker's channel hung up: it died (or is dying). Restart it."""
        worker.channel = None
        if self._closed:
            return
        process = worker.process
        if process is None:  # pragma: no cover - a channel implies a process
            return
        self._wait_for_death(worker, process, time.monotonic() + DEATH_WAIT_S)

    def _wait_for_death(self, worker: _Worker, process: subprocess.Popen[bytes],
                        deadline: float) -> None:
        if self._closed:
            return
        status = process.poll()
        if status is None and time.monotonic() < deadline:
            self.loop.call_later(0.02, self._wait_for_death, worker, process, deadline)
            return
        if status is None:
            process.kill()
            process.wait()
        self._retire(worker)
        log.error("probe worker %d (pid %d) stopped: %s; %d probes without a worker",
                  worker.index, process.pid, exit_text(status), len(worker.ids))
        now = time.monotonic()
        restarts = self._restarts
        while restarts and restarts[0] <= now - self._restart_window_s:
            restarts.popleft()
        if len(restarts) >= self._max_restarts:
            self._give_up(f"probe workers died {len(restarts) + 1} times within "
                          f"{self._restart_window_s:.0f} s (the last: worker {worker.index}, "
                          f"{exit_text(status)}); stopping fastcheck")
            return
        restarts.append(now)
        self.restarts += 1
        try:
            self._spawn(worker)
        except OSError as error:
            self._give_up(f"cannot restart probe worker {worker.index}: {error}")
            return
        log.error("probe worker %d restarted (pid %d) with its %d probes", worker.index,
                  worker.process.pid if worker.process else -1, len(worker.ids))

    def _watch(self) -> None:
        """A worker silent for `stall_timeout_s` (no results, no stats, which it sends
        every `stats_interval_s`) is stuck: kill it, and the restart path takes over."""
        self._watchdog = None
        if self._closed:
            return
        now = self.loop.time()
        for worker in self._workers:
            process = worker.process
            if (worker.channel is not None and process is not None
                    and now - worker.heard_at > self._stall_timeout_s
                    and process.poll() is None):
                log.error("probe worker %d (pid %d) sent nothing for %.0f s; killing it",
                          worker.index, process.pid, now - worker.heard_at)
                process.kill()
                worker.heard_at = now  # its channel's EOF follows
        self._watchdog = self.loop.call_later(self._stall_timeout_s / 4, self._watch)

    def _retire(self, worker: _Worker) -> None:
        """Keeps a dead worker's counters in the totals."""
        stats = worker.last_stats
        worker.last_stats = None
        if stats is None:
            return
        self._retired.started += stats["started"]
        self._retired.missed_runs += stats["missed_runs"]
        _merge(self._retired.start_lag, stats["start_lag"])
        _merge(self._retired.wake_lag, stats["wake_lag"])

    def _give_up(self, message: str) -> None:
        log.critical("%s", message)
        self.close()
        if self._on_fatal is not None:
            self._on_fatal(message)
        else:  # the daemon's own stop path: SIGTERM is handled as a stop request
            os.kill(os.getpid(), signal.SIGTERM)

    def _flush_retries(self) -> None:
        self._retry_flush_armed = False
        for worker in self._workers:
            if worker.retries and worker.channel is not None:
                batch, worker.retries = worker.retries, []
                worker.channel.send(("retry", batch))
            else:
                worker.retries.clear()


def _unpack(stats: dict[str, Any]) -> EngineStats:
    unpacked = EngineStats(workers=1, probes=stats["probes"], running=stats["running"],
                           started=stats["started"], missed_runs=stats["missed_runs"],
                           implementations=stats["implementations"])
    _merge(unpacked.start_lag, stats["start_lag"])
    _merge(unpacked.wake_lag, stats["wake_lag"])
    return unpacked


def _state(histogram: LagHistogram) -> tuple[list[int], int, float, float]:
    return list(histogram.counts), histogram.count, histogram.total, histogram.max
