"""A probe worker process: one `LocalEngine` on its own uvloop over its shard of the plan.

Run by `fastcheck.daemon.workers` as ``python -m fastcheck.daemon.worker_main --fd N
--index I --parent PID [--netns-fd M]``; never by hand. With ``--netns-fd`` (the
configuration's net_namespace) it enters that network namespace before anything else.
Everything it needs (its share of the plan and of the configuration, the scheduler
settings) arrives on the channel: it never reads the configuration file, which the daemon
may be reloading.

Owns: the worker side of the channel — starting its engine on ("start", settings, frame,
probe specs), following ("reload", frame, added specs, removed ids, [(id, interval)]),
("retry", [(id, delay), …]) and ("close",) (frames and specs: see workerwire); telling
its scheduler a run finished as soon as the result is in (the daemon only hears results
afterwards); batching results to the daemon (every `FLUSH_S` or `FLUSH_RESULTS` results,
grouped by outcome, see workerwire) and sending ("stats", …) every `stats_interval_s`.
SIGTERM, SIGINT and SIGHUP are ignored: they are the daemon's to handle (systemd signals
the whole control group on stop); the daemon stops its workers with ("close",).
Must not: decide health, touch IPVS, log results, or outlive the daemon: it asks the
kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG) and exits on channel EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import socket
import sys
from typing import Any

from fastcheck.daemon.engine import LocalEngine, implementations
from fastcheck.daemon.lineage import die_with_parent
from fastcheck.daemon.workerwire import Channel, Frame, ProbeSpec, ResultBuffer, Shard
from fastcheck.netns import enter_fd
from fastcheck.probes.result import ProbeResult
from fastcheck.scheduler import LagHistogram

log = logging.getLogger("fastcheck")

FLUSH_S = 0.002
FLUSH_RESULTS = 1024


def histogram_state(histogram: LagHistogram) -> tuple[list[int], int, float, float]:
    return list(histogram.counts), histogram.count, histogram.total, histogram.max


class Worker:
    """The worker's state: its channel, its engine, the results waiting to be sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 index: int) -> None:
        self.loop = loop
        self.index = index
        self.done: asyncio.Future[None] = loop.create_future()
        self.engine: LocalEngine | None = None
        self.shard: Shard | None = None
        self.channel = Channel(loop, sock, self.on_message, self.on_closed)
        self._results = ResultBuffer()
        self._flush_timer: asyncio.TimerHandle | None = None
        self._stats_timer: asyncio.TimerHandle | None = None
        self._stats_interval = 0.25
        self._implementations: dict[str, str] | None = None

    # ------------------------------------------------------------------ commands

    def on_message(self, message: Any) -> None:
        kind = message[0]
        if kind == "retry":
            engine = self.engine
            if engine is not None:
                for probe_id, delay in message[1]:
                    engine.reschedule(probe_id, delay)
        elif kind == "start":
            self.start(*message[1:])
        elif kind == "reload":
            _, frame, added, removed, retimed = message
            if self.engine is not None and self.shard is not None:
                diff = self.shard.apply(frame, added, removed, retimed)
                self.engine.reload(self.shard.plan, self.shard.config, diff)
        elif kind == "close":
            self.finish()
        else:
            log.error("probe worker %d: unknown message %r", self.index, kind)

    def start(self, settings: dict[str, Any], frame: Frame, specs: list[ProbeSpec]) -> None:
        if self.engine is not None:
            log.error("probe worker %d: started twice", self.index)
            return
        self._stats_interval = settings["stats_interval_s"]
        self.shard = shard = Shard(frame, specs)
        plan = shard.plan
        self.engine = LocalEngine(self.loop, plan, shard.config, self.on_result,
                                  rng=random.Random(settings["seed"]),
                                  max_in_flight=settings["max_in_flight"],
                                  bootstrap_s=settings["bootstrap_s"])
        self.engine.start(plan)
        self.send_stats()

    def on_closed(self) -> None:
        self.finish(flush=False)  # the daemon is gone: nobody to talk to

    def finish(self, flush: bool = True) -> None:
        if self.engine is not None:
            self.engine.close()
        for timer in (self._flush_timer, self._stats_timer):
            if timer is not None:
                timer.cancel()
        if flush and not self.channel.closed:
            self.flush_results()
            self.channel.flush_blocking(1.0)
        self.channel.close()
        if not self.done.done():
            self.done.set_result(None)

    # ------------------------------------------------------------------ results

    def on_result(self, probe_id: int, result: ProbeResult) -> None:
        engine = self.engine
        if engine is not None:
            engine.accept(probe_id)  # the run is over: the scheduler plans the next one
        self._results.add(probe_id, result)
        if self._results.count >= FLUSH_RESULTS:
            self.flush_results()
        elif self._flush_timer is None:
            self._flush_timer = self.loop.call_later(FLUSH_S, self.flush_results)

    def flush_results(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._results.count:
            self.channel.send(("results", self._results.take()))

    def send_stats(self) -> None:
        engine = self.engine
        if engine is None or self.channel.closed:
            return
        if self._implementations is None:  # fixed for the process's life: ask once
            self._implementations = implementations()
        scheduler = engine.scheduler
        self.channel.send(("stats", {
            "probes": len(scheduler), "running": engine.runner.running,
            "started": scheduler.starts, "missed_runs": scheduler.missed_runs,
            "start_lag": histogram_state(scheduler.lag),
            "wake_lag": histogram_state(engine.driver.wake_lag),
            "implementations": self._implementations,
        }))
        self._stats_timer = self.loop.call_later(self._stats_interval, self.send_stats)


async def serve(sock: socket.socket, index: int) -> None:
    worker = Worker(asyncio.get_running_loop(), sock, index)
    await worker.done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastcheck-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--netns-fd", type=int, default=None)
    args = parser.parse_args(argv)
    if args.netns_fd is not None:  # net_namespace: before any socket of its own
        enter_fd(args.netns_fd)
        os.close(args.netns_fd)
    die_with_parent(args.parent)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the daemon's to handle
        signal.signal(signum, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format=f"fastcheck probe worker {args.index}: %(message)s")
    sock = socket.socket(fileno=args.fd)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(serve(sock, args.index))
    else:
        uvloop.run(serve(sock, args.index))
    return 0


if __name__ == "__main__":
    sys.exit(main())
