"""Pure-Python twin: batched non-blocking request/response exchanges over TCP (HTTP_GET's
hot path): connect, send a payload, read the answer.

Owns: the sockets of its exchanges in flight and the rules below; the epoll instance,
the bounded in-flight window, the FIFO queue of exchanges waiting for a slot and the
deadline queues are ``engine_py.BatchedEngine``'s (shared with ``tcpconnect_py``). Its
compiled twin ``exchange_c.pyx`` must behave identically (same API, same results, same
exceptions); the test suite runs both.
Must not: read a clock (time comes in as ``now``, monotonic seconds), block, parse what it
reads (the caller's ``feed`` does), decide health, or be imported directly outside tests
and benches (import ``fastcheck._ext.exchange``).

Rules both twins follow (the connect rules are ``tcpconnect_py``'s, listed there: window
and FIFO queue, argument validation and its exceptions, bind/interface/fwmark options,
set-up failures as results of latency 0 reported by the next ``poll``):

- An exchange connects, sends ``payload`` whole, then reads until one of: the server
  closes (EOF), ``feed(chunk)`` returns a true value (the caller's "complete response"
  rule), or ``max_bytes`` bytes have been read. Each of these ends it with errno 0.
- Without ``feed``, the bytes read (at most ``max_bytes``) come back in the result, also
  when the exchange ended in an error or a timeout; with ``feed``, every chunk goes to
  ``feed`` as it arrives (in order; each call gets new bytes only, never more than
  ``max_bytes`` in all) and the result's data is ``b""``. An
  exception from ``feed`` ends the exchange with ``EIO``; ``feed`` must not call the engine.
- ``timeout_s`` bounds the whole exchange, from its start (connect) to its end:
  ``ETIMEDOUT`` when it has not ended by ``start + timeout_s``.
- ``poll(now)`` returns ``(token, errno, latency_s, stage, data)`` per finished exchange:
  ``stage`` is ``CONNECTING`` (0) when the connect never completed (errno is the connect's,
  or ``ETIMEDOUT``), ``CONNECTED`` (1) when it had (errno 0, or what send/recv said, or
  ``ETIMEDOUT``, or ``EIO`` for a ``feed`` that raised).
- Every socket is closed with a reset (``SO_LINGER`` 0): no TIME_WAIT is left behind, and a
  server still sending is cut off.
- Sockets are registered edge-triggered for input and output. The pure twin unregisters a
  socket before closing it; the compiled twin tags each registration with a slot
  generation instead, so a descriptor kept alive by a forked child can never answer for a
  later exchange.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from errno import EINPROGRESS, EIO, ETIMEDOUT
from typing import Any

from fastcheck._ext.engine_py import MAX_EVENTS, BatchedEngine, connect_error
from fastcheck._ext.sockopts_py import (
    CONNECT_SOCK_TYPE,
    TOKEN_MAX,
    TOKEN_MIN,
    Options,
    check_integer,
    check_seconds,
    close_with_reset,
    configure_socket,
    parse_options,
    parse_target,
)

__all__ = ["CONNECTED", "CONNECTING", "MAX_READ", "ExchangeEngine"]

CONNECTING = 0
CONNECTED = 1
MAX_READ = 65536  # bytes asked of one recv
MAX_BYTES_LIMIT = (1 << 62)  # max_bytes upper bound (any larger value is a mistake)

_EVENTS = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
_READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP
_FAILED = select.EPOLLERR | select.EPOLLHUP

Feed = Callable[[bytes], object]
Result = tuple[int, int, float, int, bytes]
# An exchange not yet started: token, family, target, timeout, options, payload,
# max_bytes, feed.
_Request = tuple[int, int, tuple[Any, ...], float, "Options | None", bytes, int, "Feed | None"]


class _Exchange:
    __slots__ = ("data", "deadline", "feed", "left", "payload", "seq", "sock", "stage",
                 "start", "timeout", "token")

    def __init__(self, sock: socket.socket, token: int, start: float, timeout: float,
                 seq: int, payload: bytes, left: int, feed: Feed | None) -> None:
        self.sock = sock
        self.token = token
        self.start = start
        self.timeout = timeout
        self.deadline = start + timeout
        self.seq = seq
        self.payload: bytes | memoryview = payload
        self.left = left  # bytes that may still be read
        self.feed = feed
        self.data = bytearray() if feed is None else None
        self.stage = CONNECTING


class ExchangeEngine(BatchedEngine[_Exchange, Result]):
    """Batched non-blocking TCP request/response exchanges over one epoll (see module doc)."""

    __slots__ = ()

    # --- public API --------------------------------------------------------------------

    def submit(
        self,
        token: int,
        address: str,
        port: int,
        payload: bytes,
        timeout_s: float,
        now: float,
        max_bytes: int = MAX_READ,
        feed: Feed | None = None,
        bind_address: str | None = None,
        bind_port: int | None = None,
        bind_interface: str | None = None,
        fwmark: int | None = None,
    ) -> None:
        """Start (or queue, when the window is full) an exchange with ``address:port``."""
        self._check_open()
        token = check_integer(token, "token", TOKEN_MIN, TOKEN_MAX)
        family, target = parse_target(address, port)
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        timeout = check_seconds(timeout_s, "timeout_s", minimum=0.0)
        now = check_seconds(now, "now")
        limit = check_integer(max_bytes, "max_bytes", 1, MAX_BYTES_LIMIT)
        if feed is not None and not callable(feed):
            raise TypeError(f"feed must be callable, not {type(feed).__name__}")
        options = parse_options(family, bind_address, bind_port, bind_interface, fwmark)
        self._submit((token, family, target, timeout, options, payload, limit, feed), now)

    def poll(self, now: float) -> list[Result]:
        """Exchanges finished since the last poll, as ``(token, errno, latency_s, stage,
        data)``; never blocks."""
        return super().poll(now)

    # --- internals ---------------------------------------------------------------------

    @staticmethod
    def _socket_of(check: _Exchange) -> socket.socket:
        return check.sock

    def _start(self, request: _Request, now: float) -> None:
        """Open, configure and connect one socket; a failure becomes a result."""
        token, family, target, timeout, options, payload, limit, feed = request
        try:
            sock = socket.socket(family, CONNECT_SOCK_TYPE)
        except OSError as exc:
            self._results.append((token, exc.errno or 0, 0.0, CONNECTING, b""))
            return
        try:
            if options is not None:
                configure_socket(sock, options)
            err = sock.connect_ex(target)
            if err in (0, EINPROGRESS):
                fd = sock.fileno()
                self._epoll.register(fd, _EVENTS)  # reports the current state at once
                self._checks[fd] = _Exchange(sock, token, now, timeout, self._seq,
                                             payload, limit, feed)
                self._seq += 1
                self._deadlines.add(fd, timeout, now + timeout)
                return
        except OSError as exc:
            err = exc.errno or 0
        sock.close()
        self._results.append((token, err, 0.0, CONNECTING, b""))

    def _finish(self, fd: int, check: _Exchange, err: int, now: float) -> None:
        del self._checks[fd]
        self._deadlines.remove(fd, check.timeout)
        self._epoll.unregister(fd)  # first: a descriptor shared with a forked child
        close_with_reset(check.sock)
        data = b"" if check.data is None else bytes(check.data)
        self._results.append((check.token, err, now - check.start, check.stage, data))

    def _collect(self, now: float) -> None:
        epoll_poll = self._epoll.poll
        checks = self._checks
        while True:
            events = epoll_poll(0, MAX_EVENTS)
            for fd, mask in events:
                check = checks.get(fd)
                if check is not None:
                    self._advance(fd, check, mask, now)
            if len(events) < MAX_EVENTS:
                break

    def _advance(self, fd: int, check: _Exchange, mask: int, now: float) -> None:
        """Move one exchange on as far as its socket allows."""
        sock = check.sock
        if check.stage == CONNECTING:
            if mask & _FAILED:
                err = connect_error(sock)
                if err:
                    self._finish(fd, check, err, now)
                    return
            elif not mask & select.EPOLLOUT:
                return
            check.stage = CONNECTED
        if check.payload:
            try:
                sent = sock.send(check.payload)
            except BlockingIOError:
                return  # the next EPOLLOUT edge resumes
            except OSError as exc:
                self._finish(fd, check, exc.errno or 0, now)
                return
            check.payload = memoryview(check.payload)[sent:]
            if check.payload:
                return
            mask |= select.EPOLLIN  # edge-triggered: input may already be waiting
        if not mask & _READABLE:
            return
        feed = check.feed
        while True:
            try:
                chunk = sock.recv(min(MAX_READ, check.left))
            except BlockingIOError:
                return
            except OSError as exc:
                self._finish(fd, check, exc.errno or 0, now)
                return
            if not chunk:
                self._finish(fd, check, 0, now)
                return
            check.left -= len(chunk)
            if feed is not None:
                try:
                    done = feed(chunk)
                except Exception:
                    self._finish(fd, check, EIO, now)
                    return
                if self._closed:  # feed closed the engine (it must not; be safe anyway)
                    return
                if done:
                    self._finish(fd, check, 0, now)
                    return
            else:
                check.data += chunk  # type: ignore[operator]
            if not check.left:
                self._finish(fd, check, 0, now)
                return

    def _expire(self, now: float) -> None:
        """Report ETIMEDOUT for every exchange whose deadline is at or before ``now``, in
        deadline order (ties: start order), as the compiled twin's heap does."""
        checks = self._checks
        for fd in self._deadlines.expired(now, lambda fd: checks[fd].seq):
            self._finish(fd, checks[fd], ETIMEDOUT, now)
