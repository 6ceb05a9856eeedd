# cython: language_level=3
"""Argument checks and connect-socket options shared by the compiled connect engines
(``tcpconnect_c``, ``exchange_c``), as ``cdef inline`` functions each module compiles in,
so a call never crosses modules.

Owns: the rules and messages of ``sockopts_py`` (the reference; any change goes into both)
for integers, seconds, numeric addresses, bind address/port, interface name and fwmark;
applying those options to a socket; opening a non-blocking connect; closing with a reset.
Must not: hold state, read a clock, block, or know about an engine's slots and queues.
"""

from cpython.number cimport PyNumber_Index
from libc.errno cimport EINPROGRESS, errno
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset, strlen
from posix.unistd cimport close

from fastcheck._ext.includes_c cimport (
    AF_INET, AF_INET6, IP_BIND_ADDRESS_NO_PORT, IPPROTO_IP, SO_BINDTODEVICE, SO_LINGER, SO_MARK,
    SO_REUSEADDR, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET, bind, connect, htons,
    inet_pton, linger, setsockopt, sockaddr, sockaddr_in, sockaddr_in6, socket, socklen_t,
)


cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object value, int *overflow) except? -1
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL
    bytes PyUnicode_EncodeFSDefault(object text)  # what os.fsencode does for a str


cdef enum:
    IFNAMSIZ = 16
    OPT_BIND = 1          # bind() to bind_addr
    OPT_REUSE = 2         # SO_REUSEADDR (a fixed bind port)
    OPT_NO_PORT = 4       # IP_BIND_ADDRESS_NO_PORT (an address without a port)
    OPT_INTERFACE = 8     # SO_BINDTODEVICE
    OPT_FWMARK = 16       # SO_MARK


cdef union SockAddr:
    sockaddr sa
    sockaddr_in v4
    sockaddr_in6 v6


cdef struct SockOpts:      # validated connection options
    int options           # OPT_* bits; 0 = none (the common case)
    SockAddr bind_addr
    uint32_t fwmark
    char interface[IFNAMSIZ]


cdef inline void close_with_reset(int fd) noexcept nogil:
    """Close with SO_LINGER 0: a reset, no TIME_WAIT left behind."""
    cdef linger reset
    reset.l_onoff = 1
    reset.l_linger = 0
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(linger))
    close(fd)


cdef inline int64_t check_integer(object value, str what, int64_t low,
                                  int64_t high) except? -1:
    cdef object number = PyNumber_Index(value)  # TypeError for non-integers
    cdef int overflow = 0
    cdef long long result = PyLong_AsLongLongAndOverflow(number, &overflow)
    if overflow or result < low or result > high:
        raise ValueError(f"{what} must be in {low}..{high}, got {number}")
    return result


cdef inline double check_seconds(double value, str what, bint non_negative) except? -1.0:
    if not isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if non_negative and value < 0.0:
        raise ValueError(f"{what} must be >= 0.0, got {value!r}")
    return value


cdef inline int parse_address(object text, str what, SockAddr *out,
                              socklen_t *size) except -1:
    """Fill ``out`` (port 0) from numeric IPv4/IPv6 text; ValueError for anything else."""
    cdef Py_ssize_t length
    cdef const char *raw
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    raw = PyUnicode_AsUTF8AndSize(text, &length)  # UnicodeEncodeError (a ValueError)
    if <Py_ssize_t>strlen(raw) != length:
        raise ValueError("embedded null character")
    memset(out, 0, sizeof(SockAddr))
    if inet_pton(AF_INET, raw, &out.v4.sin_addr) == 1:
        out.v4.sin_family = AF_INET
        size[0] = sizeof(sockaddr_in)
        return 0
    if inet_pton(AF_INET6, raw, &out.v6.sin6_addr) == 1:
        out.v6.sin6_family = AF_INET6
        size[0] = sizeof(sockaddr_in6)
        return 0
    raise ValueError(f"{what} must be a numeric IPv4 or IPv6 address, got {text!r}")


cdef inline void set_port(SockAddr *addr, int port) noexcept nogil:
    if addr.sa.sa_family == AF_INET:
        addr.v4.sin_port = htons(<uint16_t>port)
    else:
        addr.v6.sin6_port = htons(<uint16_t>port)


