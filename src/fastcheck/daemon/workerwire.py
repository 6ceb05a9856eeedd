"""The wire between the daemon and its probe worker processes, and the sharding rule.

Owns: `Channel` (length-prefixed pickled messages over a non-blocking stream socket,
read and written through the loop's `add_reader`/`add_writer`), the compact encoding of
probe results on the wire (`ResultBuffer`, `decode_results`), the stable shard of a
probe (`shard_of`: CRC-32 of its target host, so every probe of one host lives in one
worker and keeps its worker across reloads, `split_plan`), and a worker's share of
plan and configuration (`Shard`: built from `ProbeSpec`s and a `Frame`, changed by a
reload's additions, removals and new intervals only — a reload of 20,000 probes sends
what changed, not the plan).
Must not: start or watch processes (workers.py does), schedule or run probes
(worker_main.py runs a `LocalEngine`), or decide health.

Messages are plain tuples whose first item names them (see workers.py and
worker_main.py for who sends what). Only the daemon and the workers it started ever
speak on a channel: pickle is safe here because both ends are the same program.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import pickle
import socket
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastcheck.model import Check, Config, RealServer, VirtualServer
from fastcheck.probeplan import PlanDiff, PlannedProbe, ProbePlan
from fastcheck.probes.result import Failure, ProbeResult

log = logging.getLogger("fastcheck")

HEADER = struct.Struct("!I")
MAX_MESSAGE = 1 << 30  # a frame longer than this is a broken peer, not a message
READ_CHUNK = 1 << 20
READS_PER_WAKEUP = 16  # bounded work per loop callback: others get the loop too
SOCKET_BUFFER = 4 << 20

_FAILURES = {failure.value: failure for failure in Failure}


def shard_of(host: str, workers: int) -> int:
    """The worker (0 … workers-1) that probes every check of `host`."""
    return zlib.crc32(host.encode()) % workers


# ----------------------------------------------------------------------------- results

# On the wire a batch of results is grouped by outcome: `ResultBatch` = (latency → ids of
# plain successes, (ok, failure value | None, latency, detail, weight, weight_offset,
# failed_url) → ids). Latencies are in whole milliseconds under uvloop, so a batch of thousands of
# results holds a few dozen distinct outcomes: the daemon builds one `ProbeResult` per
# outcome (they are immutable, so probes may share one) and pickling stays cheap.
Outcome = tuple[Any, ...]
ResultBatch = tuple[dict[float, list[int]], dict[Outcome, list[int]]]


class ResultBuffer:
    """A worker's results waiting to be sent, grouped by outcome."""

    __slots__ = ("count", "others", "plain")

    def __init__(self) -> None:
        self.plain: dict[float, list[int]] = {}
        self.others: dict[Outcome, list[int]] = {}
        self.count = 0

    def add(self, probe_id: int, result: ProbeResult) -> None:
        self.count += 1
        if (result.ok and not result.detail and result.weight is None
                and result.weight_offset is None):
            ids = self.plain.get(result.latency_s)
            if ids is None:
                self.plain[result.latency_s] = [probe_id]
            else:
                ids.append(probe_id)
            return
        failure = result.failure.value if result.failure is not None else None
        key = (result.ok, failure, result.latency_s, result.detail, result.weight,
               result.weight_offset, result.failed_url)
        self.others.setdefault(key, []).append(probe_id)

    def take(self) -> ResultBatch:
        batch = (self.plain, self.others)
        self.plain, self.others, self.count = {}, {}, 0
        return batch


def decode_results(batch: ResultBatch) -> Iterator[tuple[list[int], ProbeResult]]:
    """(probe ids, their shared result) for every outcome of a batch."""
    plain, others = batch
    for latency, ids in plain.items():
        yield ids, ProbeResult(True, None, latency)
    for (ok, failure, latency, detail, weight, offset, failed_url), ids in others.items():
        yield ids, ProbeResult(ok, _FAILURES[failure] if failure is not None else None,
                               latency, detail, weight, offset, failed_url)


# ----------------------------------------------------------------------------- shards

# A probe as a worker gets it: (id, interval_s, warmup_s, the Check it stands for).
ProbeSpec = tuple[int, float, float, Check]
# The configuration around the probes, sent on start and every reload: the Config without
# its virtual servers (SSL, track files, global_defs: what conversation probes read), and
# one virtual server and one real server, emptied, to hang a worker's checks on.
Frame = tuple[Config, VirtualServer | None, RealServer | None]


def split_plan(plan: ProbePlan, workers: int) -> tuple[list[list[int]], dict[int, int]]:
    """The probe ids of each worker, and the worker of every probe id."""
    shares: list[list[int]] = [[] for _ in range(workers)]
    where: dict[int, int] = {}
    shard_cache: dict[str, int] = {}
    for probe_id, probe in plan.probes.items():
        host = probe.host
        index = shard_cache.get(host)
        if index is None:
            index = shard_cache[host] = shard_of(host, workers)
        shares[index].append(probe_id)
        where[probe_id] = index
    return shares, where


def frame_of(config: Config) -> Frame:
    vs = next((v for v in config.virtual_servers if v.real_servers), None)
    rs = dataclasses.replace(vs.real_servers[0], checks=()) if vs is not None else None
    if vs is not None:
        vs = dataclasses.replace(vs, real_servers=())
    return (dataclasses.replace(config, virtual_servers=(), vs_groups=(),
                                local_address_groups=()), vs, rs)


