# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True
"""Compiled twin: a batched, non-blocking TCP connect engine (the TCP_CHECK hot path).

Owns: the same API and semantics as ``tcpconnect_py`` (the reference; read its module
docstring for the rules), with sockets, epoll and the deadline queue in C: direct libc
calls (declared in ``includes_c.pxd``; argument checks and socket options are
``sockopts_c.pxd``'s), and the skeleton it shares with ``exchange_c`` (``engine_c.pxd``:
epoll + eventfd, a slot table of checks in flight, a ring buffer of validated requests
waiting for a slot), with an indexed binary heap of their deadlines (``deadlines_c.pxd``:
earliest first, FIFO among equal deadlines). Any behaviour change goes into both twins.
Must not: read a clock, block, decide health, or be imported directly outside tests and
benches (import the selector ``fastcheck._ext.tcpconnect``).

Each socket is registered ``EPOLLOUT | EPOLLONESHOT`` with ``data.u64 = generation << 32 |
slot``; an event whose generation no longer matches its slot (a descriptor kept alive by
a forked child, say) is ignored, so a slot reused for a new check never takes an old
socket's answer. A pure ``EPOLLOUT`` means connected (no ``getsockopt`` needed); with
``EPOLLERR``/``EPOLLHUP`` the errno comes from ``SO_ERROR``.
"""

from libc.errno cimport EINPROGRESS, ETIMEDOUT, errno
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t
from posix.unistd cimport close

from fastcheck._ext.engine_c cimport (
    MAX_EVENTS, EngineCore, SlotHead, core_can_start, core_close, core_free, core_full,
    core_init, core_next_deadline, core_next_slot, core_open, core_track, poller_drain,
    poller_signal, poller_wait, ring_pop, ring_push, slot_of_event, slot_tag, slots_release,
)
from fastcheck._ext.sockopts_c cimport (
    SockAddr, SockOpts, check_integer, check_seconds, close_with_reset, open_connect,
    parse_options, parse_target,
)

__all__ = ["TcpConnectEngine"]


cdef struct Request:       # a validated check, queued or about to start
    int64_t token
    double timeout
    SockAddr addr
    socklen_t addrlen
    SockOpts opts


cdef struct Slot:          # a check in flight (head.fd >= 0) or a free slot (head.fd == -1)
    SlotHead head
    int64_t token
    double start


