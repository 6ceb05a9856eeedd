"""DNS_CHECK probe: one UDP query to the real server, judged by the reply's header.

Owns: the query of one check (built once with dnspython, a fresh random id per run), the
connected UDP socket it goes out on, waiting for the matching reply under one deadline,
and turning rcodes, socket errors and silence into `Failure`s.
Must not: decide health (retry — 3 by default for DNS_CHECK — and delay_before_retry
belong to health/ and the scheduler), keep state between runs, or know keyword spellings.

keepalived behaviour followed (2.2.7, keepalived/check/check_dns.c):
- dns_make_query: a standard query with RD set, one question of the configured type and
  class IN, no EDNS; ``name`` "." (or empty) is the root.
- dns_recv_thread: datagrams that are too short for a header, carry another id, or are
  not responses (QR clear) are ignored and the wait goes on; the first matching response
  decides: rcode NOERROR is success — answer, authority and question sections are not
  looked at, an empty NOERROR answer and a truncated (TC) one are success — any other
  rcode (NXDOMAIN, SERVFAIL, REFUSED …) is a failure.
- the deadline (connect_timeout) covers sending and every wait, as keepalived's sands.
- the socket is connected, so an ICMP port unreachable comes back as ECONNREFUSED on the
  next receive (REFUSED), and bind address/port, interface and fwmark are set as
  core/layer4.c socket_bind_connect sets them. Like keepalived, IP_RECVERR is not set:
  ICMP host/network unreachable (soft errors) end in TIMEOUT.

Differences: a datagram shorter than the 12-byte DNS header is ignored (keepalived ignores
those under 8 bytes — the size of a pointer — and parses 8..11-byte garbage); the name is
read by dnspython, so ``\\.`` and ``\\DDD`` escapes work and a label over 63 octets is
refused when the probe is built (keepalived would send a malformed query).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import time
from collections.abc import Callable

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from fastcheck.errors import ProbeError
from fastcheck.model import Check, DnsParams
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.sockopts import (
    describe_error,
    failure_of_errno,
    open_socket,
    socket_address,
)

__all__ = ["DnsProbe", "build_query", "probe_dns"]

HEADER_BYTES = 12
_RECV_BYTES = 4096
_QR = 0x8000
_HEADER = struct.Struct("!HH")


def build_query(query_type: str, name: str) -> bytes:
    """The wire form of keepalived's query (id 0); raises ProbeError for a bad type or name."""
    try:
        rdtype = dns.rdatatype.from_text(query_type)
    except dns.rdatatype.UnknownRdatatype:
        raise ProbeError(f"DNS_CHECK: unknown query type {query_type!r}") from None
    try:
        qname = dns.name.root if name in ("", ".") else dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ProbeError(f"DNS_CHECK: bad name {name!r}: {exc}") from None
    query = dns.message.make_query(qname, rdtype, dns.rdataclass.IN, use_edns=False)
    query.id = 0
    return query.to_wire()


class DnsProbe:
    """One DNS_CHECK, prepared once (query bytes, destination).

    The constructor raises `ProbeError` for what can never work (unknown type, bad name);
    `run` only ever returns a `ProbeResult`.
    """

    __slots__ = ("_query_tail", "_target", "_timeout_s", "query_type")

    def __init__(self, check: Check) -> None:
        params = check.params
        if not isinstance(params, DnsParams):
            raise ProbeError(f"{check.kind.value} is not a DNS check")
        self.query_type = params.query_type.upper()
        self._query_tail = build_query(self.query_type, params.name)[2:]
        self._target = check.target
        self._timeout_s = check.connect_timeout_s

    async def run(self, *, loop_time: Callable[[], float] | None = None) -> ProbeResult:
        """Ask once; latency is measured with ``loop_time`` (default `time.monotonic`)."""
        loop = asyncio.get_running_loop()
        clock = loop_time or time.monotonic
        start = clock()
        failure, detail = await self._ask(loop)
        if failure is None:
            return ProbeResult.up(clock() - start)
        return ProbeResult.down(failure, clock() - start, detail)

    async def _ask(self, loop: asyncio.AbstractEventLoop) -> tuple[Failure | None, str]:
        query_id = secrets.randbits(16)
        try:
            address = socket_address(self._target)
            sock = open_socket(self._target, socket.SOCK_DGRAM)
        except OSError as exc:
            return Failure.LOCAL, f"cannot set up the socket: {exc}"
        phase = "send"
        try:
            async with asyncio.timeout(self._timeout_s):
                sock.connect(address)
                await loop.sock_sendall(sock, query_id.to_bytes(2, "big") + self._query_tail)
                phase = "receive"
                while True:
                    reply = await loop.sock_recv(sock, _RECV_BYTES)
                    if len(reply) < HEADER_BYTES:
                        continue
                    reply_id, flags = _HEADER.unpack_from(reply)
                    if reply_id != query_id or not flags & _QR:
                        continue
                    rcode = flags & 0x000F
                    if rcode == dns.rcode.NOERROR:
                        return None, ""
                    return (Failure.PROTOCOL,
                            f"{self.query_type} query answered {dns.rcode.to_text(rcode)}")
        except TimeoutError:
            return Failure.TIMEOUT, f"no reply within {self._timeout_s:g} s"
        except OSError as exc:
            text = describe_error(exc)
            return failure_of_errno(exc.errno), f"{phase}: {text}"
        finally:
            sock.close()


async def probe_dns(check: Check, *,
                    loop_time: Callable[[], float] | None = None) -> ProbeResult:
    """Run a DNS_CHECK once; set-up problems come back as LOCAL failures.

    Prefer one `DnsProbe` per check where a check runs repeatedly.
    """
    try:
        probe = DnsProbe(check)
    except ProbeError as exc:
        return ProbeResult.down(Failure.LOCAL, 0.0, str(exc))
    return await probe.run(loop_time=loop_time)
