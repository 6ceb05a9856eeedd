# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True, annotation_typing=False
"""Compiled twin: ICMP/ICMPv6 echo over one shared raw socket, many targets in flight.

Owns: the same API and semantics as ``icmp_py`` (the reference; read its docstrings),
with the hot loops in C: ``sendto`` straight from a stack buffer, ``recvmmsg`` batches,
the in-flight table as flat arrays indexed by sequence number, and an indexed binary heap
of deadlines (bounded by ``max_in_flight``, no lazy deletion). Echo replies are checked by
the checksum twin's C function (``checksum_c.pxd``); socket setup and constants are
imported from ``icmp_py`` so the twins cannot drift there.
Must not: read a clock, block, decide health, or be imported directly outside tests and
benches (import the selector ``fastcheck._ext.icmp``). Any behaviour change goes into both
twins at once; the test suite checks they agree.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EHOSTUNREACH, EINTR, EIO, ENETUNREACH, ETIMEDOUT, errno
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset, strlen

from fastcheck._ext.checksum_c cimport _checksum, _parse

import os
from errno import EAGAIN as _PY_EAGAIN

from fastcheck._ext.icmp_py import MAX_READS_PER_POLL as _MAX_READS
from fastcheck._ext.icmp_py import PAYLOAD as _PAYLOAD
from fastcheck._ext.icmp_py import RECV_SIZE as _RECV_SIZE
from fastcheck._ext.icmp_py import SEQ_SPACE as _SEQ_SPACE
from fastcheck._ext.icmp_py import open_raw_socket

__all__ = ["IcmpEngine", "open_raw_socket", "parse_icmp"]

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL

cdef enum:
    ICMP_ECHO_REPLY = 0
    ICMP_DEST_UNREACH = 3
    ICMP_ECHO_REQUEST = 8
    ICMP_FRAG_NEEDED = 4
    ICMPV6_DEST_UNREACH = 1
    ICMPV6_ECHO_REQUEST = 128
    IPPROTO_ICMP = 1
    IPPROTO_ICMPV6 = 58
    ECHO_HEADER = 8
    PAYLOAD_SIZE = 16
    PACKET_SIZE = ECHO_HEADER + PAYLOAD_SIZE
    SEQ_SPACE = 65536
    BATCH = 64           # messages per recvmmsg call
    RECV_SIZE = 512      # checked against icmp_py.RECV_SIZE at import
    MAX_READS = 65536    # checked against icmp_py.MAX_READS_PER_POLL at import

if (_RECV_SIZE, _MAX_READS, _SEQ_SPACE, len(_PAYLOAD)) != (RECV_SIZE, MAX_READS, SEQ_SPACE,
                                                           PAYLOAD_SIZE):
    raise ImportError("fastcheck._ext.icmp_c was built against a different icmp_py")

cdef uint8_t PAYLOAD_C[PAYLOAD_SIZE]
cdef bytes _payload = bytes(_PAYLOAD)
memcpy(PAYLOAD_C, <const char *>_payload, PAYLOAD_SIZE)


# --------------------------------------------------------------------------- parsing

cdef inline uint16_t _be16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline int _unreachable_errno(int code, bint ipv6) noexcept nogil:
    if ipv6:
        return ENETUNREACH if code == 0 else EHOSTUNREACH
    return ENETUNREACH if code == 0 or code == 6 or code == 11 else EHOSTUNREACH


cdef int _parse_unreachable(const uint8_t *p, Py_ssize_t size, bint ipv6, uint16_t *ident,
                            uint16_t *seq, const uint8_t **address) noexcept nogil:
    """Status of a destination-unreachable quoting an echo request, else -1 (icmp_py)."""
    cdef Py_ssize_t header_len, total_len, inner, inner_len, echo
    cdef int code
    if ipv6:  # ICMPv6 header (8), the quoted IPv6 header (40), our echo header (8)
        if size < 56 or p[0] != ICMPV6_DEST_UNREACH:
            return -1
        if (p[8] >> 4) != 6 or p[14] != IPPROTO_ICMPV6:
            return -1
        if p[48] != ICMPV6_ECHO_REQUEST or p[49] != 0:
            return -1
        ident[0] = _be16(p + 52)
        seq[0] = _be16(p + 54)
        address[0] = p + 32
        return _unreachable_errno(p[1], True)

    if size < 20 or (p[0] >> 4) != 4:
        return -1
    header_len = (p[0] & 0x0F) * 4
    total_len = _be16(p + 2)
    if header_len < 20 or total_len > size or p[9] != IPPROTO_ICMP:
        return -1
    if total_len < header_len + 8 + 20 + 8 or p[header_len] != ICMP_DEST_UNREACH:
        return -1
    code = p[header_len + 1]
    if code == ICMP_FRAG_NEEDED or _checksum(p + header_len, total_len - header_len) != 0:
        return -1
    inner = header_len + 8
    inner_len = (p[inner] & 0x0F) * 4
    if (p[inner] >> 4) != 4 or inner_len < 20 or p[inner + 9] != IPPROTO_ICMP:
        return -1
    echo = inner + inner_len
    if total_len < echo + 8 or p[echo] != ICMP_ECHO_REQUEST or p[echo + 1] != 0:
        return -1
    ident[0] = _be16(p + echo + 4)
    seq[0] = _be16(p + echo + 6)
    address[0] = p + inner + 16
    return _unreachable_errno(code, False)


cdef int _parse_icmp(const uint8_t *p, Py_ssize_t size, bint ipv6, uint16_t *ident,
                     uint16_t *seq, const uint8_t **address) noexcept nogil:
    """0 for an echo reply, an errno for an unreachable quoting an echo, else -1."""
    if _parse(p, size, ipv6, ident, seq):
        address[0] = NULL if ipv6 else p + 12
        return 0
    return _parse_unreachable(p, size, ipv6, ident, seq, address)


def parse_icmp(packet, *, bint ipv6=False) -> tuple | None:
    """``(status, ident, seq, address)`` if ``packet`` may answer an echo (rules: icmp_py)."""
    cdef Py_buffer view
    cdef uint16_t ident = 0, seq = 0
    cdef const uint8_t *address = NULL
    cdef int status
    cdef object peer = None
    try:
        PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
    except BufferError:  # non-contiguous: copy, as the pure twin does
        PyObject_GetBuffer(memoryview(packet).tobytes(), &view, PyBUF_SIMPLE)
    try:
        status = _parse_icmp(<const uint8_t *>view.buf, view.len, ipv6, &ident, &seq, &address)
        if status < 0:
            return None
        if address != NULL:
            peer = PyBytes_FromStringAndSize(<const char *>address, 16 if ipv6 else 4)
        return (status, ident, seq, peer)
    finally:
        PyBuffer_Release(&view)


# --------------------------------------------------------------------------- the engine

cdef struct Slot:
    double sent
    uint64_t stamp
    int32_t heap_pos        # index in the deadline heap; -1 when the slot is free
    uint8_t address[16]     # IPv4 uses the first 4 bytes


cdef struct Deadline:
    double when
    uint64_t stamp          # submission number: ties expire in submission order
    uint32_t seq


cdef inline bint _earlier(const Deadline *a, const Deadline *b) noexcept nogil:
    return a.when < b.when or (a.when == b.when and a.stamp < b.stamp)


cdef class IcmpEngine:
    """Echoes to many targets over one raw socket; sans-IO in time (rules: icmp_py)."""

    cdef object _sock
    cdef int _fd
    cdef bint _ipv6
    cdef bint _closed
    cdef int _max
    cdef int _count
    cdef uint16_t _ident
    cdef uint32_t _next_seq
    cdef uint64_t _stamp
    cdef list _tokens
    cdef Slot *_slots
    cdef Deadline *_heap
    cdef int _heap_size
    cdef list _ready
    cdef double _ready_at
    cdef uint8_t *_buffers
    cdef mmsghdr *_messages
    cdef iovec *_iovecs
    cdef sockaddr_in6 *_names

    def __cinit__(self):
        self._fd = -1
        self._closed = True
        self._slots = NULL
        self._heap = NULL
        self._buffers = NULL
        self._messages = NULL
        self._iovecs = NULL
        self._names = NULL

    def __init__(self, ipv6: bool = False, max_in_flight: int = 65536) -> None:
        cdef int i
        if not 1 <= max_in_flight <= SEQ_SPACE:
            raise ValueError(f"max_in_flight must be in 1..{SEQ_SPACE}, got {max_in_flight}")
        if self._sock is not None:
            raise RuntimeError("IcmpEngine.__init__ called twice")
        self._ipv6 = bool(ipv6)
        self._max = max_in_flight
        self._slots = <Slot *>PyMem_Malloc(SEQ_SPACE * sizeof(Slot))
        self._heap = <Deadline *>PyMem_Malloc(max_in_flight * sizeof(Deadline))
        self._buffers = <uint8_t *>PyMem_Malloc(BATCH * RECV_SIZE)
        self._messages = <mmsghdr *>PyMem_Malloc(BATCH * sizeof(mmsghdr))
        self._iovecs = <iovec *>PyMem_Malloc(BATCH * sizeof(iovec))
        self._names = <sockaddr_in6 *>PyMem_Malloc(BATCH * sizeof(sockaddr_in6))
        if (self._slots == NULL or self._heap == NULL or self._buffers == NULL
                or self._messages == NULL or self._iovecs == NULL or self._names == NULL):
            raise MemoryError()
        for i in range(SEQ_SPACE):
            self._slots[i].heap_pos = -1
        memset(self._messages, 0, BATCH * sizeof(mmsghdr))
        for i in range(BATCH):
            self._iovecs[i].iov_base = self._buffers + i * RECV_SIZE
            self._iovecs[i].iov_len = RECV_SIZE
            self._messages[i].msg_hdr.msg_iov = &self._iovecs[i]
            self._messages[i].msg_hdr.msg_iovlen = 1
            if self._ipv6:  # IPv4 replies carry their source in the IP header
                self._messages[i].msg_hdr.msg_name = &self._names[i]
        self._tokens = [None] * SEQ_SPACE
        self._ready = []
        self._ready_at = INFINITY
        self._count = 0
        self._heap_size = 0
        self._next_seq = 0
        self._stamp = 0
        self._sock = open_raw_socket(self._ipv6, max_in_flight)
        self._fd = self._sock.fileno()
        self._closed = False
        self._ident = int.from_bytes(os.urandom(2), "big")

    def __dealloc__(self):
        PyMem_Free(self._slots)
        PyMem_Free(self._heap)
        PyMem_Free(self._buffers)
        PyMem_Free(self._messages)
        PyMem_Free(self._iovecs)
        PyMem_Free(self._names)

    # -- introspection ---------------------------------------------------------------------

    @property
    def ident(self) -> int:
        """The ICMP identifier of this engine's echoes (random, fixed for its life)."""
        return self._ident

    @property
    def ipv6(self) -> bool:
        return self._ipv6

    @property
    def in_flight(self) -> int:
        """Echoes sent and not yet reported."""
        return self._count

    @property
    def max_in_flight(self) -> int:
        return self._max

    def fileno(self) -> int:
        """The raw socket's descriptor (for a reader callback); -1 once closed."""
        return -1 if self._closed else self._fd

    # -- the deadline heap -----------------------------------------------------------------

    cdef inline void _place(self, int pos, Deadline item) noexcept:
        self._heap[pos] = item
        self._slots[item.seq].heap_pos = pos

    cdef void _sift_up(self, int pos) noexcept:
        cdef Deadline item = self._heap[pos]
        cdef int parent
        while pos > 0:
            parent = (pos - 1) >> 1
            if not _earlier(&item, &self._heap[parent]):
                break
            self._place(pos, self._heap[parent])
            pos = parent
        self._place(pos, item)

    cdef void _sift_down(self, int pos) noexcept:
        cdef Deadline item = self._heap[pos]
        cdef int n = self._heap_size
        cdef int child
        while True:
            child = 2 * pos + 1
            if child >= n:
                break
            if child + 1 < n and _earlier(&self._heap[child + 1], &self._heap[child]):
                child += 1
            if not _earlier(&self._heap[child], &item):
                break
            self._place(pos, self._heap[child])
            pos = child
        self._place(pos, item)

    cdef void _heap_remove(self, int pos) noexcept:
        cdef int last = self._heap_size - 1
        self._heap_size = last
        if pos != last:
            self._place(pos, self._heap[last])
            if pos > 0 and _earlier(&self._heap[pos], &self._heap[(pos - 1) >> 1]):
                self._sift_up(pos)
            else:
                self._sift_down(pos)

    # -- work ------------------------------------------------------------------------------

    def submit(self, token, str address not None, double timeout_s, double now) -> None:
        """Send one echo to ``address``; ``poll`` reports ``token`` once (rules: icmp_py)."""
        cdef Py_ssize_t size
        cdef const char *text
        cdef sockaddr_in to4
        cdef sockaddr_in6 to6
        cdef const sockaddr *to
        cdef socklen_t to_len
        cdef uint8_t packet[PACKET_SIZE]
        cdef uint32_t seq
        cdef uint16_t check
        cdef ssize_t sent
        cdef int pos
        cdef bint ok
        cdef Slot *slot
        if self._closed:
            raise ValueError("IcmpEngine is closed")
        if not (0.0 <= timeout_s < INFINITY):
            raise ValueError(f"timeout_s must be finite and >= 0, got {timeout_s!r}")
        text = PyUnicode_AsUTF8AndSize(address, &size)
        memset(&to4, 0, sizeof(to4))
        memset(&to6, 0, sizeof(to6))
        if self._ipv6:
            to6.sin6_family = AF_INET6
            ok = <size_t>size == strlen(text) and inet_pton(AF_INET6, text, &to6.sin6_addr) == 1
            to = <const sockaddr *>&to6
            to_len = sizeof(to6)
        else:
            to4.sin_family = AF_INET
            ok = <size_t>size == strlen(text) and inet_pton(AF_INET, text, &to4.sin_addr) == 1
            to = <const sockaddr *>&to4
            to_len = sizeof(to4)
        if not ok:
            kind = "IPv6" if self._ipv6 else "IPv4"
            raise ValueError(f"not an {kind} address: {address!r}")
        if self._count >= self._max:
            raise BlockingIOError(_PY_EAGAIN, f"{self._max} ICMP echoes already in flight")

        seq = self._next_seq
        while self._slots[seq].heap_pos >= 0:
            seq = (seq + 1) & 0xFFFF
        self._next_seq = (seq + 1) & 0xFFFF

        packet[0] = ICMPV6_ECHO_REQUEST if self._ipv6 else ICMP_ECHO_REQUEST
        packet[1] = 0
        packet[2] = packet[3] = 0
        packet[4] = self._ident >> 8
        packet[5] = self._ident & 0xFF
        packet[6] = seq >> 8
        packet[7] = seq & 0xFF
        memcpy(packet + ECHO_HEADER, PAYLOAD_C, PAYLOAD_SIZE)
        if not self._ipv6:  # ICMPv6: the kernel computes the pseudo-header checksum
            check = _checksum(packet, PACKET_SIZE)
            packet[2] = check >> 8
            packet[3] = check & 0xFF
        while True:
            sent = sendto(self._fd, packet, PACKET_SIZE, 0, to, to_len)
            if sent >= 0 or errno != EINTR:
                break
        if sent < 0:
            self._ready.append((token, errno or EIO, 0.0))
            if now < self._ready_at:
                self._ready_at = now
            return

        slot = &self._slots[seq]
        slot.sent = now
        slot.stamp = self._stamp
        if self._ipv6:
            memcpy(slot.address, &to6.sin6_addr, 16)
        else:
            memcpy(slot.address, &to4.sin_addr, 4)
        self._tokens[seq] = token
        self._count += 1
        pos = self._heap_size
        self._heap_size = pos + 1
        self._heap[pos].when = now + timeout_s
        self._heap[pos].stamp = self._stamp
        self._heap[pos].seq = seq
        slot.heap_pos = pos
        self._sift_up(pos)
        self._stamp += 1

    cdef inline void _finish(self, uint32_t seq, int status, double now, list results):
        cdef Slot *slot = &self._slots[seq]
        token = self._tokens[seq]
        self._tokens[seq] = None
        self._heap_remove(slot.heap_pos)
        slot.heap_pos = -1
        self._count -= 1
        results.append((token, status, now - slot.sent))

    def poll(self, double now) -> list:
        """Read waiting packets, expire deadlines ≤ ``now``: ``[(token, status, rtt_s)]``."""
        cdef list results
        cdef int received, i, status
        cdef int total = 0
        cdef unsigned int want
        cdef uint16_t ident = 0, seq = 0
        cdef const uint8_t *address
        cdef const uint8_t *data
        cdef int address_len = 16 if self._ipv6 else 4
        cdef Slot *slot
        cdef Deadline top
        cdef int failure = 0
        if self._closed:
            raise ValueError("IcmpEngine is closed")
        results = self._ready  # failed sends first; a new list, never one we still hold
        self._ready = []
        self._ready_at = INFINITY

        while total < MAX_READS:
            want = BATCH if MAX_READS - total > BATCH else MAX_READS - total
            if self._ipv6:
                for i in range(want):
                    self._messages[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6)
            received = recvmmsg(self._fd, self._messages, want, MSG_DONTWAIT, NULL)
            if received < 0:
                if errno == EINTR:
                    continue
                if errno != EAGAIN:  # (EWOULDBLOCK is EAGAIN on Linux)
                    failure = errno
                break
            total += received
            for i in range(received):
                data = self._buffers + i * RECV_SIZE
                status = _parse_icmp(data, self._messages[i].msg_len, self._ipv6,
                                     &ident, &seq, &address)
                if status < 0 or ident != self._ident:
                    continue
                if address == NULL:  # ICMPv6 echo reply: the source is the peer
                    address = self._names[i].sin6_addr.s6_addr
                slot = &self._slots[seq]
                if slot.heap_pos < 0 or memcmp(slot.address, address, address_len) != 0:
                    continue
                self._finish(seq, status, now, results)
            if <unsigned int>received < want:
                break

        if failure:  # keep what was read for the next poll, then say what went wrong
            self._ready = results
            self._ready_at = now if results else INFINITY
            raise OSError(failure, os.strerror(failure))
        while self._heap_size and self._heap[0].when <= now:
            top = self._heap[0]
            self._finish(top.seq, ETIMEDOUT, now, results)
        return results

    def next_deadline(self) -> float | None:
        """When ``poll`` next has something to report without any packet arriving."""
        cdef double deadline = self._ready_at
        if self._heap_size and self._heap[0].when < deadline:
            deadline = self._heap[0].when
        return None if deadline == INFINITY else deadline

    def close(self) -> None:
        """Close the socket and forget echoes in flight (they are never reported)."""
        cdef int i
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        self._fd = -1
        for i in range(SEQ_SPACE):
            self._slots[i].heap_pos = -1
        self._tokens = [None] * SEQ_SPACE
        self._heap_size = 0
        self._count = 0
        self._ready = []
        self._ready_at = INFINITY

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        family = "ipv6" if self._ipv6 else "ipv4"
        state = "closed" if self._closed else f"fd={self._fd}"
        return f"<IcmpEngine {family} ident={self._ident:#06x} in_flight={self._count} {state}>"