cdef class TcpConnectEngine:
    """Batched non-blocking TCP connect checks over one epoll instance (see module doc)."""

    cdef EngineCore core     # epoll + eventfd, slot table, deadline heap, queue of Requests
    cdef Slot *slots         # core.table.items, typed
    cdef bint closed
    cdef list results

    def __cinit__(self, *args, **kwargs):
        core_init(&self.core, sizeof(Slot))
        self.closed = True

    def __init__(self, max_in_flight: int = 4096) -> None:
        if self.core.poller.events != NULL:
            raise RuntimeError("TcpConnectEngine.__init__ called twice")
        self.results = []
        core_open(&self.core, max_in_flight)
        self.closed = False

    def __dealloc__(self):
        self._release()
        core_free(&self.core)

    # --- public API ----------------------------------------------------------------------

    def fileno(self) -> int:
        """The engine's epoll descriptor: readable when ``poll`` has results to return."""
        self._check_open()
        return self.core.poller.epfd

    @property
    def max_in_flight(self) -> int:
        return self.core.table.window

    @property
    def in_flight(self) -> int:
        """Checks with a connect in progress."""
        return self.core.table.active

    @property
    def queued(self) -> int:
        """Checks waiting for a free slot in the window."""
        return self.core.queue.len

    def submit(self, token, address, port, double timeout_s, double now,
               bind_address=None, bind_port=None, bind_interface=None,
               fwmark=None) -> None:
        """Start (or queue, when the window is full) a connect check to ``address:port``."""
        cdef Request request
        cdef Request *r = &request
        self._check_open()
        r.token = check_integer(token, "token", INT64_MIN, INT64_MAX)
        parse_target(address, port, &r.addr, &r.addrlen)
        r.timeout = check_seconds(timeout_s, "timeout_s", True)
        check_seconds(now, "now", False)
        parse_options(&r.opts, r.addr.sa.sa_family, bind_address, bind_port, bind_interface,
                      fwmark)
        if core_full(&self.core):
            ring_push(&self.core.queue, r, sizeof(Request))
            return
        self._start(r, now)
        if self.results and not self.core.poller.signalled:
            poller_signal(&self.core.poller)

    def poll(self, double now) -> list:
        """Checks finished since the last poll, as ``(token, errno, latency_s)``; never blocks."""
        cdef list results
        self._check_open()
        check_seconds(now, "now", False)
        self._collect(now)
        self._expire(now)
        while core_can_start(&self.core):
            self._start(<Request *>ring_pop(&self.core.queue, sizeof(Request)), now)
        poller_drain(&self.core.poller)
        results = self.results
        self.results = []
        return results

    def next_deadline(self) -> float | None:
        """The earliest deadline among checks in flight, or None when none is in flight."""
        return core_next_deadline(&self.core)

    def close(self) -> None:
        """Reset every check in flight, drop the queue, release the descriptors. Idempotent."""
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._release()

    # --- internals -----------------------------------------------------------------------

    cdef int _check_open(self) except -1:
        if self.closed:
            raise ValueError("TcpConnectEngine is closed")
        return 0

    cdef void _release(self) noexcept:
        cdef int i
        for i in range(self.core.table.capacity):
            if self.slots[i].head.fd >= 0:
                close_with_reset(self.slots[i].head.fd)
                self.slots[i].head.fd = -1
        core_close(&self.core)
        if self.results is not None:
            del self.results[:]
        self.closed = True

    cdef int _start(self, const Request *r, double now) except -1:
        """Open, configure and connect one socket; a failure becomes a result, not a raise."""
        cdef int fd, err, index
        cdef Slot *slot
        cdef epoll_event ev
        index = core_next_slot(&self.core)
        self.slots = <Slot *>self.core.table.items
        err = open_connect(&r.addr, r.addrlen, &r.opts, &fd)
        if err == EINPROGRESS:
            ev.events = EPOLLOUT | EPOLLONESHOT
            ev.data.u64 = slot_tag(&self.core.table, index)
            if epoll_ctl(self.core.poller.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
                err = errno
            else:
                core_track(&self.core, fd, now + r.timeout)
                slot = &self.slots[index]
                slot.token = r.token
                slot.start = now
                return 0
        if err == 0:  # connected at once
            close_with_reset(fd)
        elif fd >= 0:
            close(fd)
        self.results.append((r.token, err, 0.0))
        return 0

    cdef int _collect(self, double now) except -1:
        """Close and report every socket epoll says has finished connecting."""
        cdef int n, i, index, fd
        cdef int err
        cdef socklen_t size
        cdef Slot *slot
        cdef epoll_event *events = self.core.poller.events
        cdef list results = self.results
        while True:
            n = poller_wait(&self.core.poller)
            for i in range(n):
                index = slot_of_event(&self.core.table, events[i].data.u64)
                if index < 0:
                    continue  # the eventfd, or an old socket's event (already reported)
                slot = &self.slots[index]
                fd = slot.head.fd
                err = 0
                if events[i].events & (EPOLLERR | EPOLLHUP):
                    size = sizeof(int)
                    if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) < 0:
                        err = errno
                if err == 0:
                    close_with_reset(fd)
                else:
                    close(fd)
                results.append((slot.token, err, now - slot.start))
                slots_release(&self.core.table, &self.core.deadlines, index)
            if n < MAX_EVENTS:
                return 0

    cdef int _expire(self, double now) except -1:
        """Report ETIMEDOUT for every check whose deadline is at or before ``now``."""
        cdef int index
        cdef Slot *slot
        cdef list results = self.results
        while self.core.deadlines.len:
            if self.core.deadlines.items[0].at > now:
                return 0
            index = self.core.deadlines.items[0].slot
            slot = &self.slots[index]
            # Unregister first: a descriptor shared with a forked child would stay armed.
            epoll_ctl(self.core.poller.epfd, EPOLL_CTL_DEL, slot.head.fd, NULL)
            close_with_reset(slot.head.fd)
            results.append((slot.token, ETIMEDOUT, now - slot.start))
            slots_release(&self.core.table, &self.core.deadlines, index)
        return 0
