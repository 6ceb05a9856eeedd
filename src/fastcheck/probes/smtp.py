"""SMTP_CHECK probe: greeting, HELO and QUIT with one mail server, under one deadline.

Owns: the SMTP conversation of one check (connect, read the 220 greeting, send
``HELO <helo_name>``, expect 250, send QUIT and read its answer), parsing reply lines, and
turning socket errors, timeouts and wrong reply codes into `Failure`s.
Must not: decide health (retry and delay_before_retry belong to health/ and the
scheduler), keep state between runs, or know keyword spellings.

keepalived behaviour followed (2.2.7, keepalived/check/check_smtp.c):
- smtp_engine_thread: connect, greeting must be 220, ``HELO <helo_name>\\r\\n`` must be
  answered 250, then ``QUIT\\r\\n`` and one line of answer — any content — ends the check
  with success. A connection closed or reset before that answer fails the check, as
  keepalived's smtp_get_line_cb fails on a read of 0 or -1.
- smtp_get_status: a reply code is exactly three digits followed by a space or the end of
  the line ("2200 x", " 220", "+220" are not replies).
- bind address/port, interface and fwmark as core/layer4.c socket_bind_connect sets them.

Where this probe differs, on purpose:
- multi-line replies (RFC 5321 4.2.1: ``220-first`` … ``220 last``) are read to their last
  line, whose code counts. keepalived looks at the first line only, so a multi-line
  greeting fails there ("Bad greeting banner"): some MTAs send one by default.
- a reply line without text ("220\\r\\n", valid per RFC 5321) is accepted; keepalived sees
  "220\\r" and fails it.
- connect_timeout bounds the whole conversation; keepalived re-arms it for every read and
  write, so a server trickling its lines holds a check for much longer.
- reply lines are bounded (4 KiB each, 64 KiB and 100 lines per reply → PROTOCOL);
  keepalived wraps its 1 KiB buffer and keeps going.
- an orderly close by the server before the expected reply is PROTOCOL (keepalived: "Read
  failure"); a reset is RESET.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from fastcheck.errors import ProbeError
from fastcheck.model import Check, SmtpParams
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.sockopts import (
    describe_error,
    failure_of_errno,
    open_socket,
    socket_address,
)

__all__ = ["MAX_LINE_BYTES", "SmtpProbe", "parse_reply_line", "probe_smtp"]

MAX_LINE_BYTES = 4096
MAX_REPLY_BYTES = 65536
MAX_REPLY_LINES = 100
_RECV_BYTES = 4096


class _Malformed(Exception):
    """A reply the server should not have sent; the message is the detail."""


def parse_reply_line(line: bytes) -> tuple[int, bool] | None:
    """``(code, last)`` of one reply line (without its line end), or None if it is not one.

    A line is ``DDD`` followed by the end, a space (last line) or ``-`` (more to come).
    """
    if len(line) < 3 or not line[:3].isdigit():
        return None
    if len(line) == 3:
        return int(line[:3]), True
    sep = line[3:4]
    if sep == b" ":
        return int(line[:3]), True
    if sep == b"-":
        return int(line[:3]), False
    return None


def _show(line: bytes, limit: int = 120) -> str:
    text = line.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "…")


class _Conversation:
    """Reads lines and replies from a connected socket, writes commands to it."""

    __slots__ = ("_buf", "_loop", "_sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock
        self._buf = bytearray()

    async def line(self) -> bytes:
        """The next line without CR LF; EOFError when the server closes first."""
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end >= 0:
                line = bytes(buf[:end])
                del buf[:end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(buf) > MAX_LINE_BYTES:
                raise _Malformed(f"reply line longer than {MAX_LINE_BYTES} bytes")
            data = await self._loop.sock_recv(self._sock, _RECV_BYTES)
            if not data:
                raise EOFError
            buf += data

    async def reply(self) -> tuple[int, bytes]:
        """The code of a whole (possibly multi-line) reply, and its last line."""
        total = 0
        for _ in range(MAX_REPLY_LINES):
            line = await self.line()
            total += len(line)
            parsed = parse_reply_line(line)
            if parsed is None:
                raise _Malformed(f"not an SMTP reply line: {_show(line)}")
            code, last = parsed
            if last:
                return code, line
            if total > MAX_REPLY_BYTES:
                break
        raise _Malformed(f"reply longer than {MAX_REPLY_LINES} lines or "
                         f"{MAX_REPLY_BYTES} bytes")

    async def send(self, data: bytes) -> None:
        await self._loop.sock_sendall(self._sock, data)


class SmtpProbe:
    """One SMTP_CHECK, prepared once (the HELO command, the destination address).

    The constructor raises `ProbeError` for what can never work (a helo_name with a line
    break, a check of another kind); `run` only ever returns a `ProbeResult`.
    """

    __slots__ = ("_helo", "_target", "_timeout_s")

    def __init__(self, check: Check) -> None:
        params = check.params
        if not isinstance(params, SmtpParams):
            raise ProbeError(f"{check.kind.value} is not an SMTP check")
        helo = params.helo_name
        if not helo or any(c in helo for c in "\r\n\0"):
            raise ProbeError(f"SMTP_CHECK helo_name {helo!r} is empty or has a line break")
        self._helo = f"HELO {helo}\r\n".encode()
        self._target = check.target
        self._timeout_s = check.connect_timeout_s

    async def run(self, *, loop_time: Callable[[], float] | None = None) -> ProbeResult:
        """Talk to the server once; latency is measured with ``loop_time`` (default
        `time.monotonic`), the deadline with the loop's clock."""
        loop = asyncio.get_running_loop()
        clock = loop_time or time.monotonic
        start = clock()
        failure, detail = await self._talk(loop)
        if failure is None:
            return ProbeResult.up(clock() - start)
        return ProbeResult.down(failure, clock() - start, detail)

    async def _talk(self, loop: asyncio.AbstractEventLoop) -> tuple[Failure | None, str]:
        try:
            address = socket_address(self._target)
            sock = open_socket(self._target, socket.SOCK_STREAM)
        except OSError as exc:
            return Failure.LOCAL, f"cannot set up the socket: {exc}"
        phase = "connect"
        try:
            async with asyncio.timeout(self._timeout_s):
                await loop.sock_connect(sock, address)
                talk = _Conversation(loop, sock)
                phase = "greeting"
                code, line = await talk.reply()
                if code != 220:
                    return Failure.PROTOCOL, f"greeting: expected 220, got {code} {_show(line)}"
                phase = "HELO reply"
                await talk.send(self._helo)
                code, line = await talk.reply()
                if code != 250:
                    return Failure.PROTOCOL, f"HELO: expected 250, got {code} {_show(line)}"
                phase = "QUIT reply"
                await talk.send(b"QUIT\r\n")
                await talk.line()
                return None, ""
        except TimeoutError:
            return Failure.TIMEOUT, f"no {phase} within {self._timeout_s:g} s"
        except EOFError:
            return Failure.PROTOCOL, f"connection closed by the server before the {phase}"
        except _Malformed as exc:
            return Failure.PROTOCOL, f"{phase}: {exc}"
        except OSError as exc:
            failure = failure_of_errno(exc.errno)
            if phase != "connect" and failure is Failure.LOCAL:
                failure = Failure.RESET
            text = describe_error(exc)
            return failure, f"{phase}: {text}"
        finally:
            sock.close()


async def probe_smtp(check: Check, *,
                     loop_time: Callable[[], float] | None = None) -> ProbeResult:
    """Run an SMTP_CHECK once; set-up problems come back as LOCAL failures.

    Prefer one `SmtpProbe` per check where a check runs repeatedly.
    """
    try:
        probe = SmtpProbe(check)
    except ProbeError as exc:
        return ProbeResult.down(Failure.LOCAL, 0.0, str(exc))
    return await probe.run(loop_time=loop_time)
