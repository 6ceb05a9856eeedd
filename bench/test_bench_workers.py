"""TCP checks per second of the whole probe engine in one process and in two workers.

20,000 loopback targets (listeners on 127.0.0.1..127.0.0.100 x 200 ports below the
ephemeral range, see bench/test_bench_tcp.py for why), one TCP_CHECK each at a 1 ms
delay_loop — every probe runs again as soon as its last run is over, so the engine is
the bottleneck. `make_engine(workers=1)` (the in-process `LocalEngine`) against
`workers=2` (`ShardedEngine`); results are counted in the daemon process after the
round trip through `on_result` + `accept`, as the runtime would. Each round: 1 s to get
going, then the results of `MEASURE_S` seconds are counted; `ROUNDS` rounds per case.

The listeners live in two farm processes (10,000 each: RLIMIT_NOFILE is 20,000 here and
cannot be raised), which accept nothing during a round (each listener gets a few dozen
connections, well inside its 4,096 backlog, so no check waits on the server side and the
farm takes no CPU from the engine) and empty their accept queues between rounds.

A third case, `lag`, runs 20,000 probes at a 1 s interval in two workers for a few
seconds and reports the merged start-lag and wake-lag p99 from `stats()`.

Figures: ``python -m pytest bench/test_bench_workers.py --benchmark-enable -s``; they
are also in ``extra_info`` (checks/s per round with min/median/max; the speed-up of two
workers over one is printed and stored by the workers=2 case). In the normal suite
(benchmarks disabled) each case runs once on 400 targets for a short round. Nothing is
asserted about speed, only that checks connected.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from fastcheck.config.loader import load_text
from fastcheck.daemon.workers import make_engine
from fastcheck.model import Config
from fastcheck.probeplan import ProbePlan, plan_probes
from fastcheck.probes.result import ProbeResult

ADDRESSES, PORTS = 100, 200  # 20,000 targets
SMALL_ADDRESSES, SMALL_PORTS = 4, 100  # benchmarks disabled
FARMS = 2
FIRST_PORT, LAST_PORT = 20_000, 32_000
WARMUP_S, MEASURE_S, SMALL_MEASURE_S = 1.0, 3.0, 0.5
ROUNDS = 3
LAG_RUN_S = 6.0

FARM_SCRIPT = r"""
import socket, sys
hosts = sys.argv[1].split(",")
ports, first, last = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
listeners, got = [], {}
for host in hosts:
    have = got.setdefault(host, [])
    port = first
    while len(have) < ports and port < last:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            port += 1
            continue
        sock.listen(4096)
        listeners.append(sock)
        have.append(port)
        port += 1
    if len(have) < ports:
        print("short", host, flush=True)
        sys.exit(1)
print("ready " + ";".join(h + "=" + ",".join(map(str, got[h])) for h in hosts), flush=True)
for line in sys.stdin:
    drained = 0
    for sock in listeners:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                break
            conn.close()
            drained += 1
    print("drained", drained, flush=True)
