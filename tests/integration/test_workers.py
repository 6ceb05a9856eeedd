"""The probe engine in worker processes (`ShardedEngine`), on real loopback servers.

Listeners on 127.0.0.1-127.0.0.4 (so both workers get probes) and closed ports; two
workers run the TCP checks and every probe must report through `on_result` with the
right verdict; reloads add and remove probes on both workers; a retry comes early;
`stats()` merges both workers; a worker killed with SIGKILL (or stuck: SIGSTOP) is
replaced and its probes report again; too many deaths stop the engine through
`on_fatal`; `close()` and a killed daemon leave no worker behind; and a daemon `Runtime`
(memory backend) runs end to end on `ShardedEngine`. Also the wire: channel framing,
result batches, the shard rule.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_daemon import UpIfLastOk  # the daemon tests' health double

from fastcheck.config.loader import load_file, load_text
from fastcheck.daemon.app import Options, Runtime
from fastcheck.daemon.engine import LocalEngine, implementations
from fastcheck.daemon.workers import ShardedEngine, engine_factory, make_engine, worker_count
from fastcheck.daemon.workerwire import (
    Channel,
    ResultBuffer,
    Shard,
    decode_results,
    frame_of,
    shard_of,
    split_plan,
)
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.model import Config
from fastcheck.probeplan import ProbePlan, diff_plans, plan_probes
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.runner import checks_by_probe

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")

# ------------------------------------------------------------------------ helpers


class Servers:
    """Listening sockets (never accepted from: a handful of connects fit the backlog) and
    closed ports, spread over HOSTS."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def listening(self, host: str) -> int:
        sock = socket.socket()
        sock.bind((host, 0))
        sock.listen(512)
        self.sockets.append(sock)
        return sock.getsockname()[1]

    def closed(self, host: str) -> int:
        """A port nobody listens on, below the ephemeral range: a closed port from that
        range may become a connect's own source port, and a loopback connect from a port
        to itself succeeds (TCP simultaneous open)."""
        rng = random.Random()
        for _ in range(200):
            port = rng.randint(20000, 32000)
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            return port
        raise RuntimeError(f"no free port on {host} in 20000-32000")

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def servers() -> Any:
    made = Servers()
    try:
        yield made
    finally:
        made.close()


def config_text(reals: list[tuple[str, int]], delay_loop: float = 0.2) -> str:
    lines = "".join(f"    real_server {h} {p} {{ TCP_CHECK {{ connect_timeout 1 }} }}\n"
                    for h, p in reals)
    return ("global_defs {\n    router_id test\n}\n"
            f"virtual_server 10.0.0.1 80 {{\n    lb_algo rr\n    lb_kind NAT\n"
            f"    protocol TCP\n    delay_loop {delay_loop}\n    warmup 0\n{lines}}}\n")


def load(reals: list[tuple[str, int]], delay_loop: float = 0.2) -> tuple[Config, ProbePlan]:
    config, _ = load_text(config_text(reals, delay_loop), filename="workers.conf")
    return config, plan_probes(config)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


class Recorder:
    def __init__(self) -> None:
        self.results: dict[int, list[tuple[float, ProbeResult]]] = defaultdict(list)
        self.engine: Any = None

    def __call__(self, probe_id: int, result: ProbeResult) -> None:
        self.results[probe_id].append((time.monotonic(), result))

    def verdicts(self, since: float = 0.0) -> dict[int, set[tuple[bool, Failure | None]]]:
        return {pid: {(r.ok, r.failure) for t, r in got if t >= since}
                for pid, got in self.results.items()}


def farm(servers: Servers, up_per_host: int = 3) -> tuple[list[tuple[str, int]], set[int]]:
    """Real servers on every host (some closed); returns them and the closed ports."""
    reals, closed = [], set()
    for host in HOSTS:
        reals += [(host, servers.listening(host)) for _ in range(up_per_host)]
        port = servers.closed(host)
        closed.add(port)
        reals.append((host, port))
    return reals, closed


