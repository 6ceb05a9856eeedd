"""Pure-Python twin: RFC 1071 checksum, ICMP/ICMPv6 echo request building, reply parsing.

Owns: the byte layout of ICMP echo messages and the rules for accepting a reply. Its
compiled twin ``checksum_c.pyx`` must behave identically (same results, same exceptions);
the test suite checks that on arbitrary input.
Must not: do I/O, keep state, or be imported directly outside tests and benches (import
the selector ``fastcheck._ext.checksum``). Parsers never raise on malformed bytes; they
return ``None``. Only a non-bytes-like argument raises (``TypeError``).
"""

from collections.abc import Iterable
from operator import index
from struct import Struct

__all__ = [
    "build_echo_request",
    "internet_checksum",
    "parse_echo_replies",
    "parse_echo_reply",
]

Buffer = bytes | bytearray | memoryview

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
IPPROTO_ICMP = 1

_ECHO = Struct("!BBHHH")  # type, code, checksum, identifier, sequence number
_IPV4_MIN_HEADER = 20


def _as_bytes(data: Buffer) -> bytes:
    """The raw bytes of any bytes-like object (a copy unless it already is ``bytes``)."""
    if type(data) is bytes:
        return data
    return memoryview(data).tobytes()  # TypeError for non-buffers, like the C twin


def internet_checksum(data: Buffer) -> int:
    """RFC 1071 checksum of ``data``: the 16-bit value to store (big-endian) in a header.

    An odd trailing byte is padded with a zero byte. A message whose checksum field holds
    this value checksums to 0.
    """
    data = _as_bytes(data)
    # Read the whole buffer as one big-endian integer N. Since 2**16 == 1 (mod 0xFFFF),
    # N is congruent mod 0xFFFF to the plain sum of its 16-bit words, and folding the
    # carries of that sum (one's-complement addition) keeps it in 1..0xFFFF for any
    # non-zero sum. So the folded sum is N % 0xFFFF, read as 0xFFFF when that is 0 and
    # N != 0; the checksum is its complement. int's C loop does the summing for us.
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8  # the zero pad byte
    if total == 0:
        return 0xFFFF
    return 0xFFFF - (total % 0xFFFF or 0xFFFF)


def _index16(name: str, value: int) -> int:
    value = index(value)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be in 0..65535, got {value}")
    return value


def build_echo_request(ident: int, seq: int, payload: Buffer = b"", *, ipv6: bool = False) -> bytes:
    """An ICMP echo request (type 8, checksum filled in) or ICMPv6 one (type 128).

    The ICMPv6 checksum is left 0: it covers a pseudo-header with the addresses, and the
    kernel fills it in for raw ICMPv6 sockets. ``ident`` and ``seq`` must be in 0..65535.
    """
    ident = _index16("ident", ident)
    seq = _index16("seq", seq)
    kind = ICMPV6_ECHO_REQUEST if ipv6 else ICMP_ECHO_REQUEST
    message = bytearray(_ECHO.pack(kind, 0, 0, ident, seq))
    message += _as_bytes(payload)
    if not ipv6:
        message[2:4] = internet_checksum(message).to_bytes(2, "big")
    return bytes(message)


def _parse(data: bytes, ipv6: bool) -> tuple[int, int] | None:
    size = len(data)
    if ipv6:  # the buffer starts with the ICMPv6 header; the kernel checked the checksum
        if size < _ECHO.size:
            return None
        kind, code, _, ident, seq = _ECHO.unpack_from(data)
        return (ident, seq) if kind == ICMPV6_ECHO_REPLY and code == 0 else None

    # IPv4: the buffer starts with the IP header, as a raw socket delivers it.
    if size < _IPV4_MIN_HEADER or data[0] >> 4 != 4:
        return None
    header_len = (data[0] & 0x0F) * 4
    total_len = (data[2] << 8) | data[3]  # IP total length; bytes past it are not ours
    if (
        header_len < _IPV4_MIN_HEADER
        or total_len < header_len + _ECHO.size
        or total_len > size  # truncated
        or data[9] != IPPROTO_ICMP
    ):
        return None
    kind, code, _, ident, seq = _ECHO.unpack_from(data, header_len)
    if kind != ICMP_ECHO_REPLY or code != 0:
        return None
    if internet_checksum(data[header_len:total_len]) != 0:
        return None
    return ident, seq


def parse_echo_reply(packet: Buffer, *, ipv6: bool = False) -> tuple[int, int] | None:
    """``(ident, seq)`` of a well-formed echo reply, else ``None``.

    IPv4: ``packet`` starts with the IPv4 header (version 4, IHL honoured, total length
    within the buffer, protocol ICMP) followed by type 0 code 0 with a valid checksum.
    IPv6: ``packet`` starts with the ICMPv6 header, type 129 code 0.
    """
    return _parse(_as_bytes(packet), ipv6)


def parse_echo_replies(
    packets: Iterable[Buffer], *, ipv6: bool = False
) -> list[tuple[int, int] | None]:
    """``parse_echo_reply`` over many packets, one result per packet, in order."""
    return [_parse(_as_bytes(packet), ipv6) for packet in packets]
