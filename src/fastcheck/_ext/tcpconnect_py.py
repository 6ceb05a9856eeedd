"""Pure-Python twin: a batched, non-blocking TCP connect engine (the TCP_CHECK hot path).

Owns: the sockets of its in-flight connect checks, and the rules below; the epoll
instance, the bounded in-flight window, the FIFO queue of checks waiting for a slot and
the deadline queues are ``engine_py.BatchedEngine``'s (shared with ``exchange_py``). Its
compiled twin ``tcpconnect_c.pyx`` must behave identically (same API, same results, same
exceptions); the test suite runs both.
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

import select
import socket
from errno import EINPROGRESS, ETIMEDOUT
from typing import Any

from fastcheck._ext.engine_py import MAX_EVENTS, BatchedEngine, connect_error
from fastcheck._ext.sockopts_py import (
    CONNECT_SOCK_TYPE,
    RESET_ON_CLOSE,
    TOKEN_MAX,
    TOKEN_MIN,
    Options,
    check_integer,
    check_seconds,
    close_with_reset,
    parse_options,
    parse_target,
)
from fastcheck._ext.sockopts_py import configure_socket as _configure  # a seam for tests

__all__ = ["TcpConnectEngine"]

_SOL_SOCKET = socket.SOL_SOCKET
_SO_LINGER = socket.SO_LINGER
_EPOLLOUT_ONESHOT = select.EPOLLOUT | select.EPOLLONESHOT
_FAILED = select.EPOLLERR | select.EPOLLHUP

# A check not yet started: (token, family, address, timeout, options); options is None or
# sockopts_py.Options.
_Request = tuple[int, int, tuple[Any, ...], float, Options | None]
# A check in flight: (socket, token, start, timeout, seq); seq counts starts, and breaks
# ties between equal deadlines of different timeouts.
_Check = tuple[socket.socket, int, float, float, int]


class TcpConnectEngine(BatchedEngine[_Check, tuple[int, int, float]]):
    """Batched non-blocking TCP connect checks over one epoll instance (see module doc)."""

    __slots__ = ()

    # --- public API --------------------------------------------------------------------

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
        token = check_integer(token, "token", TOKEN_MIN, TOKEN_MAX)
        family, target = parse_target(address, port)
        timeout = check_seconds(timeout_s, "timeout_s", minimum=0.0)
        now = check_seconds(now, "now")
        options = parse_options(family, bind_address, bind_port, bind_interface, fwmark)
        self._submit((token, family, target, timeout, options), now)

    def poll(self, now: float) -> list[tuple[int, int, float]]:
        """Checks finished since the last poll, as ``(token, errno, latency_s)``; never blocks."""
        return super().poll(now)

    # --- internals ---------------------------------------------------------------------

    @staticmethod
    def _socket_of(check: _Check) -> socket.socket:
        return check[0]

    def _start(self, request: _Request, now: float) -> None:
        """Open, configure and connect one socket; a failure becomes a result, not a raise."""
        token, family, target, timeout, options = request
        try:
            sock = socket.socket(family, CONNECT_SOCK_TYPE)
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
                self._deadlines.add(fd, timeout, now + timeout)
                return
        except OSError as exc:
            err = exc.errno or 0
        if err == 0:  # connected at once
            close_with_reset(sock)
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
            events = epoll_poll(0, MAX_EVENTS)
            for fd, mask in events:
                check = checks.pop(fd, None)
                if check is None:  # the eventfd (or a stray event): nothing to report
                    continue
                sock, token, start, timeout, _ = check
                deadlines.remove(fd, timeout)
                if mask & _FAILED:
                    err = connect_error(sock)
                    if err:
                        sock.close()
                        append((token, err, now - start))
                        continue
                sock.setsockopt(_SOL_SOCKET, _SO_LINGER, RESET_ON_CLOSE)
                sock.close()
                append((token, 0, now - start))
            if len(events) < MAX_EVENTS:
                break

    def _expire(self, now: float) -> None:
        """Report ETIMEDOUT for every check whose deadline is at or before ``now``, in
        deadline order (ties: start order), as the compiled twin's heap does."""
        deadlines = self._deadlines
        checks = self._checks
        expired = deadlines.expired(now, lambda fd: checks[fd][4])
        if not expired:
            return
        append = self._results.append
        unregister = self._epoll.unregister
        for fd in expired:
            sock, token, start, timeout, _ = checks.pop(fd)
            deadlines.remove(fd, timeout)
            unregister(fd)  # first: a descriptor shared with a forked child stays armed
            close_with_reset(sock)
            append((token, ETIMEDOUT, now - start))
