"""Generic netlink on a plain blocking socket: framing, attributes and windowed requests.

Owns: the wire — netlink and generic-netlink headers, attribute (TLV) packing and
parsing, family lookup, and three exchanges: one request with its answer, a dump, and a
window of requests sent in one write whose errors come back matched by sequence number.
Must not: know what IPVS objects mean (ipvs/netlink.py does), import pyroute2, or keep
state beyond the socket and its sequence counter. Standard library only, so a message
costs microseconds to build and parse, and no event loop is involved: every call blocks
briefly (the kernel answers generic netlink synchronously) and may be made from any
thread, or from inside a running asyncio loop.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from collections.abc import Iterator, Sequence

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_ACK_TLVS = 0x200  # in an error message: extended-ack attributes follow
NLM_F_CAPPED = 0x100  # in an error message: the request was not echoed back
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_GENERIC = 16
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SO_RCVBUFFORCE = 33
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_OPS = 6
CTRL_ATTR_OP_ID = 1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, port id
_GENL = struct.Struct("=BBH")  # genlmsghdr: cmd, version, reserved
_ATTR = struct.Struct("=HH")  # nlattr: length, type
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_BE16 = struct.Struct(">H")
_RECV_SIZE = 1 << 16
_RCVBUF = 1 << 20
_MAX_WRITE = 1 << 16

Attrs = dict[int, bytes]
Outcome = tuple[int, str]  # (errno, 0 when the request succeeded; the kernel's message)


# --------------------------------------------------------------------------- attributes


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def nested(kind: int, *parts: bytes) -> bytes:
    return attr(kind, b"".join(parts))


def u8(kind: int, value: int) -> bytes:
    return attr(kind, bytes((value,)))


def u16(kind: int, value: int) -> bytes:
    return attr(kind, _U16.pack(value))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def be16(kind: int, value: int) -> bytes:
    return attr(kind, _BE16.pack(value))


def asciiz(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def parse_attrs(data: bytes, offset: int = 0) -> Attrs:
    """Top-level attributes of `data[offset:]` by type (nested ones stay as bytes)."""
    out: Attrs = {}
    end = len(data)
    while offset + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            break
        out[kind & NLA_TYPE_MASK] = data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3
    return out


def get_u8(value: bytes) -> int:
    return value[0]


def get_u16(value: bytes) -> int:
    return int(_U16.unpack_from(value)[0])


def get_u32(value: bytes) -> int:
    return int(_U32.unpack_from(value)[0])


def get_u64(value: bytes) -> int:
    return int(_U64.unpack_from(value)[0])


def get_be16(value: bytes) -> int:
    return int(_BE16.unpack_from(value)[0])


def get_str(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def get_uint(value: bytes) -> int:
    """An unsigned integer attribute of whatever width the kernel chose (u32 or u64)."""
    return int.from_bytes(value[:8], sys.byteorder)


def genl_payload(cmd: int, version: int, attrs: bytes = b"") -> bytes:
    """A generic-netlink message body: the genl header and its attributes."""
    return _GENL.pack(cmd, version, 0) + attrs


# --------------------------------------------------------------------------- socket


def _error_of(payload: bytes, flags: int) -> Outcome:
    """(errno, extended-ack message) of an NLMSG_ERROR payload; errno 0 is an ack."""
    (code,) = struct.unpack_from("=i", payload)
    message = ""
    if code and flags & NLM_F_ACK_TLVS:
        echoed = _HEADER.size
        if not flags & NLM_F_CAPPED and len(payload) >= 4 + _HEADER.size:
            echoed = _HEADER.unpack_from(payload, 4)[0]
        tlvs = parse_attrs(payload, 4 + ((echoed + 3) & ~3))
        if NLMSGERR_ATTR_MSG in tlvs:
            message = get_str(tlvs[NLMSGERR_ATTR_MSG])
    return -code, message


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, flags, seq, _port = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        yield kind, flags, seq, data[offset + _HEADER.size:offset + length]
        offset += (length + 3) & ~3


class GenlSocket:
    """A generic-netlink socket bound to one family, e.g. "IPVS". Not thread-safe."""

    def __init__(self, family: str, timeout_s: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                                   NETLINK_GENERIC)
        try:
            self._configure(timeout_s)
            self._seq = int.from_bytes(os.urandom(2), "little") or 1
            self.family_id, self.commands = self._resolve(family)
        except BaseException:
            self._sock.close()
            raise

    def _configure(self, timeout_s: float) -> None:
        sock = self._sock
        for level, option, value in ((socket.SOL_SOCKET, SO_RCVBUFFORCE, _RCVBUF),
                                     (socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF),
                                     (SOL_NETLINK, NETLINK_CAP_ACK, 1),
                                     (SOL_NETLINK, NETLINK_EXT_ACK, 1)):
            try:
                sock.setsockopt(level, option, value)
                if option == SO_RCVBUFFORCE:
                    break  # the forced size stands; SO_RCVBUF would cap it again
            except OSError:
                pass  # older kernels or no CAP_NET_ADMIN: the defaults still work
        sock.bind((0, 0))
        self.port_id: int = sock.getsockname()[0]
        sock.settimeout(timeout_s)

    def close(self) -> None:
        self._sock.close()

    # ------------------------------------------------------------------ exchanges

    def request(self, cmd: int, attrs: bytes = b"", version: int = 1) -> list[Attrs]:
        """One request acknowledged by the kernel; returns the replies' attributes.

        Raises OSError with the kernel's errno when it refuses the request.
        """
        return self._exchange(self.family_id, genl_payload(cmd, version, attrs),
                              NLM_F_REQUEST | NLM_F_ACK)

    def dump(self, cmd: int, attrs: bytes = b"", version: int = 1) -> list[Attrs]:
        """Every object a dump request returns, as attribute dicts."""
        return self._exchange(self.family_id, genl_payload(cmd, version, attrs),
                              NLM_F_REQUEST | NLM_F_DUMP)

    def pipeline(self, payloads: Sequence[bytes], window: int = 64,
                 ack_every: bool = False) -> list[Outcome]:
        """Sends generic-netlink payloads in windows of up to `window` per write.

        Within a window only the last request asks for an acknowledgement (unless
        `ack_every`); the kernel still answers every failing request with an error
        carrying its sequence number, so each error is matched to its request, and the
        last acknowledgement says the window is done. Requests are processed in order.
        A window also stops at _MAX_WRITE bytes (the kernel refuses writes larger than
        the socket's send buffer). Returns one outcome per payload: (0, "") or
        (errno, the kernel's extended-ack message).
        """
        outcomes: list[Outcome] = [(0, "")] * len(payloads)
        start = 0
        while start < len(payloads):
            end, size = start + 1, len(payloads[start])
            while (end < len(payloads) and end - start < window
                   and size + len(payloads[end]) <= _MAX_WRITE):
                size += len(payloads[end])
                end += 1
            self._window(payloads, start, end, ack_every, outcomes)
            start = end
        return outcomes

    def _window(self, payloads: Sequence[bytes], start: int, end: int, ack_every: bool,
                outcomes: list[Outcome]) -> None:
        count = end - start
        first = self._reserve(count)
        last = (first + count - 1) & 0xFFFFFFFF
        frames = []
        for index in range(count):
            flags = NLM_F_REQUEST
            if ack_every or index == count - 1:
                flags |= NLM_F_ACK
            frames.append(self._frame(self.family_id, flags, (first + index) & 0xFFFFFFFF,
                                      payloads[start + index]))
        try:
            self._sock.send(b"".join(frames))
            self._collect(first, count, last, outcomes, start)
        except OSError as exc:  # lost acknowledgements (ENOBUFS), a timeout, ...
            code = exc.errno or (errno.ETIMEDOUT if isinstance(exc, TimeoutError)
                                 else errno.EIO)
            for index in range(start, end):
                if outcomes[index] == (0, ""):
                    outcomes[index] = (code, "outcome unknown: " + os.strerror(code))

    # ------------------------------------------------------------------ internals

    def _collect(self, first: int, count: int, last: int, outcomes: list[Outcome],
                 base: int) -> None:
        while True:
            for kind, flags, seq, payload in messages(self._recv()):
                offset = (seq - first) & 0xFFFFFFFF
                if kind != NLMSG_ERROR or offset >= count:
                    continue  # a stale answer to an earlier, abandoned request
                code, message = _error_of(payload, flags)
                if code:
                    outcomes[base + offset] = (code, message)
                if seq == last:
                    return

    def _exchange(self, msg_type: int, payload: bytes, flags: int) -> list[Attrs]:
        seq = self._reserve(1)
        self._sock.send(self._frame(msg_type, flags, seq, payload))
        replies: list[Attrs] = []
        while True:
            for kind, mflags, mseq, body in messages(self._recv()):
                if mseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    code, message = _error_of(body, mflags)
                    if code:
                        raise OSError(code, os.strerror(code) + (f" ({message})"
                                                                  if message else ""))
                    return replies
                if kind == NLMSG_DONE:
                    (code,) = struct.unpack_from("=i", body) if len(body) >= 4 else (0,)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return replies
                replies.append(parse_attrs(body, _GENL.size))

    def _frame(self, msg_type: int, flags: int, seq: int, payload: bytes) -> bytes:
        return _HEADER.pack(_HEADER.size + len(payload), msg_type, flags, seq,
                            self.port_id) + payload

    def _reserve(self, count: int) -> int:
        first = self._seq
        self._seq = (self._seq + count) & 0xFFFFFFFF
        return first

    def _recv(self) -> bytes:
        data = self._sock.recv(_RECV_SIZE)
        if not data:
            raise OSError(errno.ECONNRESET, "netlink socket closed")
        return data

    def _resolve(self, family: str) -> tuple[int, frozenset[int]]:
        """The family's numeric id and the command numbers it implements."""
        payload = genl_payload(CTRL_CMD_GETFAMILY, 1, asciiz(CTRL_ATTR_FAMILY_NAME, family))
        replies = self._exchange(GENL_ID_CTRL, payload, NLM_F_REQUEST | NLM_F_ACK)
        if not replies or CTRL_ATTR_FAMILY_ID not in replies[0]:
            raise OSError(errno.ENOENT, f"generic netlink family {family} not found")
        reply = replies[0]
        commands = frozenset(
            get_u32(op[CTRL_ATTR_OP_ID])
            for op in (parse_attrs(raw) for raw in parse_attrs(
                reply.get(CTRL_ATTR_OPS, b"")).values())
            if CTRL_ATTR_OP_ID in op)
        return get_u16(reply[CTRL_ATTR_FAMILY_ID]), commands
