"""PING_CHECK: ICMP/ICMPv6 echo probes on an asyncio loop (stock asyncio or uvloop).

Owns: the thin asyncio shell around ``fastcheck._ext.icmp.IcmpEngine`` — one engine per
address family, created on first use, its socket watched with ``loop.add_reader``, one
timer for the earliest deadline of all engines (a ``batched.DeadlineTimer``), a backlog
for starts beyond the engines' ``max_in_flight`` — and the mapping of engine statuses to
``ProbeResult``.
Must not: decide health (retry, rise/fall belong to health/), schedule checks, or keep
state beyond the echoes it was asked to send. It reads no clock but the one it is given
(default ``loop.time``).

keepalived's PING_CHECK ignores ``bindto``/``bind_port``/``bind_interface`` and fwmark:
every echo goes out of one raw socket per family, so this does too (``Target.address``
is the only field read).
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import socket
from collections import deque
from collections.abc import Callable

from fastcheck._ext.icmp import IcmpEngine
from fastcheck.errors import ProbeError
from fastcheck.model import Target
from fastcheck.probes.batched import DeadlineTimer
from fastcheck.probes.result import Failure, ProbeResult

__all__ = ["PingProber", "result_for"]

OnResult = Callable[[int, ProbeResult], None]

_UNREACHABLE_DETAIL = {
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
}


def result_for(status: int, rtt_s: float) -> ProbeResult:
    """The ``ProbeResult`` for one ``(status, rtt_s)`` reported by ``IcmpEngine.poll``."""
    if status == 0:
        return ProbeResult.up(rtt_s)
    if status == errno.ETIMEDOUT:
        return ProbeResult.down(Failure.TIMEOUT, rtt_s, "no ICMP echo reply")
    if status in _UNREACHABLE_DETAIL:
        return ProbeResult.down(Failure.UNREACHABLE, rtt_s, _UNREACHABLE_DETAIL[status])
    return ProbeResult.down(
        Failure.LOCAL, rtt_s, f"cannot send the ICMP echo request: {os.strerror(status)}"
    )


class PingProber:
    """Send ICMP echoes for many targets at once; report each through ``on_result``.

    ``start(token, target, timeout_s)`` sends one echo; ``on_result(token, result)`` is
    called exactly once per start (unless the prober is closed first), from the loop.
    Results come in batches (everything one wake-up read or expired); an exception from
    ``on_result`` goes to the loop's exception handler and the rest is still delivered.
    ``clock`` gives the "now" handed to the engines (default ``loop.time``: with uvloop
    that has millisecond resolution, and so do latencies); the loop only provides a
    reader and timers, so stock asyncio and uvloop both work.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_result: OnResult, *,
                 max_in_flight: int = 65536,
                 clock: Callable[[], float] | None = None) -> None:  # fmt: skip
        self._loop = loop
        self._on_result = on_result
        self._max_in_flight = max_in_flight
        self._clock = clock if clock is not None else loop.time
        self._engines: dict[bool, IcmpEngine] = {}  # ipv6? → engine
        self._backlog: deque[tuple[int, str, bool, float]] = deque()
        self._timer = DeadlineTimer(loop, clock, self._on_timer)
        self._closed = False

    # -- the public face --------------------------------------------------------------------

    def start(self, token: int, target: Target, timeout_s: float) -> None:
        """Send one echo to ``target.address``; the result arrives via ``on_result``.

        Raises ``ProbeError`` if the address is not an IP address or the raw socket cannot
        be opened (without CAP_NET_RAW, for one); nothing is reported for that start.
        """
        if self._closed:
            raise ProbeError("PING_CHECK prober is closed")
        address = target.address
        ipv6 = ":" in address
        engine = self._engines.get(ipv6)
        if engine is None:
            engine = self._open(ipv6)
        if self._backlog:  # keep starts in order once some had to wait
            _validate(ipv6, address, timeout_s)
            self._backlog.append((token, address, ipv6, timeout_s))
            return
        self._submit(engine, token, address, timeout_s, self._clock())
        self._arm()

    @property
    def in_flight(self) -> int:
        """Echoes sent and not yet reported, plus starts waiting for room."""
        return sum(e.in_flight for e in self._engines.values()) + len(self._backlog)

    def close(self) -> None:
        """Stop watching and close the sockets; echoes in flight are never reported."""
        if self._closed:
            return
        self._closed = True
        self._timer.cancel()
        for engine in self._engines.values():
            self._loop.remove_reader(engine.fileno())
            engine.close()
        self._engines.clear()
        self._backlog.clear()

    # -- engines ----------------------------------------------------------------------------

    def _open(self, ipv6: bool) -> IcmpEngine:
        family = "ICMPv6" if ipv6 else "ICMP"
        try:
            engine = IcmpEngine(ipv6=ipv6, max_in_flight=self._max_in_flight)
        except PermissionError as exc:
            raise ProbeError(
                f"PING_CHECK needs CAP_NET_RAW to open a raw {family} socket ({exc.strerror}); "
                "run fastcheck as root or grant it the capability "
                "(systemd: AmbientCapabilities=CAP_NET_RAW)"
            ) from None
        except OSError as exc:
            raise ProbeError(f"PING_CHECK cannot open a raw {family} socket: {exc}") from None
        self._engines[ipv6] = engine
        self._loop.add_reader(engine.fileno(), self._on_readable, engine)
        return engine

    def _submit(self, engine: IcmpEngine, token: int, address: str, timeout_s: float,
                now: float) -> bool:  # fmt: skip
        """Send, or queue when the engine is full; ``False`` when queued."""
        try:
            engine.submit(token, address, timeout_s, now)
        except BlockingIOError:
            self._backlog.append((token, address, engine.ipv6, timeout_s))
            return False
        except ValueError as exc:
            raise ProbeError(f"PING_CHECK target {address!r}: {exc}") from None
        return True

    def _flush_backlog(self, now: float) -> None:
        backlog = self._backlog
        while backlog:
            token, address, ipv6, timeout_s = backlog[0]
            engine = self._engines[ipv6]
            if engine.in_flight >= engine.max_in_flight:
                return
            backlog.popleft()
            try:
                engine.submit(token, address, timeout_s, now)
            except ValueError:  # validated when queued, so not expected: report, don't lose
                self._deliver([(token, errno.EINVAL, 0.0)])

    # -- loop callbacks ---------------------------------------------------------------------

    def _on_readable(self, engine: IcmpEngine) -> None:
        self._poll((engine,), self._clock())

    def _on_timer(self, now: float) -> None:
        self._poll(tuple(self._engines.values()), now)

    def _poll(self, engines: tuple[IcmpEngine, ...], now: float) -> None:
        for engine in engines:
            try:
                results = engine.poll(now)
            except OSError as exc:  # what was read comes back on the next poll
                self._loop.call_exception_handler({
                    "message": "PING_CHECK: reading the raw ICMP socket failed",
                    "exception": exc,
                })  # fmt: skip
                continue
            self._deliver(results)
        if self._backlog:
            self._flush_backlog(now)
        self._arm()

    def _deliver(self, results: list[tuple[int, int, float]]) -> None:
        on_result = self._on_result
        for token, status, rtt_s in results:
            try:
                on_result(token, result_for(status, rtt_s))
            except Exception as exc:  # one bad callback must not lose the rest of the batch
                self._loop.call_exception_handler({
                    "message": f"PING_CHECK: on_result failed for token {token!r}",
                    "exception": exc,
                })  # fmt: skip

    def _arm(self) -> None:
        """Keep one timer, at the earliest deadline of all engines (or none)."""
        if self._closed:
            return
        deadlines = [d for e in self._engines.values() if (d := e.next_deadline()) is not None]
        if deadlines:  # else a later timer may stay armed; firing it early is harmless
            self._timer.arm(min(deadlines))


def _validate(ipv6: bool, address: str, timeout_s: float) -> None:
    """Raise ``ProbeError`` now for a start the engine would refuse when it is sent."""
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    try:
        socket.inet_pton(family, address)
    except (OSError, ValueError):
        raise ProbeError(f"PING_CHECK target {address!r} is not an IP address") from None
    if not 0.0 <= timeout_s < math.inf:
        raise ProbeError(f"PING_CHECK target {address!r}: bad timeout {timeout_s!r}")
