"""HTTP_GET (plain HTTP) checks run by the batched exchange engine on an asyncio event loop.

Owns: driving one ``ExchangeEngine`` on a loop (the reader and the deadline timer are
``batched.EngineProber``'s), the walk through a check's urls (one exchange each, in order,
the first failure ends the run and is named in the result), and the engine's results
turned into the verdicts `HttpProbe` gives: the response is judged by the same
`httpwire.ResponseReader` (fed chunk by chunk as the engine reads, so it stops reading
exactly where `HttpProbe` does), and socket errors by the same `http.failure_of`.
Must not: decide health, schedule checks, speak TLS (SSL_GET stays on `HttpProbe`), or read
any clock but the one it is given. One task per check is what this module exists to avoid.

Observable differences from `HttpProbe.run`, both small: a check's latency is the sum of its
urls' exchange times (not including the loop's turn between two urls), and an invalid
target (address text that is not a numeric address) is a LOCAL result from here rather
than from the socket layer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import Callable
from errno import EIO, ETIMEDOUT
from typing import Final

from fastcheck._ext.exchange import CONNECTING, ExchangeEngine
from fastcheck.probes.batched import EngineProber
from fastcheck.probes.http import HttpProbe, failure_of
from fastcheck.probes.httpwire import MAX_HEADER_BYTES, ResponseReader, UrlCheck, Verdict
from fastcheck.probes.result import Failure, ProbeResult

__all__ = ["HttpBatchProber", "batchable"]

# A safety bound only: the reader ends every exchange before this many bytes are read.
_READ_SLACK: Final = 1 << 17


def batchable(probe: HttpProbe) -> bool:
    """Whether the batched prober can run ``probe``: plain HTTP, and not an IPv6
    link-local target that needs its interface's scope (the engine sets none)."""
    if probe.uses_tls:
        return False
    target = probe.target
    if target.bind_interface and ":" in target.address:
        try:
            return not ipaddress.IPv6Address(target.address).is_link_local
        except ValueError:
            return True
    return True


def verdict_of(err: int, stage: int, reader: ResponseReader, timeout_s: float) -> Verdict:
    """The verdict of one url's exchange that ended with ``err`` at ``stage``."""
    if err == 0:
        return reader.verdict()
    connected = stage != CONNECTING
    if err == ETIMEDOUT:
        phase = "response" if connected else "connect"
        return (Failure.TIMEOUT, f"no complete answer within {timeout_s:g} s ({phase})")
    if connected and err == EIO:  # the reader raised: a bug, not the server's doing
        return (Failure.LOCAL, "internal error: the response reader failed")
    return failure_of("response" if connected else "connect", OSError(err, os.strerror(err)))


class _Run:
    """One check in flight: which url, its reader, the time spent so far."""

    __slots__ = ("index", "latency", "probe", "reader", "token")

    def __init__(self, token: int, probe: HttpProbe) -> None:
        self.token = token
        self.probe = probe
        self.index = 0
        self.latency = 0.0
        self.reader: ResponseReader | None = None


class HttpBatchProber(EngineProber[ExchangeEngine]):
    """Runs plain-HTTP HTTP_GET checks on ``loop``; reports each through ``on_result``.

    ``on_result(token, result)`` is called once per check, in batches from one loop
    callback; an exception from it goes to the loop's exception handler. ``clock`` (default
    `time.monotonic`, finer than uvloop's millisecond ``loop.time()``) times exchanges and
    their deadlines. The prober owns its engine (given or made) and closes it.
    """

    __slots__ = ("_next", "_runs")

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_result: Callable[[int, ProbeResult], None],
                 engine: ExchangeEngine | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._runs: dict[int, _Run] = {}
        self._next = 0
        super().__init__(loop, on_result, engine if engine is not None else ExchangeEngine(),
                         clock)

    @property
    def running(self) -> int:
        return len(self._runs)

    def start(self, token: int, probe: HttpProbe) -> None:
        """Run every url of ``probe`` in order; the result arrives later through
        ``on_result(token, ...)``, never from inside this call. ``probe`` must be
        `batchable` (ValueError otherwise)."""
        if self._closed:
            raise ValueError("HttpBatchProber is closed")
        if not batchable(probe):
            raise ValueError("SSL_GET and IPv6 link-local targets run on HttpProbe")
        run = _Run(token, probe)
        if not probe.urls:
            self._loop.call_soon(self._report, run, None, "")
            return
        self._submit(run)
        self._arm()

    def close(self) -> None:
        """Stop watching the engine, cancel the timer, close the engine. Idempotent."""
        super().close()
        self._runs.clear()

    # --- internals ---------------------------------------------------------------------

    def _submit(self, run: _Run) -> None:
        """Start the exchange of ``run``'s current url; a bad target reports LOCAL later."""
        probe = run.probe
        url: UrlCheck = probe.urls[run.index]
        reader = run.reader = url.reader()
        target = probe.target
        key = self._next
        self._next = key + 1
        try:
            self._engine.submit(
                key, target.address, target.port, url.request, probe.timeout_s,
                self._clock(), MAX_HEADER_BYTES + url.max_body_bytes + _READ_SLACK,
                reader.feed, target.bind_address or None, target.bind_port or None,
                target.bind_interface or None, target.fwmark or None,
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            detail = f"{url.url.path}: cannot set up the socket: {exc}"
            self._loop.call_soon(self._report, run, Failure.LOCAL, detail)
            return
        self._runs[key] = run

    def _report(self, run: _Run, failure: Failure | None, detail: str) -> None:
        if self._closed:
            return
        if failure is None:
            result = ProbeResult.up(run.latency)
        else:
            result = ProbeResult.down(failure, run.latency, detail, failed_url=run.index)
        try:
            self._on_result(run.token, result)
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": f"HttpBatchProber: on_result({run.token}, ...) raised",
                "exception": exc,
            })  # fmt: skip

    def _deliver(self, now: float) -> None:
        if self._closed:
            return
        runs = self._runs
        for key, err, latency, stage, _ in self._engine.poll(now):
            run = runs.pop(key, None)
            if run is None or run.reader is None:
                continue
            probe = run.probe
            run.latency += latency
            failure, detail = verdict_of(err, stage, run.reader, probe.timeout_s)
            if failure is None and run.index + 1 < len(probe.urls):
                run.index += 1
                self._submit(run)
                continue
            path = probe.urls[run.index].url.path
            self._report(run, failure, f"{path}: {detail}" if failure is not None else "")
            if self._closed:
                return
        self._arm()
