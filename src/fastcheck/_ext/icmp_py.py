"""Pure-Python twin: ICMP/ICMPv6 echo over one shared raw socket, many targets in flight.

Owns: ``IcmpEngine`` — the raw socket of one address family, the (ident, seq) → token
table of echoes in flight, their deadlines, and the matching of replies; ``parse_icmp``,
the rules for which received packets answer one of our echoes; ``open_raw_socket``, the
socket setup both twins share (so they cannot drift). The compiled twin ``icmp_c.pyx``
must behave identically; the test suite checks that.
Must not: read a clock (every method that needs the time takes ``now``, in seconds of
whatever monotonic clock the caller uses), block, decide health, or be imported directly
outside tests, benches and ``icmp_c`` (import the selector ``fastcheck._ext.icmp``).

How it works. Each engine draws a random 16-bit identifier; every echo it sends carries
that identifier and a sequence number (counting up from 0, wrapping at 65536, skipping
numbers still in flight), and the pair names the echo's slot. A raw socket sees every ICMP message
for the host, so a reply counts only when its identifier is ours, its sequence number is in
flight and it comes from the address the echo went to (for a destination-unreachable
message: the quoted original echo request went to that address); anything else, including
another engine's replies, is ignored. Kernel filters (``ICMP_FILTER``, ``ICMP6_FILTER``)
pass only echo replies and destination-unreachable messages to the socket.

Statuses reported by ``poll``: ``0`` echo reply; ``ETIMEDOUT`` the deadline passed;
``EHOSTUNREACH`` / ``ENETUNREACH`` a destination-unreachable message quoted our echo (or
``sendto`` said so); any other errno: ``sendto`` failed locally (``EAGAIN``/``ENOBUFS``:
no buffer space, ``EACCES``: broadcast, ``EPERM``: a firewall said no …).
"""

from __future__ import annotations

import errno
import heapq
import math
import os
import socket
import struct
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from fastcheck._ext.checksum import build_echo_request, internet_checksum, parse_echo_replies

__all__ = ["IcmpEngine", "open_raw_socket", "parse_icmp"]

Buffer = bytes | bytearray | memoryview
_T = TypeVar("_T")

PAYLOAD = b"fastcheck-ping\0\0"  # 16 bytes after the 8-byte echo header
RECV_SIZE = 512  # larger than any message that can answer our 24-byte echoes
MAX_READS_PER_POLL = 65536  # so a flood of foreign traffic cannot hold poll() forever
SEQ_SPACE = 65536

# Linux socket options the socket module does not name.
SOL_RAW = 255
ICMP_FILTER = 1  # IPv4 raw ICMP sockets: 32-bit mask of types 0..31 to drop
ICMP6_FILTER = 1  # level IPPROTO_ICMPV6: 256-bit mask, a set bit drops the type
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMPV6_DEST_UNREACH = 1
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58

# IPv4 unreachable codes that mean the network rather than the host: net unreachable,
# net unknown, net unreachable for TOS. For ICMPv6, code 0 (no route) is the network one.
_NET_CODES_V4 = frozenset({0, 6, 11})
_FRAG_NEEDED = 4  # path-MTU news about our tiny echoes, not an unreachable destination


def open_raw_socket(ipv6: bool, max_in_flight: int) -> socket.socket:
    """A non-blocking raw ICMP (or ICMPv6) socket, filtered and with room for the replies.

    Raises ``PermissionError`` without CAP_NET_RAW. Buffers are sized for
    ``max_in_flight`` replies arriving in one burst (forced past ``rmem_max`` when
    allowed: the memory is only charged while packets wait).
    """
    if ipv6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_ICMPV6)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ICMP)
    try:
        sock.setblocking(False)
        if ipv6:  # the kernel computes ICMPv6 checksums on raw ICMPv6 sockets by itself
            blocked = [0xFFFFFFFF] * 8
            for kind in (ICMPV6_ECHO_REPLY, ICMPV6_DEST_UNREACH):
                blocked[kind >> 5] &= ~(1 << (kind & 31))
            sock.setsockopt(IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *blocked))
        else:
            blocked_v4 = 0xFFFFFFFF & ~((1 << ICMP_ECHO_REPLY) | (1 << ICMP_DEST_UNREACH))
            sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", blocked_v4))
        _grow_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, max(1 << 20, max_in_flight * 1024))
        _grow_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, max(1 << 20, max_in_flight * 256))
    except BaseException:
        sock.close()
        raise
    return sock


