"""PING_CHECK over real raw sockets: both engine twins, and the asyncio adapter on uvloop
and the stock loop.

Traffic goes only to loopback and to addresses inside network namespaces made here:
``prober`` holds a silent NOARP device (``dummy``, or ``ifb`` where the kernel has no
dummy driver: both drop what they are given) for timeouts, and a veth link to ``router``,
which answers with ICMP destination-unreachable (host: an ``unreachable``/``prohibit``
route; network: no route at all). Code that must run inside the prober namespace runs in
a subprocess under ``ip netns exec`` and prints JSON. Needs root (CAP_NET_RAW, and
CAP_SYS_ADMIN for the namespaces); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import select
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import uvloop

from fastcheck.errors import ProbeError
from fastcheck.model import Target
from fastcheck.probes import ping
from fastcheck.probes.ping import PingProber
from fastcheck.probes.result import Failure, ProbeResult


def _can_open_raw_socket() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _can_open_raw_socket(), reason="needs CAP_NET_RAW (root)")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
Result = tuple[Any, int, float]


def collect(engine: Any, count: int, limit_s: float = 20.0) -> list[Result]:
    """Poll ``engine`` (waiting on its descriptor) until ``count`` results or ``limit_s``."""
    results: list[Result] = []
    end = time.monotonic() + limit_s
    while len(results) < count and time.monotonic() < end:
        select.select([engine.fileno()], [], [], 0.05)
        results += engine.poll(time.monotonic())
    return results


def loopback_v4(count: int, offset: int = 0) -> list[str]:
    """``count`` distinct addresses in 127.0.0.0/8 (every one of them is local)."""
    return [f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}" for n in
            range(offset + 1, offset + 1 + count)]  # fmt: skip


# --- the engine twins over loopback -----------------------------------------------------------


@pytest.mark.parametrize(
    ("ipv6", "addresses"),
    [(False, ["127.0.0.1", "127.0.0.2", "127.1.2.3", "127.255.255.254"]), (True, ["::1"])],
)
def test_loopback_answers(icmp_impl: ModuleType, ipv6: bool, addresses: list[str]) -> None:
    with icmp_impl.IcmpEngine(ipv6=ipv6) as engine:
        now = time.monotonic()
        for token, address in enumerate(addresses):
            engine.submit(token, address, 5.0, now)
        assert engine.in_flight == len(addresses)
        assert engine.next_deadline() == now + 5.0
        results = collect(engine, len(addresses))
        assert sorted(token for token, _, _ in results) == list(range(len(addresses)))
        assert {status for _, status, _ in results} == {0}
        assert all(0.0 <= rtt < 5.0 for _, _, rtt in results)
        assert engine.in_flight == 0
        assert engine.next_deadline() is None
        assert engine.poll(time.monotonic()) == []  # each token exactly once


def test_ten_thousand_in_flight(icmp_impl: ModuleType) -> None:
    addresses = loopback_v4(10_000)
    with icmp_impl.IcmpEngine() as engine:
        now = time.monotonic()
        for token, address in enumerate(addresses):
            engine.submit(token, address, 30.0, now)
        assert engine.in_flight == 10_000
        results = collect(engine, 10_000)
        assert len(results) == 10_000
        assert sorted(token for token, _, _ in results) == list(range(10_000))
        assert {status for _, status, _ in results} == {0}
        assert engine.in_flight == 0


def test_sequence_numbers_wrap(icmp_impl: ModuleType) -> None:
    # 17 batches of 4,000 in flight at once: the last one crosses 65535 -> 0.
    batch = 4_000
    addresses = loopback_v4(batch)
    with icmp_impl.IcmpEngine() as engine:
        for first in range(0, 17 * batch, batch):
            now = time.monotonic()
            for token in range(first, first + batch):
                engine.submit(token, addresses[token - first], 30.0, now)
            results = collect(engine, batch)
            assert sorted(token for token, _, _ in results) == list(range(first, first + batch))
            assert {status for _, status, _ in results} == {0}
        assert engine.in_flight == 0


@pytest.mark.parametrize(("ipv6", "address"), [(False, "127.0.0.1"), (True, "::1")])
def test_two_engines_do_not_steal_replies(icmp_impl: ModuleType, ipv6: bool, address: str) -> None:
    # Both engines number their echoes from 0, so only the identifier tells them apart.
    first = icmp_impl.IcmpEngine(ipv6=ipv6)
    second = icmp_impl.IcmpEngine(ipv6=ipv6)
    while second.ident == first.ident:  # 1 in 65536
        second.close()
        second = icmp_impl.IcmpEngine(ipv6=ipv6)
    with first, second:
        now = time.monotonic()
        for token in range(100):
            first.submit(("first", token), address, 5.0, now)
            second.submit(("second", token), address, 5.0, now)
        got_first = collect(first, 100)
        got_second = collect(second, 100)
        assert sorted(t for t, _, _ in got_first) == [("first", n) for n in range(100)]
        assert sorted(t for t, _, _ in got_second) == [("second", n) for n in range(100)]
        assert first.poll(time.monotonic()) == second.poll(time.monotonic()) == []


def test_both_twins_share_the_socket_rules(icmp_twins: tuple[ModuleType, ModuleType]) -> None:
    # The pure engine ignores the compiled engine's replies and vice versa.
    c, py = icmp_twins
    with c.IcmpEngine() as compiled, py.IcmpEngine() as pure:
        if compiled.ident == pure.ident:
            pytest.skip("the two random identifiers collided (1 in 65536)")
        now = time.monotonic()
        compiled.submit("c", "127.0.0.1", 5.0, now)
        pure.submit("py", "127.0.0.1", 5.0, now)
        assert [t for t, _, _ in collect(compiled, 1)] == ["c"]
        assert [t for t, _, _ in collect(pure, 1)] == ["py"]


# --- namespaces: timeouts, unreachables, forged replies ------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    """The prober namespace's name (its router namespace is torn down with it).

    Fresh for every test: a router rate-limits the ICMP errors its routing sends to one
    source (5 at once, then 1 a second; ``net.ipv4.route.error_burst`` is host-wide),
    per namespace.
    """
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip`")
    prober, router = f"fcp{os.getpid()}p", f"fcp{os.getpid()}r"
    made: list[str] = []
    try:
        for name in (prober, router):
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        try:
            _ip("-n", prober, "link", "add", "d0", "type", "dummy")
        except subprocess.CalledProcessError:  # no dummy driver: ifb drops just as silently
            _ip("-n", prober, "link", "add", "d0", "type", "ifb")
        _ip("-n", prober, "addr", "add", "10.253.0.1/24", "dev", "d0")
        _ip("-n", prober, "addr", "add", "fd00:253::1/64", "dev", "d0", "nodad")
        _ip("-n", prober, "link", "set", "d0", "up")
        _ip("-n", prober, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            "netns", router)  # fmt: skip
        _ip("-n", prober, "addr", "add", "10.253.1.1/24", "dev", "v0")
        _ip("-n", prober, "addr", "add", "fd00:254::1/64", "dev", "v0", "nodad")
        _ip("-n", router, "addr", "add", "10.253.1.2/24", "dev", "v1")
        _ip("-n", router, "addr", "add", "fd00:254::2/64", "dev", "v1", "nodad")
        _ip("-n", prober, "link", "set", "v0", "up")
        _ip("-n", router, "link", "set", "v1", "up")
        _ip("-n", prober, "route", "add", "10.254.0.0/16", "via", "10.253.1.2")
        _ip("-n", prober, "-6", "route", "add", "default", "via", "fd00:254::2")
        subprocess.run(
            ["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1",
             "net.ipv6.conf.all.forwarding=1", "net.ipv4.icmp_ratelimit=0",
             "net.ipv6.icmp.ratelimit=0"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        _ip("-n", router, "route", "add", "unreachable", "10.254.1.0/24")
        _ip("-n", router, "route", "add", "prohibit", "10.254.3.0/24")
        _ip("-n", router, "-6", "route", "add", "prohibit", "fd00:255:1::/64")
        yield prober
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot build the test namespaces: {exc.stderr.strip()}")
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def run_in(namespace: str, script: str, *args: str, timeout: float = 120) -> Any:
    """Run ``script`` (Python) inside ``namespace``; return the JSON it prints last."""
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


PRELUDE = """
import errno, importlib, json, select, socket, struct, sys, time
engines = importlib.import_module("fastcheck._ext.icmp_" + sys.argv[1])

