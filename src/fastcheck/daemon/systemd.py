"""systemd integration: the sd_notify protocol and the observer that speaks it.

Owns: `NotifySocket`, a client of `$NOTIFY_SOCKET` (AF_UNIX datagrams to a path or an
abstract "@" address; newline-separated `KEY=value` lines per message; `MONOTONIC_USEC`
from CLOCK_MONOTONIC), the watchdog settings read from `WATCHDOG_USEC`/`WATCHDOG_PID`,
and `SystemdObserver`, which tells systemd READY=1 once the first table is applied,
RELOADING=1/READY=1 around reloads, STOPPING=1, a one-line STATUS refreshed periodically,
and feeds the watchdog (WATCHDOG=1) only while `PaceJudge` says the scheduler keeps up.
Must not: be fatal to the daemon (a failed send is logged once per failure episode and
otherwise ignored), unset or change the environment, block the loop for long (sends are
non-blocking except state changes, which wait at most `STATE_SEND_TIMEOUT_S`), or make a
second "keeping up" judgement (`pace.PaceJudge` is the one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastcheck.model import RsKey

from .observe import Observer
from .pace import DEFAULT_STALL_S, PaceJudge

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger("fastcheck")

STATUS_INTERVAL_S = 10.0
STATE_SEND_TIMEOUT_S = 0.25  # READY/RELOADING/STOPPING may wait this long for a full queue


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd wants in MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> str | bytes:
    """`$NOTIFY_SOCKET` → a sendto() address; ValueError when it is not an AF_UNIX one."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET={value!r} is not a path or an abstract (@) address")


def watchdog_usec(environ: Mapping[str, str], pid: int | None = None) -> int | None:
    """The watchdog period meant for this process, or None (unset, bad, or for another
    pid: `WATCHDOG_PID` names the process systemd expects pings from)."""
    text = environ.get("WATCHDOG_USEC")
    if not text:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            log.warning("systemd: ignoring WATCHDOG_PID=%r: not a process id", owner)
            return None
    try:
        usec = int(text)
    except ValueError:
        log.warning("systemd: ignoring WATCHDOG_USEC=%r: not a number", text)
        return None
    return usec if usec > 0 else None


def message(*lines: str) -> bytes:
    """One notification datagram: `KEY=value` lines, newline-separated. A STATUS value is
    kept to one line."""
    clean = []
    for line in lines:
        if line.startswith("STATUS="):
            line = " ".join(line.split("\n"))
        clean.append(line)
    return "\n".join(clean).encode()


