"""The skeleton the pure connect engines (``tcpconnect_py``, ``exchange_py``) share; the pure
counterpart of ``engine_c.pxd``.

Owns: ``BatchedEngine``, a base class holding the epoll instance and the eventfd that makes
it readable for results produced outside it, the bounded in-flight window, the FIFO queue
of requests waiting for a slot, the deadline groups, the results gathered for the next
``poll``, and what every engine does the same way: ``fileno``, the window properties, the
steps of ``poll``, ``next_deadline``, ``close`` and the context-manager protocol; reading a
failed connect's errno (``connect_error``).
Must not: read a clock, block, open a check's socket or know what a check does: subclasses
provide ``_start(request, now)``, ``_collect(now)``, ``_expire(now)`` and
``_socket_of(check)``, and keep ``_checks`` as ``{fd: check}``.
"""

from __future__ import annotations

import os
import select
import socket
from collections import deque
from contextlib import suppress
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from fastcheck._ext.deadlines_py import DeadlineGroups
from fastcheck._ext.sockopts_py import MAX_WINDOW, check_integer, check_seconds, close_with_reset

__all__ = ["MAX_EVENTS", "BatchedEngine", "connect_error"]

MAX_EVENTS = 512  # epoll events read by one epoll.poll call

_SOL_SOCKET = socket.SOL_SOCKET
_SO_ERROR = socket.SO_ERROR

C = TypeVar("C")  # what the subclass keeps per check in flight
R = TypeVar("R")  # a result tuple


def connect_error(sock: socket.socket) -> int:
    """The errno of a connect epoll reported with ``EPOLLERR``/``EPOLLHUP`` (0: none)."""
    try:
        return sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
    except OSError as exc:
        return exc.errno or 0


class BatchedEngine(Generic[C, R]):
    """Batched non-blocking socket work over one epoll instance (see module doc)."""

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
        self._max_in_flight = check_integer(max_in_flight, "max_in_flight", 1, MAX_WINDOW)
        self._checks: dict[int, C] = {}
        self._seq = 0  # counts starts; breaks ties between equal deadlines
        self._deadlines = DeadlineGroups()
        self._queue: deque[Any] = deque()
        self._results: list[R] = []
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
        """The engine's epoll descriptor: readable when ``poll`` may have results."""
        self._check_open()
        return self._epoll.fileno()

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        """Started and not yet finished."""
        return len(self._checks)

    @property
    def queued(self) -> int:
        """Waiting for a free slot in the window."""
        return len(self._queue)

    def poll(self, now: float) -> list[R]:
        """Everything finished since the last poll; never blocks. Then queued requests
        fill the freed slots."""
        self._check_open()
        now = check_seconds(now, "now")
        self._collect(now)
        self._expire(now)
        queue = self._queue
        checks = self._checks
        limit = self._max_in_flight
        while queue and len(checks) < limit:
            self._start(queue.popleft(), now)
        if self._signalled:
            with suppress(BlockingIOError):
                os.eventfd_read(self._eventfd)
            self._signalled = False
        results = self._results
        self._results = []
        return results

    def next_deadline(self) -> float | None:
        """The earliest deadline among checks in flight, or None when none is in flight."""
        return self._deadlines.earliest()

    def close(self) -> None:
        """Reset every check in flight, drop the queue, release the descriptors.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        socket_of = self._socket_of
        for check in self._checks.values():
            close_with_reset(socket_of(check))
        self._checks.clear()
        self._deadlines.clear()
        self._queue.clear()
        self._results.clear()
        self._epoll.close()
        os.close(self._eventfd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:  # at interpreter exit module globals (contextlib too) may be gone
            if not self._closed:
                self.close()
        except Exception:
            pass

    # --- for subclasses ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")

    def _submit(self, request: Any, now: float) -> None:
        """Start ``request`` (or queue it when the window is full); make ``fileno()``
        readable when starting it already produced a result."""
        if len(self._checks) >= self._max_in_flight:
            self._queue.append(request)
            return
        self._start(request, now)
        if self._results and not self._signalled:
            os.eventfd_write(self._eventfd, 1)
            self._signalled = True

    def _start(self, request: Any, now: float) -> None:
        raise NotImplementedError

    def _collect(self, now: float) -> None:
        raise NotImplementedError

    def _expire(self, now: float) -> None:
        raise NotImplementedError

    @staticmethod
    def _socket_of(check: C) -> socket.socket:
        raise NotImplementedError
