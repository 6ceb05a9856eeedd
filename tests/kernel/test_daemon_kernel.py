"""`fastcheck run` for real inside the VM: real netlink, real probes, real listeners.

A dummy interface carries the real servers' addresses (10.66.0.x, local to the guest, so
probes never leave it; 127.66.0.x on loopback if the kernel has no dummy module); TCP
listeners sit on some of them and not on others. The daemon runs as a subprocess on a
keepalived-style configuration and the table is read back with `ipvsadm -Ln`, polled with
bounded waits: it converges to the healthy servers, follows a listener going away and
coming back, reloads on SIGHUP without ever dropping a surviving healthy server, repairs
an `ipvsadm -d` and, on SIGTERM, exits 0 having removed only what it owns. When keepalived
is installed, its checker run on the same configuration must build the same table.
Reloads with files that must be refused never change the table, sampled all along.
Every wait is bounded but generous (60 s): Python is slow under emulation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from guestkernel import View, full_view, ip, view

pytestmark = pytest.mark.kernel

WAIT_S = 60.0
IFNAME = "fcd0"
RS_PORT = 8080
FOREIGN = "10.99.0.1:80"
BULK = 100  # services swapped on reload, to make it last
KEEPALIVED = "/usr/sbin/keepalived"
T = TypeVar("T")


class Net:
    """The real servers' addresses: `net.rs(2)` is "10.66.0.2:8080"."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def host(self, host: int) -> str:
        return f"{self.prefix}.{host}"

    def rs(self, host: int) -> str:
        return f"{self.host(host)}:{RS_PORT}"

    def config(self, services: dict[str, list[int]], bulk: list[str] = ()) -> str:
        """A keepalived configuration: VIP → the hosts of its TCP-checked real servers;
        `bulk` VIPs have host 1 without checks (always up, nothing to probe)."""
        blocks = ["global_defs {\n    router_id fastcheck-kernel\n}\n"]
        blocks += [f"virtual_server {vip} 80 {{\n    lb_algo wlc\n    lb_kind NAT\n"
                   f"    protocol TCP\n    real_server {self.host(1)} {RS_PORT} {{\n    }}\n}}\n"
                   for vip in bulk]
        for vip, hosts in services.items():
            reals = "".join(
                f"    real_server {self.host(host)} {RS_PORT} {{\n        weight {host}\n"
                "        TCP_CHECK {\n            connect_timeout 1\n            retry 0\n"
                "            delay_before_retry 0.2\n        }\n    }\n"
                for host in hosts)
            blocks.append(f"virtual_server {vip} 80 {{\n    delay_loop 0.5\n    lb_algo rr\n"
                          f"    lb_kind NAT\n    protocol TCP\n{reals}}}\n")
        return "\n".join(blocks)


@pytest.fixture
def net() -> Iterator[Net]:
    """10.66.0.1-4/24 on a dummy interface; 127.66.0.x (loopback) if dummy is missing."""
    ip("link", "set", "lo", "up")
    try:
        ip("link", "add", IFNAME, "type", "dummy")
    except subprocess.CalledProcessError:
        yield Net("127.66.0")  # lo answers all of 127/8
        return
    try:
        for host in range(1, 5):
            ip("addr", "add", f"10.66.0.{host}/24", "dev", IFNAME)
        ip("link", "set", IFNAME, "up")
        yield Net("10.66.0")
    finally:
        subprocess.run(["ip", "link", "del", IFNAME], check=False, capture_output=True)


