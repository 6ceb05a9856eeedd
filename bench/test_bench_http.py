"""Plain HTTP_GET checks per second and CPU per check over loopback: the coroutine probe
(one task per check) against the batched exchange engine (C and pure twins).

The target farm is a separate process (an epoll server answering a fixed page and closing,
on 127.0.2.1..127.0.2.10 x 200 ports = 2,000 targets), so the server's work is not in the
measured process: CPU is ``getrusage`` user + sys of this process only (loopback
handshakes and packets run in softirq partly on our own syscalls, so some of the server's
kernel work is still in there, equally for every contender). Each round runs every target
five times (10,000 checks), at most 1,024 in flight; each check is an HTTP_GET of
``/health`` with ``status_code 200``, its `HttpProbe` prepared before the round:

- ``coroutine-uvloop``: ``HttpProbe.run()`` as one task per check (the path before);
- ``batch-c-uvloop`` / ``batch-py-uvloop``: ``HttpBatchProber`` on the C / pure engine,
  results as ProbeResult, the verdict from the same ResponseReader;
- ``engine-c``: the bare C ``ExchangeEngine`` read to EOF (the floor under the prober).

The server answers one process's load on one core; on a 2-core machine it competes with
the client for CPU, so checks/s is a lower bound and CPU µs per check is the figure to
compare. Every round is bounded in count and time (60 s).

Figures: ``python -m pytest bench/test_bench_http.py --benchmark-enable -s``. In the
normal suite (benchmarks disabled) each case runs once on 400 checks over 200 targets.
Nothing is asserted about speed, only that every check was up.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from fastcheck.model import Check, CheckKind, HttpParams, Target, UrlSpec
from fastcheck.probes.http import HttpProbe
from fastcheck.probes.httpbatch import HttpBatchProber
from fastcheck.probes.result import ProbeResult

ADDRESSES, PORTS_PER_ADDRESS, REPEAT = 10, 200, 5  # 2,000 targets, 10,000 checks a round
SMALL_ADDRESSES, SMALL_PORTS, SMALL_REPEAT = 2, 100, 2  # disabled: 200 targets, 400 checks
WINDOW = 1024
TIMEOUT_S = 10.0
ROUND_LIMIT_S = 60.0
ROUNDS = 5
FIRST_PORT = 20_000  # below the ephemeral range, as in test_bench_tcp
SERVER_LIFETIME_S = 900  # the farm process exits by itself after this, whatever happens

SERVER = r"""
import json, os, resource, select, socket, sys, time
addresses, ports, first, lifetime = (int(a) for a in sys.argv[1:5])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
page = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"
ep = select.epoll()
listeners, conns, targets = {}, {}, []
for a in range(1, addresses + 1):
    host, port, made = f"127.0.2.{a}", first, 0
    while made < ports and port < 32000:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close(); port += 1; continue
        sock.listen(4096)
        listeners[sock.fileno()] = sock
        ep.register(sock.fileno(), select.EPOLLIN)
        targets.append((host, port)); made += 1; port += 1
ep.register(0, select.EPOLLIN)  # stdin: EOF means stop
print(json.dumps(targets), flush=True)

def answer(conn):
    try:
        data = conn.recv(4096)
    except BlockingIOError:
        return False
    except OSError:
        data = b""
    if data:
        try:
            conn.send(page)
        except OSError:
            pass
    conn.close()
    return True

end = time.monotonic() + lifetime
while time.monotonic() < end:
    for fd, _ in ep.poll(1.0):
        if fd == 0:
            sys.exit(0)
        sock = listeners.get(fd)
        if sock is not None:
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                except OSError:
                    break
                conn.setblocking(False)
                if not answer(conn):
                    conns[conn.fileno()] = conn
                    ep.register(conn.fileno(), select.EPOLLIN)
            continue
        conn = conns.pop(fd, None)
        if conn is not None:
            ep.unregister(fd)
            answer(conn)
"""

Targets = list[tuple[str, int]]


class Farm:
    """The HTTP target server process and its targets."""

    def __init__(self, addresses: int, ports: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(addresses), str(ports), str(FIRST_PORT),
             str(SERVER_LIFETIME_S)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            pytest.skip("the HTTP target server did not start")
        self.targets: Targets = [tuple(t) for t in json.loads(line)]  # type: ignore[misc]
        if len(self.targets) < addresses * ports:
            self.close()
            pytest.skip(f"the target server could bind only {len(self.targets)} ports")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the server exits on EOF
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def farms() -> Iterator[dict[bool, Farm]]:
    """Farms made on demand, keyed by "small" (benchmarks disabled)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * WINDOW + 512
    if soft < needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    made: dict[bool, Farm] = {}
    try:
        yield made
    finally:
        for farm in made.values():
            farm.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def probes_for(benchmark: BenchmarkFixture, farms: dict[bool, Farm]) -> list[HttpProbe]:
    small = benchmark.disabled
    if small not in farms:
        farms[small] = (Farm(SMALL_ADDRESSES, SMALL_PORTS) if small
                        else Farm(ADDRESSES, PORTS_PER_ADDRESS))
    repeat = SMALL_REPEAT if small else REPEAT
    params = HttpParams(urls=(UrlSpec("/health", status_codes=((200, 200),)),))
    probes = [HttpProbe(Check(kind=CheckKind.HTTP, target=Target(host, port), params=params,
                              delay_loop_s=5.0, connect_timeout_s=TIMEOUT_S, retry=1,
                              delay_before_retry_s=1.0, warmup_s=0.0, alpha=False,
                              log_all_failures=False))
              for host, port in farms[small].targets]
    return probes * repeat


