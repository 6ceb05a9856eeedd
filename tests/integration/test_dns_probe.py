"""DNS_CHECK probe against a small dnspython UDP responder on loopback, asyncio and uvloop.

The responder runs in a thread; a ``respond(query) -> list[bytes]`` function decides what
datagrams answer each query (none: silence). Every test is bounded by the probe's own
deadline (≤ 2 s).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from fastcheck.model import Check, CheckKind, DnsParams, Target
from fastcheck.probes.dns import DnsProbe, build_query, probe_dns
from fastcheck.probes.result import Failure, ProbeResult

Respond = Callable[[dns.message.Message], list[bytes]]


class DnsServer:
    """A UDP responder in a thread; records every query it parsed."""

    def __init__(self, respond: Respond, family: int = socket.AF_INET) -> None:
        self.respond = respond
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.queries: list[dns.message.Message] = []
        self.errors: list[BaseException] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
                self.queries.append(query)
                for reply in self.respond(query):
                    self.sock.sendto(reply, peer)
            except Exception as exc:
                self.errors.append(exc)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def answer(rcode: dns.rcode.Rcode = dns.rcode.NOERROR, *, records: bool = True,
           truncated: bool = False) -> Respond:
    def respond(query: dns.message.Message) -> list[bytes]:
        reply = dns.message.make_response(query)
        reply.set_rcode(rcode)
        if truncated:
            reply.flags |= dns.flags.TC
        if records and rcode == dns.rcode.NOERROR:
            question = query.question[0]
            if question.rdtype == dns.rdatatype.SOA:
                reply.answer.append(dns.rrset.from_text(
                    question.name, 300, "IN", "SOA",
                    "ns.test. admin.test. 1 7200 3600 1209600 300"))
            elif question.rdtype == dns.rdatatype.A:
                reply.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A",
                                                        "192.0.2.1"))
        return [reply.to_wire()]
    return respond


def silent(query: dns.message.Message) -> list[bytes]:
    return []




def dns_check(port: int, query_type: str = "SOA", name: str = ".", *,
              address: str = "127.0.0.1", timeout_s: float = 2.0, **target: Any) -> Check:
    return Check(kind=CheckKind.DNS, target=Target(address, port, **target),
                 params=DnsParams(query_type, name), delay_loop_s=5.0,
                 connect_timeout_s=timeout_s, retry=3, delay_before_retry_s=5.0,
                 warmup_s=0.0, alpha=False, log_all_failures=False)


def probe(run: Callable[..., Any], check: Check) -> ProbeResult:
    started = time.monotonic()
    result = run(DnsProbe(check).run())
    assert isinstance(result, ProbeResult)
    assert time.monotonic() - started < check.connect_timeout_s + 1.0
    return result


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- tests


def test_good_answer_and_the_query_keepalived_sends(run: Callable[..., Any]) -> None:
    with DnsServer(answer()) as server:
        result = probe(run, dns_check(server.port))
    assert result.ok, result
    assert not server.errors
    (query,) = server.queries
    assert query.flags & dns.flags.RD and not query.flags & dns.flags.QR
    assert query.edns == -1  # no EDNS, as keepalived
    (question,) = query.question
    assert question.name == dns.name.root
    assert question.rdtype == dns.rdatatype.SOA and question.rdclass == dns.rdataclass.IN


def test_named_query(run: Callable[..., Any]) -> None:
    with DnsServer(answer()) as server:
        result = probe(run, dns_check(server.port, "a", "www.example.com"))
    assert result.ok, result
    (question,) = server.queries[0].question
    assert question.name == dns.name.from_text("www.example.com.")
    assert question.rdtype == dns.rdatatype.A


def test_ids_differ_between_runs(run: Callable[..., Any]) -> None:
    with DnsServer(answer()) as server:
        probe_ = DnsProbe(dns_check(server.port))
        for _ in range(4):
            assert run(probe_.run()).ok
    assert len({q.id for q in server.queries}) > 1


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.NXDOMAIN, dns.rcode.REFUSED])
def test_error_rcodes_fail(run: Callable[..., Any], rcode: dns.rcode.Rcode) -> None:
    with DnsServer(answer(rcode)) as server:
        result = probe(run, dns_check(server.port))
    assert result.failure is Failure.PROTOCOL
    assert dns.rcode.to_text(rcode) in result.detail


def test_empty_noerror_and_truncated_answers_pass_as_keepalived(
        run: Callable[..., Any]) -> None:
    with DnsServer(answer(records=False)) as server:
        assert probe(run, dns_check(server.port)).ok
    with DnsServer(answer(truncated=True)) as server:
        assert probe(run, dns_check(server.port)).ok


def test_stray_datagrams_are_ignored(run: Callable[..., Any]) -> None:
    def respond(query: dns.message.Message) -> list[bytes]:
        good = answer()(query)[0]
        other_id = ((query.id + 1) % 65536).to_bytes(2, "big") + good[2:]
        not_response = bytearray(good)
        not_response[2] &= 0x7F  # QR cleared
        return [b"\x00\x01", good[:11], other_id, bytes(not_response), good]

    with DnsServer(respond) as server:
        result = probe(run, dns_check(server.port))
    assert result.ok, result


def test_stray_datagrams_alone_time_out(run: Callable[..., Any]) -> None:
    def respond(query: dns.message.Message) -> list[bytes]:
        good = answer(dns.rcode.SERVFAIL)(query)[0]
        return [((query.id + 1) % 65536).to_bytes(2, "big") + good[2:]]

    with DnsServer(respond) as server:
        result = probe(run, dns_check(server.port, timeout_s=0.5))
    assert result.failure is Failure.TIMEOUT


def test_never_answering_times_out(run: Callable[..., Any]) -> None:
    with DnsServer(silent) as server:
        result = probe(run, dns_check(server.port, timeout_s=0.5))
    assert result.failure is Failure.TIMEOUT
    assert 0.45 < result.latency_s < 1.2


def test_closed_port_is_refused(run: Callable[..., Any]) -> None:
    result = probe(run, dns_check(closed_udp_port()))
    assert result.failure is Failure.REFUSED, result
    assert result.latency_s < 1.0


def test_ipv6(run: Callable[..., Any]) -> None:
    with DnsServer(answer(), family=socket.AF_INET6) as server:
        result = probe(run, dns_check(server.port, "AAAA", "example.com", address="::1"))
    assert result.ok, result


def test_bind_options(run: Callable[..., Any], source_port: int) -> None:
    with DnsServer(answer()) as server:
        result = probe(run, dns_check(server.port, bind_address="127.0.0.1",
                                      bind_port=source_port, bind_interface="lo", fwmark=3))
    assert result.ok, result


def test_build_query_matches_keepalived_layout() -> None:
    wire = build_query("SOA", ".")
    # id 0, flags RD, one question, root name, type SOA (6), class IN (1)
    assert wire == bytes.fromhex("0000 0100 0001 0000 0000 0000 00 0006 0001")
    assert build_query("MX", "example.com.") == build_query("mx", "example.com")


@pytest.mark.parametrize(("query_type", "name"), [("BOGUS", "."), ("A", "a..b"),
                                                   ("A", "x" * 64 + ".com")])
def test_what_can_never_work_is_local(run: Callable[..., Any], query_type: str,
                                      name: str) -> None:
    result = run(probe_dns(dns_check(53, query_type, name)))
    assert result.failure is Failure.LOCAL
