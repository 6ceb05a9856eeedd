"""UDP_CHECK probe against UDP servers on loopback (echo, fixed reply, silent, closed port),
under asyncio and uvloop. Every test is bounded by the probe's own deadline (≤ 2 s).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fastcheck.model import Check, CheckKind, Target, UdpParams
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.udp import DEFAULT_PAYLOAD, ReplyPattern, UdpProbe, probe_udp


class UdpServer:
    """A UDP server in a thread: ``reply(datagram)`` → the answer, or None for silence."""

    def __init__(self, reply: Callable[[bytes], bytes | None] = lambda d: d,
                 family: int = socket.AF_INET) -> None:
        self.reply = reply
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.peers: list[Any] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65536)
            except OSError:
                return
            self.received.append(data)
            self.peers.append(peer)
            answer = self.reply(data)
            if answer is not None:
                self.sock.sendto(answer, peer)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fixed(data: bytes) -> Callable[[bytes], bytes]:
    return lambda _: data


def silent(_: bytes) -> None:
    return None




def udp_check(port: int, *, address: str = "127.0.0.1", timeout_s: float = 1.0,
              target: dict[str, Any] | None = None, **params: Any) -> Check:
    return Check(kind=CheckKind.UDP, target=Target(address, port, **(target or {})),
                 params=UdpParams(**params), delay_loop_s=5.0, connect_timeout_s=timeout_s,
                 retry=1, delay_before_retry_s=1.0, warmup_s=0.0, alpha=False,
                 log_all_failures=False)


def probe(run: Callable[..., Any], check: Check) -> ProbeResult:
    started = time.monotonic()
    result = run(UdpProbe(check).run())
    assert isinstance(result, ProbeResult)
    assert time.monotonic() - started < check.connect_timeout_s + 1.0
    return result


def closed_udp_port(family: int = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- no reply needed


def test_default_payload_is_keepalived_filler_and_a_reply_passes_at_once(
        run: Callable[..., Any]) -> None:
    with UdpServer() as server:
        result = probe(run, udp_check(server.port, timeout_s=2.0))
    assert result.ok, result
    assert result.latency_s < 1.0
    assert server.received == [b"keepalived check - keepalived ch"] == [DEFAULT_PAYLOAD]


def test_silence_without_require_reply_is_success_after_the_timeout(
        run: Callable[..., Any]) -> None:
    with UdpServer(silent) as server:
        result = probe(run, udp_check(server.port, timeout_s=0.4, payload=b"\x01\x02"))
    assert result.ok, result
    assert 0.35 < result.latency_s < 1.0
    assert "no ICMP error" in result.detail
    assert server.received == [b"\x01\x02"]


@pytest.mark.parametrize("require_reply", [False, True])
def test_closed_port_is_refused(run: Callable[..., Any], require_reply: bool) -> None:
    result = probe(run, udp_check(closed_udp_port(), timeout_s=2.0,
                                  require_reply=require_reply))
    assert result.failure is Failure.REFUSED, result
    assert result.latency_s < 1.0


def test_closed_port_ipv6_is_refused(run: Callable[..., Any]) -> None:
    result = probe(run, udp_check(closed_udp_port(socket.AF_INET6), address="::1"))
    assert result.failure is Failure.REFUSED, result


# --------------------------------------------------------------------------- require_reply


def test_require_reply_silence_times_out(run: Callable[..., Any]) -> None:
    with UdpServer(silent) as server:
        result = probe(run, udp_check(server.port, timeout_s=0.4, require_reply=True))
    assert result.failure is Failure.TIMEOUT
    assert 0.35 < result.latency_s < 1.0


def test_require_reply_pattern_match(run: Callable[..., Any]) -> None:
    with UdpServer() as server:
        result = probe(run, udp_check(server.port, payload=bytes.fromhex("cafe0102"),
                                      require_reply=True, reply_pattern="cafe0102"))
    assert result.ok, result


def test_require_reply_pattern_mismatch(run: Callable[..., Any]) -> None:
    with UdpServer(fixed(bytes.fromhex("cafe0103"))) as server:
        result = probe(run, udp_check(server.port, require_reply=True,
                                      reply_pattern="cafe0102"))
    assert result.failure is Failure.PROTOCOL
    assert "byte 3" in result.detail


@pytest.mark.parametrize(("pattern", "ok"), [
    ("x102xx", True), ("a1x2ff", False), ("xxxxxx", True), ("x2", False), ("xx02", True),
])
def test_wildcard_nibbles(run: Callable[..., Any], pattern: str, ok: bool) -> None:
    with UdpServer(fixed(bytes.fromhex("a1027f"))) as server:
        result = probe(run, udp_check(server.port, require_reply=True,
                                      reply_pattern=pattern))
    assert result.ok is ok, result


def test_reply_shorter_than_pattern_is_compared_over_its_length(
        run: Callable[..., Any]) -> None:
    with UdpServer(fixed(b"\x01")) as server:
        assert probe(run, udp_check(server.port, require_reply=True,
                                    reply_pattern="0102ff")).ok
    with UdpServer(fixed(b"\x02")) as server:
        assert not probe(run, udp_check(server.port, require_reply=True,
                                        reply_pattern="0102ff")).ok


@pytest.mark.parametrize(("size", "ok"), [(3, False), (4, True), (6, True), (7, False),
                                          (300, False)])
def test_length_bounds_with_a_pattern(run: Callable[..., Any], size: int, ok: bool) -> None:
    with UdpServer(fixed(b"\x01" * size)) as server:
        result = probe(run, udp_check(server.port, require_reply=True, reply_pattern="01",
                                      min_reply_length=4, max_reply_length=6))
    assert result.ok is ok, result
    if not ok:
        assert result.failure is Failure.PROTOCOL and "bytes" in result.detail


def test_require_reply_without_pattern_takes_any_length_as_keepalived(
        run: Callable[..., Any]) -> None:
    with UdpServer(fixed(b"x" * 1000)) as server:
        assert probe(run, udp_check(server.port, require_reply=True)).ok
    with UdpServer(fixed(b"")) as server:
        assert probe(run, udp_check(server.port, require_reply=True,
                                    min_reply_length=5)).ok


def test_empty_reply_with_pattern_and_zero_minimum(run: Callable[..., Any]) -> None:
    with UdpServer(fixed(b"")) as server:
        assert probe(run, udp_check(server.port, require_reply=True, reply_pattern="ff")).ok


def test_ipv6_echo(run: Callable[..., Any]) -> None:
    with UdpServer(family=socket.AF_INET6) as server:
        result = probe(run, udp_check(server.port, address="::1", payload=b"ping",
                                      require_reply=True, reply_pattern="70696e67"))
    assert result.ok, result


def test_bind_options(run: Callable[..., Any]) -> None:
    source_port = closed_udp_port()
    with UdpServer() as server:
        result = probe(run, udp_check(server.port, require_reply=True, target={
            "bind_address": "127.0.0.1", "bind_port": source_port,
            "bind_interface": "lo", "fwmark": 5}))
    assert result.ok, result
    assert server.peers[0][1] == source_port


def test_what_can_never_work_is_local(run: Callable[..., Any]) -> None:
    for params in ({"require_reply": True, "reply_pattern": "0g"},
                   {"require_reply": True, "reply_pattern": "012"},
                   {"min_reply_length": 9, "max_reply_length": 3}):
        result = run(probe_udp(udp_check(9, **params)))
        assert result.failure is Failure.LOCAL, params


def test_reply_pattern() -> None:
    pattern = ReplyPattern("x1 02xx")
    assert pattern.data == b"\x01\x02\x00" and pattern.care == b"\x0f\xff\x00"
    assert len(pattern) == 3
    assert pattern.mismatch(b"\xf1\x02\x99\x00") is None
    assert pattern.mismatch(b"\xf1\x03") == 1
    assert pattern.mismatch(b"") is None
