"""TCP_CHECK: connect checks run by the batched engine, driven by an asyncio event loop.

Owns: driving one ``TcpConnectEngine`` on a loop (the reader and the deadline timer are
``batched.EngineProber``'s), and the errno -> ``Failure`` mapping of a connect.
Must not: decide health (retry, rise/fall belong to health/), schedule checks (the
scheduler calls ``start``), or read any clock but ``loop.time()``. One task per check is
exactly what this module exists to avoid: a check is a token in the engine, not a coroutine.

Works with stock asyncio and uvloop alike: it needs only ``add_reader``, ``call_at`` and
``time``. With uvloop, ``loop.time()`` has millisecond resolution, and so do latencies.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from errno import ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT
from typing import Final

from fastcheck._ext.tcpconnect import TcpConnectEngine
from fastcheck.model import Target
from fastcheck.probes.batched import EngineProber
from fastcheck.probes.result import Failure, ProbeResult

__all__ = ["ERRNO_FAILURES", "TcpProber", "result_for"]

# What a connect errno means for the real server; any other errno is LOCAL: we could not
# even try (no descriptors, no source address, no such interface, fwmark not permitted).
ERRNO_FAILURES: Final = {
    ECONNREFUSED: Failure.REFUSED,
    ETIMEDOUT: Failure.TIMEOUT,
    ENETUNREACH: Failure.UNREACHABLE,
    EHOSTUNREACH: Failure.UNREACHABLE,
    ECONNRESET: Failure.RESET,
}


def result_for(err: int, latency_s: float) -> ProbeResult:
    """The probe result of a connect check that ended with ``err`` (0 = connected)."""
    if err == 0:
        return ProbeResult.up(latency_s)
    failure = ERRNO_FAILURES.get(err, Failure.LOCAL)
    return ProbeResult.down(failure, latency_s, f"connect: {os.strerror(err)}")


class TcpProber(EngineProber[TcpConnectEngine]):
    """Runs TCP connect checks on ``loop`` and reports each through ``on_result``.

    ``on_result(token, result)`` is called once per check, in batches: every check the
    engine finished since the last wake-up, one call after another in one loop callback.
    An exception from ``on_result`` goes to the loop's exception handler; the rest of the
    batch is still delivered. The prober owns its engine (given or made) and closes it.
    """

    __slots__ = ()

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_result: Callable[[int, ProbeResult], None],
        engine: TcpConnectEngine | None = None,
    ) -> None:
        super().__init__(loop, on_result, engine if engine is not None else TcpConnectEngine())

    def start(self, token: int, target: Target, timeout_s: float) -> None:
        """Check that ``target`` accepts a TCP connection within ``timeout_s`` seconds.

        The result arrives later through ``on_result(token, ...)``, never from inside this
        call. Invalid targets (address text, port, interface name) raise ``ValueError``.
        """
        if self._closed:
            raise ValueError("TcpProber is closed")
        self._engine.submit(
            token, target.address, target.port, timeout_s, self._loop.time(),
            target.bind_address, target.bind_port, target.bind_interface, target.fwmark,
        )  # fmt: skip
        self._arm()

    # --- internals ---------------------------------------------------------------------

    def _deliver(self, now: float) -> None:
        if self._closed:
            return
        on_result = self._on_result
        for token, err, latency in self._engine.poll(now):
            try:
                on_result(token, result_for(err, latency))
            except Exception as exc:
                self._loop.call_exception_handler({
                    "message": f"TcpProber: on_result({token}, ...) raised",
                    "exception": exc,
                })  # fmt: skip
        if not self._closed:
            self._arm()