def _grow_buffer(sock: socket.socket, forced: int, plain: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, size)
    except OSError:  # no CAP_NET_ADMIN: as much as net.core.[rw]mem_max allows
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


def _unreachable_errno(code: int, ipv6: bool) -> int:
    if ipv6:
        return errno.ENETUNREACH if code == 0 else errno.EHOSTUNREACH
    return errno.ENETUNREACH if code in _NET_CODES_V4 else errno.EHOSTUNREACH


def _parse_unreachable(data: bytes, ipv6: bool) -> tuple[int, int, int, bytes] | None:
    """``(errno, ident, seq, address)`` of a destination-unreachable quoting an echo request."""
    size = len(data)
    if ipv6:  # ICMPv6 header (8), then the quoted IPv6 header (40), then our echo header (8)
        if size < 56 or data[0] != ICMPV6_DEST_UNREACH:
            return None
        if data[8] >> 4 != 6 or data[14] != IPPROTO_ICMPV6:
            return None  # extension headers would sit between; our echoes carry none
        if data[48] != ICMPV6_ECHO_REQUEST or data[49] != 0:
            return None
        ident = (data[52] << 8) | data[53]
        seq = (data[54] << 8) | data[55]
        return _unreachable_errno(data[1], True), ident, seq, data[32:48]

    if size < 20 or data[0] >> 4 != 4:
        return None
    header_len = (data[0] & 0x0F) * 4
    total_len = (data[2] << 8) | data[3]
    if header_len < 20 or total_len > size or data[9] != IPPROTO_ICMP:
        return None
    icmp = header_len  # outer ICMP header: type, code, checksum, 4 unused bytes
    if total_len < icmp + 8 + 20 + 8 or data[icmp] != ICMP_DEST_UNREACH:
        return None
    code = data[icmp + 1]
    if code == _FRAG_NEEDED or internet_checksum(data[icmp:total_len]) != 0:
        return None
    inner = icmp + 8  # the quoted IPv4 header of our echo request
    inner_len = (data[inner] & 0x0F) * 4
    if data[inner] >> 4 != 4 or inner_len < 20 or data[inner + 9] != IPPROTO_ICMP:
        return None
    echo = inner + inner_len
    if total_len < echo + 8 or data[echo] != ICMP_ECHO_REQUEST or data[echo + 1] != 0:
        return None
    ident = (data[echo + 4] << 8) | data[echo + 5]
    seq = (data[echo + 6] << 8) | data[echo + 7]
    return _unreachable_errno(code, False), ident, seq, data[inner + 16 : inner + 20]


def parse_icmp(packet: Buffer, *, ipv6: bool = False) -> tuple[int, int, int, bytes | None] | None:
    """``(status, ident, seq, address)`` if ``packet`` may answer an echo, else ``None``.

    ``packet`` is what a raw socket of the family delivers: IPv4 starts with the IP
    header, ICMPv6 with the ICMPv6 header. An echo reply (rules: ``checksum``) gives status
    0 and, for IPv4, the IP source address (4 bytes); ICMPv6 carries no address, so
    ``None`` (the engine takes it from ``recvfrom``). A destination-unreachable message
    that quotes an ICMP echo request (IPv4: outer checksum valid, not "fragmentation
    needed") gives ``ENETUNREACH`` or ``EHOSTUNREACH`` and the quoted destination address.
    Never raises on malformed bytes; a non-bytes-like argument raises ``TypeError``.
    """
    data = packet if type(packet) is bytes else memoryview(packet).tobytes()
    [reply] = parse_echo_replies((data,), ipv6=ipv6)
    if reply is not None:
        return 0, reply[0], reply[1], None if ipv6 else data[12:16]
    return _parse_unreachable(data, ipv6)