"""


class Farm:
    """Listener processes: `targets` to check, `drain()` between rounds."""

    def __init__(self, addresses: int, ports: int) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self.targets: list[tuple[str, int]] = []
        hosts = [f"127.0.0.{a}" for a in range(1, addresses + 1)]
        per = -(-len(hosts) // FARMS)
        for n in range(FARMS):
            part = hosts[n * per:(n + 1) * per]
            if not part:
                continue
            proc = subprocess.Popen(
                [sys.executable, "-c", FARM_SCRIPT, ",".join(part), str(ports),
                 str(FIRST_PORT), str(LAST_PORT)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.processes.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if not line.startswith("ready "):
                self.close()
                pytest.skip(f"farm could not bind {ports} ports per address: {line!r}")
            for item in line[len("ready "):].split(";"):
                host, _, numbers = item.partition("=")
                self.targets.extend((host, int(p)) for p in numbers.split(","))

    def drain(self) -> int:
        total = 0
        for proc in self.processes:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("drain\n")
            proc.stdin.flush()
        for proc in self.processes:
            assert proc.stdout is not None
            total += int(proc.stdout.readline().split()[1])
        return total

    def close(self) -> None:
        for proc in self.processes:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module", params=["full"])
def farm(request: pytest.FixtureRequest) -> Iterator[Farm]:
    enabled = request.config.getoption("benchmark_enable", False)
    made = Farm(ADDRESSES, PORTS) if enabled else Farm(SMALL_ADDRESSES, SMALL_PORTS)
    try:
        yield made
    finally:
        made.close()


def config_of(targets: list[tuple[str, int]], delay_loop: str,
              warmup: str = "0") -> tuple[Config, ProbePlan]:
    by_host: dict[str, list[int]] = {}
    for host, port in targets:
        by_host.setdefault(host, []).append(port)
    blocks = []
    for n, (host, ports) in enumerate(by_host.items()):
        reals = "".join(f"    real_server {host} {p} {{ TCP_CHECK {{ connect_timeout 2 }} }}\n"
                        for p in ports)
        blocks.append(f"virtual_server 10.1.{n // 250}.{n % 250 + 1} 80 {{\n    lb_algo rr\n"
                      f"    lb_kind NAT\n    protocol TCP\n    delay_loop {delay_loop}\n"
                      f"    warmup {warmup}\n{reals}}}\n")
    config, _ = load_text("".join(blocks), filename="bench-workers.conf")
    return config, plan_probes(config)


def one_round(config: Config, plan: ProbePlan, workers: int, measure_s: float) -> dict[str, Any]:
    """Runs the engine for WARMUP_S + measure_s; results counted in the measured span."""

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        counting = False
        counted = ok = 0
        engine: Any = None

        def on_result(probe_id: int, result: ProbeResult) -> None:
            nonlocal counted, ok
            engine.accept(probe_id)
            if counting:
                counted += 1
                ok += result.ok

        engine = make_engine(loop, plan, config, on_result, workers=workers, bootstrap_s=0.0)
        try:
            engine.start(plan)
            await asyncio.sleep(WARMUP_S)
            pids = list(getattr(engine, "pids", []))
            main0, workers0 = cpu_of_self(), sum(cpu_of(pid) for pid in pids)
            host0 = host_busy_s()
            counting = True
            began = time.perf_counter()
            await asyncio.sleep(measure_s)
            counting = False
            elapsed = time.perf_counter() - began
            main1, workers1 = cpu_of_self(), sum(cpu_of(pid) for pid in pids)
            host1 = host_busy_s()
            stats = engine.stats()
        finally:
            engine.close()
        per_1000 = 1000 / max(counted, 1)
        return {"rate": counted / elapsed, "ok": ok, "counted": counted,
                "lag_p99_s": stats.start_lag.quantile(0.99),
                "wake_lag_p99_s": stats.wake_lag.quantile(0.99), "workers": stats.workers,
                "main_cpu_ms_per_1000": round((main1 - main0) * per_1000 * 1000, 1),
                "worker_cpu_ms_per_1000": round((workers1 - workers0) * per_1000 * 1000, 1),
                "cores_used": round((main1 - main0 + workers1 - workers0) / elapsed, 2),
                "host_cores_busy": round((host1 - host0) / elapsed, 2)}

    return uvloop.run(main())


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy_s() -> float:
    """CPU seconds the whole machine spent busy so far (all processes, from /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cpu_of_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


RATES: dict[int, list[float]] = {}


@pytest.mark.benchmark(group="engine-workers-tcp-20000-targets")
@pytest.mark.parametrize("workers", [1, 2])
def test_checks_per_second(benchmark: BenchmarkFixture, farm: Farm, workers: int) -> None:
    config, plan = config_of(farm.targets, "0.001")
    measure_s = SMALL_MEASURE_S if benchmark.disabled else MEASURE_S
    outcomes: list[dict[str, Any]] = []

    def setup() -> None:
        farm.drain()
        gc.collect()

    def run() -> None:
        outcomes.append(one_round(config, plan, workers, measure_s))

    benchmark.pedantic(run, setup=setup, rounds=1 if benchmark.disabled else ROUNDS,
                       iterations=1, warmup_rounds=0)
    farm.drain()
    rates = [o["rate"] for o in outcomes]
    RATES[workers] = rates
    info: dict[str, Any] = dict(
        workers=workers, targets=len(plan), measure_s=measure_s,
        checks_per_s=[round(r) for r in rates],
        checks_per_s_median=round(statistics.median(rates)),
        checks_per_s_min=round(min(rates)), checks_per_s_max=round(max(rates)),
        main_cpu_ms_per_1000=[o["main_cpu_ms_per_1000"] for o in outcomes],
        worker_cpu_ms_per_1000=[o["worker_cpu_ms_per_1000"] for o in outcomes],
        cores_used=[o["cores_used"] for o in outcomes],
        host_cores_busy=[o["host_cores_busy"] for o in outcomes])
    line = (f"\nworkers={workers}: {len(plan)} targets; checks/s median "
            f"{statistics.median(rates):,.0f} (min {min(rates):,.0f}, max {max(rates):,.0f}); "
            f"CPU ms per 1000 checks: daemon process {info['main_cpu_ms_per_1000']}, "
            f"workers {info['worker_cpu_ms_per_1000']}; CPU cores used {info['cores_used']} "
            f"(the whole machine: {info['host_cores_busy']})")
    if workers == 2 and 1 in RATES:
        speedup = statistics.median(rates) / statistics.median(RATES[1])
        info["speedup_vs_1"] = round(speedup, 2)
        line += f"; speed-up over one worker x{speedup:.2f}"
    benchmark.extra_info.update(info)
    print(line)
    assert all(o["workers"] == workers for o in outcomes)
    assert all(o["counted"] > 0 and o["ok"] == o["counted"] for o in outcomes)


@pytest.mark.benchmark(group="engine-workers-lag-20000-at-1s")
def test_start_lag_at_one_second(benchmark: BenchmarkFixture, farm: Farm) -> None:
    config, plan = config_of(farm.targets, "1", warmup="1")
    run_s = 1.0 if benchmark.disabled else LAG_RUN_S
    outcomes: list[dict[str, Any]] = []

    def run() -> None:
        outcomes.append(one_round(config, plan, 2, run_s))

    benchmark.pedantic(run, setup=farm.drain, rounds=1, iterations=1, warmup_rounds=0)
    farm.drain()
    got = outcomes[0]
    benchmark.extra_info.update(workers=2, targets=len(plan), interval_s=1.0,
                                checks_per_s=round(got["rate"]),
                                start_lag_p99_s=got["lag_p99_s"],
                                wake_lag_p99_s=got["wake_lag_p99_s"],
                                host_cores_busy=got["host_cores_busy"])
    print(f"\nlag: {len(plan)} probes at 1 s in 2 workers: {got['rate']:,.0f} checks/s, "
          f"start lag p99 {got['lag_p99_s'] * 1000:.1f} ms, wake lag p99 "
          f"{got['wake_lag_p99_s'] * 1000:.1f} ms (machine busy: {got['host_cores_busy']} "
          "cores)")
    assert got["counted"] > 0 and got["ok"] == got["counted"]
