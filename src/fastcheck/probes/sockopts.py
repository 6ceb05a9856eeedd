"""Sockets of the asyncio probes: the common connection options, and socket errors as failures.

Owns: creating a non-blocking TCP or UDP socket for a `Target` with keepalived's
connection options (``fwmark`` → SO_MARK, ``bind_if`` → SO_BINDTODEVICE, ``bindto`` /
``bind_port`` → bind), the destination socket address (an IPv6 link-local target gets the
scope of ``bind_if``), and the errno → `Failure` table the SMTP, DNS and UDP probes share.
Must not: connect, send, read, time anything, or decide health.

keepalived sets these options in core/layer4.c (socket_bind_connect for TCP and DNS,
udp_bind_connect for UDP_CHECK). Differences, on purpose: no SO_LINGER 5 on TCP sockets
(probes abort their sockets); SO_REUSEADDR with a TCP ``bind_port`` so a fixed source port
can be reused while an earlier connection sits in TIME_WAIT (as probes/http.py does); and
``bind_if`` is honoured by UDP_CHECK too, where keepalived's udp_bind_connect ignores it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Final

from fastcheck.model import Target
from fastcheck.probes.result import Failure

__all__ = ["ERRNO_FAILURES", "SO_BINDTODEVICE", "SO_MARK", "describe_error", "failure_of_errno",
           "is_inet6", "open_socket", "socket_address"]

SO_MARK: Final = getattr(socket, "SO_MARK", 36)
SO_BINDTODEVICE: Final = getattr(socket, "SO_BINDTODEVICE", 25)

# What an errno from connect/send/recv says about the real server. Anything else is LOCAL:
# we could not even try (no descriptors, no source address, fwmark not permitted …).
ERRNO_FAILURES: Final = {
    errno.ECONNREFUSED: Failure.REFUSED,
    errno.ETIMEDOUT: Failure.TIMEOUT,
    errno.EHOSTUNREACH: Failure.UNREACHABLE,
    errno.ENETUNREACH: Failure.UNREACHABLE,
    errno.EHOSTDOWN: Failure.UNREACHABLE,
    errno.ENETDOWN: Failure.UNREACHABLE,
    errno.ECONNRESET: Failure.RESET,
    errno.ECONNABORTED: Failure.RESET,
    errno.EPIPE: Failure.RESET,
}


def failure_of_errno(code: int | None) -> Failure:
    """The failure class of a socket error number (LOCAL when it says nothing of the peer)."""
    return ERRNO_FAILURES.get(code or 0, Failure.LOCAL)


def describe_error(exc: OSError) -> str:
    """A short text for a socket error ("Connection refused"), whatever raised it."""
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def is_inet6(target: Target) -> bool:
    return ":" in target.address


def socket_address(target: Target) -> tuple[str, int] | tuple[str, int, int, int]:
    """The address to connect to; an IPv6 link-local target takes ``bind_interface``'s scope.

    Raises OSError when that interface does not exist.
    """
    if not is_inet6(target):
        return (target.address, target.port)
    scope = 0
    if target.bind_interface and ipaddress.IPv6Address(target.address).is_link_local:
        scope = socket.if_nametoindex(target.bind_interface)
    return (target.address, target.port, 0, scope)


def open_socket(target: Target, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket of ``kind`` for ``target``, options set and bound, not connected.

    Raises OSError (closing the socket) when an option or the bind is refused: the caller
    reports that as a LOCAL failure, as keepalived reports "bind failed, rescheduling".
    """
    family = socket.AF_INET6 if is_inet6(target) else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setblocking(False)
        if target.fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, target.fwmark)
        if target.bind_interface:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE,
                            target.bind_interface.encode() + b"\0")
        if target.bind_address or target.bind_port:
            if target.bind_port and kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            host = target.bind_address or ("::" if family == socket.AF_INET6 else "0.0.0.0")
            sock.bind((host, target.bind_port or 0))
    except BaseException:
        sock.close()
        raise
    return sock
