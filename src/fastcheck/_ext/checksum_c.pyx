# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: embedsignature=True
"""Compiled twin: RFC 1071 checksum, ICMP/ICMPv6 echo request building, reply parsing.

Owns: the same API and semantics as ``checksum_py`` (the reference; read its docstrings),
with the byte loops in C. Any behaviour change goes into both twins at once; the test
suite checks they agree on arbitrary input.
Must not: do I/O, keep state, or be imported directly outside tests and benches (import
the selector ``fastcheck._ext.checksum``). Parsers never raise on malformed bytes; they
return ``None``. Only a non-bytes-like argument raises (``TypeError``).

Buffers are borrowed with ``PyBUF_SIMPLE`` (raw bytes, one contiguous run), which is what
``bytes``/``bytearray``/``memoryview`` give without copying; the loops run on a
``const uint8_t *`` and are ``nogil`` so a caller may release the GIL around them later.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint64_t
from libc.string cimport memcpy

from operator import index

__all__ = [
    "build_echo_request",
    "internet_checksum",
    "parse_echo_replies",
    "parse_echo_reply",
]

cdef enum:
    ICMP_ECHO_REPLY = 0
    ICMP_ECHO_REQUEST = 8
    ICMPV6_ECHO_REQUEST = 128
    ICMPV6_ECHO_REPLY = 129
    IPPROTO_ICMP = 1
    ECHO_HEADER = 8        # type, code, checksum, identifier, sequence number
    IPV4_MIN_HEADER = 20


cdef inline uint16_t _checksum(const uint8_t *p, Py_ssize_t size) noexcept nogil:
    """RFC 1071: complement of the one's-complement sum of big-endian 16-bit words."""
    # A 64-bit accumulator cannot overflow before 2**48 words, so carries are folded once
    # at the end instead of on every addition.
    cdef uint64_t total = 0
    cdef Py_ssize_t i
    for i in range(0, size - 1, 2):
        total += (<uint64_t>p[i] << 8) | p[i + 1]
    if size & 1:
        total += <uint64_t>p[size - 1] << 8  # odd length: pad with a zero byte
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return <uint16_t>(~total & 0xFFFF)


cdef inline uint16_t _be16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef bint _parse(const uint8_t *p, Py_ssize_t size, bint ipv6,
                 uint16_t *ident, uint16_t *seq) noexcept nogil:
    """Fill ident/seq and return True for a well-formed echo reply (rules: checksum_py)."""
    cdef Py_ssize_t header_len, total_len
    if ipv6:  # starts with the ICMPv6 header; the kernel already checked its checksum
        if size < ECHO_HEADER or p[0] != ICMPV6_ECHO_REPLY or p[1] != 0:
            return False
    else:  # starts with the IPv4 header, as a raw socket delivers it
        if size < IPV4_MIN_HEADER or (p[0] >> 4) != 4:
            return False
        header_len = (p[0] & 0x0F) * 4
        total_len = _be16(p + 2)  # IP total length; bytes past it are not ours
        if (header_len < IPV4_MIN_HEADER
                or total_len < header_len + ECHO_HEADER
                or total_len > size  # truncated
                or p[9] != IPPROTO_ICMP):
            return False
        p += header_len
        if p[0] != ICMP_ECHO_REPLY or p[1] != 0 or _checksum(p, total_len - header_len) != 0:
            return False
    ident[0] = _be16(p + 4)
    seq[0] = _be16(p + 6)
    return True


cdef int _acquire(object obj, Py_buffer *view) except -1:
    """Borrow obj's raw bytes as one contiguous run; release with PyBuffer_Release.

    A non-contiguous buffer (e.g. a strided memoryview) is copied first, so every
    bytes-like object is accepted, as in the pure twin; a non-buffer raises TypeError.
    """
    try:
        PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    except BufferError:
        PyObject_GetBuffer(memoryview(obj).tobytes(), view, PyBUF_SIMPLE)
    return 0


cdef object _index16(str name, object value):
    value = index(value)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be in 0..65535, got {value}")
    return value


def internet_checksum(data) -> int:
    """RFC 1071 checksum of ``data``: the 16-bit value to store (big-endian) in a header."""
    cdef Py_buffer view
    cdef uint16_t result
    _acquire(data, &view)
    result = _checksum(<const uint8_t *>view.buf, view.len)
    PyBuffer_Release(&view)
    return result


def build_echo_request(ident, seq, payload=b"", *, bint ipv6=False) -> bytes:
    """An ICMP echo request (type 8, checksum filled in) or ICMPv6 one (type 128, checksum 0)."""
    cdef uint16_t ident16 = _index16("ident", ident)
    cdef uint16_t seq16 = _index16("seq", seq)
    cdef Py_buffer view
    cdef Py_ssize_t size
    cdef bytes message
    cdef uint8_t *out
    cdef uint16_t check
    _acquire(payload, &view)
    try:
        size = ECHO_HEADER + view.len
        # A fresh bytes object may be filled in place until anyone else sees it.
        message = PyBytes_FromStringAndSize(NULL, size)
        out = <uint8_t *>PyBytes_AS_STRING(message)
        out[0] = ICMPV6_ECHO_REQUEST if ipv6 else ICMP_ECHO_REQUEST
        out[1] = 0
        out[2] = out[3] = 0
        out[4] = ident16 >> 8
        out[5] = ident16 & 0xFF
        out[6] = seq16 >> 8
        out[7] = seq16 & 0xFF
        memcpy(out + ECHO_HEADER, view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    if not ipv6:  # ICMPv6: the kernel computes the pseudo-header checksum
        check = _checksum(out, size)
        out[2] = check >> 8
        out[3] = check & 0xFF
    return message


def parse_echo_reply(packet, *, bint ipv6=False) -> tuple | None:
    """``(ident, seq)`` of a well-formed echo reply, else ``None`` (rules: checksum_py)."""
    cdef Py_buffer view
    cdef uint16_t ident = 0, seq = 0
    cdef bint ok
    _acquire(packet, &view)
    ok = _parse(<const uint8_t *>view.buf, view.len, ipv6, &ident, &seq)
    PyBuffer_Release(&view)
    return (ident, seq) if ok else None


def parse_echo_replies(packets, *, bint ipv6=False) -> list:
    """``parse_echo_reply`` over many packets, one result per packet, in order."""
    cdef list results = []
    cdef Py_buffer view
    cdef uint16_t ident = 0, seq = 0
    cdef bint ok
    for packet in packets:
        _acquire(packet, &view)
        ok = _parse(<const uint8_t *>view.buf, view.len, ipv6, &ident, &seq)
        PyBuffer_Release(&view)
        results.append((ident, seq) if ok else None)
    return results
