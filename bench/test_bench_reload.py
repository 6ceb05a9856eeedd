"""Reload and start-up adoption of the daemon at farm scale: 2,000 VS × 20 RS, memory backend.

Figures: `python -m pytest bench/test_bench_reload.py --benchmark-enable`. In the normal
suite (benchmarks disabled) each case runs once. The synthetic farm's real servers are
172.16.x.y addresses that must never be probed, so the configurations are generated with
their check blocks stripped: every real server is then always up (no checks = up), the
probe plan is empty and the Runtime sends nothing anywhere, yet `Runtime.reload()` runs
end to end: read the file, diff, carry health over, remove with retries, apply the rest.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastcheck.config.loader import load_file
from fastcheck.daemon import gcpolicy
from fastcheck.daemon.app import Options, Runtime
from fastcheck.daemon.reader import ReadLimits, ReadResult, read_config
from fastcheck.daemon.signals import load_health
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import Table, desired_table
from fastcheck.model import Config
from fastcheck.synthetic import farm

VIRTUAL_SERVERS, REAL_SERVERS = 2000, 20
_CHECK = re.compile(r"        (?:TCP_CHECK|HTTP_GET|MISC_CHECK) \{.*?\n        \}\n", re.S)


def unchecked_farm(revision: int) -> str:
    """The synthetic farm without its checks: nothing to probe, every server up."""
    text = _CHECK.sub("", farm(VIRTUAL_SERVERS, REAL_SERVERS, revision=revision))
    assert "_CHECK" not in text and "HTTP_GET" not in text
    return text


class Farm:
    def __init__(self, directory: Path) -> None:
        self.old_text, self.new_text = unchecked_farm(0), unchecked_farm(1)
        self.path = directory / "fastcheck.conf"  # the file the daemon (re)reads
        self.path.write_text(self.old_text)
        self.old: Config = load_file(str(self.path))[0]
        self.old_table: Table = desired_table(self.old)
        new_path = directory / "new.conf"
        new_path.write_text(self.new_text)
        self.new_table: Table = desired_table(load_file(str(new_path))[0])

    def options(self) -> Options:
        return Options(config_path=str(self.path), dry_run=True, repair_interval_s=0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Farm:
    return Farm(tmp_path_factory.mktemp("reload"))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def runtime(synthetic: Farm, backend: MemoryBackend, loop: asyncio.AbstractEventLoop) -> Runtime:
    factory, carry = load_health()
    return Runtime(synthetic.old, backend, factory, carry, synthetic.options(), loop=loop)


@pytest.mark.benchmark(group="daemon-2000x20")
def test_reload_to_converged_table(benchmark, synthetic, loop):
    """Request → converged table between revision 0 and 1 of the farm (file read included)."""
    state: dict[str, object] = {}

    def setup() -> tuple[tuple[()], dict[str, object]]:
        # The previous round's post-reload collection (gcpolicy.after_reload, run by the
        # loop just after reload() returns) happens here, not inside the next timing:
        # bench/test_bench_reload_memory.py reports how long it holds the loop.
        loop.run_until_complete(asyncio.sleep(0.01))
        synthetic.path.write_text(synthetic.old_text)
        backend = MemoryBackend()
        daemon = runtime(synthetic, backend, loop)
        daemon.start()
        assert backend.read() == synthetic.old_table
        synthetic.path.write_text(synthetic.new_text)
        state.update(daemon=daemon, backend=backend)
        return (), {}

    def reload() -> bool:
        return loop.run_until_complete(state["daemon"].reload())  # type: ignore[union-attr]

    assert benchmark.pedantic(reload, setup=setup, rounds=3, iterations=1) is True
    daemon, backend = state["daemon"], state["backend"]
    assert isinstance(daemon, Runtime) and isinstance(backend, MemoryBackend)
    assert backend.read() == synthetic.new_table
    assert daemon.counters.reloads == 1 and daemon.counters.op_failures == 0
    assert reconcile(synthetic.new_table, backend.read()) == []
    loop.run_until_complete(daemon.stop())
    assert backend.read() == {}


@pytest.mark.benchmark(group="daemon-2000x20")
def test_start_adopts_a_matching_table(benchmark, synthetic, loop):
    """Runtime construction + start() over a kernel table that already matches: no ops."""
    backend = MemoryBackend()
    assert backend.apply(reconcile(synthetic.old_table, {})) == []
    backend.applied.clear()
    started: list[Runtime] = []

    def start() -> None:
        daemon = runtime(synthetic, backend, loop)
        daemon.start()
        started.append(daemon)

    benchmark.pedantic(start, rounds=3, iterations=1)
    assert backend.applied == []  # adopted, nothing sent
    assert all(d.counters.ops_applied == 0 for d in started)
    assert started[-1].applied == synthetic.old_table
    for daemon in started:
        daemon.engine.close()


async def _read_in_the_loop(path: str, config_id: str | None, limits: ReadLimits) -> ReadResult:
    """The reload read as it was before the reader process: on the event loop (with the
    collector paused around the load, as the loader used to pause it itself)."""
    with gcpolicy.paused(freeze=True):
        config, diagnostics = load_file(path, config_id=config_id)
    return ReadResult(config, tuple(str(item) for item in diagnostics.items))


def test_reload_read_in_a_child_against_in_the_loop(synthetic, loop, capsys):
    """Side by side in one run: SIGHUP → converged table with the file read in the reader
    process (the default) and on the loop (before), and the longest the loop went without
    running a 1 ms ticker meanwhile (what probes starting on time see)."""
    rounds = 3
    figures: dict[str, tuple[list[float], list[float]]] = {}
    for name, reader in (("reader process", read_config), ("on the loop", _read_in_the_loop)):
        took, stalls = [], []
        for _ in range(rounds):
            synthetic.path.write_text(synthetic.old_text)
            backend = MemoryBackend()
            factory, carry = load_health()
            daemon = Runtime(synthetic.old, backend, factory, carry, synthetic.options(),
                             loop=loop, config_reader=reader)
            daemon.start()
            synthetic.path.write_text(synthetic.new_text)

            async def measure(daemon: Runtime = daemon) -> tuple[float, float]:
                worst, done = 0.0, False

                async def ticker() -> None:
                    nonlocal worst
                    last = time.perf_counter()
                    while not done:
                        await asyncio.sleep(0.001)
                        now = time.perf_counter()
                        worst, last = max(worst, now - last), now

                tick = asyncio.ensure_future(ticker())
                began = time.perf_counter()
                assert await daemon.reload() is True
                took = time.perf_counter() - began
                done = True
                await tick
                return took, worst

            reload_s, stall_s = loop.run_until_complete(measure())
            assert backend.read() == synthetic.new_table
            loop.run_until_complete(daemon.stop())
            took.append(reload_s)
            stalls.append(stall_s)
        figures[name] = (took, stalls)
    with capsys.disabled():
        print(f"\nreload {VIRTUAL_SERVERS} x {REAL_SERVERS}, {rounds} rounds, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name, (took, stalls) in figures.items():
            print(f"  {name:15s} SIGHUP→converged min/median/max "
                  f"{min(took):.2f}/{statistics.median(took):.2f}/{max(took):.2f} s; "
                  f"longest loop stall {min(stalls) * 1000:.0f}/"
                  f"{statistics.median(stalls) * 1000:.0f}/{max(stalls) * 1000:.0f} ms")