def expected(plan: ProbePlan, closed: set[int]) -> dict[int, set[tuple[bool, Failure | None]]]:
    return {pid: {(False, Failure.REFUSED)} if p.key.target.port in closed else {(True, None)}
            for pid, p in plan.probes.items()}


# ------------------------------------------------------------------------ the engine


def test_two_workers_report_every_probe_with_its_verdict(run, servers):
    reals, closed = farm(servers)
    config, plan = load(reals)
    shares, _ = split_plan(plan, 2)
    assert all(len(share) > 0 for share in shares), "both workers must get probes"
    record = Recorder()

    async def scenario() -> None:
        engine = ShardedEngine(asyncio.get_running_loop(), plan, config, record, workers=2,
                               bootstrap_s=0.0)
        try:
            engine.start(plan)
            await until(lambda: all(len(record.results[pid]) >= 3 for pid in plan.probes))
            await until(lambda: all(s is not None for s in engine.worker_stats()))
            assert len(engine.pids) == 2 and os.getpid() not in engine.pids
            assert all(engine.accept(pid) for pid in plan.probes)
            assert not engine.accept(max(plan.probes) + 1)
        finally:
            engine.close()

    run(scenario())
    assert set(record.results) == set(plan.probes)
    assert record.verdicts() == expected(plan, closed)


def test_reload_adds_and_removes_probes_on_both_workers(run, servers):
    reals, closed = farm(servers)
    config, plan = load(reals)
    # The new configuration drops the first real server of every host and adds one.
    gone = [reals[i] for i in range(0, len(reals), 4)]
    new_reals = [r for r in reals if r not in gone] + [(h, servers.listening(h)) for h in HOSTS]
    new_config, _ = load_text(config_text(new_reals), filename="workers.conf")
    new_plan = plan_probes(new_config, previous=plan)
    changes = diff_plans(plan, new_plan)
    assert len(changes.added) == len(HOSTS) and len(changes.removed) == len(HOSTS)
    _, where = split_plan(new_plan, 2)
    assert {where[p.id] for p in changes.added} == {0, 1}, "additions on both workers"
    record = Recorder()

    async def scenario() -> None:
        engine = ShardedEngine(asyncio.get_running_loop(), plan, config, record, workers=2,
                               bootstrap_s=0.0)
        try:
            engine.start(plan)
            await until(lambda: all(record.results[pid] for pid in plan.probes))
            engine.reload(new_plan, new_config, changes)
            for pid in changes.removed:
                assert not engine.accept(pid)
            switched = time.monotonic()
            await until(lambda: all(
                any(t > switched for t, _ in record.results[p.id]) for p in changes.added))
            await asyncio.sleep(0.5)  # a removed probe's run in flight may still end
            settled = time.monotonic()
            await until(lambda: all(
                sum(t > settled for t, _ in record.results[pid]) >= 2
                for pid in new_plan.probes))
            for pid in changes.removed:
                assert not any(t > settled for t, _ in record.results[pid]), pid
            assert engine.stats().probes == len(new_plan)
        finally:
            engine.close()

    run(scenario())
    verdicts = {pid: v for pid, v in record.verdicts().items() if pid in new_plan.probes}
    assert verdicts == expected(new_plan, closed)


def test_reschedule_moves_the_next_run_earlier(run, servers):
    reals = [(h, servers.listening(h)) for h in HOSTS]
    config, plan = load(reals, delay_loop=60)
    record = Recorder()

    async def scenario() -> None:
        engine = ShardedEngine(asyncio.get_running_loop(), plan, config, record, workers=2,
                               bootstrap_s=0.0)
        try:
            engine.start(plan)
            await until(lambda: all(record.results[pid] for pid in plan.probes))
            for pid in plan.probes:
                assert engine.accept(pid)
                engine.reschedule(pid, 0.1)
            # without the retry the next runs would be a minute away
            await until(lambda: all(len(record.results[pid]) >= 2 for pid in plan.probes))
        finally:
            engine.close()

    run(scenario())


