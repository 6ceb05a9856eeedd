"""Pure-Python twin: a batched, non-blocking TCP connect engine (the TCP_CHECK hot path).

Owns: the sockets and the epoll instance of its in-flight connect checks, the bounded
in-flight window, the FIFO queue of checks waiting for a slot, and the per-timeout deadline
queues. Its compiled twin ``tcpconnect_c.pyx`` must behave identically (same API, same
results, same exceptions); the test suite runs both.
Must not: read a clock (time comes in as ``now``, monotonic seconds), block, decide health,
or be imported directly outside tests and benches (import ``fastcheck._ext.tcpconnect``).

Rules both twins follow:

- ``submit`` starts the check at once (socket, options, bind, non-blocking connect) while
  fewer than ``max_in_flight`` are in flight, else queues it (FIFO). A queued check starts
  during a later ``poll``; its timeout runs from that start, not from ``submit``.
- ``now`` is monotonic seconds and must never go back from one call to the next.
- ``poll(now)`` never blocks. It returns every check finished since the last ``poll`` as
  ``(token, errno, latency_s)``: errno 0 = connected, ``ETIMEDOUT`` = no answer before
  ``start + timeout_s``, anything else = what the kernel said. ``latency_s`` is ``now``
  (of the ``poll`` that saw it) minus the start. Then queued checks fill freed slots.
- A socket that cannot even be set up (``EMFILE``, ``ENODEV`` for a bad ``bind_interface``,
  ``EPERM`` for ``fwmark`` without CAP_NET_ADMIN, ``EADDRNOTAVAIL`` on bind...) or whose
  connect fails at once becomes a result with that errno and latency 0, reported by the
  next ``poll``; ``fileno()`` turns readable for it (an eventfd in the epoll set).
- Invalid arguments raise at ``submit``: ``ValueError`` for bad values (address text that
  is not a numeric IPv4/IPv6 address, port outside 1..65535, negative or non-finite
  timeout, ``bind_address`` of the other family, interface name empty or over 15 bytes,
  fwmark outside 32 bits, token outside signed 64 bits), ``TypeError`` for wrong types.
- Every check socket is closed with a reset (``SO_LINGER`` 0) when it had connected, so
  checks leave no TIME_WAIT behind. A fixed ``bind_port`` sets ``SO_REUSEADDR`` (many
  checks may share it towards different servers); a ``bind_address`` without a port sets
  ``IP_BIND_ADDRESS_NO_PORT`` so the port is picked at connect time, per destination.
- Sockets are registered ``EPOLLOUT | EPOLLONESHOT``: a completed check can report at most
  once even if a forked child still holds its descriptor; a timed-out one is unregistered
  before it is closed.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from collections import deque
from contextlib import suppress
from errno import EINPROGRESS, ETIMEDOUT
from math import isfinite
from operator import index
from types import TracebackType
from typing import Any

__all__ = ["TcpConnectEngine"]

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h; not exported by Python's socket module
IFNAMSIZ = 16
MAX_WINDOW = 1 << 20  # the kernel's default nr_open: more sockets cannot be open at once

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_SOCK_TYPE = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_SOL_SOCKET = socket.SOL_SOCKET
_SO_ERROR = socket.SO_ERROR
_SO_LINGER = socket.SO_LINGER
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}
_EPOLLOUT_ONESHOT = select.EPOLLOUT | select.EPOLLONESHOT
_FAILED = select.EPOLLERR | select.EPOLLHUP
_MAX_EVENTS = 512
_TOKEN_MIN, _TOKEN_MAX = -(2**63), 2**63 - 1
_inet_pton = socket.inet_pton

# A check not yet started: (token, family, address, timeout, options); options is None or
# (bind sockaddr or None, reuse_address, bind_no_port, interface bytes or None, fwmark).
_Options = tuple[tuple[Any, ...] | None, bool, bool, bytes | None, int | None]
_Request = tuple[int, int, tuple[Any, ...], float, _Options | None]


def _family(address: str, what: str) -> int:
    """AF_INET or AF_INET6 for numeric address text; ValueError for anything else."""
    try:
        _inet_pton(_AF_INET, address)
        return _AF_INET
    except OSError:
        pass
    try:
        _inet_pton(_AF_INET6, address)
        return _AF_INET6
    except OSError:
        message = f"{what} must be a numeric IPv4 or IPv6 address, got {address!r}"
        raise ValueError(message) from None


def _integer(value: object, what: str, low: int, high: int) -> int:
    number = index(value)  # type: ignore[arg-type]  # TypeError for non-integers
    if not low <= number <= high:
        raise ValueError(f"{what} must be in {low}..{high}, got {number}")
    return number


def _seconds(value: float, what: str, *, minimum: float | None = None) -> float:
    if not isfinite(value):  # TypeError for non-numbers, as the C twin's double argument
        raise ValueError(f"{what} must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return float(value)


def _interface(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"bind_interface must be str, not {type(name).__name__}")
    raw = os.fsencode(name)
    if not 0 < len(raw) < IFNAMSIZ or b"\0" in raw:
        raise ValueError(
            f"bind_interface must be 1..{IFNAMSIZ - 1} bytes without NUL, got {name!r}"
        )
    return raw


def _options(
    family: int,
    bind_address: str | None,
    bind_port: int | None,
    bind_interface: str | None,
    fwmark: int | None,
) -> _Options | None:
    """Validated connection options, or None when there are none (the common case)."""
    port = 0 if bind_port is None else _integer(bind_port, "bind_port", 0, 0xFFFF)
    bind: tuple[Any, ...] | None = None
    if bind_address is not None:
        if not isinstance(bind_address, str):
            raise TypeError(f"bind_address must be str, not {type(bind_address).__name__}")
        if _family(bind_address, "bind_address") != family:
            raise ValueError(f"bind_address {bind_address!r} is not of the target's family")
        bind = (bind_address, port)
    elif port:
        bind = ("0.0.0.0" if family == _AF_INET else "::", port)
    interface = None if bind_interface is None else _interface(bind_interface)
    mark = None if fwmark is None else _integer(fwmark, "fwmark", 0, 0xFFFFFFFF)
    if bind is None and interface is None and mark is None:
        return None
    return bind, port != 0, bind_address is not None and port == 0, interface, mark


def _configure(sock: socket.socket, options: _Options) -> None:
    """Apply the connection options before connect; OSError carries the kernel's errno."""
    bind, reuse_address, no_port, interface, mark = options
    if interface is not None:
        sock.setsockopt(_SOL_SOCKET, socket.SO_BINDTODEVICE, interface)
    if mark is not None:
        sock.setsockopt(_SOL_SOCKET, socket.SO_MARK, mark)
    if bind is not None:
        if reuse_address:
            sock.setsockopt(_SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if no_port:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind(bind)


class TcpConnectEngine:
    """Batched non-blocking TCP connect checks over one epoll instance (see module doc)."""

    __slots__ = (
        "_checks",
        "_closed",
        "_deadlines",
        "_epoll",
        "_eventfd",
        "_max_in_flight",
        "_queue",
        "_results",
        "_seq",
        "_signalled",
    )

    def __init__(self, max_in_flight: int = 4096) -> None:
        self._closed = True  # until every resource exists, so close() is always safe
        self._max_in_flight = _integer(max_in_flight, "max_in_flight", 1, MAX_WINDOW)
        # fd -> (socket, token, start, timeout, seq) of every check in flight; seq counts
        # starts, and breaks ties between equal deadlines of different timeouts
        self._checks: dict[int, tuple[socket.socket, int, float, float, int]] = {}
        self._seq = 0
        # timeout -> {fd: deadline}, in start order, so each dict's first entry is the
        # earliest deadline of that timeout (dicts keep insertion order; deletion is O(1))
        self._deadlines: dict[float, dict[int, float]] = {}
        self._queue: deque[_Request] = deque()
        self._results: list[tuple[int, int, float]] = []
        self._signalled = False
        self._epoll = select.epoll()
        try:
            self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except BaseException:
            self._epoll.close()
            raise
        self._epoll.register(self._eventfd, select.EPOLLIN)
        self._closed = False

    # --- public API --------------------------------------------------------------------

    def fileno(self) -> int:
        """The engine's epoll descriptor: readable when ``poll`` has results to return."""
        self._check_open()
        return self._epoll.fileno()

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        """Checks with a connect in progress."""
        return len(self._checks)

    @property
    def queued(self) -> int:
        """Checks waiting for a free slot in the window."""
        return len(self._queue)

    def submit(
        self,
        token: int,
        address: str,
        port: int,
        timeout_s: float,
        now: float,
        bind_address: str | None = None,
        bind_port: int | None = None,
        bind_interface: str | None = None,
        fwmark: int | None = None,
    ) -> None:
        """Start (or queue, when the window is full) a connect check to ``address:port``."""
        self._check_open()
        token = _integer(token, "token", _TOKEN_MIN, _TOKEN_MAX)
        if not isinstance(address, str):
            raise TypeError(f"address must be str, not {type(address).__name__}")
        family = _family(address, "address")
        port = _integer(port, "port", 1, 0xFFFF)
        timeout = _seconds(timeout_s, "timeout_s", minimum=0.0)
        now = _seconds(now, "now")
        if bind_address is None and bind_port is None and bind_interface is None \
                and fwmark is None:  # fmt: skip
            options = None
        else:
            options = _options(family, bind_address, bind_port, bind_interface, fwmark)
        target = (address, port) if family == _AF_INET else (address, port, 0, 0)
        if len(self._checks) >= self._max_in_flight:
            self._queue.append((token, family, target, timeout, options))
            return
        self._start(token, family, target, timeout, options, now)
        if self._results and not self._signalled:
            os.eventfd_write(self._eventfd, 1)
            self._signalled = True

    def poll(self, now: float) -> list[tuple[int, int, float]]:
        """Checks finished since the last poll, as ``(token, errno, latency_s)``; never blocks."""
        self._check_open()
        now = _seconds(now, "now")
        self._collect(now)
        self._expire(now)
        queue = self._queue
        checks = self._checks
        limit = self._max_in_flight
        while queue and len(checks) < limit:
            self._start(*queue.popleft(), now)
        if self._signalled:
            with suppress(BlockingIOError):
                os.eventfd_read(self._eventfd)
            self._signalled = False
        results = self._results
        self._results = []
        return results

    def next_deadline(self) -> float | None:
        """The earliest deadline among checks in flight, or None when none is in flight."""
        earliest = None
        for group in self._deadlines.values():
            for deadline in group.values():
                if earliest is None or deadline < earliest:
                    earliest = deadline
                break
        return earliest

    def close(self) -> None:
        """Reset every check in flight, drop the queue, release the descriptors. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for sock, *_ in self._checks.values():
            _close_with_reset(sock)
        self._checks.clear()
        self._deadlines.clear()
        self._queue.clear()
        self._results.clear()
        self._epoll.close()
        os.close(self._eventfd)

    def __enter__(self) -> TcpConnectEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:  # at interpreter exit module globals (contextlib too) may be gone
            if not self._closed:
                self.close()
        except Exception:
            pass

    # --- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("TcpConnectEngine is closed")

    def _start(
        self,
        token: int,
        family: int,
        target: tuple[Any, ...],
        timeout: float,
        options: _Options | None,
        now: float,
    ) -> None:
        """Open, configure and connect one socket; a failure becomes a result, not a raise."""
        try:
            sock = socket.socket(family, _SOCK_TYPE)
        except OSError as exc:
            self._results.append((token, exc.errno or 0, 0.0))
            return
        try:
            if options is not None:
                _configure(sock, options)
            err = sock.connect_ex(target)
            if err == EINPROGRESS:
                fd = sock.fileno()
                self._epoll.register(fd, _EPOLLOUT_ONESHOT)
                self._checks[fd] = (sock, token, now, timeout, self._seq)
                self._seq += 1
                group = self._deadlines.get(timeout)
                if group is None:
                    group = self._deadlines[timeout] = {}
                group[fd] = now + timeout
                return
        except OSError as exc:
            err = exc.errno or 0
        if err == 0:  # connected at once
            _close_with_reset(sock)
        else:
            sock.close()
        self._results.append((token, err, 0.0))

    def _collect(self, now: float) -> None:
        """Close and report every socket epoll says has finished connecting."""
        epoll_poll = self._epoll.poll
        checks = self._checks
        deadlines = self._deadlines
        append = self._results.append
        while True:
            events = epoll_poll(0, _MAX_EVENTS)
            for fd, mask in events:
                check = checks.pop(fd, None)
                if check is None:  # the eventfd (or a stray event): nothing to report
                    continue
                sock, token, start, timeout, _ = check
                group = deadlines[timeout]
                del group[fd]
                if not group:
                    del deadlines[timeout]
                if mask & _FAILED:
                    try:
                        err = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
                    except OSError as exc:
                        err = exc.errno or 0
                    if err:
                        sock.close()
                        append((token, err, now - start))
                        continue
                sock.setsockopt(_SOL_SOCKET, _SO_LINGER, _RESET_ON_CLOSE)
                sock.close()
                append((token, 0, now - start))
            if len(events) < _MAX_EVENTS:
                break

    def _expire(self, now: float) -> None:
        """Report ETIMEDOUT for every check whose deadline is at or before ``now``, in
        deadline order (ties: start order), as the compiled twin's heap does. Each
        timeout's dict is in start order, hence in deadline order while ``now`` never
        goes back, so its expired checks are a prefix."""
        deadlines = self._deadlines
        expired: list[tuple[float, int]] = []
        groups = 0
        for group in deadlines.values():
            first = len(expired)
            for fd, deadline in group.items():
                if deadline > now:
                    break
                expired.append((deadline, fd))
            groups += len(expired) > first
        if not expired:
            return
        checks = self._checks
        if groups > 1:
            expired.sort(key=lambda item: (item[0], checks[item[1]][4]))
        append = self._results.append
        unregister = self._epoll.unregister
        for _, fd in expired:
            sock, token, start, timeout, _ = checks.pop(fd)
            group = deadlines[timeout]
            del group[fd]
            if not group:
                del deadlines[timeout]
            unregister(fd)  # first: a descriptor shared with a forked child stays armed
            _close_with_reset(sock)
            append((token, ETIMEDOUT, now - start))


def _close_with_reset(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.setsockopt(_SOL_SOCKET, _SO_LINGER, _RESET_ON_CLOSE)
    sock.close()