def collect(engine, count, limit_s=20.0):
    results = []
    end = time.monotonic() + limit_s
    while len(results) < count and time.monotonic() < end:
        select.select([engine.fileno()], [], [], 0.05)
        results += engine.poll(time.monotonic())
    return results

def checksum(data):
    total = sum(w for (w,) in struct.iter_unpack("!H", data + b"\\0" * (len(data) % 2)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def icmp(kind, code, rest):
    message = struct.pack("!BBH", kind, code, 0) + rest
    return message[:2] + struct.pack("!H", checksum(message)) + message[4:]

def ipv4(source, destination, body):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, 1, 0,
                       socket.inet_aton(source), socket.inet_aton(destination)) + body

forger = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

def forge(packet):
    # A spoofed packet to our own address comes back through lo to every raw socket.
    forger.sendto(packet, ("10.253.0.1", 0))

def reply(source, ident, seq, payload=b"fastcheck-ping\\0\\0"):
    return ipv4(source, "10.253.0.1", icmp(0, 0, struct.pack("!HH", ident, seq) + payload))
"""

OUTCOMES = (
    PRELUDE
    + """
out = {}
for ipv6, addresses in (
    (False, ["10.253.0.2", "10.253.0.1", "10.254.1.5", "10.254.2.5", "10.254.3.5",
             "10.99.0.1", "10.253.0.255"]),
    (True, ["fd00:253::2", "fd00:253::1", "fd00:255:1::5", "fd00:255:2::5"]),
):
    with engines.IcmpEngine(ipv6=ipv6) as engine:
        now = time.monotonic()
        for address in addresses:
            engine.submit(address, address, 0.5, now)
        for token, status, rtt in collect(engine, len(addresses)):
            assert token not in out, token
            out[token] = [status, rtt]
print(json.dumps(out))
"""
)


def twin_id(twin: ModuleType) -> str:
    return twin.__name__.rpartition("_")[2]


def test_timeouts_and_unreachables(netns: str, icmp_impl: ModuleType) -> None:
    out = run_in(netns, OUTCOMES, twin_id(icmp_impl))
    status = {address: value[0] for address, value in out.items()}
    assert status == {
        "10.253.0.2": errno.ETIMEDOUT,  # silently dropped
        "10.253.0.1": 0,  # our own address in the namespace
        "10.254.1.5": errno.EHOSTUNREACH,  # router: unreachable route -> host unreachable
        "10.254.2.5": errno.ENETUNREACH,  # router: no route -> net unreachable
        "10.254.3.5": errno.EHOSTUNREACH,  # router: prohibit -> administratively prohibited
        "10.99.0.1": errno.ENETUNREACH,  # no route here: sendto fails
        "10.253.0.255": errno.EACCES,  # broadcast without SO_BROADCAST: sendto fails
        "fd00:253::2": errno.ETIMEDOUT,
        "fd00:253::1": 0,
        "fd00:255:1::5": errno.EHOSTUNREACH,  # router: prohibit -> code 1
        "fd00:255:2::5": errno.ENETUNREACH,  # router: no route -> code 0
    }
    for address in ("10.253.0.2", "fd00:253::2"):
        assert 0.499 <= out[address][1] < 2.0  # rtt of a timeout: the time waited
    assert out["10.99.0.1"][1] == 0.0


DEADLINES = (
    PRELUDE
    + """
# Sans-IO in time: deadlines expire by the "now" given, in deadline then submission order.
with engines.IcmpEngine() as engine:
    engine.submit("a", "10.253.0.2", 5.0, 100.0)
    engine.submit("b", "10.253.0.2", 1.0, 100.0)
    engine.submit("c", "10.253.0.2", 1.0, 100.0)
    engine.submit("d", "10.253.0.2", 3.0, 101.0)
    steps = [engine.next_deadline(), engine.poll(100.5), engine.poll(101.0),
             engine.next_deadline(), engine.poll(1000.0), engine.next_deadline(),
             engine.in_flight]
print(json.dumps(steps))
"""
)


def test_deadlines_follow_the_given_clock(netns: str, icmp_impl: ModuleType) -> None:
    steps = run_in(netns, DEADLINES, twin_id(icmp_impl))
    assert steps == [
        101.0,
        [],
        [["b", errno.ETIMEDOUT, 1.0], ["c", errno.ETIMEDOUT, 1.0]],
        104.0,
        [["d", errno.ETIMEDOUT, 899.0], ["a", errno.ETIMEDOUT, 900.0]],
        None,
        0,
    ]


FORGED = (
    PRELUDE
    + """
with engines.IcmpEngine() as engine, engines.IcmpEngine() as other:
    ident = engine.ident
    other_ident = ident ^ 0x5A5A
    engine.submit("x", "10.253.0.2", 60.0, time.monotonic())  # never answered; seq 0
    forge(reply("10.253.0.3", ident, 0))  # wrong source
    forge(reply("10.253.0.2", other_ident, 0))  # someone else's identifier
    forge(reply("10.253.0.2", ident, 1))  # sequence number not in flight
    bad = bytearray(reply("10.253.0.2", ident, 0))
    bad[-1] ^= 0xFF
    forge(bytes(bad))  # bad ICMP checksum
    quoted = ipv4("10.253.0.1", "10.253.0.3", icmp(8, 0, struct.pack("!HH", ident, 0)))
    forge(ipv4("10.253.0.9", "10.253.0.1", icmp(3, 1, bytes(4) + quoted)))  # other target
    forge(reply("10.253.0.2", ident, 0))  # the real thing, at last
    first = collect(engine, 1)
    forge(reply("10.253.0.2", ident, 0))  # a duplicate
    engine.submit("y", "10.253.0.2", 60.0, time.monotonic())  # seq 1
    quoted = ipv4("10.253.0.1", "10.253.0.2", icmp(8, 0, struct.pack("!HH", ident, 1)))
    forge(ipv4("10.253.0.9", "10.253.0.1", icmp(3, 0, bytes(4) + quoted)))
    second = collect(engine, 1)
    extra = engine.poll(time.monotonic()) + other.poll(time.monotonic())
print(json.dumps([[t for t, _, _ in first], [s for _, s, _ in first],
                  [[t, s] for t, s, _ in second], extra]))
"""
)


def test_only_our_replies_count(netns: str, icmp_impl: ModuleType) -> None:
    first_tokens, first_statuses, second, extra = run_in(netns, FORGED, twin_id(icmp_impl))
    assert first_tokens == ["x"]
    assert first_statuses == [0]
    assert second == [["y", errno.ENETUNREACH]]
    assert extra == []


WRAP_HOLD = (
    PRELUDE
    + """
# An echo still in flight keeps its sequence number when the counter wraps past it.
with engines.IcmpEngine() as engine:
    engine.submit("hold", "10.253.0.2", 1000.0, time.monotonic())  # seq 0, never answered
    answered = 0
    token = 0
    for _ in range(17):  # 68,000 echoes: the counter wraps once, past seq 0
        now = time.monotonic()
        tokens = list(range(token, token + 4000))
        token += 4000
        for t in tokens:
            engine.submit(t, "10.253.0.1", 60.0, now)
        got = collect(engine, len(tokens))
        assert sorted(t for t, _, _ in got) == tokens, len(got)
        assert {s for _, s, _ in got} == {0}
        answered += len(got)
    in_flight = engine.in_flight
    forge(reply("10.253.0.2", engine.ident, 0))
    hold = collect(engine, 1)
print(json.dumps([answered, in_flight, [[t, s] for t, s, _ in hold]]))
"""
)


def test_wrap_skips_sequence_numbers_in_flight(netns: str, icmp_impl: ModuleType) -> None:
    answered, in_flight, hold = run_in(netns, WRAP_HOLD, twin_id(icmp_impl))
    assert answered == 68_000
    assert in_flight == 1
    assert hold == [["hold", 0]]


# --- the asyncio adapter -----------------------------------------------------------------------


@pytest.fixture(params=sorted(LOOPS))
def loop_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def engine_impl(icmp_impl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Run the adapter on each twin (it uses the selector's choice otherwise)."""
    monkeypatch.setattr(ping, "IcmpEngine", icmp_impl.IcmpEngine)
    return icmp_impl


def run_prober(
    loop_name: str,
    starts: list[tuple[int, str, float]],
    *,
    max_in_flight: int = 65536,
    limit_s: float = 20.0,
) -> dict[int, ProbeResult]:
    """Start every ``(token, address, timeout)`` on a fresh loop; the results by token."""
    results: dict[int, ProbeResult] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_result(token: int, result: ProbeResult) -> None:
            assert token not in results, f"{token} reported twice"
            results[token] = result
            if len(results) == len(starts) and not done.done():
                done.set_result(None)

        prober = PingProber(loop, on_result, max_in_flight=max_in_flight)
        try:
            for token, address, timeout in starts:
                prober.start(token, Target(address, 0), timeout)
            await asyncio.wait_for(done, limit_s)
            assert prober.in_flight == 0
        finally:
            prober.close()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(main())
    return results


def test_prober_loopback(loop_name: str, engine_impl: ModuleType) -> None:
    starts = [(1, "127.0.0.1", 2.0), (2, "127.9.9.9", 2.0), (3, "::1", 2.0)]
    results = run_prober(loop_name, starts)
    assert sorted(results) == [1, 2, 3]
    for result in results.values():
        assert result.ok and result.failure is None
        assert 0.0 <= result.latency_s < 2.0


def test_prober_many_and_backlog(loop_name: str, engine_impl: ModuleType) -> None:
    # 3,000 starts through engines that hold 100 at a time: the rest wait their turn.
    starts = [(n, address, 5.0) for n, address in enumerate(loopback_v4(3_000))]
    starts += [(10_000 + n, "::1", 5.0) for n in range(300)]
    results = run_prober(loop_name, starts, max_in_flight=100)
    assert sorted(results) == sorted(token for token, _, _ in starts)
    assert all(result.ok for result in results.values())


def test_prober_backlog_refuses_bad_starts_at_once(engine_impl: ModuleType) -> None:
    loop = asyncio.new_event_loop()
    try:
        prober = PingProber(loop, lambda token, result: None, max_in_flight=1)
        prober.start(1, Target("127.0.0.1", 0), 5.0)
        prober.start(2, Target("127.0.0.1", 0), 5.0)  # waits for room
        for address, timeout in (("127.1", 5.0), ("127.0.0.1", math.nan)):
            with pytest.raises(ProbeError, match="PING_CHECK target"):
                prober.start(3, Target(address, 0), timeout)
        assert prober.in_flight == 2
        prober.close()
    finally:
        loop.close()


def test_prober_refuses_bad_targets(engine_impl: ModuleType) -> None:
    loop = asyncio.new_event_loop()
    try:
        prober = PingProber(loop, lambda token, result: None)
        for address in ("localhost", "127.1", "::g", ""):
            with pytest.raises(ProbeError, match="PING_CHECK target"):
                prober.start(1, Target(address, 0), 1.0)
        with pytest.raises(ProbeError, match="PING_CHECK target"):
            prober.start(1, Target("127.0.0.1", 0), -1.0)
        assert prober.in_flight == 0
        prober.close()
        with pytest.raises(ProbeError, match="closed"):
            prober.start(1, Target("127.0.0.1", 0), 1.0)
    finally:
        loop.close()


PROBER_IN_NETNS = """
import asyncio, json, sys
import uvloop
from fastcheck.model import Target
from fastcheck.probes.ping import PingProber

starts = {1: "10.253.0.2", 2: "10.253.0.1", 3: "10.254.1.5", 4: "10.254.2.5",
          5: "10.253.0.255", 6: "fd00:253::2", 7: "fd00:253::1", 8: "fd00:255:1::5"}
results = {}

async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_result(token, result):
        assert token not in results, token
        results[token] = [result.ok, result.failure and result.failure.value,
                          result.latency_s, result.detail]
        if len(results) == len(starts):
            done.set_result(None)

    prober = PingProber(loop, on_result)
    for token, address in starts.items():
        prober.start(token, Target(address, 0), 0.4)
    await asyncio.wait_for(done, 20)
    prober.close()

factory = uvloop.new_event_loop if sys.argv[1] == "uvloop" else asyncio.new_event_loop
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
print(json.dumps(results))
"""


def test_prober_failures(netns: str, loop_name: str) -> None:
    out = {int(token): value for token, value in run_in(netns, PROBER_IN_NETNS, loop_name).items()}
    failure = {token: value[1] for token, value in out.items()}
    assert failure == {
        1: Failure.TIMEOUT.value,
        2: None,
        3: Failure.UNREACHABLE.value,
        4: Failure.UNREACHABLE.value,
        5: Failure.LOCAL.value,
        6: Failure.TIMEOUT.value,
        7: None,
        8: Failure.UNREACHABLE.value,
    }
    assert 0.399 <= out[1][2] < 1.5  # (deadline - start, as floats)
    assert out[3][3] == "host unreachable"
    assert out[4][3] == "network unreachable"
    assert "Permission denied" in out[5][3]


def test_prober_without_cap_net_raw_says_so() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("needs util-linux's setpriv")
    code = textwrap.dedent("""
        import asyncio
        from fastcheck.errors import ProbeError
        from fastcheck.model import Target
        from fastcheck.probes.ping import PingProber
        loop = asyncio.new_event_loop()
        try:
            PingProber(loop, print).start(1, Target("127.0.0.1", 0), 1.0)
        except ProbeError as exc:
            print(exc)
    """)
    result = subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "CAP_NET_RAW" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("status", "failure", "detail"),
    [
        (0, None, ""),
        (errno.ETIMEDOUT, Failure.TIMEOUT, "no ICMP echo reply"),
        (errno.EHOSTUNREACH, Failure.UNREACHABLE, "host unreachable"),
        (errno.ENETUNREACH, Failure.UNREACHABLE, "network unreachable"),
        (errno.ENOBUFS, Failure.LOCAL, os.strerror(errno.ENOBUFS)),
    ],
)
def test_result_for(status: int, failure: Failure | None, detail: str) -> None:
    result = ping.result_for(status, 0.25)
    assert result.ok is (failure is None)
    assert result.failure is failure
    assert result.latency_s == 0.25
    assert detail in result.detail


def test_on_result_errors_do_not_lose_the_batch(loop_name: str, engine_impl: ModuleType) -> None:
    seen: list[int] = []
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))

        def on_result(token: int, result: ProbeResult) -> None:
            seen.append(token)
            if token == 0:
                raise RuntimeError("boom")

        prober = PingProber(loop, on_result)
        for token in range(5):
            prober.start(token, Target("127.0.0.1", 0), 2.0)
        for _ in range(200):
            if len(seen) == 5:
                break
            await asyncio.sleep(0.01)
        prober.close()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(main())
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert [type(e["exception"]) for e in errors] == [RuntimeError]