def cpu_seconds() -> tuple[float, float]:
    """(user, sys) CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


# --- the contenders: each runs one round and returns how many checks were up --------------


def run_coroutines(probes: list[HttpProbe]) -> int:
    async def one(window: asyncio.Semaphore, probe: HttpProbe) -> bool:
        async with window:
            return (await probe.run()).ok

    async def main() -> int:
        window = asyncio.Semaphore(WINDOW)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(one(window, probe) for probe in probes)), ROUND_LIMIT_S)
        return sum(outcomes)

    return uvloop.run(main())


def run_prober(twin: ModuleType, probes: list[HttpProbe]) -> int:
    up = 0

    async def main() -> None:
        nonlocal up
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        done = 0

        def on_result(token: int, result: ProbeResult) -> None:
            nonlocal done, up
            done += 1
            up += result.ok
            if done == len(probes):
                finished.set()

        prober = HttpBatchProber(loop, on_result, twin.ExchangeEngine(WINDOW))
        try:
            for token, probe in enumerate(probes):
                prober.start(token, probe)
            await asyncio.wait_for(finished.wait(), ROUND_LIMIT_S)
        finally:
            prober.close()

    uvloop.run(main())
    return up


def run_engine(twin: ModuleType, probes: list[HttpProbe]) -> int:
    engine = twin.ExchangeEngine(WINDOW)
    up = done = 0
    try:
        now = time.monotonic()
        for token, probe in enumerate(probes):
            target = probe.target
            engine.submit(token, target.address, target.port, probe.urls[0].request,
                          TIMEOUT_S, now)
        end = now + ROUND_LIMIT_S
        with select.epoll() as waiter:
            waiter.register(engine.fileno(), select.EPOLLIN)
            while done < len(probes) and time.monotonic() < end:
                waiter.poll(0.05)
                for _, err, _, _, data in engine.poll(time.monotonic()):
                    done += 1
                    up += err == 0 and data.startswith(b"HTTP/1.0 200 ")
    finally:
        engine.close()
    return up


# --- measuring ------------------------------------------------------------------------------


def measure(benchmark: BenchmarkFixture, farms: dict[bool, Farm], name: str,
            contender: Callable[[list[HttpProbe]], int]) -> None:
    probes = probes_for(benchmark, farms)
    rates: list[float] = []
    cpu_us: list[float] = []
    user_us: list[float] = []

    def one_round() -> int:
        gc.collect()
        (user0, sys0), wall0 = cpu_seconds(), time.perf_counter()
        up = contender(probes)
        wall = time.perf_counter() - wall0
        user1, sys1 = cpu_seconds()
        rates.append(len(probes) / wall)
        cpu_us.append((user1 - user0 + sys1 - sys0) / len(probes) * 1e6)
        user_us.append((user1 - user0) / len(probes) * 1e6)
        return up

    rounds = 1 if benchmark.disabled else ROUNDS
    up = benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    targets = len(farms[benchmark.disabled].targets)
    benchmark.extra_info.update(
        contender=name, targets=targets, checks_per_round=len(probes), window=WINDOW,
        checks_per_s=[round(r) for r in rates],
        checks_per_s_median=round(statistics.median(rates)),
        cpu_us_per_check=[round(c, 1) for c in cpu_us],
        cpu_us_per_check_median=round(statistics.median(cpu_us), 1),
        checks_per_cpu_s_median=round(1e6 / statistics.median(cpu_us)),
        user_cpu_us_per_check_median=round(statistics.median(user_us), 1),
    )
    print(f"\n{name}: {len(probes)} checks/round over {targets} targets; checks/s median "
          f"{statistics.median(rates):,.0f} (min {min(rates):,.0f}, max {max(rates):,.0f}); "
          f"CPU µs/check median {statistics.median(cpu_us):.1f} (min {min(cpu_us):.1f}, "
          f"max {max(cpu_us):.1f}), of it user {statistics.median(user_us):.1f} = "
          f"{1e6 / statistics.median(cpu_us):,.0f} checks per CPU second")
    assert up == len(probes)


GROUP = "http-get-10000-checks-2000-targets"


@pytest.fixture(scope="module", params=["c", "py"])
def twin(request: pytest.FixtureRequest) -> ModuleType:
    return pytest.importorskip(f"fastcheck._ext.exchange_{request.param}")


@pytest.mark.benchmark(group=GROUP)
def test_coroutine_per_check(benchmark: BenchmarkFixture, farms: dict[bool, Farm]) -> None:
    measure(benchmark, farms, "coroutine-uvloop", run_coroutines)


@pytest.mark.benchmark(group=GROUP)
def test_batch_prober(benchmark: BenchmarkFixture, farms: dict[bool, Farm],
                      twin: ModuleType) -> None:
    name = f"batch-{twin.__name__.rpartition('_')[2]}-uvloop"
    measure(benchmark, farms, name, lambda probes: run_prober(twin, probes))


@pytest.mark.benchmark(group=GROUP)
def test_bare_engine(benchmark: BenchmarkFixture, farms: dict[bool, Farm]) -> None:
    twin = pytest.importorskip("fastcheck._ext.exchange_c")
    measure(benchmark, farms, "engine-c", lambda probes: run_engine(twin, probes))
