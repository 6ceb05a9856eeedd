"""TCP connect checks per second over loopback: C engine, pure-Python twin, naive asyncio.

Side by side in one group, each round 20,000 checks against 10,000 distinct loopback
targets (listeners on 127.0.0.1..127.0.0.50 x 200 ports, each checked twice), at most
4,096 in flight:

- ``c`` / ``py``: ``TcpConnectEngine`` driven directly (epoll on ``fileno()``, ``poll``);
- ``prober-c-uvloop``: the C engine behind ``TcpProber`` on uvloop, results as ProbeResult;
- ``naive-uvloop``: one coroutine per check (``loop.sock_connect`` under ``wait_for``,
  a semaphore for the same window, reset close), the design the engine replaces.

Each case reports in ``extra_info`` the checks/s and the CPU seconds (user + sys of this
process, ``getrusage``; loopback handshakes run in softirq on our own syscalls, so the
server side's kernel work is in there too) per 1,000 checks of every round, with
min/median/max, so the spread of a noisy machine shows, and the user-space share. The
listeners' accept queues are emptied between rounds, outside the measurement. Every
round is bounded in count (20,000) and time (60 s).

Figures: ``python -m pytest bench/test_bench_tcp.py --benchmark-enable -s``. In the normal
suite (benchmarks disabled) each case runs once on 400 checks over 200 targets. Nothing is
asserted about speed, only that every check connected.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import select
import socket
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from fastcheck.model import Target
from fastcheck.probes.result import ProbeResult
from fastcheck.probes.tcp import TcpProber

ADDRESSES, PORTS_PER_ADDRESS, REPEAT = 50, 200, 2  # 10,000 targets, 20,000 checks a round
SMALL_ADDRESSES, SMALL_PORTS = 2, 100  # benchmarks disabled: 200 targets, 400 checks
WINDOW = 4096
TIMEOUT_S = 10.0
ROUND_LIMIT_S = 60.0
ROUNDS = 5
RESET_ON_CLOSE = struct.pack("ii", 1, 0)
# Listener ports below the ephemeral range (32768..60999 by default): listeners there
# would make every connect() search past them for a source port, which real checks of
# remote servers never pay.
FIRST_PORT, LAST_PORT = 20_000, 32_000

Targets = list[tuple[str, int]]


class Farm:
    """Loopback listeners, made on demand and kept for the module; never accepted from
    during a round (each gets at most REPEAT connections, well inside its backlog)."""

    def __init__(self) -> None:
        self.listeners: list[socket.socket] = []
        self.ports: dict[str, list[int]] = {}

    def ensure(self, addresses: int, ports: int) -> Targets:
        """``addresses`` x ``ports`` distinct targets: 127.0.0.1.. with ``ports`` each."""
        hosts = [f"127.0.0.{a}" for a in range(1, addresses + 1)]
        for host in hosts:
            have = self.ports.setdefault(host, [])
            port = have[-1] + 1 if have else FIRST_PORT
            while len(have) < ports and port < LAST_PORT:
                sock = socket.socket()
                sock.setblocking(False)
                try:
                    sock.bind((host, port))
                except OSError:  # taken by someone else: use the next one
                    sock.close()
                    port += 1
                    continue
                sock.listen(16)
                self.listeners.append(sock)
                have.append(port)
                port += 1
            if len(have) < ports:
                pytest.skip(f"could not bind {ports} ports on {host}")
        return [(host, port) for host in hosts for port in self.ports[host][:ports]]

    def drain(self) -> None:
        for sock in self.listeners:
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()

    def close(self) -> None:
        for sock in self.listeners:
            sock.close()


@pytest.fixture(scope="module")
def farm() -> Iterator[Farm]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = ADDRESSES * PORTS_PER_ADDRESS + 2 * WINDOW + 512
    if soft < needed <= hard or (hard == resource.RLIM_INFINITY and soft < needed):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    made = Farm()
    try:
        yield made
    finally:
        made.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def targets_for(benchmark: BenchmarkFixture, farm: Farm) -> Targets:
    if benchmark.disabled:
        return farm.ensure(SMALL_ADDRESSES, SMALL_PORTS)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < ADDRESSES * PORTS_PER_ADDRESS + 2 * WINDOW + 512:
        pytest.skip(f"RLIMIT_NOFILE {soft} is too low for {ADDRESSES * PORTS_PER_ADDRESS} "
                    "listeners plus the window")  # fmt: skip
    return farm.ensure(ADDRESSES, PORTS_PER_ADDRESS)


def cpu_seconds() -> tuple[float, float]:
    """(user, sys) CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# --- the contenders: each runs one round and returns how many checks connected ------------


def run_engine(twin: ModuleType, checks: Targets) -> int:
    engine = twin.TcpConnectEngine(WINDOW)
    connected = done = 0
    try:
        now = time.monotonic()
        for token, (host, port) in enumerate(checks):
            engine.submit(token, host, port, TIMEOUT_S, now)
        end = now + ROUND_LIMIT_S
        with select.epoll() as waiter:
            waiter.register(engine.fileno(), select.EPOLLIN)
            while done < len(checks) and time.monotonic() < end:
                waiter.poll(0.05)
                for _, err, _ in engine.poll(time.monotonic()):
                    done += 1
                    connected += err == 0
    finally:
        engine.close()
    return connected


