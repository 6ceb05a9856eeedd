# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True
"""Compiled twin: a batched, non-blocking TCP connect engine (the TCP_CHECK hot path).

Owns: the same API and semantics as ``tcpconnect_py`` (the reference; read its module
docstring for the rules), with sockets, epoll and the deadline queue in C: direct libc
calls (declared in ``includes_c.pxd``; argument checks and socket options are
``sockopts_c.pxd``'s), a slot table of checks in flight, an indexed binary heap of their
deadlines (``deadlines_c.pxd``: earliest first, FIFO among equal deadlines), and a ring
buffer of validated requests waiting for a slot. Any behaviour change goes into both twins.
Must not: read a clock, block, decide health, or be imported directly outside tests and
benches (import the selector ``fastcheck._ext.tcpconnect``).

Each socket is registered ``EPOLLOUT | EPOLLONESHOT`` with ``data.u64 = generation << 32 |
slot``; an event whose generation no longer matches its slot (a descriptor kept alive by
a forked child, say) is ignored, so a slot reused for a new check never takes an old
socket's answer. A pure ``EPOLLOUT`` means connected (no ``getsockopt`` needed); with
``EPOLLERR``/``EPOLLHUP`` the errno comes from ``SO_ERROR``.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.errno cimport EINPROGRESS, EINTR, ETIMEDOUT, errno
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint32_t, uint64_t
from libc.string cimport memset
from posix.unistd cimport close, read, write

from fastcheck._ext.deadlines_c cimport (
    DeadlineHeap, heap_free, heap_push, heap_remove, heap_reserve,
)
from fastcheck._ext.sockopts_c cimport (
    SockAddr, SockOpts, check_integer, check_seconds, close_with_reset, open_connect,
    parse_options, parse_target,
)

import os

__all__ = ["TcpConnectEngine"]


cdef enum:
    MAX_EVENTS = 512
    MAX_WINDOW = 1 << 20

cdef uint64_t EVENTFD_TAG = 0xFFFFFFFFFFFFFFFFULL

cdef struct Request:       # a validated check, queued or about to start
    int64_t token
    double timeout
    SockAddr addr
    socklen_t addrlen
    SockOpts opts


cdef struct Slot:          # a check in flight (fd >= 0) or a free slot (fd == -1)
    int fd
    uint32_t gen
    int next_free
    int64_t token
    double start


cdef class TcpConnectEngine:
    """Batched non-blocking TCP connect checks over one epoll instance (see module doc)."""

    cdef int epfd
    cdef int evfd
    cdef bint closed
    cdef bint signalled
    cdef int window          # max_in_flight
    cdef int active          # checks in flight
    cdef Slot *slots         # grows by doubling up to `window`
    cdef int capacity
    cdef int free_head       # free slots, linked through next_free; -1 = none
    cdef DeadlineHeap deadlines  # slots in flight by (deadline, start order)
    cdef uint64_t seq
    cdef Request *queue      # ring buffer of checks waiting for a slot
    cdef Py_ssize_t q_head
    cdef Py_ssize_t q_len
    cdef Py_ssize_t q_cap
    cdef epoll_event *events
    cdef list results

    def __cinit__(self, *args, **kwargs):
        self.epfd = -1
        self.evfd = -1
        self.closed = True
        self.free_head = -1

    def __init__(self, max_in_flight: int = 4096) -> None:
        cdef epoll_event ev
        if self.events != NULL:
            raise RuntimeError("TcpConnectEngine.__init__ called twice")
        self.window = <int>check_integer(max_in_flight, "max_in_flight", 1, MAX_WINDOW)
        self.results = []
        self.events = <epoll_event *>PyMem_Malloc(MAX_EVENTS * sizeof(epoll_event))
        if self.events == NULL:
            raise MemoryError()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, os.strerror(errno))
        self.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.evfd < 0:
            raise OSError(errno, os.strerror(errno))
        ev.events = EPOLLIN
        ev.data.u64 = EVENTFD_TAG
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.evfd, &ev) < 0:
            raise OSError(errno, os.strerror(errno))
        self.closed = False

    def __dealloc__(self):
        self._release()
        PyMem_Free(self.events)
        PyMem_Free(self.slots)
        heap_free(&self.deadlines)
        PyMem_Free(self.queue)

    # --- public API ----------------------------------------------------------------------

    def fileno(self) -> int:
        """The engine's epoll descriptor: readable when ``poll`` has results to return."""
        self._check_open()
        return self.epfd

    @property
    def max_in_flight(self) -> int:
        return self.window

    @property
    def in_flight(self) -> int:
        """Checks with a connect in progress."""
        return self.active

    @property
    def queued(self) -> int:
        """Checks waiting for a free slot in the window."""
        return self.q_len

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
        if self.active >= self.window:
            self._enqueue(r)
            return
        self._start(r, now)
        if self.results and not self.signalled:
            self._signal()

    def poll(self, double now) -> list:
        """Checks finished since the last poll, as ``(token, errno, latency_s)``; never blocks."""
        cdef list results
        cdef uint64_t value
        self._check_open()
        check_seconds(now, "now", False)
        self._collect(now)
        self._expire(now)
        while self.q_len and self.active < self.window:
            self._start(&self.queue[self.q_head], now)
            self.q_head = (self.q_head + 1) % self.q_cap
            self.q_len -= 1
        if self.signalled:
            read(self.evfd, &value, sizeof(uint64_t))
            self.signalled = False
        results = self.results
        self.results = []
        return results

    def next_deadline(self) -> float | None:
        """The earliest deadline among checks in flight, or None when none is in flight."""
        if self.deadlines.len == 0:
            return None
        return self.deadlines.items[0].at

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
        for i in range(self.capacity):
            if self.slots[i].fd >= 0:
                close_with_reset(self.slots[i].fd)
                self.slots[i].fd = -1
        self.active = 0
        self.deadlines.len = 0
        self.q_len = 0
        if self.results is not None:
            del self.results[:]
        if self.evfd >= 0:
            close(self.evfd)
            self.evfd = -1
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        self.closed = True

    cdef int _signal(self) except -1:
        cdef uint64_t one = 1
        write(self.evfd, &one, sizeof(uint64_t))
        self.signalled = True
        return 0

    cdef int _enqueue(self, const Request *r) except -1:
        cdef Py_ssize_t cap, i
        cdef Request *grown
        if self.q_len == self.q_cap:
            cap = self.q_cap * 2 if self.q_cap else 256
            grown = <Request *>PyMem_Malloc(cap * sizeof(Request))
            if grown == NULL:
                raise MemoryError()
            for i in range(self.q_len):
                grown[i] = self.queue[(self.q_head + i) % self.q_cap]
            PyMem_Free(self.queue)
            self.queue = grown
            self.q_cap = cap
            self.q_head = 0
        self.queue[(self.q_head + self.q_len) % self.q_cap] = r[0]
        self.q_len += 1
        return 0

    cdef int _grow(self) except -1:
        """Add slots (doubling, up to the window) and put them on the free list."""
        cdef int cap = self.capacity * 2 if self.capacity else 64
        cdef int i
        cdef Slot *slots
        if cap > self.window:
            cap = self.window
        slots = <Slot *>PyMem_Realloc(self.slots, cap * sizeof(Slot))
        if slots == NULL:
            raise MemoryError()
        self.slots = slots
        heap_reserve(&self.deadlines, cap)
        for i in range(cap - 1, self.capacity - 1, -1):
            memset(&slots[i], 0, sizeof(Slot))
            slots[i].fd = -1
            slots[i].next_free = self.free_head
            self.free_head = i
        self.capacity = cap
        return 0

    cdef int _start(self, const Request *r, double now) except -1:
        """Open, configure and connect one socket; a failure becomes a result, not a raise."""
        cdef int fd, err, index
        cdef Slot *slot
        cdef epoll_event ev
        if self.free_head < 0:
            self._grow()
        err = open_connect(&r.addr, r.addrlen, &r.opts, &fd)
        if err == EINPROGRESS:
            index = self.free_head
            slot = &self.slots[index]
            ev.events = EPOLLOUT | EPOLLONESHOT
            ev.data.u64 = (<uint64_t>slot.gen << 32) | <uint32_t>index
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
                err = errno
            else:
                self.free_head = slot.next_free
                slot.fd = fd
                slot.token = r.token
                slot.start = now
                heap_push(&self.deadlines, index, now + r.timeout, self.seq)
                self.seq += 1
                self.active += 1
                return 0
        if err == 0:  # connected at once
            close_with_reset(fd)
        elif fd >= 0:
            close(fd)
        self.results.append((r.token, err, 0.0))
        return 0

    cdef void _finish(self, int index) noexcept:
        """Take a closed check's slot out of the heap and back onto the free list."""
        cdef Slot *slot = &self.slots[index]
        heap_remove(&self.deadlines, index)
        slot.fd = -1
        slot.gen += 1
        slot.next_free = self.free_head
        self.free_head = index
        self.active -= 1

    cdef int _collect(self, double now) except -1:
        """Close and report every socket epoll says has finished connecting."""
        cdef int n, i, index, fd
        cdef int err
        cdef socklen_t size
        cdef uint64_t data
        cdef Slot *slot
        cdef list results = self.results
        while True:
            n = epoll_wait(self.epfd, self.events, MAX_EVENTS, 0)
            if n < 0:
                if errno == EINTR:
                    continue
                raise OSError(errno, os.strerror(errno))
            for i in range(n):
                data = self.events[i].data.u64
                if data == EVENTFD_TAG:
                    continue
                index = <int>(data & 0xFFFFFFFFU)
                if index >= self.capacity:
                    continue
                slot = &self.slots[index]
                if slot.fd < 0 or slot.gen != <uint32_t>(data >> 32):
                    continue  # an old socket's event: its check is already reported
                fd = slot.fd
                err = 0
                if self.events[i].events & (EPOLLERR | EPOLLHUP):
                    size = sizeof(int)
                    if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) < 0:
                        err = errno
                if err == 0:
                    close_with_reset(fd)
                else:
                    close(fd)
                results.append((slot.token, err, now - slot.start))
                self._finish(index)
            if n < MAX_EVENTS:
                return 0

    cdef int _expire(self, double now) except -1:
        """Report ETIMEDOUT for every check whose deadline is at or before ``now``."""
        cdef int index
        cdef Slot *slot
        cdef list results = self.results
        while self.deadlines.len:
            if self.deadlines.items[0].at > now:
                return 0
            index = self.deadlines.items[0].slot
            slot = &self.slots[index]
            # Unregister first: a descriptor shared with a forked child would stay armed.
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, slot.fd, NULL)
            close_with_reset(slot.fd)
            results.append((slot.token, ETIMEDOUT, now - slot.start))
            self._finish(index)
        return 0