def test_stats_merge_both_workers(run, servers):
    reals, _ = farm(servers)
    config, plan = load(reals)
    record = Recorder()

    async def scenario() -> None:
        engine = ShardedEngine(asyncio.get_running_loop(), plan, config, record, workers=2,
                               bootstrap_s=0.0, stats_interval_s=0.05)
        try:
            engine.start(plan)
            await until(lambda: all(
                s is not None and s.started >= 2 * s.probes for s in engine.worker_stats()))
            each = engine.worker_stats()
            merged = engine.stats()
            assert merged.workers == 2
            assert merged.probes == len(plan)
            assert sum(s.probes for s in each if s) == len(plan)
            assert merged.started == sum(s.started for s in each if s) >= 2 * len(plan)
            assert merged.start_lag.count == sum(s.start_lag.count for s in each if s)
            assert merged.start_lag.count == merged.started
            assert merged.wake_lag.count == sum(s.wake_lag.count for s in each if s) > 0
            # the workers' own choice, reported back: the same rule and environment
            assert merged.implementations == implementations()
        finally:
            engine.close()

    run(scenario())


def test_a_killed_worker_is_restarted_and_its_probes_report_again(run, servers, caplog):
    reals, closed = farm(servers)
    config, plan = load(reals)
    _, where = split_plan(plan, 2)
    record = Recorder()
    fatal: list[str] = []

    async def scenario() -> None:
        engine = ShardedEngine(asyncio.get_running_loop(), plan, config, record, workers=2,
                               bootstrap_s=0.0, on_fatal=fatal.append)
        try:
            engine.start(plan)
            await until(lambda: all(record.results[pid] for pid in plan.probes))
            victim = engine.pids[1]
            os.kill(victim, signal.SIGKILL)
            await until(lambda: engine.restarts == 1)
            assert engine.pids[1] != victim and alive(engine.pids[1])
            assert not alive(victim)
            restarted = time.monotonic()
            await until(lambda: all(
                sum(t > restarted for t, _ in record.results[pid]) >= 2
                for pid in plan.probes))
        finally:
            engine.close()

    with caplog.at_level(logging.ERROR, logger="fastcheck"):
        run(scenario())
    assert any("probe worker 1" in r.getMessage() and "killed by SIGKILL" in r.getMessage()
               for r in caplog.records)
    assert not fatal
    assert record.verdicts() == expected(plan, closed)
    assert {where[pid] for pid in plan.probes} == {0, 1}


def test_a_stuck_worker_is_killed_and_restarted(run, servers, caplog):
    reals = [(h, servers.listening(h)) for h in HOSTS]
    config, plan = load(reals)
    record = Recorder()

    async def scenario() -> None:
        engine = ShardedEngine(asyncio.get_running_loop(), plan, config, record, workers=2,
                               bootstrap_s=0.0, stats_interval_s=0.05, stall_timeout_s=0.5)
        try:
            engine.start(plan)
            await until(lambda: all(record.results[pid] for pid in plan.probes))
            stuck = engine.pids[0]
            before = engine.restarts  # a loaded machine may have restarted one already
            os.kill(stuck, signal.SIGSTOP)
            await until(lambda: engine.restarts > before and engine.pids[0] != stuck)
            assert not alive(stuck)
            restarted = time.monotonic()
            await until(lambda: all(any(t > restarted for t, _ in record.results[pid])
                                    for pid in plan.probes))
        finally:
            engine.close()

    with caplog.at_level(logging.ERROR, logger="fastcheck"):
        run(scenario())
    assert any("probe worker 0" in r.getMessage() and "sent nothing" in r.getMessage()
               for r in caplog.records)


def test_workers_that_keep_dying_stop_the_engine(run, servers, caplog):
    reals = [(h, servers.listening(h)) for h in HOSTS]
    config, plan = load(reals)
    fatal: list[str] = []

    async def scenario() -> None:
        engine = ShardedEngine(asyncio.get_running_loop(), plan, config, Recorder(),
                               workers=2, bootstrap_s=0.0, on_fatal=fatal.append,
                               max_restarts=1)
        try:
            engine.start(plan)
            pids = list(engine.pids)
            os.kill(pids[0], signal.SIGKILL)
            await until(lambda: engine.restarts == 1)
            os.kill(engine.pids[0], signal.SIGKILL)
            await until(lambda: bool(fatal))
            for pid in [*pids, *engine.pids]:
                assert not alive(pid), pid
        finally:
            engine.close()

    with caplog.at_level(logging.CRITICAL, logger="fastcheck"):
        run(scenario())
    assert "probe workers died 2 times" in fatal[0] and "stopping fastcheck" in fatal[0]
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)