def run_prober(twin: ModuleType, checks: Targets) -> int:
    connected = 0

    async def main() -> None:
        nonlocal connected
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        done = 0

        def on_result(token: int, result: ProbeResult) -> None:
            nonlocal done, connected
            done += 1
            connected += result.ok
            if done == len(checks):
                finished.set()

        prober = TcpProber(loop, on_result, twin.TcpConnectEngine(WINDOW))
        try:
            for token, (host, port) in enumerate(checks):
                prober.start(token, Target(host, port), TIMEOUT_S)
            await asyncio.wait_for(finished.wait(), ROUND_LIMIT_S)
        finally:
            prober.close()

    uvloop.run(main())
    return connected


def run_naive(checks: Targets) -> int:
    """One coroutine per check, as an asyncio program would write it."""

    async def check(loop: asyncio.AbstractEventLoop, window: asyncio.Semaphore,
                    host: str, port: int) -> bool:  # fmt: skip
        async with window:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (host, port)), TIMEOUT_S)
            except (OSError, TimeoutError):
                return False
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
                return True
            finally:
                sock.close()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        window = asyncio.Semaphore(WINDOW)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(check(loop, window, host, port) for host, port in checks)),
            ROUND_LIMIT_S,
        )
        return sum(outcomes)

    return uvloop.run(main())


# --- measuring ------------------------------------------------------------------------------


def measure(benchmark: BenchmarkFixture, farm: Farm, name: str,
            contender: Callable[[Targets], int]) -> None:  # fmt: skip
    checks = targets_for(benchmark, farm) * REPEAT
    rates: list[float] = []
    cpu_per_1000: list[float] = []
    user_per_1000: list[float] = []

    def setup() -> None:
        farm.drain()  # empty the accept queues left by the previous round
        gc.collect()

    def one_round() -> int:
        (user0, sys0), wall0 = cpu_seconds(), time.perf_counter()
        connected = contender(checks)
        wall = time.perf_counter() - wall0
        user1, sys1 = cpu_seconds()
        rates.append(len(checks) / wall)
        cpu_per_1000.append((user1 - user0 + sys1 - sys0) / len(checks) * 1000)
        user_per_1000.append((user1 - user0) / len(checks) * 1000)
        return connected

    rounds = 1 if benchmark.disabled else ROUNDS
    connected = benchmark.pedantic(one_round, setup=setup, rounds=rounds, iterations=1,
                                   warmup_rounds=0)  # fmt: skip
    farm.drain()
    benchmark.extra_info.update(
        contender=name,
        targets=len(checks) // REPEAT,
        checks_per_round=len(checks),
        window=WINDOW,
        checks_per_s=[round(r) for r in rates],
        checks_per_s_median=round(statistics.median(rates)),
        checks_per_s_min=round(min(rates)),
        checks_per_s_max=round(max(rates)),
        cpu_s_per_1000=[round(c, 4) for c in cpu_per_1000],
        cpu_s_per_1000_median=round(statistics.median(cpu_per_1000), 4),
        cpu_s_per_1000_min=round(min(cpu_per_1000), 4),
        cpu_s_per_1000_max=round(max(cpu_per_1000), 4),
        user_cpu_s_per_1000_median=round(statistics.median(user_per_1000), 4),
    )
    print(f"\n{name}: {len(checks)} checks/round over {len(checks) // REPEAT} targets; "
          f"checks/s median {statistics.median(rates):,.0f} "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f}); CPU s/1000 checks median "
          f"{statistics.median(cpu_per_1000):.4f} "
          f"(min {min(cpu_per_1000):.4f}, max {max(cpu_per_1000):.4f}), of it user "
          f"{statistics.median(user_per_1000):.4f}")  # fmt: skip
    assert connected == len(checks)


GROUP = "tcp-connect-20000-checks-10000-targets"


@pytest.fixture(scope="module", params=["c", "py"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    return pytest.importorskip(f"fastcheck._ext.tcpconnect_{request.param}")


@pytest.mark.benchmark(group=GROUP)
def test_engine(benchmark: BenchmarkFixture, farm: Farm, twin: ModuleType) -> None:
    name = twin.__name__.rpartition("_")[2]
    measure(benchmark, farm, name, lambda checks: run_engine(twin, checks))


@pytest.mark.benchmark(group=GROUP)
def test_prober_on_uvloop(benchmark: BenchmarkFixture, farm: Farm) -> None:
    twin = pytest.importorskip("fastcheck._ext.tcpconnect_c")
    measure(benchmark, farm, "prober-c-uvloop", lambda checks: run_prober(twin, checks))


@pytest.mark.benchmark(group=GROUP)
def test_naive_coroutine_per_check(benchmark: BenchmarkFixture, farm: Farm) -> None:
    measure(benchmark, farm, "naive-uvloop", run_naive)
