"""SMTP_CHECK probe against scripted SMTP servers on loopback, under asyncio and uvloop.

Each server runs in a thread with blocking sockets and plays a script per connection:
``bytes`` are sent, ``Expect(prefix)`` reads one line and records it, a float sleeps,
``RESET`` closes with a RST. Every test is bounded by the probe's own deadline (≤ 2 s).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from fastcheck.model import Check, CheckKind, SmtpParams, Target
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.smtp import SmtpProbe, parse_reply_line, probe_smtp


@dataclass(frozen=True)
class Expect:
    prefix: bytes


RESET = object()
Step = bytes | Expect | float | object


class SmtpServer:
    """A loopback server in a thread; every connection plays ``script``."""

    def __init__(self, *script: Step, family: int = socket.AF_INET) -> None:
        self.script = script
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.sock = socket.create_server((host, 0), family=family)
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.lines: list[bytes] = []
        self.peers: list[Any] = []
        self.errors: list[BaseException] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            conn.settimeout(5)
            for step in self.script:
                if isinstance(step, bytes):
                    conn.sendall(step)
                elif isinstance(step, Expect):
                    line = reader.readline()
                    self.lines.append(line)
                    if not line.startswith(step.prefix):
                        return
                elif isinstance(step, float):
                    time.sleep(step)
                elif step is RESET:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    return
            time.sleep(0.05)
        except OSError as exc:
            self.errors.append(exc)
        finally:
            reader.close()
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


GOOD = (b"220 mail.test ESMTP\r\n", Expect(b"HELO "), b"250 mail.test\r\n",
        Expect(b"QUIT"), b"221 bye\r\n")




def smtp_check(port: int, *, address: str = "127.0.0.1", timeout_s: float = 2.0,
               helo: str = "smtpchecker.keepalived.org", **target: Any) -> Check:
    return Check(kind=CheckKind.SMTP, target=Target(address, port, **target),
                 params=SmtpParams(helo), delay_loop_s=5.0, connect_timeout_s=timeout_s,
                 retry=1, delay_before_retry_s=1.0, warmup_s=0.0, alpha=False,
                 log_all_failures=False)


def probe(run: Callable[..., Any], check: Check) -> ProbeResult:
    started = time.monotonic()
    result = run(SmtpProbe(check).run())
    assert isinstance(result, ProbeResult)
    assert time.monotonic() - started < check.connect_timeout_s + 1.0
    return result


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- tests


def test_good_conversation(run: Callable[..., Any]) -> None:
    with SmtpServer(*GOOD) as server:
        result = probe(run, smtp_check(server.port, helo="checker.example"))
    assert result.ok, result
    assert result.failure is None and result.latency_s > 0
    assert server.lines == [b"HELO checker.example\r\n", b"QUIT\r\n"]


def test_multiline_greeting_and_helo_reply(run: Callable[..., Any]) -> None:
    with SmtpServer(b"220-mail.test ESMTP\r\n220-no UCE\r\n220 ready\r\n", Expect(b"HELO"),
                    b"250-mail.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n", Expect(b"QUIT"),
                    b"221 bye\r\n") as server:
        result = probe(run, smtp_check(server.port))
    assert result.ok, result


def test_greeting_split_across_packets_and_bare_code(run: Callable[..., Any]) -> None:
    with SmtpServer(b"22", 0.05, b"0\r", 0.05, b"\n", Expect(b"HELO"), b"250\n",
                    Expect(b"QUIT"), b"221\r\n") as server:
        result = probe(run, smtp_check(server.port))
    assert result.ok, result


def test_wrong_greeting_code(run: Callable[..., Any]) -> None:
    with SmtpServer(b"554 no service\r\n", Expect(b"QUIT")) as server:
        result = probe(run, smtp_check(server.port))
    assert result.failure is Failure.PROTOCOL
    assert "554" in result.detail and "greeting" in result.detail


def test_multiline_greeting_with_wrong_final_code(run: Callable[..., Any]) -> None:
    with SmtpServer(b"220-almost\r\n421 busy\r\n") as server:
        result = probe(run, smtp_check(server.port))
    assert result.failure is Failure.PROTOCOL and "421" in result.detail


def test_wrong_helo_reply(run: Callable[..., Any]) -> None:
    with SmtpServer(b"220 ok\r\n", Expect(b"HELO"), b"501 bad helo\r\n",
                    Expect(b"QUIT")) as server:
        result = probe(run, smtp_check(server.port))
    assert result.failure is Failure.PROTOCOL
    assert "501" in result.detail and "HELO" in result.detail


@pytest.mark.parametrize("greeting", [b"hello there\r\n", b"2200 ok\r\n", b" 220 ok\r\n",
                                      b"220\tok\r\n"])
def test_malformed_greeting(run: Callable[..., Any], greeting: bytes) -> None:
    with SmtpServer(greeting) as server:
        result = probe(run, smtp_check(server.port))
    assert result.failure is Failure.PROTOCOL, result


def test_slow_greeting_times_out(run: Callable[..., Any]) -> None:
    with SmtpServer(1.5, b"220 late\r\n") as server:
        result = probe(run, smtp_check(server.port, timeout_s=0.4))
    assert result.failure is Failure.TIMEOUT
    assert "greeting" in result.detail
    assert 0.35 < result.latency_s < 1.0


def test_deadline_covers_the_whole_conversation(run: Callable[..., Any]) -> None:
    # Every single step is faster than the timeout; together they are not.
    with SmtpServer(0.3, b"220 ok\r\n", Expect(b"HELO"), 0.3, b"250 ok\r\n",
                    Expect(b"QUIT"), 0.3, b"221 bye\r\n") as server:
        result = probe(run, smtp_check(server.port, timeout_s=0.7))
    assert result.failure is Failure.TIMEOUT
    assert "QUIT" in result.detail


def test_refused(run: Callable[..., Any]) -> None:
    result = probe(run, smtp_check(closed_port()))
    assert result.failure is Failure.REFUSED
    assert result.detail == "connect: Connection refused"


def test_reset_after_helo(run: Callable[..., Any]) -> None:
    with SmtpServer(b"220 ok\r\n", Expect(b"HELO"), RESET) as server:
        result = probe(run, smtp_check(server.port))
    assert result.failure is Failure.RESET, result


def test_closed_before_quit_reply_fails_as_keepalived(run: Callable[..., Any]) -> None:
    with SmtpServer(b"220 ok\r\n", Expect(b"HELO"), b"250 ok\r\n", Expect(b"QUIT")) as server:
        result = probe(run, smtp_check(server.port))
    assert result.failure is Failure.PROTOCOL
    assert "QUIT" in result.detail


def test_any_answer_to_quit_is_accepted(run: Callable[..., Any]) -> None:
    with SmtpServer(b"220 ok\r\n", Expect(b"HELO"), b"250 ok\r\n", Expect(b"QUIT"),
                    b"500 whatever\r\n") as server:
        result = probe(run, smtp_check(server.port))
    assert result.ok, result


def test_endless_reply_line_is_bounded(run: Callable[..., Any]) -> None:
    with SmtpServer(b"220" + b"x" * 20000) as server:
        result = probe(run, smtp_check(server.port))
    assert result.failure is Failure.PROTOCOL and "longer" in result.detail


def test_ipv6(run: Callable[..., Any]) -> None:
    with SmtpServer(*GOOD, family=socket.AF_INET6) as server:
        result = probe(run, smtp_check(server.port, address="::1"))
    assert result.ok, result


def test_bind_address_port_interface_and_fwmark(run: Callable[..., Any],
                                                source_port: int) -> None:
    with SmtpServer(*GOOD) as server:
        result = probe(run, smtp_check(server.port, bind_address="127.0.0.1",
                                       bind_port=source_port, bind_interface="lo",
                                       fwmark=7))
    assert result.ok, result
    assert server.peers[0][1] == source_port


def test_bad_interface_is_local(run: Callable[..., Any]) -> None:
    result = probe(run, smtp_check(closed_port(), bind_interface="nosuchif0"))
    assert result.failure is Failure.LOCAL


def test_bad_helo_name_is_a_local_failure(run: Callable[..., Any]) -> None:
    result = run(probe_smtp(smtp_check(25, helo="a\r\nMAIL FROM:<x>")))
    assert result.failure is Failure.LOCAL and "helo_name" in result.detail


def test_reply_line_parser() -> None:
    assert parse_reply_line(b"220 ok") == (220, True)
    assert parse_reply_line(b"220") == (220, True)
    assert parse_reply_line(b"250-more") == (250, False)
    for bad in (b"", b"22", b"2x0 ok", b"2200", b"220\tok", b"+22 ok"):
        assert parse_reply_line(bad) is None