def test_close_leaves_no_child_processes(run, servers):
    reals = [(h, servers.listening(h)) for h in HOSTS]
    config, plan = load(reals)
    pids: list[int] = []

    async def scenario() -> None:
        engine = ShardedEngine(asyncio.get_running_loop(), plan, config, Recorder(),
                               workers=2, bootstrap_s=0.0)
        engine.start(plan)
        pids.extend(engine.pids)
        await until(lambda: all(s is not None for s in engine.worker_stats()))
        engine.close()
        engine.close()  # idempotent

    run(scenario())
    assert len(pids) == 2
    for pid in pids:
        assert not alive(pid), pid
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left either


PARENT = r"""
import asyncio, sys
from fastcheck.config.loader import load_text
from fastcheck.probeplan import plan_probes
from fastcheck.daemon.workers import ShardedEngine

async def main():
    config, _ = load_text(sys.stdin.read(), filename="parent.conf")
    plan = plan_probes(config)
    engine = ShardedEngine(asyncio.get_running_loop(), plan, config, lambda *a: None,
                           workers=2, bootstrap_s=0.0)
    engine.start(plan)
    print(*engine.pids, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_workers_die_with_a_killed_daemon(servers):
    reals = [(h, servers.listening(h)) for h in HOSTS]
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.write(config_text(reals))
        parent.stdin.close()
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(alive(pid) for pid in pids), "workers outlived their daemon"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


# ------------------------------------------------------------------------ the daemon


def test_runtime_runs_end_to_end_on_two_workers(run, servers, tmp_path):
    up = [(h, servers.listening(h)) for h in HOSTS]
    down = [(h, servers.closed(h)) for h in HOSTS]
    path = tmp_path / "fc.conf"
    path.write_text(config_text(up + down))
    config, _ = load_file(str(path))
    options = Options(config_path=str(path), dry_run=True, repair_interval_s=0.2,
                      scheduler_bootstrap_s=0.0, data_path=str(tmp_path / "fc.data"),
                      json_path=str(tmp_path / "fc.json"))
    pids: list[int] = []

    def ports(backend: MemoryBackend) -> set[tuple[str, int]]:
        return {(d.address, d.port) for svc in backend.table.values()
                for d in svc.destinations}

    async def scenario() -> None:
        backend = MemoryBackend()
        runtime = Runtime(config, backend, UpIfLastOk, UpIfLastOk.carry, options,
                          engine_factory=engine_factory(2))
        assert isinstance(runtime.engine, ShardedEngine)
        task = asyncio.create_task(runtime.run())
        await until(lambda: ports(backend) == set(up))
        pids.extend(runtime.engine.pids)
        assert runtime.status()["engine"]["workers"] == 2

        # Reload: two live servers leave, a new one joins; the closed ones stay down.
        joined = (HOSTS[1], servers.listening(HOSTS[1]))
        path.write_text(config_text([*up[2:], joined, *down]))
        runtime.request_reload()
        await until(lambda: ports(backend) == {*up[2:], joined})
        assert runtime.counters.reloads == 1

        runtime.request_stop()
        assert await asyncio.wait_for(task, 10) == 0
        assert backend.table == {}

    run(scenario())
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


# ------------------------------------------------------------------------ the rules


def test_make_engine_picks_in_process_or_workers(run, servers):
    reals = [(h, servers.listening(h)) for h in HOSTS]
    config, plan = load(reals)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        for workers in (1, "1", "auto", None):  # auto: a small plan stays in process
            engine = make_engine(loop, plan, config, Recorder(), workers=workers)
            assert isinstance(engine, LocalEngine)
            engine.close()
        engine = make_engine(loop, plan, config, Recorder(), workers=2)
        assert isinstance(engine, ShardedEngine)
        engine.close()

    run(scenario())


def test_worker_count_rule():
    cpus = os.cpu_count() or 1
    assert worker_count(3, 10) == 3
    assert worker_count("auto", 10) == 1
    assert worker_count(None, 100_000) == (cpus if cpus > 1 else 1)
    for bad in (0, -1, "many"):
        with pytest.raises(ValueError, match="workers must be"):
            worker_count(bad, 10)


def test_shards_are_stable_and_keep_a_host_on_one_worker():
    reals = [(h, 1000 + n) for h in HOSTS for n in range(5)]
    _, plan = load(reals)
    shares, where = split_plan(plan, 2)
    for pid, probe in plan.probes.items():
        assert where[pid] == shard_of(probe.host, 2)
        assert pid in shares[where[pid]]
    assert sorted(pid for share in shares for pid in share) == sorted(plan.probes)
    assert shard_of("127.0.0.1", 2) == shard_of("127.0.0.1", 2)


def test_a_shard_gives_the_runner_its_checks_and_follows_reloads():
    reals = [(h, 1000 + n) for h in HOSTS for n in range(5)]
    config, plan = load(reals)
    checks = checks_by_probe(plan, config)
    mine = list(plan.probes)[::2]
    shard = Shard(frame_of(config), [(i, plan.probes[i].interval_s, plan.probes[i].warmup_s,
                                      checks[i]) for i in mine])
    assert checks_by_probe(shard.plan, shard.config) == {i: checks[i] for i in mine}
    assert shard.config.global_defs == config.global_defs

    new_config, _ = load_text(config_text([*reals[1:], ("127.0.0.9", 2000)], delay_loop=0.5),
                              filename="workers.conf")
    new_plan = plan_probes(new_config, previous=plan)
    new_checks = checks_by_probe(new_plan, new_config)
    changes = diff_plans(plan, new_plan)
    added = list(changes.added)
    diff = shard.apply(frame_of(new_config),
                       [(p.id, p.interval_s, p.warmup_s, new_checks[p.id]) for p in added],
                       changes.removed, [(p.id, p.interval_s) for p in changes.retimed])
    assert diff.removed == tuple(i for i in changes.removed if i in mine)
    assert {p.id for p in diff.retimed} == {p.id for p in changes.retimed if p.id in mine}
    assert all(p.interval_s == 0.5 for p in shard.plan.probes.values())
    assert set(shard.plan.probes) == {*(i for i in mine if i in new_plan.probes),
                                      *(p.id for p in added)}
    # kept probes keep their Check objects (so prepared probes survive): what a probe
    # runs by is its key, which is the same
    assert {i: c.probe_key for i, c in checks_by_probe(shard.plan, shard.config).items()} \
        == {i: new_checks[i].probe_key for i in shard.plan.probes}


def test_result_batches_round_trip():
    buffer = ResultBuffer()
    sent = [(1, ProbeResult.up(0.002)), (2, ProbeResult.up(0.002)),
            (3, ProbeResult.down(Failure.REFUSED, 0.001, "connect: refused")),
            (4, ProbeResult.up(0.5, weight=3)), (5, ProbeResult.up(0.1, weight_offset=-2))]
    for pid, result in sent:
        buffer.add(pid, result)
    assert buffer.count == 5
    got = {pid: result for ids, result in decode_results(buffer.take()) for pid in ids}
    assert got == dict(sent)
    assert buffer.count == 0 and not list(decode_results(buffer.take()))


def test_channel_carries_large_and_many_messages(run):
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        got: list[Any] = []
        hung_up = asyncio.Event()
        a = Channel(loop, left, lambda m: None, lambda: None)
        b = Channel(loop, right, got.append, hung_up.set)
        big = ("big", bytes(range(256)) * 40_000)  # ~10 MB: many writer wake-ups
        a.send(big)
        for n in range(1000):
            a.send(("n", n))
        await until(lambda: len(got) == 1001)
        assert got[0] == big and [m[1] for m in got[1:]] == list(range(1000))
        a.close()
        await asyncio.wait_for(hung_up.wait(), 5)
        assert b.closed

    run(scenario())
