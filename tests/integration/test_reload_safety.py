"""A reload never takes the farm down: `fastcheck run --dry-run` as a subprocess, SIGHUPed
with hostile new files.

Each case replaces the file with something a reload must refuse, sends SIGHUP and checks
that the daemon stays alive with all its services, keeps probing on schedule while the
bad file is read (start-lag p99 over that window from /metrics, bound `LAG_P99_BOUND_S`),
logs the failure and counts it by reason in /metrics, then takes a valid reload. A last
test sends SIGTERM while a reload is still reading and wants the daemon gone within 2 s.

Faults the loader itself cannot be made to produce come from `tests/fault_hook` (on
PYTHONPATH: a marker line makes the loader raise, spin or eat memory).
In-process tests at the end cover failures after reading: planning (the health carry
raising) must change nothing either.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonproc import free_port, listener, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import UpIfLastOk, write_config  # the daemon tests' helpers

from fastcheck.config.loader import load_file
from fastcheck.daemon.app import Options, Runtime
from fastcheck.ipvs.memory import MemoryBackend

FAULT_HOOK = Path(__file__).resolve().parents[1] / "fault_hook"
LISTENERS = 20          # real servers, one loopback listener each
INTERVAL_S = 0.2        # delay_loop: 100 checks/s in all
LAG_P99_BOUND_S = 0.5   # start-lag p99 while a bad file is read: a loop that stalls for the
#                         parse shows seconds; measured 20-32 ms at load 2-3, steady 8-13 ms
WAIT_S = 30.0


def _farm(ports: list[int], extra_vs: bool = False) -> str:
    half = len(ports) // 2
    blocks = ["global_defs {\n    router_id reload-safety\n}\n"]
    vss = [("10.0.0.1", ports[:half]), ("10.0.0.2", ports[half:])]
    if extra_vs:
        vss.append(("10.0.0.3", ports[:1]))
    for vip, group in vss:
        reals = "".join(f"    real_server 127.0.0.1 {port} {{\n        TCP_CHECK {{\n"
                        "            connect_timeout 1\n        }\n    }\n" for port in group)
        blocks.append(f"virtual_server {vip} 80 {{\n    delay_loop {INTERVAL_S}\n"
                      f"    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n{reals}}}\n")
    return "\n".join(blocks)


class Daemon:
    def __init__(self, tmp: Path, *extra: str) -> None:
        servers = [listener() for _ in range(LISTENERS)]
        self.socks = [sock for sock, _ in servers]
        self.ports = [port for _, port in servers]
        self.conf = tmp / "farm.conf"
        self.conf.write_text(_farm(self.ports))
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(FAULT_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastcheck.cli", "run", "-f", str(self.conf), "--dry-run",
             "--pid-file", str(tmp / "pid"), "--repair-interval", "1",
             "--dump-file", str(tmp / "dump"), "--dump-json", str(tmp / "dump.json"),
             "--status-listen", f"127.0.0.1:{self.port}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout or ()),
                                       daemon=True)
        self.reader.start()

    def output(self) -> str:
        return "".join(self.lines)

    def alive(self) -> None:
        assert self.proc.poll() is None, \
            f"the daemon exited {self.proc.returncode}:\n{self.output()}"

    def get(self, path: str) -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return response.read().decode()

    def status(self) -> dict:
        return json.loads(self.get("/status"))

    def wait(self, predicate, what: str, timeout_s: float = WAIT_S) -> None:
        def alive_and() -> bool:
            self.alive()
            return predicate()

        wait_for(alive_and, what, timeout_s, detail=self.output)

    def wait_log(self, text: str, timeout_s: float = WAIT_S) -> None:
        self.wait(lambda: text in self.output(), repr(text), timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.reader.join(timeout=5)
        for sock in self.socks:
            sock.close()


@contextlib.contextmanager
def running(tmp: Path, *extra: str) -> Iterator[Daemon]:
    daemon = Daemon(tmp, *extra)
    try:
        daemon.wait(lambda: _table(daemon) == (2, LISTENERS), "all real servers in the table")
        daemon.wait(lambda: _lag(daemon).count > 3 * LISTENERS, "a few rounds of probes")
        yield daemon
    finally:
        daemon.close()


def _table(daemon: Daemon) -> tuple[int, int]:
    status = daemon.status()
    return status["ipvs_services"], status["ipvs_destinations"]


class Lag:
    """The daemon's cumulative start-lag histogram, as /metrics gives it."""

    def __init__(self, bounds: list[float], cumulative: list[float]) -> None:
        self.bounds, self.cumulative = bounds, cumulative
        self.count = cumulative[-1] if cumulative else 0.0

    def since(self, before: Lag) -> Lag:
        return Lag(self.bounds, [a - b for a, b in zip(self.cumulative, before.cumulative,
                                                       strict=True)])

    def quantile(self, q: float) -> float:
        rank = q * self.count
        index = bisect.bisect_left(self.cumulative, rank)
        return self.bounds[min(index, len(self.bounds) - 1)]