cdef inline int parse_target(object address, object port, SockAddr *out,
                             socklen_t *size) except -1:
    """The ``address`` and ``port`` arguments of ``submit``, checked in that order."""
    parse_address(address, "address", out, size)
    set_port(out, <int>check_integer(port, "port", 1, 0xFFFF))
    return 0


cdef inline int parse_options(SockOpts *o, int family, object bind_address, object bind_port,
                              object bind_interface, object fwmark) except -1:
    """Fill ``o`` from ``submit``'s option arguments (all None: no options)."""
    cdef int port = 0
    cdef socklen_t size
    cdef bytes name
    o.options = 0
    if (bind_address is None and bind_port is None and bind_interface is None
            and fwmark is None):
        return 0
    if bind_port is not None:
        port = <int>check_integer(bind_port, "bind_port", 0, 0xFFFF)
    if bind_address is not None:
        parse_address(bind_address, "bind_address", &o.bind_addr, &size)
        if o.bind_addr.sa.sa_family != family:
            raise ValueError(f"bind_address {bind_address!r} is not of the target's family")
        set_port(&o.bind_addr, port)
        o.options |= OPT_BIND | (OPT_REUSE if port else OPT_NO_PORT)
    elif port:
        memset(&o.bind_addr, 0, sizeof(SockAddr))  # the wildcard address of the family
        o.bind_addr.sa.sa_family = family
        set_port(&o.bind_addr, port)
        o.options |= OPT_BIND | OPT_REUSE
    if bind_interface is not None:
        if not isinstance(bind_interface, str):
            raise TypeError(f"bind_interface must be str, not {type(bind_interface).__name__}")
        name = PyUnicode_EncodeFSDefault(bind_interface)
        if not 0 < len(name) < IFNAMSIZ or b"\0" in name:
            raise ValueError(
                f"bind_interface must be 1..{IFNAMSIZ - 1} bytes without NUL, "
                f"got {bind_interface!r}"
            )
        memset(o.interface, 0, IFNAMSIZ)
        memcpy(o.interface, <const char *>name, len(name))
        o.options |= OPT_INTERFACE
    if fwmark is not None:
        o.fwmark = <uint32_t>check_integer(fwmark, "fwmark", 0, 0xFFFFFFFF)
        o.options |= OPT_FWMARK
    return 0


cdef inline int configure_socket(int fd, const SockOpts *o) noexcept nogil:
    """Apply the connection options before connect: 0, or -1 with errno set."""
    cdef int one = 1
    cdef socklen_t size
    if o.options & OPT_INTERFACE:
        if setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, o.interface, IFNAMSIZ) < 0:
            return -1
    if o.options & OPT_FWMARK:
        if setsockopt(fd, SOL_SOCKET, SO_MARK, &o.fwmark, sizeof(uint32_t)) < 0:
            return -1
    if o.options & OPT_BIND:
        if o.options & OPT_REUSE:
            if setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(int)) < 0:
                return -1
        if o.options & OPT_NO_PORT:
            if setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(int)) < 0:
                return -1
        if o.bind_addr.sa.sa_family == AF_INET:
            size = sizeof(sockaddr_in)
        else:
            size = sizeof(sockaddr_in6)
        if bind(fd, &o.bind_addr.sa, size) < 0:
            return -1
    return 0


cdef inline int open_connect(const SockAddr *addr, socklen_t addrlen, const SockOpts *o,
                             int *fd_out) noexcept nogil:
    """Open a non-blocking socket, apply ``o``, start connecting to ``addr``. Returns 0
    (connected at once) or EINPROGRESS with the socket in ``fd_out``; else the errno, with
    the socket (if any) already closed and ``fd_out`` -1."""
    cdef int err
    cdef int fd = socket(addr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    fd_out[0] = -1
    if fd < 0:
        return errno
    if o.options and configure_socket(fd, o) < 0:
        err = errno
    elif connect(fd, &addr.sa, addrlen) == 0:
        err = 0
    else:
        err = errno
    if err == 0 or err == EINPROGRESS:
        fd_out[0] = fd
    else:
        close(fd)
    return err
