"""Benchmarks for ICMP echo over one raw socket, compiled (``c``) and pure (``py``) side by side.

One round sends ``ROUND`` echoes to distinct loopback addresses in one burst and polls until
every one is answered, so a round's time covers the whole trip: building and sending the
requests, the kernel answering them, reading and matching the replies. Echoes per second is
``ROUND / round time`` (also stored as ``extra_info["echoes_per_s"]`` from the mean, with the
min/max rates beside it, since the machine may be shared and noisy).

Figures: ``pytest bench/test_bench_icmp.py --benchmark-enable``: ``ROUNDS`` timed rounds after
one warm-up, so at most ``(ROUNDS + 1) * ROUND`` echoes per case. In the normal suite
(``--benchmark-disable``) each case runs one round as a plain test. Needs CAP_NET_RAW;
compiled cases are skipped, with the reason shown, when ``icmp_c`` is not built.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

ROUND = 5_000
ROUNDS = 20
V4_TARGETS = [f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}" for n in range(1, ROUND + 1)]
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _can_open_raw_socket() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _can_open_raw_socket(), reason="needs CAP_NET_RAW (root)")


@pytest.fixture(scope="module", params=["c", "py"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return pytest.importorskip(f"fastcheck._ext.icmp_{request.param}")


def one_round(engine: Any, targets: list[str]) -> None:
    """Send one echo to each target at once; return when all are answered."""
    now = time.monotonic()
    for token, address in enumerate(targets):
        engine.submit(token, address, 10.0, now)
    answered = 0
    fd = engine.fileno()
    while answered < len(targets):
        for _token, status, _rtt in engine.poll(time.monotonic()):
            assert status == 0
            answered += 1
        if answered < len(targets):
            select.select([fd], [], [], 0.1)


def record_rates(benchmark: BenchmarkFixture) -> None:
    """Echoes per second from the round times, when benchmarks are enabled."""
    benchmark.extra_info["echoes_per_round"] = ROUND
    if benchmark.stats is not None:
        stats = benchmark.stats.stats
        benchmark.extra_info["echoes_per_s"] = round(ROUND / stats.mean)
        benchmark.extra_info["echoes_per_s_best"] = round(ROUND / stats.min)
        benchmark.extra_info["echoes_per_s_worst"] = round(ROUND / stats.max)


@pytest.mark.benchmark(group="ICMP echo over loopback, 5,000 per round")
def test_echo_ipv4(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    with impl.IcmpEngine() as engine:
        benchmark.pedantic(one_round, args=(engine, V4_TARGETS), rounds=ROUNDS, warmup_rounds=1)
        assert engine.in_flight == 0
    record_rates(benchmark)


@pytest.mark.benchmark(group="ICMPv6 echo to ::1, 5,000 per round")
def test_echo_ipv6(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    with impl.IcmpEngine(ipv6=True) as engine:
        benchmark.pedantic(one_round, args=(engine, ["::1"] * ROUND), rounds=ROUNDS,
                           warmup_rounds=1)  # fmt: skip
        assert engine.in_flight == 0
    record_rates(benchmark)


@pytest.mark.benchmark(group="PingProber (selected twin) over loopback, 5,000 per round")
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_prober(benchmark: BenchmarkFixture, loop_name: str) -> None:
    from fastcheck.model import Target
    from fastcheck.probes.ping import PingProber

    targets = [Target(address, 0) for address in V4_TARGETS]
    waiting: list[asyncio.Future[None]] = []
    answered = [0]

    def on_result(token: int, result: Any) -> None:
        assert result.ok, result
        answered[0] += 1
        if answered[0] == ROUND:
            waiting[0].set_result(None)

    async def one_prober_round(prober: PingProber) -> None:
        answered[0] = 0
        waiting[:] = [asyncio.get_running_loop().create_future()]
        for token, target in enumerate(targets):
            prober.start(token, target, 10.0)
        await waiting[0]

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        prober = PingProber(runner.get_loop(), on_result)
        try:
            benchmark.pedantic(lambda: runner.run(one_prober_round(prober)),
                               rounds=ROUNDS, warmup_rounds=1)  # fmt: skip
        finally:
            prober.close()
    record_rates(benchmark)
