"""The daemon end to end on loopback listeners, with a stand-in health layer.

`UpIfLastOk` is a test double for health/: a real server is up iff its last probe result
was ok (up before any result). In-process tests drive a `Runtime` on a MemoryBackend
under both loops; the subprocess test runs `fastcheck run --dry-run` for real (uvloop,
signals, pid file) and reads the table back through SIGUSR1 dumps.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemonproc import DryRun, free_port, listener, table

from fastcheck.config.loader import load_file
from fastcheck.daemon.app import Options, Runtime, local_engine
from fastcheck.diff import ConfigDiff
from fastcheck.health.events import ProbeRescheduled
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.ops import ServiceOp, Verb
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import (
    DestinationKey,
    Service,
    ServiceKey,
    ServiceSettings,
    Table,
    desired_table,
)
from fastcheck.model import Config, Family, Protocol, RsKey
from fastcheck.probeplan import ProbePlan
from fastcheck.probes.result import ProbeResult

# ------------------------------------------------------------------------ the double


class UpIfLastOk:
    def __init__(self, config: Config, plan: ProbePlan, up: dict[RsKey, bool] | None = None):
        self.config, self.plan = config, plan
        self.up = up or {}

    @classmethod
    def carry(cls, old: UpIfLastOk, config: Config, plan: ProbePlan,
              config_diff: ConfigDiff) -> UpIfLastOk:
        kept = set(config_diff.rs_kept)
        return cls(config, plan, {rs: ok for rs, ok in old.up.items() if rs in kept})

    def on_result(self, now: float, probe_id: int, result: ProbeResult) -> list[Any]:
        events: list[Any] = []
        for owner in self.plan.probes[probe_id].owners:
            if self.up.get(owner.rs, True) != result.ok:
                events.append(f"real server {owner.rs} {'up' if result.ok else 'down'}")
            self.up[owner.rs] = result.ok
        if not result.ok:
            events.append(ProbeRescheduled(probe_id, 0.05))
        return events

    def live_table(self) -> Table:
        table = desired_table(self.config)
        for service in table.values():
            for dest in list(service.destinations):
                assert service.owner is not None
                if not self.up.get(RsKey(service.owner, dest.address, dest.port), True):
                    del service.destinations[dest]
        return table

    def snapshot(self) -> dict[str, Any]:
        return {"up": {f"{rs.address}:{rs.port}": ok for rs, ok in self.up.items()}}

    def changed_services(self) -> set[ServiceKey]:
        return set(desired_table(self.config))  # all of them: simple, not cheap

    def on_tick(self, now: float) -> list[Any]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def startup_events(self) -> list[Any]:
        return []

    def settle(self) -> list[Any]:
        return []

    def shutdown(self, release: bool = True) -> list[Any]:
        return []


# ------------------------------------------------------------------------ helpers


def write_config(path: Path, vips: dict[str, list[int]]) -> None:
    blocks = []
    for vip, ports in vips.items():
        reals = "\n".join(f"    real_server 127.0.0.1 {p} {{ TCP_CHECK {{ connect_timeout 1 }} }}"
                          for p in ports)
        blocks.append(f"virtual_server {vip} 80 {{\n    lb_algo rr\n    lb_kind NAT\n"
                      f"    protocol TCP\n    delay_loop 0.2\n{reals}\n}}\n")
    path.write_text("global_defs {\n    router_id test\n}\n" + "".join(blocks))


def ports_of(table: Table) -> dict[str, set[int]]:
    return {key.address or "": {d.port for d in svc.destinations} for key, svc in table.items()}


async def until(predicate: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


FOREIGN = ServiceKey(Family.INET, Protocol.TCP, "10.9.9.9", 80, 0)


def options(tmp_path: Path, config: Path, **overrides: Any) -> Options:
    base: dict[str, Any] = dict(
        config_path=str(config), dry_run=True, repair_interval_s=0.2,
        scheduler_bootstrap_s=0.0, data_path=str(tmp_path / "fc.data"),
        json_path=str(tmp_path / "fc.json"))
    base.update(overrides)
    return Options(**base)


# ------------------------------------------------------------------------ in process


def test_runtime_converges_repairs_reloads_dumps_and_releases(run, tmp_path):
    a, port_a = listener()
    b, port_b = listener()
    c, port_c = listener()
    dead = free_port()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a, port_b, dead], "10.0.0.2": [port_a]})
    config, _ = load_file(str(path))

    async def scenario() -> None:
        backend = MemoryBackend()
        backend.table[FOREIGN] = Service(ServiceSettings())  # not ours: never touched
        # Already in the kernel: adopted, not re-added.
        backend.table[ServiceKey(Family.INET, Protocol.TCP, "10.0.0.2", 80, 0)] = Service(
            desired_table(config)[ServiceKey(Family.INET, Protocol.TCP, "10.0.0.2", 80, 0)]
            .settings)
        runtime = Runtime(config, backend, UpIfLastOk, UpIfLastOk.carry, options(tmp_path, path))
        task = asyncio.create_task(runtime.run())
        await until(lambda: ports_of(backend.table) == {
            "10.0.0.1": {port_a, port_b}, "10.0.0.2": {port_a}, "10.9.9.9": set()})
        assert not any(isinstance(op, ServiceOp) and op.verb is Verb.ADD
                       and op.service.address == "10.0.0.2" for op in backend.applied)

        b.close()  # its server leaves
        await until(lambda: ports_of(backend.table)["10.0.0.1"] == {port_a})

        # Drift: someone deletes our destination behind our back; repair puts it back.
        del backend.table[ServiceKey(Family.INET, Protocol.TCP, "10.0.0.2", 80, 0)] \
            .destinations[DestinationKey("127.0.0.1", port_a)]
        await until(lambda: runtime.counters.repaired_ops >= 1)
        await until(lambda: ports_of(backend.table)["10.0.0.2"] == {port_a})

        # Reload: 10.0.0.2 vanishes, port_c joins 10.0.0.1.
        write_config(path, {"10.0.0.1": [port_a, port_c, dead]})
        runtime.request_reload()
        await until(lambda: ports_of(backend.table) == {
            "10.0.0.1": {port_a, port_c}, "10.9.9.9": set()})
        assert runtime.counters.reloads == 1

        # An invalid file on reload: logged, nothing changes.
        path.write_text("virtual_server 10.0.0.1 80 {\n    lb_algo nosuch\n")
        runtime.request_reload()
        await until(lambda: runtime.counters.reload_failures == 1)
        assert runtime.config.virtual_servers[0].real_servers[1].port == port_c
        await asyncio.sleep(0.3)  # a few probe rounds later it still holds
        assert ports_of(backend.table)["10.0.0.1"] == {port_a, port_c}

        runtime.request_dump()
        await until(lambda: (tmp_path / "fc.json").exists())
        document = json.loads((tmp_path / "fc.json").read_text())
        assert document["health"]["up"][f"127.0.0.1:{dead}"] is False
        assert {s["address"] for s in document["ipvs"]} == {"10.0.0.1"}
        assert "10.0.0.1:80" in (tmp_path / "fc.data").read_text()

        runtime.request_stop()
        assert await asyncio.wait_for(task, 5) == 0
        assert set(backend.table) == {FOREIGN}  # ours released, the foreign one kept

    try:
        run(scenario())
    finally:
        for sock in (a, b, c):
            sock.close()


def test_reload_stops_with_status_2_when_removals_keep_failing(run, tmp_path, caplog):
    a, port_a = listener()
    b, port_b = listener()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a, port_b]})
    config, _ = load_file(str(path))

    async def scenario() -> None:
        backend = MemoryBackend()
        runtime = Runtime(config, backend, UpIfLastOk, UpIfLastOk.carry,
                          options(tmp_path, path, reload_attempts=3))
        task = asyncio.create_task(runtime.run())
        await until(lambda: ports_of(backend.table) == {"10.0.0.1": {port_a, port_b}})
        backend.fail(lambda op: op.verb is Verb.DELETE and hasattr(op, "destination"),
                     errno.EBUSY)
        write_config(path, {"10.0.0.1": [port_a]})
        runtime.request_reload()
        assert await asyncio.wait_for(task, 8) == 2
        # Stopping still released what it could: the service itself.
        assert backend.table == {}

    try:
        with caplog.at_level("INFO", logger="fastcheck"):
            run(scenario())
    finally:
        a.close()
        b.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("attempt" in m and "/3" in m for m in messages) >= 3
    assert any("failed 3 attempt(s); stopping fastcheck (exit status 2)" in m
               for m in messages)


def test_results_go_on_while_removals_are_retried(run, tmp_path, caplog):
    """The users' patch: while vanished entries are retried, surviving services follow
    their probes; new services wait for the removals; each failed attempt logs the patch's
    own line."""
    a, port_a = listener()
    b, port_b = listener()
    c, port_c = listener()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a, port_b], "10.0.0.2": [port_c]})
    config, _ = load_file(str(path))
    stuck = {"yes": True}

    async def scenario() -> None:
        backend = MemoryBackend()
        runtime = Runtime(config, backend, UpIfLastOk, UpIfLastOk.carry,
                          options(tmp_path, path, reload_attempts=50))
        task = asyncio.create_task(runtime.run())
        await until(lambda: ports_of(backend.table) == {"10.0.0.1": {port_a, port_b},
                                                        "10.0.0.2": {port_c}})
        backend.fail(lambda op: op.verb is Verb.DELETE and getattr(op, "destination", None)
                     is not None and op.destination.port == port_b and stuck["yes"],
                     errno.EBUSY)
        write_config(path, {"10.0.0.1": [port_a], "10.0.0.2": [port_c], "10.0.0.3": [port_a]})
        runtime.request_reload()
        await until(lambda: "have tried 2 times" in caplog.text)
        c.close()  # a surviving server dies while the removal is retried
        await until(lambda: ports_of(backend.table).get("10.0.0.2") == set())
        assert "10.0.0.3" not in ports_of(backend.table)  # new services wait
        assert port_b in ports_of(backend.table)["10.0.0.1"]  # still being retried
        stuck["yes"] = False
        await until(lambda: ports_of(backend.table) == {"10.0.0.1": {port_a}, "10.0.0.2": set(),
                                                        "10.0.0.3": {port_a}})
        runtime.request_stop()
        assert await asyncio.wait_for(task, 8) == 0

    try:
        with caplog.at_level("INFO", logger="fastcheck"):
            run(scenario())
    finally:
        a.close()
        b.close()
        c.close()
    assert "clear diff services error, have tried 1 times" in caplog.text


def test_lvs_flush_on_stop_all_flushes_everything(run, tmp_path):
    a, port_a = listener()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a]})
    path.write_text(path.read_text().replace("router_id test", "router_id test\n"
                                             "    lvs_flush_on_stop"))
    config, _ = load_file(str(path))
    assert config.global_defs.lvs_flush_on_stop == "all"

    async def scenario() -> None:
        backend = MemoryBackend()
        backend.table[FOREIGN] = Service(ServiceSettings())
        runtime = Runtime(config, backend, UpIfLastOk, UpIfLastOk.carry, options(tmp_path, path))
        task = asyncio.create_task(runtime.run())
        await until(lambda: len(backend.table) == 2)
        runtime.request_stop()
        assert await asyncio.wait_for(task, 5) == 0
        assert backend.table == {}

    try:
        run(scenario())
    finally:
        a.close()


def test_dont_release_leaves_the_table(run, tmp_path):
    a, port_a = listener()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a]})
    config, _ = load_file(str(path))

    async def scenario() -> None:
        backend = MemoryBackend()
        runtime = Runtime(config, backend, UpIfLastOk, UpIfLastOk.carry,
                          options(tmp_path, path, release_on_stop=False))
        task = asyncio.create_task(runtime.run())
        await until(lambda: bool(backend.table))
        runtime.request_stop()
        assert await asyncio.wait_for(task, 5) == 0
        assert ports_of(backend.table) == {"10.0.0.1": {port_a}}

    try:
        run(scenario())
    finally:
        a.close()


# ------------------------------------------------------------------------ subprocess

SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from test_daemon import UpIfLastOk
from fastcheck import cli
args = cli.build_parser().parse_args(sys.argv[1:])
sys.exit(cli.cmd_run(args, sys.stdout, sys.stderr, health=(UpIfLastOk, UpIfLastOk.carry)))
"""


