"""UDP_CHECK probe: one datagram to the real server; an ICMP error, or a wrong reply, fails it.

Owns: the payload and reply pattern of one check (prepared once), the connected UDP socket
with IP_RECVERR, waiting for the first reply or error under one deadline, matching the
reply, and turning socket errors and silence into `Failure`s.
Must not: decide health (retry and delay_before_retry belong to health/ and the
scheduler), keep state between runs, or know keyword spellings.

keepalived behaviour followed (2.2.7, keepalived/check/check_udp.c udp_check_thread, and
core/layer4.c udp_bind_connect / udp_socket_state / udp_socket_error):
- the payload is the configured one, else 32 bytes of "keepalived check - " repeated
  (layer4.c set_buf — the man page says "random", the code sends this fixed filler).
- the socket is connected and has IP_RECVERR / IPV6_RECVERR set, so any ICMP destination
  unreachable (port, host, network …) comes back as an error on the next receive: port
  unreachable → REFUSED, host/network unreachable → UNREACHABLE. A send that fails is a
  failure too.
- the first event decides. Without ``require_reply``: an error fails; a reply of any
  content succeeds at once; silence until connect_timeout is SUCCESS — "no error came
  back", so a healthy server costs the whole timeout. With ``require_reply``: silence is
  TIMEOUT; the first datagram is the reply (at most max_reply_length + 1 bytes are read).
- with a ``require_reply`` pattern, the reply fails (PROTOCOL) when its length is outside
  [min_reply_length, max_reply_length] or when one of its first min(len(reply),
  len(pattern)) bytes differs from the pattern where the pattern's nibble is not ``x``
  (check_udp_reply). A reply shorter than the pattern is compared over its own length.
- ``require_reply`` without a pattern accepts any reply, whatever its length: keepalived
  calls check_udp_reply — the length test included — only when a pattern is set. The man
  page says the length is checked whenever require_reply is; this probe follows the code,
  so configurations behave as they did under keepalived.
- bind address/port and fwmark as udp_bind_connect sets them.

Difference: ``bind_if`` (SO_BINDTODEVICE) is honoured; keepalived's udp_bind_connect
ignores it for UDP_CHECK.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Final

from fastcheck.errors import ProbeError
from fastcheck.model import Check, UdpParams
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.sockopts import (
    describe_error,
    failure_of_errno,
    is_inet6,
    open_socket,
    socket_address,
)

__all__ = ["DEFAULT_PAYLOAD", "ReplyPattern", "UdpProbe", "probe_udp"]

_FILLER = b"keepalived check - "
DEFAULT_PAYLOAD: Final = (_FILLER * 2)[:32]
IP_RECVERR: Final = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR: Final = getattr(socket, "IPV6_RECVERR", 25)
SOL_IPV6: Final = getattr(socket, "SOL_IPV6", socket.IPPROTO_IPV6)


class ReplyPattern:
    """A require_reply pattern: bytes to compare and, per byte, the bits that count."""

    __slots__ = ("care", "data")

    def __init__(self, text: str) -> None:
        """``text``: hex digits two per byte, ``x`` for a nibble that does not count
        (`UdpParams.reply_pattern`, as config/ normalizes it). Raises ProbeError."""
        text = "".join(text.split()).lower()
        if not text or len(text) % 2 or any(c not in "0123456789abcdefx" for c in text):
            raise ProbeError(f"UDP_CHECK reply pattern {text!r} is not hex digits "
                             "(two per byte, x as a wildcard nibble)")
        self.data = bytes.fromhex(text.replace("x", "0"))
        self.care = bytes.fromhex("".join("0" if c == "x" else "f" for c in text))

    def __len__(self) -> int:
        return len(self.data)

    def mismatch(self, reply: bytes) -> int | None:
        """Offset of the first byte of ``reply`` the pattern rejects, or None if it fits."""
        n = min(len(reply), len(self.data))
        for i in range(n):
            if (reply[i] ^ self.data[i]) & self.care[i]:
                return i
        return None


class UdpProbe:
    """One UDP_CHECK, prepared once (payload, pattern, destination).

    The constructor raises `ProbeError` for what can never work (a malformed pattern,
    min_reply_length above max_reply_length); `run` only ever returns a `ProbeResult`.
    """

    __slots__ = ("_max", "_min", "_pattern", "_payload", "_require_reply", "_target",
                 "_timeout_s")

    def __init__(self, check: Check) -> None:
        params = check.params
        if not isinstance(params, UdpParams):
            raise ProbeError(f"{check.kind.value} is not a UDP check")
        if params.min_reply_length > params.max_reply_length:
            raise ProbeError(f"UDP_CHECK min_reply_length {params.min_reply_length} > "
                             f"max_reply_length {params.max_reply_length}: always fails")
        self._payload = params.payload if params.payload else DEFAULT_PAYLOAD
        self._require_reply = params.require_reply
        self._pattern = (ReplyPattern(params.reply_pattern)
                         if params.require_reply and params.reply_pattern else None)
        self._min = params.min_reply_length
        self._max = params.max_reply_length
        self._target = check.target
        self._timeout_s = check.connect_timeout_s

    async def run(self, *, loop_time: Callable[[], float] | None = None) -> ProbeResult:
        """Send once and wait; latency is measured with ``loop_time`` (default
        `time.monotonic`). Without require_reply a healthy server takes the whole timeout."""
        loop = asyncio.get_running_loop()
        clock = loop_time or time.monotonic
        start = clock()
        failure, detail = await self._exchange(loop)
        if failure is None:
            return ProbeResult.up(clock() - start, detail=detail)
        return ProbeResult.down(failure, clock() - start, detail)

    def _socket(self) -> socket.socket:
        sock = open_socket(self._target, socket.SOCK_DGRAM)
        try:
            if is_inet6(self._target):
                sock.setsockopt(SOL_IPV6, IPV6_RECVERR, 1)
            else:
                sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _exchange(self, loop: asyncio.AbstractEventLoop) -> tuple[Failure | None, str]:
        try:
            address = socket_address(self._target)
            sock = self._socket()
        except OSError as exc:
            return Failure.LOCAL, f"cannot set up the socket: {exc}"
        phase = "send"
        try:
            async with asyncio.timeout(self._timeout_s):
                sock.connect(address)
                await loop.sock_sendall(sock, self._payload)
                phase = "receive"
                reply = await loop.sock_recv(sock, self._max + 1)
        except TimeoutError:
            if self._require_reply:
                return Failure.TIMEOUT, f"no reply within {self._timeout_s:g} s"
            return None, f"no reply and no ICMP error within {self._timeout_s:g} s"
        except OSError as exc:
            text = describe_error(exc)
            return failure_of_errno(exc.errno), f"{phase}: {text}"
        finally:
            sock.close()
        return self._judge(reply)

    def _judge(self, reply: bytes) -> tuple[Failure | None, str]:
        pattern = self._pattern
        if pattern is None:
            return None, ""
        size = len(reply)
        if size < self._min or size > self._max:
            shown = f"over {self._max}" if size > self._max else str(size)
            return (Failure.PROTOCOL, f"reply of {shown} bytes, expected "
                                      f"{self._min}..{self._max}")
        offset = pattern.mismatch(reply)
        if offset is not None:
            return (Failure.PROTOCOL, f"reply byte {offset} is 0x{reply[offset]:02x}, the "
                                      f"pattern wants 0x{pattern.data[offset]:02x} "
                                      f"(mask 0x{pattern.care[offset]:02x})")
        return None, ""


async def probe_udp(check: Check, *,
                    loop_time: Callable[[], float] | None = None) -> ProbeResult:
    """Run a UDP_CHECK once; set-up problems come back as LOCAL failures.

    Prefer one `UdpProbe` per check where a check runs repeatedly.
    """
    try:
        probe = UdpProbe(check)
    except ProbeError as exc:
        return ProbeResult.down(Failure.LOCAL, 0.0, str(exc))
    return await probe.run(loop_time=loop_time)