class Shard:
    """A worker's probes and the configuration its `ProbeRunner` reads (sans-IO).

    The runner finds each probe's Check by walking the configuration; a shard's
    configuration is the frame with one virtual server holding one real server holding
    every check of the shard — only the checks and the frame's globals are ever read.
    """

    def __init__(self, frame: Frame, specs: Iterable[ProbeSpec]) -> None:
        self._frame = frame
        self._probes: dict[int, PlannedProbe] = {}
        self._checks: dict[int, Check] = {}
        for spec in specs:
            self._add(spec)

    def __len__(self) -> int:
        return len(self._probes)

    def _add(self, spec: ProbeSpec) -> PlannedProbe:
        probe_id, interval, warmup, check = spec
        probe = PlannedProbe(probe_id, check.probe_key, interval, warmup, ())
        self._probes[probe_id] = probe
        self._checks[probe_id] = check
        return probe

    def apply(self, frame: Frame, added: Iterable[ProbeSpec], removed: Iterable[int],
              retimed: Iterable[tuple[int, float]]) -> PlanDiff:
        """A reload's share: returns what the worker's engine must change."""
        if frame[0] != self._frame[0]:
            # SSL files, track files or globals changed: fresh Check objects make the
            # runner prepare every probe again, as the in-process engine does.
            self._checks = {i: dataclasses.replace(c) for i, c in self._checks.items()}
        self._frame = frame
        gone = []
        for probe_id in removed:
            if self._probes.pop(probe_id, None) is not None:
                del self._checks[probe_id]
                gone.append(probe_id)
        moved = []
        for probe_id, interval in retimed:
            probe = self._probes.get(probe_id)
            if probe is not None:
                probe = dataclasses.replace(probe, interval_s=interval)
                self._probes[probe_id] = probe
                moved.append(probe)
        new = [self._add(spec) for spec in added]
        return PlanDiff(tuple(new), tuple(gone), tuple(moved), len(self._probes) - len(new))

    @property
    def plan(self) -> ProbePlan:
        probes = self._probes
        return ProbePlan(dict(probes), {p.key: i for i, p in probes.items()}, 0)

    @property
    def config(self) -> Config:
        base, vs, rs = self._frame
        if vs is None or rs is None or not self._checks:
            return base
        holder = dataclasses.replace(rs, checks=tuple(self._checks.values()))
        return dataclasses.replace(base, virtual_servers=(
            dataclasses.replace(vs, real_servers=(holder,)),))


# ----------------------------------------------------------------------------- channel


class Channel:
    """Tuples in, tuples out, over one stream socket on one loop.

    `on_message(message)` runs for every message received; `on_closed()` once, when the
    peer hangs up or the socket fails (not after `close()`). `send` never blocks: what
    the socket does not take now waits in a buffer flushed by a writer callback;
    `flush_blocking` pushes it out synchronously (for the last words before a close).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 on_message: Callable[[Any], None], on_closed: Callable[[], None]) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._on_message = on_message
        self._on_closed = on_closed
        self._in = bytearray()
        self._out = bytearray()
        self._writing = False
        self.closed = False
        sock.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):  # capped by the kernel, never refused
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        loop.add_reader(self._fd, self._readable)

    def send(self, message: Any) -> None:
        if self.closed:
            return
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._out += HEADER.pack(len(data))
        self._out += data
        if not self._writing:
            self._write()

    def send_many(self, messages: Iterable[Any]) -> None:
        for message in messages:
            self.send(message)

    @property
    def pending_bytes(self) -> int:
        return len(self._out)

    def flush_blocking(self, timeout_s: float) -> bool:
        """Writes out what is buffered, waiting up to `timeout_s`; True if all went."""
        if self.closed or not self._out:
            return not self._out
        self._sock.settimeout(timeout_s)
        try:
            self._sock.sendall(self._out)
            self._out.clear()
            return True
        except OSError:
            return False
        finally:
            if not self.closed:
                self._sock.setblocking(False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._sock.close()

    # ------------------------------------------------------------------ internals

    def _write(self) -> None:
        out = self._out
        while out:
            try:
                sent = self._sock.send(out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._hang_up()
                return
            del out[:sent]
        if out and not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._write)
        elif not out and self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        buffer = self._in
        eof = False
        for _ in range(READS_PER_WAKEUP):
            try:
                chunk = self._sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            buffer += chunk
            if len(chunk) < READ_CHUNK:
                break
        self._parse()
        if eof and not self.closed:
            self._hang_up()

    def _parse(self) -> None:
        buffer = self._in
        size = len(buffer)
        pos = 0
        messages = []
        while size - pos >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, pos)
            if length > MAX_MESSAGE:
                log.error("worker channel: frame of %d bytes; closing the channel", length)
                self._hang_up()
                return
            end = pos + HEADER.size + length
            if end > size:
                break
            messages.append(pickle.loads(buffer[pos + HEADER.size:end]))
            pos = end
        if pos:
            del buffer[:pos]
        for message in messages:
            if self.closed:
                return
            self._on_message(message)

    def _hang_up(self) -> None:
        if self.closed:
            return
        self.close()
        self._on_closed()