def _lag(daemon: Daemon) -> Lag:
    for family in text_string_to_metric_families(daemon.get("/metrics")):
        if family.name == "fastcheck_scheduler_start_lag_seconds":
            buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples
                             if s.name.endswith("_bucket"))
            return Lag([b for b, _ in buckets], [v for _, v in buckets])
    raise AssertionError("no start-lag histogram in /metrics")


def _failures(daemon: Daemon) -> dict[str, float]:
    for family in text_string_to_metric_families(daemon.get("/metrics")):
        if family.name == "fastcheck_reload_failures":
            return {s.labels["reason"]: s.value for s in family.samples
                    if s.name.endswith("_total")}
    return {}


def _seq_digits(daemon: Daemon, tmp: Path) -> str:
    text = "~SEQ(i," + "9" * 5000 + ",1) x\n"
    daemon.conf.write_text(_farm(daemon.ports) + text)
    return f"{daemon.conf}:"


def _include_doubling(daemon: Daemon, tmp: Path) -> str:
    for level in range(30):
        (tmp / f"d{level}.conf").write_text(f"include d{level + 1}.conf\n"
                                            f"include d{level + 1}.conf\n")
    (tmp / "d30.conf").write_text("# leaf\n\n")
    daemon.conf.write_text(_farm(daemon.ports) + "include d0.conf\n")
    return ".conf:"


def _marker(name: str):
    def write(daemon: Daemon, tmp: Path) -> str:
        daemon.conf.write_text(_farm(daemon.ports) + f"# inject: {name}\n")
        return ""
    return write