class NotifySocket:
    """Datagrams to `$NOTIFY_SOCKET`. `send()` never raises; the first failure of an
    episode is logged, the rest are not until a send succeeds again."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self.sent = 0
        self.failures = 0
        self._failing = False
        self._sock: socket.socket | None = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        seconds = int(STATE_SEND_TIMEOUT_S)
        usec = int((STATE_SEND_TIMEOUT_S - seconds) * 1_000_000)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                              struct.pack("@ll", seconds, usec))

    @property
    def shown_address(self) -> str:
        address = self.address
        return "@" + address[1:].decode(errors="replace") if isinstance(address, bytes) \
            else address

    def send(self, *lines: str, wait: bool = False) -> bool:
        """Sends one message; `wait` lets it wait (bounded) when systemd's queue is full."""
        if self._sock is None:
            return False
        data = message(*lines)
        try:
            self._sock.sendto(data, 0 if wait else socket.MSG_DONTWAIT, self.address)
        except OSError as error:
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.warning("systemd: cannot notify %s: %s (further failures are not logged "
                            "until it works again)", self.shown_address,
                            error.strerror or error)
            return False
        if self._failing:
            self._failing = False
            log.info("systemd: notifying %s works again", self.shown_address)
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _rounded(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _real_servers_up(runtime: Runtime) -> tuple[int, int, int]:
    """(up, total, virtual servers): through `real_server_up` when the health layer has
    it (20,000 real servers: about 8 ms, against 140 ms for a snapshot), else from
    its snapshot."""
    health: Any = runtime.health
    is_up = getattr(health, "real_server_up", None)
    if callable(is_up):
        up = total = 0
        for vs in runtime.config.virtual_servers:
            vs_key = vs.key
            for rs in vs.real_servers:
                total += 1
                with contextlib.suppress(KeyError):  # unknown to health: counted, not up
                    up += bool(is_up(RsKey(vs_key, rs.address, rs.port)))
        return up, total, len(runtime.config.virtual_servers)
    snapshot = health.snapshot()
    up = total = 0
    for vs in snapshot.get("virtual_servers", ()):
        for rs in vs.get("real_servers", ()):
            total += 1
            up += bool(rs.get("up"))
    return up, total, len(snapshot.get("virtual_servers", ()))


def summary_line(runtime: Runtime, checks_per_s: float, lag_p99_s: float) -> str:
    """One line: "N/M real servers up, S services, X checks/s, lag p99 Y ms"."""
    up, total, services = _real_servers_up(runtime)
    return (f"{up}/{total} real servers up, {services} services, "
            f"{_rounded(checks_per_s)} checks/s, lag p99 {lag_p99_s * 1000:.0f} ms")


def stall_limit(runtime: Runtime) -> float:
    """How long without any probe start is a stall for this plan: the pace judge's
    default, or twice the shortest probe interval when that is longer (a plan of a few
    probes every 60 s starts nothing for most of a minute, and that is fine)."""
    intervals = [probe.interval_s for probe in runtime.plan.probes.values()]
    return max(DEFAULT_STALL_S, 2 * min(intervals)) if intervals else DEFAULT_STALL_S


class SystemdObserver(Observer):
    """Tells systemd what the daemon is doing (see the module docstring)."""

    name = "systemd"

    def __init__(self, notify: NotifySocket, *, watchdog_usec: int | None = None,
                 status_interval_s: float = STATUS_INTERVAL_S,
                 judge: PaceJudge | None = None) -> None:
        self.notify = notify
        self.watchdog_s = watchdog_usec / 1_000_000 if watchdog_usec else None
        self.status_interval_s = status_interval_s
        self.judge = judge or PaceJudge()
        self._runtime: Runtime | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_look: float | None = None
        self._last_status: float | None = None
        self._lagging = False  # in a "not keeping up" episode
        self._rate = 0.0  # probe starts per second over the last window
        self.watchdog_pings = 0

    @property
    def tick_s(self) -> float:
        """Period of the one timer: half the watchdog period, and often enough for STATUS."""
        if self.watchdog_s is None:
            return self.status_interval_s
        return min(self.watchdog_s / 2, self.status_interval_s)

    # ------------------------------------------------------------------ hooks

    def started(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.judge.stall_s = stall_limit(runtime)
        now = runtime.loop.time()
        self.judge.look(now, runtime.engine.stats())  # the baseline of the first window
        self._last_look = now
        self.notify.send("READY=1", self._status(runtime, 0.0, 0.0), wait=True)
        self._last_status = now
        self._arm()  # the watchdog counts from READY=1; the first ping follows a judged look

    def reload_started(self, runtime: Runtime) -> None:
        self.notify.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}",
                         f"STATUS=reloading {runtime.options.config_path}", wait=True)

    def reload_finished(self, runtime: Runtime, ok: bool, duration_s: float) -> None:
        self.judge.stall_s = stall_limit(runtime)
        failure = None if ok else runtime.last_reload_failure
        prefix = "" if ok else \
            f"reload failed: {failure.reason if failure else 'see the log'}; "
        self.notify.send("READY=1", self._status(runtime, *self._recent_figures(), prefix),
                         wait=True)
        self._last_status = runtime.loop.time()

    def stopping(self, runtime: Runtime) -> None:
        self._cancel()
        self.notify.send("STOPPING=1", "STATUS=stopping", wait=True)

    async def close(self) -> None:
        self._cancel()
        self.notify.close()

    # ------------------------------------------------------------------ the timer

    def _arm(self) -> None:
        if self._runtime is not None:
            self._timer = self._runtime.loop.call_later(self.tick_s, self._tick)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        runtime = self._runtime
        if runtime is None:
            return
        try:
            self.tick(runtime, runtime.loop.time())
        finally:
            self._arm()

    def tick(self, runtime: Runtime, now: float) -> None:
        """One look at the engine's pace: feed the watchdog if keeping up, refresh STATUS."""
        elapsed = now - self._last_look if self._last_look is not None else 0.0
        self._last_look = now
        pace = self.judge.look(now, runtime.engine.stats())
        rate = pace.started / elapsed if elapsed > 0 else 0.0
        self._rate = rate
        due = self._last_status is None or \
            now - self._last_status >= self.status_interval_s - 1e-6
        if pace.keeping_up:
            if self.watchdog_s is not None:
                self.notify.send("WATCHDOG=1")
                self.watchdog_pings += 1
            if self._lagging:
                self._lagging = False
                log.info("systemd: the scheduler keeps up again")
                due = True
            if due:
                self._send_status(runtime, now, rate, pace.lag_p99_s)
            return
        if not self._lagging:
            self._lagging = True
            due = True
            fed = " (the watchdog is not fed)" if self.watchdog_s is not None else ""
            log.warning("systemd: the scheduler is not keeping up: %s%s", pace.reason, fed)
        if due:  # at the start of the episode, then at the usual pace
            self._send_status(runtime, now, rate, pace.lag_p99_s,
                              f"not keeping up: {pace.reason}; ")

    def _recent_figures(self) -> tuple[float, float]:
        last = self.judge.last
        return self._rate, last.lag_p99_s if last is not None else 0.0

    def _status(self, runtime: Runtime, rate: float, lag_p99_s: float,
                prefix: str = "") -> str:
        try:
            return f"STATUS={prefix}{summary_line(runtime, rate, lag_p99_s)}"
        except Exception:  # a status line is never worth stopping the notifications
            log.exception("systemd: building the status line failed")
            return f"STATUS={prefix}running"

    def _send_status(self, runtime: Runtime, now: float, rate: float, lag_p99_s: float,
                     prefix: str = "") -> None:
        self.notify.send(self._status(runtime, rate, lag_p99_s, prefix))
        self._last_status = now


def observer_from_environment(environ: Mapping[str, str]) -> SystemdObserver | None:
    """The observer when `$NOTIFY_SOCKET` is set (we run under systemd), else None."""
    value = environ.get("NOTIFY_SOCKET")
    if not value:
        return None
    try:
        address = socket_address(value)
    except ValueError as error:
        log.warning("systemd: %s; not notifying systemd", error)
        return None
    try:
        notify = NotifySocket(address)
    except OSError as error:
        log.warning("systemd: cannot open a socket for %s: %s; not notifying systemd",
                    value, error.strerror or error)
        return None
    usec = watchdog_usec(environ)
    if usec is not None:
        log.info("systemd: watchdog every %.1f s, fed while the scheduler keeps up",
                 usec / 1_000_000)
    return SystemdObserver(notify, watchdog_usec=usec)

