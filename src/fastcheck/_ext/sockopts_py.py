"""Argument checks and connect-socket options shared by the pure connect engines
(``tcpconnect_py``, ``exchange_py``).

Owns: the rules and messages of ``submit``'s shared arguments (token, numeric address and
port, seconds, bind address/port, interface name, fwmark), applying those options to a
socket before connect, and closing a socket with a reset. Its compiled twin is
``sockopts_c.pxd`` (inline functions the compiled engines compile in); any change goes
into both.
Must not: hold state, read a clock, block, or know about an engine's sockets in flight.
"""

from __future__ import annotations

import os
import socket
import struct
from contextlib import suppress
from math import isfinite
from operator import index
from typing import Any

__all__ = [
    "CONNECT_SOCK_TYPE",
    "IFNAMSIZ",
    "IP_BIND_ADDRESS_NO_PORT",
    "MAX_WINDOW",
    "RESET_ON_CLOSE",
    "TOKEN_MAX",
    "TOKEN_MIN",
    "Options",
    "address_family",
    "check_integer",
    "check_seconds",
    "close_with_reset",
    "configure_socket",
    "interface_name",
    "parse_options",
    "parse_target",
]

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h; not exported by Python's socket module
IFNAMSIZ = 16
MAX_WINDOW = 1 << 20  # the kernel's default nr_open: more sockets cannot be open at once
TOKEN_MIN, TOKEN_MAX = -(2**63), 2**63 - 1
CONNECT_SOCK_TYPE = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_SOL_SOCKET = socket.SOL_SOCKET
_SO_LINGER = socket.SO_LINGER
_inet_pton = socket.inet_pton

# Validated connection options: (bind sockaddr or None, reuse_address, bind_no_port,
# interface bytes or None, fwmark or None).
Options = tuple[tuple[Any, ...] | None, bool, bool, bytes | None, int | None]


def address_family(address: str, what: str) -> int:
    """AF_INET or AF_INET6 for numeric address text; ValueError for anything else."""
    try:
        _inet_pton(_AF_INET, address)
        return _AF_INET
    except OSError:
        pass
    try:
        _inet_pton(_AF_INET6, address)
        return _AF_INET6
    except OSError:
        message = f"{what} must be a numeric IPv4 or IPv6 address, got {address!r}"
        raise ValueError(message) from None


def check_integer(value: object, what: str, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``; TypeError for non-integers, else ValueError."""
    number = index(value)  # type: ignore[arg-type]  # TypeError for non-integers
    if not low <= number <= high:
        raise ValueError(f"{what} must be in {low}..{high}, got {number}")
    return number


def check_seconds(value: float, what: str, *, minimum: float | None = None) -> float:
    """``value`` as a finite float (at least ``minimum`` when given); else ValueError."""
    if not isfinite(value):  # TypeError for non-numbers, as the C twin's double argument
        raise ValueError(f"{what} must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return float(value)


def interface_name(name: str) -> bytes:
    """``bind_interface`` as the bytes SO_BINDTODEVICE takes."""
    if not isinstance(name, str):
        raise TypeError(f"bind_interface must be str, not {type(name).__name__}")
    raw = os.fsencode(name)
    if not 0 < len(raw) < IFNAMSIZ or b"\0" in raw:
        raise ValueError(
            f"bind_interface must be 1..{IFNAMSIZ - 1} bytes without NUL, got {name!r}"
        )
    return raw


def parse_target(address: str, port: int) -> tuple[int, tuple[Any, ...]]:
    """``submit``'s ``address`` and ``port`` (checked in that order) as (family, sockaddr)."""
    if not isinstance(address, str):
        raise TypeError(f"address must be str, not {type(address).__name__}")
    family = address_family(address, "address")
    port = check_integer(port, "port", 1, 0xFFFF)
    return family, (address, port) if family == _AF_INET else (address, port, 0, 0)


def parse_options(
    family: int,
    bind_address: str | None,
    bind_port: int | None,
    bind_interface: str | None,
    fwmark: int | None,
) -> Options | None:
    """Validated connection options, or None when there are none (the common case)."""
    if bind_address is None and bind_port is None and bind_interface is None \
            and fwmark is None:  # fmt: skip
        return None
    port = 0 if bind_port is None else check_integer(bind_port, "bind_port", 0, 0xFFFF)
    bind: tuple[Any, ...] | None = None
    if bind_address is not None:
        if not isinstance(bind_address, str):
            raise TypeError(f"bind_address must be str, not {type(bind_address).__name__}")
        if address_family(bind_address, "bind_address") != family:
            raise ValueError(f"bind_address {bind_address!r} is not of the target's family")
        bind = (bind_address, port)
    elif port:
        bind = ("0.0.0.0" if family == _AF_INET else "::", port)
    interface = None if bind_interface is None else interface_name(bind_interface)
    mark = None if fwmark is None else check_integer(fwmark, "fwmark", 0, 0xFFFFFFFF)
    if bind is None and interface is None and mark is None:
        return None
    return bind, port != 0, bind_address is not None and port == 0, interface, mark


def configure_socket(sock: socket.socket, options: Options) -> None:
    """Apply the connection options before connect; OSError carries the kernel's errno."""
    bind, reuse_address, no_port, interface, mark = options
    if interface is not None:
        sock.setsockopt(_SOL_SOCKET, socket.SO_BINDTODEVICE, interface)
    if mark is not None:
        sock.setsockopt(_SOL_SOCKET, socket.SO_MARK, mark)
    if bind is not None:
        if reuse_address:
            sock.setsockopt(_SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if no_port:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind(bind)


def close_with_reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: a reset, no TIME_WAIT left behind."""
    with suppress(OSError):
        sock.setsockopt(_SOL_SOCKET, _SO_LINGER, RESET_ON_CLOSE)
    sock.close()