# case → (rewrite the file, extra run options, metrics reason, text of the failure line)
CASES = {
    "5000-digit number": (_seq_digits, (), "invalid", "error(s)"),
    "include doubling 30 levels": (_include_doubling, (), "invalid", "error(s)"),
    "loader raises": (_marker("raise"), (), "crashed",
                      "the loader failed: RuntimeError: injected loader fault"),
    "parse past its deadline": (_marker("hang"), ("--reload-timeout", "3"), "timeout",
                                "reading took longer than 3 s (--reload-timeout); abandoned"),
    "parse past its memory": (_marker("memory"), ("--reload-memory-limit", "300M"), "memory",
                              "reading needs more than 300.0 MiB (--reload-memory-limit)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_reload_keeps_the_running_configuration(case: str, tmp_path: Path) -> None:
    rewrite, extra, reason, says = CASES[case]
    with running(tmp_path, *extra) as daemon:
        before_table = _table(daemon)
        lag_before = _lag(daemon)
        began = time.monotonic()
        where = rewrite(daemon, tmp_path)
        daemon.proc.send_signal(signal.SIGHUP)
        refused = "; still running the previous configuration"
        daemon.wait_log(refused)
        window_s = time.monotonic() - began
        output = daemon.output()
        line = next(text for text in output.splitlines() if refused in text)
        assert says in line, output
        if where:  # the loader's own error names the file and line
            assert any(where in text and "ERROR" in text.upper()
                       for text in output.splitlines()), output
        assert "Traceback" not in output, output

        # alive, every service and server still there, probing on schedule meanwhile
        assert _table(daemon) == before_table
        window = _lag(daemon).since(lag_before)
        assert window.count >= 0.5 * window_s * LISTENERS / INTERVAL_S, \
            f"{window.count} probe starts in {window_s:.1f} s"
        assert window.quantile(0.99) <= LAG_P99_BOUND_S, \
            f"start-lag p99 {window.quantile(0.99)} s while the bad file was read"
        assert _failures(daemon) == {reason: 1.0}
        assert daemon.status()["counters"]["reload_failures"] == 1

        # a valid file afterwards is taken
        daemon.conf.write_text(_farm(daemon.ports, extra_vs=True))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait(lambda: _table(daemon) == (3, LISTENERS + 1), "the valid reload applied")
        assert "reload: virtual servers +1 -0" in daemon.output()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=20) == 0, daemon.output()


def test_sigterm_during_a_long_reload_stops_within_2_s(tmp_path: Path) -> None:
    with running(tmp_path) as daemon:
        daemon.conf.write_text(_farm(daemon.ports) + "# inject: hang\n")
        daemon.proc.send_signal(signal.SIGHUP)
        hanging = Path(f"{daemon.conf}.hanging")
        daemon.wait(hanging.exists, "the reader to be in its endless parse")
        daemon.alive()
        sent = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        status = daemon.proc.wait(timeout=20)
        took = time.monotonic() - sent
        daemon.reader.join(timeout=5)
        output = daemon.output()
        assert status == 0, output
        assert took < 2.0, f"stopped {took:.2f} s after SIGTERM:\n{output}"
        assert "abandoned reading" in output
        assert "stopping: removing 2 IPVS service(s)" in output
        assert "Traceback" not in output


def test_a_reload_that_arrives_while_one_reads_runs_afterwards(tmp_path: Path) -> None:
    """SIGHUP, then a fixed file and SIGHUP again while the first still reads: the first
    times out, the second is applied; SIGUSR1 dumps are answered meanwhile."""
    with running(tmp_path, "--reload-timeout", "2") as daemon:
        daemon.conf.write_text(_farm(daemon.ports) + "# inject: hang\n")
        daemon.proc.send_signal(signal.SIGHUP)
        hanging = Path(f"{daemon.conf}.hanging")
        daemon.wait(hanging.exists, "the reader to be in its endless parse")
        daemon.proc.send_signal(signal.SIGUSR1)
        daemon.wait_log("state written to")  # served while the reload reads
        assert "still running the previous configuration" not in daemon.output()
        daemon.conf.write_text(_farm(daemon.ports, extra_vs=True))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait(lambda: _table(daemon) == (3, LISTENERS + 1), "the second reload applied")
        assert "reading took longer than 2 s" in daemon.output()


# ------------------------------------------------------------------ in process: planning


def test_a_failure_while_planning_changes_nothing(run, tmp_path: Path, caplog) -> None:
    """The health carry raising (standing for any bug in diff, plan or carry) is a refused
    reload: no IPVS operation, the old configuration and health stay; a later reload that
    plans fine is taken."""
    up, port = listener()  # a server that stays up: nothing but the reload could change
    config = tmp_path / "k.conf"
    write_config(config, {"10.0.0.1": [port]})
    first, _ = load_file(str(config))
    backend = MemoryBackend(fullnat=True)
    broken = {"yes": True}

    def carry(old, new_config, plan, diff):  # type: ignore[no-untyped-def]
        if broken["yes"]:
            raise KeyError("planted bug")
        return UpIfLastOk.carry(old, new_config, plan, diff)

    async def scenario() -> None:
        runtime = Runtime(first, backend, UpIfLastOk, carry,
                          Options(config_path=str(config), dry_run=True,
                                  repair_interval_s=0, data_path=str(tmp_path / "d"),
                                  json_path=str(tmp_path / "j")))
        runtime.start()
        table = backend.read()
        health = runtime.health
        write_config(config, {"10.0.0.1": [port], "10.0.0.2": [port]})
        with caplog.at_level(logging.DEBUG, logger="fastcheck"):
            assert await runtime.reload() is True
        assert backend.read() == table and runtime.config is first
        assert runtime.health is health
        assert runtime.last_reload_failure is not None
        assert runtime.last_reload_failure.kind == "planning"
        assert "KeyError: 'planted bug'" in runtime.last_reload_failure.reason
        assert runtime.counters.reload_failures == 1
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "still running the previous configuration" in \
            errors[0].getMessage() and errors[0].exc_info is None
        assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)
        broken["yes"] = False
        assert await runtime.reload() is True
        assert len(backend.read()) == 2 and runtime.last_reload_failure is None
        await runtime.stop()

    try:
        run(scenario())
    finally:
        up.close()


def test_a_reload_naming_another_net_namespace_says_it_needs_a_restart(
        run, tmp_path: Path, caplog) -> None:
    up, port = listener()
    config = tmp_path / "k.conf"
    write_config(config, {"10.0.0.1": [port]})
    first, _ = load_file(str(config))

    async def scenario() -> None:
        runtime = Runtime(first, MemoryBackend(fullnat=True), UpIfLastOk, UpIfLastOk.carry,
                          Options(config_path=str(config), dry_run=True, repair_interval_s=0,
                                  data_path=str(tmp_path / "d"), json_path=str(tmp_path / "j")))
        runtime.start()
        config.write_text("net_namespace blue\n" + config.read_text())
        with caplog.at_level(logging.WARNING, logger="fastcheck"):
            assert await runtime.reload() is True
        await runtime.stop()

    try:
        run(scenario())
    finally:
        up.close()
    assert "reload: net_namespace (none) -> blue does not take effect until a restart" \
        in caplog.text
