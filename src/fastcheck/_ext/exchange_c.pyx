# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True
"""Compiled twin: batched non-blocking request/response exchanges over TCP (HTTP_GET's hot
path): connect, send a payload, read the answer.

Owns: the same API and semantics as ``exchange_py`` (the reference; read its module
docstring for the rules), with sockets, epoll and the deadline queue in C, on the
skeleton it shares with ``tcpconnect_c`` (``engine_c.pxd``: epoll + eventfd, a slot table
of exchanges in flight, a ring buffer of validated requests waiting for a slot), an indexed
binary heap of their deadlines (``deadlines_c.pxd``: earliest first, FIFO among equal
deadlines), and one shared receive buffer. Any behaviour change
goes into both twins.
Must not: read a clock, block, parse what it reads, decide health, or be imported directly
outside tests and benches (import the selector ``fastcheck._ext.exchange``).

Each socket is registered ``EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`` with ``data.u64 =
generation << 32 | slot``; an event whose generation no longer matches its slot (a
descriptor kept alive by a forked child, say) is ignored, so a slot reused for a new
exchange never takes an old socket's events, and sockets need no ``EPOLL_CTL_DEL`` before
their close. Python objects a slot or a queued request holds (payload, feed) are owned
references, released when the exchange ends or the engine closes.
Argument checks and socket options are ``sockopts_c.pxd``'s inline functions (shared with
``tcpconnect_c``); the C declarations are ``includes_c.pxd``'s.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.errno cimport EAGAIN, EINTR, EIO, ETIMEDOUT, errno
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint32_t
from libc.string cimport memcpy
from posix.unistd cimport close

from fastcheck._ext.engine_c cimport (
    MAX_EVENTS, EngineCore, SlotHead, core_can_start, core_close, core_free, core_full,
    core_init, core_next_deadline, core_next_slot, core_open, core_track, poller_drain,
    poller_signal, poller_wait, ring_at, ring_pop, ring_push, slot_of_event, slot_tag,
    slots_release,
)
from fastcheck._ext.sockopts_c cimport (
    SockAddr, SockOpts, check_integer, check_seconds, close_with_reset, open_connect,
    parse_options, parse_target,
)

__all__ = ["CONNECTED", "CONNECTING", "MAX_READ", "ExchangeEngine"]

CONNECTING = 0
CONNECTED = 1
MAX_READ = 65536


cdef enum:
    READ_SIZE = 65536     # MAX_READ
    STAGE_CONNECTING = 0
    STAGE_CONNECTED = 1

cdef int64_t MAX_BYTES_LIMIT = 1LL << 62

cdef struct Request:       # a validated exchange, queued or about to start
    int64_t token
    double timeout
    SockAddr addr
    socklen_t addrlen
    SockOpts opts
    int64_t max_bytes
    PyObject *payload     # owned bytes
    PyObject *feed        # owned callable or NULL


cdef struct Slot:          # an exchange in flight (head.fd >= 0) or a free slot (head.fd == -1)
    SlotHead head
    int stage
    int64_t token
    double start
    PyObject *payload     # owned bytes
    Py_ssize_t sent       # payload bytes sent
    int64_t left          # bytes that may still be read
    PyObject *feed        # owned callable or NULL (then bytes collect in buf)
    char *buf
    Py_ssize_t buf_len
    Py_ssize_t buf_cap


cdef class ExchangeEngine:
    """Batched non-blocking TCP request/response exchanges over one epoll (see module doc)."""

    cdef EngineCore core     # epoll + eventfd, slot table, deadline heap, queue of Requests
    cdef Slot *slots         # core.table.items, typed
    cdef bint closed
    cdef char *rbuf          # the shared receive buffer, READ_SIZE bytes
    cdef list results

    def __cinit__(self, *args, **kwargs):
        core_init(&self.core, sizeof(Slot))
        self.closed = True

    def __init__(self, max_in_flight: int = 4096) -> None:
        if self.core.poller.events != NULL:
            raise RuntimeError("ExchangeEngine.__init__ called twice")
        self.results = []
        self.rbuf = <char *>PyMem_Malloc(READ_SIZE)
        if self.rbuf == NULL:
            raise MemoryError()
        core_open(&self.core, max_in_flight)
        self.closed = False

    def __dealloc__(self):
        self._release()
        core_free(&self.core)
        PyMem_Free(self.rbuf)

    # --- public API ----------------------------------------------------------------------

    def fileno(self) -> int:
        """The engine's epoll descriptor: readable when ``poll`` may have results."""
        self._check_open()
        return self.core.poller.epfd

    @property
    def max_in_flight(self) -> int:
        return self.core.table.window

    @property
    def in_flight(self) -> int:
        """Exchanges started and not yet finished."""
        return self.core.table.active

    @property
    def queued(self) -> int:
        """Exchanges waiting for a free slot in the window."""
        return self.core.queue.len

    def submit(self, token, address, port, payload, double timeout_s, double now,
               max_bytes=MAX_READ, feed=None, bind_address=None, bind_port=None,
               bind_interface=None, fwmark=None) -> None:
        """Start (or queue, when the window is full) an exchange with ``address:port``."""
        cdef Request request
        cdef Request *r = &request
        self._check_open()
        r.token = check_integer(token, "token", INT64_MIN, INT64_MAX)
        parse_target(address, port, &r.addr, &r.addrlen)
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        r.timeout = check_seconds(timeout_s, "timeout_s", True)
        check_seconds(now, "now", False)
        r.max_bytes = check_integer(max_bytes, "max_bytes", 1, MAX_BYTES_LIMIT)
        if feed is not None and not callable(feed):
            raise TypeError(f"feed must be callable, not {type(feed).__name__}")
        parse_options(&r.opts, r.addr.sa.sa_family, bind_address, bind_port, bind_interface,
                      fwmark)
        r.payload = <PyObject *>payload
        r.feed = NULL if feed is None else <PyObject *>feed
        Py_INCREF(payload)          # the request owns them from here on
        if feed is not None:
            Py_INCREF(feed)
        if core_full(&self.core):
            try:
                ring_push(&self.core.queue, r, sizeof(Request))
            except MemoryError:
                Py_XDECREF(r.payload)
                Py_XDECREF(r.feed)
                raise
            return
        self._start(r, now)
        if self.results and not self.core.poller.signalled:
            poller_signal(&self.core.poller)

    def poll(self, double now) -> list:
        """Exchanges finished since the last poll, as ``(token, errno, latency_s, stage,
        data)``; never blocks."""
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
        """The earliest deadline among exchanges in flight, or None when none is."""
        return core_next_deadline(&self.core)

    def close(self) -> None:
        """Reset every exchange in flight, drop the queue, release the descriptors.
        Idempotent."""
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._release()

    # --- internals -----------------------------------------------------------------------

    cdef int _check_open(self) except -1:
        if self.closed:
            raise ValueError("ExchangeEngine is closed")
        return 0

    cdef void _drop_objects(self, Slot *slot) noexcept:
        Py_XDECREF(slot.payload)
        Py_XDECREF(slot.feed)
        slot.payload = NULL
        slot.feed = NULL
        PyMem_Free(slot.buf)
        slot.buf = NULL
        slot.buf_len = 0
        slot.buf_cap = 0

    cdef void _release(self) noexcept:
        cdef int i
        cdef Py_ssize_t k
        cdef Request *r
        for i in range(self.core.table.capacity):
            if self.slots[i].head.fd >= 0:
                close_with_reset(self.slots[i].head.fd)
                self.slots[i].head.fd = -1
                self._drop_objects(&self.slots[i])
        for k in range(self.core.queue.len):
            r = <Request *>ring_at(&self.core.queue, k, sizeof(Request))
            Py_XDECREF(r.payload)
            Py_XDECREF(r.feed)
        core_close(&self.core)
        if self.results is not None:
            del self.results[:]
        self.closed = True

    cdef int _start(self, Request *r, double now) except -1:
        """Open, configure and connect one socket; a failure becomes a result, not a raise.
        Takes over the request's references."""
        cdef int fd, err, index
        cdef Slot *slot
        cdef epoll_event ev
        try:
            index = core_next_slot(&self.core)
        except MemoryError:
            Py_XDECREF(r.payload)
            Py_XDECREF(r.feed)
            raise
        self.slots = <Slot *>self.core.table.items
        err = open_connect(&r.addr, r.addrlen, &r.opts, &fd)
        if fd >= 0:  # connected, or connecting
            ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
            ev.data.u64 = slot_tag(&self.core.table, index)
            if epoll_ctl(self.core.poller.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
                err = errno
                close(fd)
            else:
                core_track(&self.core, fd, now + r.timeout)
                slot = &self.slots[index]
                slot.stage = STAGE_CONNECTING
                slot.token = r.token
                slot.start = now
                slot.payload = r.payload
                slot.sent = 0
                slot.left = r.max_bytes
                slot.feed = r.feed
                slot.buf = NULL
                slot.buf_len = 0
                slot.buf_cap = 0
                return 0
        Py_XDECREF(r.payload)
        Py_XDECREF(r.feed)
        self.results.append((r.token, err, 0.0, STAGE_CONNECTING, b""))
        return 0

    cdef int _finish(self, int index, int err, double now) except -1:
        """Close an exchange with a reset, report it, free its slot."""
        cdef Slot *slot = &self.slots[index]
        cdef bytes data
        close_with_reset(slot.head.fd)
        if slot.buf_len:
            data = PyBytes_FromStringAndSize(slot.buf, slot.buf_len)
        else:
            data = b""
        self.results.append((slot.token, err, now - slot.start, slot.stage, data))
        self._drop_objects(slot)
        slots_release(&self.core.table, &self.core.deadlines, index)
        return 0

    cdef int _collect(self, double now) except -1:
        """Move on every exchange epoll has news for."""
        cdef int n, i, index
        cdef epoll_event *events = self.core.poller.events
        while True:
            n = poller_wait(&self.core.poller)
            for i in range(n):
                index = slot_of_event(&self.core.table, events[i].data.u64)
                if index < 0:
                    continue  # the eventfd, or an old socket's event (already reported)
                self._advance(index, events[i].events, now)
            if n < MAX_EVENTS:
                return 0

    cdef int _advance(self, int index, uint32_t mask, double now) except -1:
        """Move one exchange on as far as its socket allows."""
        cdef Slot *slot = &self.slots[index]
        cdef int fd = slot.head.fd
        cdef int err = 0
        cdef socklen_t size
        cdef ssize_t n
        cdef Py_ssize_t length, want, cap
        cdef char *grown
        cdef object chunk
        cdef object done
        if slot.stage == STAGE_CONNECTING:
            if mask & (EPOLLERR | EPOLLHUP):
                size = sizeof(int)
                if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &size) < 0:
                    err = errno
                if err:
                    return self._finish(index, err, now)
            elif not mask & EPOLLOUT:
                return 0
            slot.stage = STAGE_CONNECTED
        length = PyBytes_GET_SIZE(<object>slot.payload)
        if slot.sent < length:
            n = send(fd, PyBytes_AS_STRING(<object>slot.payload) + slot.sent,
                     length - slot.sent, MSG_NOSIGNAL)
            if n < 0:
                err = errno
                if err == EAGAIN or err == EINTR:
                    return 0  # the next EPOLLOUT edge resumes
                return self._finish(index, err, now)
            slot.sent += n
            if slot.sent < length:
                return 0
            mask |= EPOLLIN  # edge-triggered: input may already be waiting
        if not mask & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP):
            return 0
        while True:
            want = READ_SIZE if slot.left > READ_SIZE else <Py_ssize_t>slot.left
            n = recv(fd, self.rbuf, want, 0)
            if n < 0:
                err = errno
                if err == EINTR:
                    continue
                if err == EAGAIN:
                    return 0
                return self._finish(index, err, now)
            if n == 0:
                return self._finish(index, 0, now)
            slot.left -= n
            if slot.feed != NULL:
                chunk = PyBytes_FromStringAndSize(self.rbuf, n)
                try:
                    done = (<object>slot.feed)(chunk)
                except Exception:
                    if self.closed:
                        return 0
                    return self._finish(index, EIO, now)
                if self.closed:  # feed closed the engine (it must not; be safe anyway)
                    return 0
                slot = &self.slots[index]
                if done:
                    return self._finish(index, 0, now)
            else:
                if slot.buf_len + n > slot.buf_cap:
                    cap = slot.buf_cap * 2 if slot.buf_cap else 4096
                    while cap < slot.buf_len + n:
                        cap *= 2
                    grown = <char *>PyMem_Realloc(slot.buf, cap)
                    if grown == NULL:
                        raise MemoryError()
                    slot.buf = grown
                    slot.buf_cap = cap
                memcpy(slot.buf + slot.buf_len, self.rbuf, n)
                slot.buf_len += n
            if slot.left == 0:
                return self._finish(index, 0, now)

    cdef int _expire(self, double now) except -1:
        """Report ETIMEDOUT for every exchange whose deadline is at or before ``now``."""
        cdef int index
        while self.core.deadlines.len:
            if self.core.deadlines.items[0].at > now:
                return 0
            index = self.core.deadlines.items[0].slot
            self._finish(index, ETIMEDOUT, now)
        return 0