class IcmpEngine:
    """Echoes to many targets over one raw socket; sans-IO in time (see module doc)."""

    __slots__ = (
        "_closed", "_count", "_heap", "_ident", "_ipv6", "_max", "_next_seq", "_ready",
        "_ready_at", "_slots", "_sock", "_stamp",
    )  # fmt: skip

    def __init__(self, ipv6: bool = False, max_in_flight: int = 65536) -> None:
        if not 1 <= max_in_flight <= SEQ_SPACE:
            raise ValueError(f"max_in_flight must be in 1..{SEQ_SPACE}, got {max_in_flight}")
        self._ipv6 = bool(ipv6)
        self._max = max_in_flight
        self._sock = open_raw_socket(self._ipv6, max_in_flight)
        self._closed = False
        self._ident = int.from_bytes(os.urandom(2), "big")
        self._next_seq = 0
        self._count = 0
        self._stamp = 0  # submissions so far: ties on deadline expire in submission order
        # seq → (token, sent, address key, stamp) while in flight, else None. The address
        # key is the packed IPv4 address, or the IPv6 address as recvfrom spells it.
        self._slots: list[tuple[object, float, bytes | str, int] | None] = [None] * SEQ_SPACE
        self._heap: list[tuple[float, int, int]] = []  # (deadline, stamp, seq); lazy deletes
        self._ready: list[tuple[int, int, float]] = []  # send failures, reported by poll
        self._ready_at = math.inf

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
        return -1 if self._closed else self._sock.fileno()

    # -- work ------------------------------------------------------------------------------

    def submit(self, token: int, address: str, timeout_s: float, now: float) -> None:
        """Send one echo to ``address``; ``poll`` reports ``token`` once, with its status.

        Raises ``ValueError`` for an address that is not an IP literal of the engine's
        family or a negative/non-finite timeout, ``BlockingIOError`` (EAGAIN) when
        ``max_in_flight`` echoes are already in flight, and ``ValueError`` once closed.
        A failed ``sendto`` is not raised: ``poll`` reports it with its errno.
        """
        if not isinstance(address, str):
            raise TypeError(f"address must be str, not {type(address).__name__}")
        if self._closed:
            raise ValueError("IcmpEngine is closed")
        if not 0.0 <= timeout_s < math.inf:
            raise ValueError(f"timeout_s must be finite and >= 0, got {timeout_s!r}")
        family = socket.AF_INET6 if self._ipv6 else socket.AF_INET
        try:
            packed = socket.inet_pton(family, address)
        except (OSError, ValueError):
            kind = "IPv6" if self._ipv6 else "IPv4"
            raise ValueError(f"not an {kind} address: {address!r}") from None
        if self._count >= self._max:
            raise BlockingIOError(errno.EAGAIN, f"{self._max} ICMP echoes already in flight")

        slots = self._slots
        seq = self._next_seq
        while slots[seq] is not None:
            seq = (seq + 1) & 0xFFFF
        self._next_seq = (seq + 1) & 0xFFFF
        packet = build_echo_request(self._ident, seq, PAYLOAD, ipv6=self._ipv6)
        try:
            self._sock.sendto(packet, (address, 0))
        except OSError as exc:
            self._ready.append((token, exc.errno or errno.EIO, 0.0))
            self._ready_at = min(self._ready_at, now)
            return
        key: bytes | str = socket.inet_ntop(family, packed) if self._ipv6 else packed
        stamp = self._stamp
        self._stamp = stamp + 1
        slots[seq] = (token, now, key, stamp)
        self._count += 1
        heapq.heappush(self._heap, (now + timeout_s, stamp, seq))

    def poll(self, now: float) -> list[tuple[int, int, float]]:
        """Read every waiting packet, expire deadlines ≤ ``now``: ``[(token, status, rtt_s)]``.

        Order: failed sends, then replies in arrival order, then expiries by deadline
        (ties in submission order). ``rtt_s`` is ``now`` minus the submit time.
        """
        if self._closed:
            raise ValueError("IcmpEngine is closed")
        results = self._ready  # failed sends first; a new list, never one we still hold
        self._ready = []
        self._ready_at = math.inf
        failure = self._read_v6(now, results) if self._ipv6 else self._read_v4(now, results)
        if failure is not None:  # keep what was read for the next poll, then say so
            self._ready = results
            self._ready_at = now if results else math.inf
            raise failure
        self._expire(now, results)
        return results

    def _drain(self, receive: Callable[[int], _T]) -> tuple[list[_T], OSError | None]:
        """Everything ``receive`` returns until the socket is empty (or a read bound/error)."""
        received: list[_T] = []
        try:
            for _ in range(MAX_READS_PER_POLL):
                received.append(receive(RECV_SIZE))
        except BlockingIOError:
            pass
        except OSError as exc:
            return received, exc
        return received, None

    def _read_v4(self, now: float, results: list[tuple[int, int, float]]) -> OSError | None:
        packets, failure = self._drain(self._sock.recv)
        if not packets:
            return failure
        ident = self._ident
        slots = self._slots
        for data, reply in zip(packets, parse_echo_replies(packets), strict=True):
            if reply is not None:
                if reply[0] != ident:
                    continue
                seq = reply[1]
                status = 0
                address: bytes = data[12:16]
            else:
                unreachable = _parse_unreachable(data, False)
                if unreachable is None or unreachable[1] != ident:
                    continue
                status, _, seq, address = unreachable
            slot = slots[seq]
            if slot is not None and slot[2] == address:
                self._finish(seq, slot, status, now, results)
        return failure

    def _read_v6(self, now: float, results: list[tuple[int, int, float]]) -> OSError | None:
        received, failure = self._drain(self._sock.recvfrom)
        if not received:
            return failure
        ident = self._ident
        slots = self._slots
        packets = [data for data, _ in received]
        for (data, source), reply in zip(received, parse_echo_replies(packets, ipv6=True),
                                         strict=True):  # fmt: skip
            address: str
            if reply is not None:
                if reply[0] != ident:
                    continue
                seq = reply[1]
                status = 0
                address = source[0]
            else:
                unreachable = _parse_unreachable(data, True)
                if unreachable is None or unreachable[1] != ident:
                    continue
                status, _, seq, quoted = unreachable
                address = socket.inet_ntop(socket.AF_INET6, quoted)
            slot = slots[seq]
            if slot is not None and slot[2] == address:
                self._finish(seq, slot, status, now, results)
        return failure

    def _finish(self, seq: int, slot: tuple[object, float, bytes | str, int], status: int,
                now: float, results: list[tuple[int, int, float]]) -> None:  # fmt: skip
        self._slots[seq] = None
        self._count -= 1
        results.append((slot[0], status, now - slot[1]))  # type: ignore[arg-type]
        # The heap entry stays (lazy deletion); compact when the dead ones dominate.
        if len(self._heap) > 2 * self._count + 1024:
            slots = self._slots
            self._heap = [e for e in self._heap if (s := slots[e[2]]) is not None and s[3] == e[1]]
            heapq.heapify(self._heap)

    def _expire(self, now: float, results: list[tuple[int, int, float]]) -> None:
        heap = self._heap
        slots = self._slots
        while heap and heap[0][0] <= now:
            _, stamp, seq = heapq.heappop(heap)
            slot = slots[seq]
            if slot is None or slot[3] != stamp:
                continue  # answered already (or the slot was reused)
            slots[seq] = None
            self._count -= 1
            results.append((slot[0], errno.ETIMEDOUT, now - slot[1]))  # type: ignore[arg-type]

    def next_deadline(self) -> float | None:
        """When ``poll`` next has something to report without any packet arriving."""
        heap = self._heap
        slots = self._slots
        while heap:  # drop dead entries so the answer is exact
            _, stamp, seq = heap[0]
            slot = slots[seq]
            if slot is not None and slot[3] == stamp:
                break
            heapq.heappop(heap)
        deadline = min(heap[0][0] if heap else math.inf, self._ready_at)
        return None if deadline == math.inf else deadline

    def close(self) -> None:
        """Close the socket and forget echoes in flight (they are never reported)."""
        if not self._closed:
            self._closed = True
            self._sock.close()
            self._slots = [None] * SEQ_SPACE
            self._heap = []
            self._ready = []
            self._ready_at = math.inf
            self._count = 0

    def __enter__(self) -> IcmpEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    def __repr__(self) -> str:
        family = "ipv6" if self._ipv6 else "ipv4"
        state = "closed" if self._closed else f"fd={self._sock.fileno()}"
        return f"<IcmpEngine {family} ident={self._ident:#06x} in_flight={self._count} {state}>"