class Listeners:
    """TCP listeners on some real server addresses; the others refuse connections."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.socks: dict[int, socket.socket] = {}

    def open(self, *hosts: int) -> None:
        for host in hosts:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.net.host(host), RS_PORT))
            # never accepted: every probe's connection waits in the accept queue, so
            # the backlog must outlast the longest test (2 probes/s for minutes)
            sock.listen(4096)
            self.socks[host] = sock

    def close(self, *hosts: int) -> None:
        for host in hosts:
            self.socks.pop(host).close()


@pytest.fixture
def listeners(net: Net) -> Iterator[Listeners]:
    group = Listeners(net)
    yield group
    group.close(*group.socks)


class Process:
    """A daemon under test, its output in a log file; killed at teardown if still running."""

    def __init__(self, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.proc.args[0]} exited {self.proc.returncode}:\n{self.log()}",
                        pytrace=False)
        return True

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=WAIT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(argv: list[str], name: str, env: dict[str, str] | None = None) -> Process:
        process = Process(argv, tmp_path / f"{name}.log", env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def fastcheck(spawn, tmp_path: Path, config: Path, *extra: str,
              env: dict[str, str] | None = None) -> Process:
    # Python starts slowly under emulation, the more so with a sampler beside it: a reload's
    # reader gets 120 s unless a test says otherwise (a later option wins)
    return spawn([sys.executable, "-m", "fastcheck.cli", "run", "-f", str(config),
                  "--pid-file", str(tmp_path / "fc.pid"),
                  "--dump-file", str(tmp_path / "fc.data"),
                  "--dump-json", str(tmp_path / "fc.json"), "--repair-interval", "1",
                  "--reload-timeout", "120", *extra],
                 "fastcheck", env)


def bulk(octet: int) -> list[str]:
    """BULK extra VIPs 10.66.<octet>.N, one unchecked real server each."""
    return [f"10.66.{octet}.{n}" for n in range(1, BULK + 1)]


def bulk_view(net: Net, octet: int) -> View:
    return {f"{vip}:80": {net.rs(1)} for vip in bulk(octet)}


def converge(ipvsadm, wait_until, daemon: Process, want: View, what: str) -> None:
    """Polls until the table, FOREIGN aside, is `want`."""
    def ours() -> bool:
        daemon.alive()
        got = view(ipvsadm.list())
        got.pop(FOREIGN, None)
        return got == want

    try:
        wait_until(ours, timeout_s=WAIT_S, interval_s=0.2, what=f"{what}: table {want}")
    except pytest.fail.Exception:
        got = view(ipvsadm.list())
        got.pop(FOREIGN, None)
        pytest.fail(f"{what}: table {got}, not {want}, after {WAIT_S:g} s; the daemon "
                    f"said:\n{daemon.log()[-6000:]}", pytrace=False)


@contextlib.contextmanager
def sampled(read: Callable[[], T]) -> Iterator[list[T]]:
    """Calls `read` again and again on a thread while the block runs; what it returned."""
    samples: list[T] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(read())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join(timeout=WAIT_S)


def test_fastcheck_run_keeps_the_kernel_table_in_step(clean_ipvs, wait_until, net, listeners,
                                                      spawn, tmp_path):
    ipvsadm, rs = clean_ipvs, net.rs
    ipvsadm("-A", "-t", FOREIGN, "-s", "rr")  # not fastcheck's: never touched
    listeners.open(1, 2, 4)  # host 3 has no listener: refused
    config = tmp_path / "fastcheck.conf"
    config.write_text(net.config({"10.66.1.1": [1, 2, 3], "10.66.1.2": [1]}, bulk(2)))
    daemon = fastcheck(spawn, tmp_path, config)

    steady = {"10.66.1.1:80": {rs(1), rs(2)}, "10.66.1.2:80": {rs(1)}, **bulk_view(net, 2)}
    converge(ipvsadm, wait_until, daemon, steady, "start")

    listeners.close(2)
    converge(ipvsadm, wait_until, daemon, {**steady, "10.66.1.1:80": {rs(1)}},
             "listener 2 closed")
    listeners.open(2)
    converge(ipvsadm, wait_until, daemon, steady, "listener 2 back")

    ipvsadm("-d", "-t", "10.66.1.1:80", "-r", rs(1))  # drift behind fastcheck's back
    assert rs(1) not in view(ipvsadm.list())["10.66.1.1:80"]
    converge(ipvsadm, wait_until, daemon, steady, "drift repaired")
    assert "drift repair" in daemon.log()

    # Reload: 10.66.1.2 vanishes, 10.66.1.3 appears, 10.66.1.1 loses its dead server and
    # gains host 4, and BULK services are swapped for as many others (work enough for the
    # sampler, `ipvsadm -Ln` in a loop from before SIGHUP, to see the table in between).
    # The surviving healthy 10.66.1.1 servers must never leave the table.
    config.write_text(net.config({"10.66.1.1": [1, 2, 4], "10.66.1.3": [2]}, bulk(3)))
    want = {"10.66.1.1:80": {rs(1), rs(2), rs(4)}, "10.66.1.3:80": {rs(2)},
            **bulk_view(net, 3)}
    with sampled(lambda: view(ipvsadm.list())) as samples:
        wait_until(lambda: samples, timeout_s=WAIT_S, what="a first sample")
        daemon.proc.send_signal(signal.SIGHUP)
        converge(ipvsadm, wait_until, daemon, want, "reload")
        count = len(samples)
        wait_until(lambda: len(samples) > count, timeout_s=WAIT_S, what="a last sample")
    for got in samples:
        assert {rs(1), rs(2)} <= got.get("10.66.1.1:80", set()), \
            f"a surviving healthy server left the table during the reload: {got}"
        assert got.pop(FOREIGN, None) == set()
    assert samples[0] == steady and samples[-1] == want
    wait_until(lambda: "reload: virtual servers" in daemon.log(), timeout_s=WAIT_S,
               what="the reload to be logged")
    converge(ipvsadm, wait_until, daemon, want, "after the reload, steady")

    assert daemon.stop() == 0, daemon.log()
    assert view(ipvsadm.list()) == {FOREIGN: set()}, daemon.log()
    assert not (tmp_path / "fc.pid").exists()


@pytest.mark.skipif(not Path(KEEPALIVED).exists(), reason=f"{KEEPALIVED} is not installed")
def test_keepalived_builds_the_same_table(clean_ipvs, wait_until, net, listeners, spawn,
                                          tmp_path):
    """keepalived's checker (-C) on the same configuration: the same services, schedulers,
    forwarding methods, weights and healthy servers as fastcheck."""
    ipvsadm, rs = clean_ipvs, net.rs
    listeners.open(1, 2, 4)
    config = tmp_path / "fastcheck.conf"
    config.write_text(net.config({"10.66.1.1": [1, 2, 3], "10.66.1.2": [1, 3, 4]}))
    want = {"10.66.1.1:80": {rs(1), rs(2)}, "10.66.1.2:80": {rs(1), rs(4)}}

    daemon = fastcheck(spawn, tmp_path, config)
    converge(ipvsadm, wait_until, daemon, want, "fastcheck")
    ours = full_view(ipvsadm.list())
    assert daemon.stop() == 0, daemon.log()
    assert ipvsadm.list().count("\n") == 3  # released: header only

    keepalived = spawn([KEEPALIVED, "--dont-fork", "--log-console", "--log-detail", "--check",
                        "-f", str(config), "--pid", str(tmp_path / "ka.pid"),
                        "--checkers_pid", str(tmp_path / "ka-check.pid")], "keepalived")
    converge(ipvsadm, wait_until, keepalived, want, "keepalived")
    theirs = full_view(ipvsadm.list())
    assert theirs == ours, keepalived.log()
    assert keepalived.stop() == 0, keepalived.log()


FAULT_HOOK = Path(__file__).resolve().parents[1] / "fault_hook"  # see its docstring
REFUSED = "still running the previous configuration"


def test_bad_reloads_never_change_the_kernel_table(clean_ipvs, wait_until, net, listeners,
                                                   spawn, tmp_path):
    """SIGHUP with files a reload must refuse — a 5,000-digit number, includes doubling
    30 levels deep, a loader that raises, one that never ends (abandoned at
    --reload-timeout) and one that eats memory (--reload-memory-limit): `ipvsadm -Ln`,
    sampled all along, never differs from the table before; then a valid file is taken
    and SIGTERM releases what fastcheck owns."""
    ipvsadm, rs = clean_ipvs, net.rs
    ipvsadm("-A", "-t", FOREIGN, "-s", "rr")
    listeners.open(1, 2)  # host 3 refuses
    config = tmp_path / "fastcheck.conf"
    good = net.config({"10.66.1.1": [1, 2, 3], "10.66.1.2": [2]})
    config.write_text(good)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(FAULT_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])])}
    daemon = fastcheck(spawn, tmp_path, config, "--reload-timeout", "45",
                       "--reload-memory-limit", "200M", env=env)
    steady = {"10.66.1.1:80": {rs(1), rs(2)}, "10.66.1.2:80": {rs(2)}}
    converge(ipvsadm, wait_until, daemon, steady, "start")
    before = full_view(ipvsadm.list())

    for level in range(30):
        (tmp_path / f"d{level}.conf").write_text(f"include d{level + 1}.conf\n" * 2)
    (tmp_path / "d30.conf").write_text("# leaf\n")
    cases = {
        "5000-digit number": "~SEQ(i," + "9" * 5000 + ",1) x\n",
        "include doubling": "include d0.conf\n",
        "loader raises": "# inject: raise\n",
        "parse never ends": "# inject: hang\n",
        "parse eats memory": "# inject: memory\n",
    }
    with sampled(lambda: full_view(ipvsadm.list())) as samples:
        for done, (case, tail) in enumerate(cases.items(), start=1):
            config.write_text(good + tail)
            daemon.proc.send_signal(signal.SIGHUP)
            wait_until(lambda done=done: daemon.alive() and daemon.log().count(REFUSED) == done,
                       timeout_s=2 * WAIT_S, interval_s=0.2,
                       what=f"{case}: the reload refused")
        count = len(samples)
        wait_until(lambda: len(samples) > count, timeout_s=WAIT_S, what="a last sample")
    changed = [got for got in samples if {k: v for k, v in got.items() if k != FOREIGN}
               != {k: v for k, v in before.items() if k != FOREIGN}]
    assert not changed, f"the table changed during a bad reload: {changed[0]}\n{daemon.log()}"
    assert len(samples) >= len(cases), samples
    log = daemon.log()
    assert "Traceback" not in log, log
    for says in ("error(s)", "the loader failed: RuntimeError: injected loader fault",
                 "reading took longer than 45 s", "reading needs more than 200.0 MiB"):
        assert says in log, log

    config.write_text(net.config({"10.66.1.1": [1, 2, 3], "10.66.1.3": [1]}))
    daemon.proc.send_signal(signal.SIGHUP)
    converge(ipvsadm, wait_until, daemon,
             {"10.66.1.1:80": {rs(1), rs(2)}, "10.66.1.3:80": {rs(1)}}, "a valid reload")
    assert daemon.stop() == 0, daemon.log()
    assert view(ipvsadm.list()) == {FOREIGN: set()}, daemon.log()


def test_quorum_up_runs_at_start_and_for_a_virtual_server_a_reload_adds(
        clean_ipvs, wait_until, net, listeners, spawn, tmp_path):
    """keepalived 2.2.7 starts every virtual server with quorum down and runs quorum_up
    once its real servers are in (ipwrapper.c update_quorum_state, init): at start, and
    for a virtual server a reload adds — not again for one the reload keeps."""
    ipvsadm, rs = clean_ipvs, net.rs
    listeners.open(1)
    notes = tmp_path / "notify.log"
    script = tmp_path / "note.sh"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {notes}\n")
    script.chmod(0o755)

    def farm(*vips: str) -> str:
        return "".join(
            f"virtual_server {vip} 80 {{\n    delay_loop 0.5\n    lb_algo rr\n    lb_kind NAT\n"
            f"    protocol TCP\n    quorum_up \"{script} up {vip}\"\n"
            f"    quorum_down \"{script} down {vip}\"\n"
            f"    real_server {net.host(1)} {RS_PORT} {{\n        TCP_CHECK {{\n"
            "            connect_timeout 1\n        }\n    }\n}\n" for vip in vips)

    def noted() -> list[str]:
        return notes.read_text().splitlines() if notes.exists() else []

    config = tmp_path / "fastcheck.conf"
    config.write_text(farm("10.66.1.1"))
    daemon = fastcheck(spawn, tmp_path, config)
    converge(ipvsadm, wait_until, daemon, {"10.66.1.1:80": {rs(1)}}, "start")
    wait_until(lambda: noted() == ["up 10.66.1.1"], timeout_s=WAIT_S,
               what="quorum_up of the virtual server at start")
    assert "Gained quorum" in daemon.log()

    config.write_text(farm("10.66.1.1", "10.66.1.2"))
    daemon.proc.send_signal(signal.SIGHUP)
    converge(ipvsadm, wait_until, daemon,
             {"10.66.1.1:80": {rs(1)}, "10.66.1.2:80": {rs(1)}}, "reload")
    wait_until(lambda: noted() == ["up 10.66.1.1", "up 10.66.1.2"], timeout_s=WAIT_S,
               what="quorum_up of the virtual server the reload added, and only that")
    assert daemon.stop() == 0, daemon.log()