def wait_for_table(daemon: DryRun, want: dict[str, set[int]]) -> None:
    daemon.wait_dump(lambda doc: table(doc) == want, f"became {want}", timeout=10)


def test_fastcheck_run_dry_run_subprocess(tmp_path):
    a, port_a = listener()
    b, port_b = listener()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a, port_b, free_port()]})
    script = tmp_path / "run_daemon.py"
    script.write_text(SCRIPT.format(here=str(Path(__file__).parent)))
    daemon = DryRun(tmp_path, path, "--repair-interval", "0.5",
                    command=[sys.executable, str(script)], dump_timeout_s=5)
    try:
        daemon.wait_log("starting:", timeout=10)  # signal handlers are in place
        wait_for_table(daemon, {"10.0.0.1": {port_a, port_b}})
        assert int(daemon.pid_path.read_text()) == daemon.proc.pid

        # A second daemon on the same pid file refuses to start.
        second = subprocess.run(daemon.argv, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and "already running" in second.stderr

        b.close()
        wait_for_table(daemon, {"10.0.0.1": {port_a}})

        write_config(path, {"10.0.0.1": [port_a], "10.0.0.3": [port_a]})
        reload = subprocess.run([sys.executable, "-m", "fastcheck.cli", "reload",
                                 "--pid-file", str(daemon.pid_path)],
                                capture_output=True, text=True, timeout=30)
        assert reload.returncode == 0, reload.stderr
        wait_for_table(daemon, {"10.0.0.1": {port_a}, "10.0.0.3": {port_a}})

        path.write_text("virtual_server {\n")  # invalid: the old one keeps running
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log("still running the previous configuration", timeout=10)
        wait_for_table(daemon, {"10.0.0.1": {port_a}, "10.0.0.3": {port_a}})
        assert (tmp_path / "fc.data").read_text().startswith("------< fastcheck state dump")

        assert daemon.stop(timeout=10) == 0
    finally:
        daemon.kill()
        a.close()
        b.close()
    log_text = daemon.text()
    assert "[dry-run] Adding Virtual Server [10.0.0.1]:tcp:80" in log_text
    assert "[dry-run] Removing Virtual Server [10.0.0.1]:tcp:80 (stop)" in log_text
    assert not daemon.pid_path.exists()


def test_run_rejects_an_invalid_config_and_touches_nothing(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("virtual_server 10.0.0.1 80 {\n    lb_algo nosuch\n    delay_loop x\n}\n")
    result = subprocess.run([sys.executable, "-m", "fastcheck.cli", "run", "-f", str(path),
                             "--dry-run", "--pid-file", str(tmp_path / "fc.pid")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error(s); configuration not usable" in result.stderr
    assert not (tmp_path / "fc.pid").exists()


def test_reload_without_daemon_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastcheck.cli", "reload", "--pid-file",
                             str(tmp_path / "none.pid")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1 and "is fastcheck running" in result.stderr
    assert os.path.exists(tmp_path) and "Traceback" not in result.stderr


def test_fastcheck_run_with_the_real_health_layer(tmp_path):
    a, port_a = listener()
    dead = free_port()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a, dead]})
    daemon = DryRun(tmp_path, path, dump_timeout_s=5)
    try:
        daemon.wait_log("starting:", timeout=10)
        wait_for_table(daemon, {"10.0.0.1": {port_a}})
        assert "virtual_servers" in json.loads(daemon.json_path.read_text())["health"]
        assert daemon.stop(timeout=10) == 0
    finally:
        daemon.kill()
        a.close()
    text = daemon.text()
    assert f"TCP connection to [127.0.0.1]:tcp:{dead} failed (refused" in text
    assert f"Removing service [127.0.0.1]:tcp:{dead} from VS [10.0.0.1]:tcp:80" in text


def test_start_adopts_a_matching_kernel_table_without_operations(run, tmp_path):
    a, port_a = listener()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a], "10.0.0.2": [port_a]})
    config, _ = load_file(str(path))

    async def scenario() -> None:
        backend = MemoryBackend()
        assert backend.apply(reconcile(desired_table(config), {})) == []
        backend.applied.clear()
        runtime = Runtime(config, backend, UpIfLastOk, UpIfLastOk.carry,
                          options(tmp_path, path, release_on_stop=False))
        task = asyncio.create_task(runtime.run())
        await until(lambda: runtime.counters.results >= 2)
        runtime.request_stop()
        assert await asyncio.wait_for(task, 5) == 0
        assert backend.applied == []  # nothing was sent: the table already agreed
        assert runtime.counters.ops_applied == 0 and runtime.counters.op_failures == 0

    try:
        run(scenario())
    finally:
        a.close()


def test_an_engine_that_cannot_go_on_stops_the_daemon_with_status_1(run, tmp_path, caplog):
    a, port_a = listener()
    path = tmp_path / "fc.conf"
    write_config(path, {"10.0.0.1": [port_a]})
    config, _ = load_file(str(path))

    def failing_engine(loop, plan, cfg, on_result, opts, rng, *, on_fatal):
        engine = local_engine(loop, plan, cfg, on_result, opts, rng)
        loop.call_later(0.2, on_fatal, "probe worker 1 died 6 times in 60 s")
        return engine

    async def scenario() -> None:
        backend = MemoryBackend()
        runtime = Runtime(config, backend, UpIfLastOk, UpIfLastOk.carry,
                          options(tmp_path, path), engine_factory=failing_engine)
        status = await asyncio.wait_for(runtime.run(), 10)
        assert status == 1
        assert backend.table == {}  # released as on any stop

    try:
        with caplog.at_level(logging.CRITICAL, logger="fastcheck"):
            run(scenario())
    finally:
        a.close()
    assert "stopping: probe worker 1 died 6 times in 60 s" in caplog.text
