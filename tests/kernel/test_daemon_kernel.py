"""`fastcheck run` for real inside the VM: real netlink, real probes, real listeners.

A dummy interface carries the real servers' addresses (10.66.0.x, local to the guest, so
probes never leave it); TCP listeners sit on some of them and not on others. The daemon
runs as a subprocess on a keepalived-style configuration and the table is read back with
`ipvsadm -Ln`, polled with bounded waits: it converges to the healthy servers, follows a
listener going away and coming back, reloads on SIGHUP without ever dropping a surviving
healthy server, repairs an `ipvsadm -d` and, on SIGTERM, exits 0 having removed only what
it owns. Every wait is generous (60 s): Python is slow under emulation.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

WAIT_S = 60.0
IFNAME = "fcd0"
NET = "10.66.0"
RS_PORT = 8080
FOREIGN = "10.99.0.1:80"

View = dict[str, set[str]]


def rs(host: int) -> str:
    return f"{NET}.{host}:{RS_PORT}"


def config_text(services: dict[str, list[int]]) -> str:
    """A keepalived configuration: VIP → the hosts (10.66.0.N) of its TCP-checked servers."""
    blocks = ["global_defs {\n    router_id fastcheck-kernel\n}\n"]
    for vip, hosts in services.items():
        reals = "".join(
            f"    real_server {NET}.{host} {RS_PORT} {{\n        weight 1\n"
            "        TCP_CHECK {\n            connect_timeout 1\n            retry 0\n"
            "            delay_before_retry 0.2\n        }\n    }\n"
            for host in hosts)
        blocks.append(f"virtual_server {vip} 80 {{\n    delay_loop 0.5\n    lb_algo rr\n"
                      f"    lb_kind NAT\n    protocol TCP\n{reals}}}\n")
    return "\n".join(blocks)


def view(text: str) -> View:
    """`ipvsadm -Ln` → {"VIP:PORT": {"RIP:PORT", ...}} (TCP services only)."""
    table: View = {}
    current: set[str] | None = None
    for line in text.splitlines()[3:]:
        words = line.split()
        if words[0] == "TCP":
            current = table.setdefault(words[1], set())
        elif words[0] == "->" and current is not None:
            current.add(words[1])
        else:
            current = None
    return table


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def addresses() -> Iterator[str]:
    """10.66.0.1-4/24 on a dummy interface (loopback 127.66.0.x if dummy is missing)."""
    global NET
    _ip("link", "set", "lo", "up")
    try:
        _ip("link", "add", IFNAME, "type", "dummy")
    except subprocess.CalledProcessError:
        NET = "127.66.0"  # lo answers all of 127/8
        yield NET
        NET = "10.66.0"
        return
    try:
        for host in range(1, 5):
            _ip("addr", "add", f"{NET}.{host}/24", "dev", IFNAME)
        _ip("link", "set", IFNAME, "up")
        yield NET
    finally:
        subprocess.run(["ip", "link", "del", IFNAME], check=False, capture_output=True)


class Listeners:
    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}

    def open(self, host: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((f"{NET}.{host}", RS_PORT))
        sock.listen(128)
        self.socks[host] = sock

    def close(self, host: int) -> None:
        self.socks.pop(host).close()

    def close_all(self) -> None:
        for host in list(self.socks):
            self.close(host)


@pytest.fixture
def listeners(addresses: str) -> Iterator[Listeners]:
    group = Listeners()
    yield group
    group.close_all()


class Daemon:
    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.log_path = tmp_path / "fastcheck.log"
        argv = [sys.executable, "-m", "fastcheck.cli", "run", "-f", str(config),
                "--pid-file", str(tmp_path / "fc.pid"),
                "--dump-file", str(tmp_path / "fc.data"),
                "--dump-json", str(tmp_path / "fc.json"), "--repair-interval", "1"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"fastcheck exited {self.proc.returncode}:\n{self.log()}", pytrace=False)
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def converge(ipvsadm, wait_until, daemon: Daemon, want: View, what: str) -> None:
    def ours() -> bool:
        daemon.alive()
        got = view(ipvsadm.list())
        got.pop(FOREIGN, None)
        return got == want

    wait_until(ours, timeout_s=WAIT_S, interval_s=0.2, what=f"{what}: table {want}")


def test_fastcheck_run_keeps_the_kernel_table_in_step(clean_ipvs, wait_until, listeners,
                                                      daemon_factory, tmp_path):
    ipvsadm = clean_ipvs
    ipvsadm("-A", "-t", FOREIGN, "-s", "rr")  # not fastcheck's: never touched
    for host in (1, 2, 4):
        listeners.open(host)  # 10.66.0.3 has no listener: refused
    config = tmp_path / "fastcheck.conf"
    config.write_text(config_text({"10.66.1.1": [1, 2, 3], "10.66.1.2": [1]}))
    daemon = Daemon(tmp_path, config)
    daemon_factory.append(daemon)

    converge(ipvsadm, wait_until, daemon,
             {"10.66.1.1:80": {rs(1), rs(2)}, "10.66.1.2:80": {rs(1)}}, "start")

    listeners.close(2)
    converge(ipvsadm, wait_until, daemon,
             {"10.66.1.1:80": {rs(1)}, "10.66.1.2:80": {rs(1)}}, "listener 2 closed")
    listeners.open(2)
    converge(ipvsadm, wait_until, daemon,
             {"10.66.1.1:80": {rs(1), rs(2)}, "10.66.1.2:80": {rs(1)}}, "listener 2 back")

    ipvsadm("-d", "-t", "10.66.1.1:80", "-r", rs(1))  # drift behind fastcheck's back
    assert rs(1) not in view(ipvsadm.list())["10.66.1.1:80"]
    converge(ipvsadm, wait_until, daemon,
             {"10.66.1.1:80": {rs(1), rs(2)}, "10.66.1.2:80": {rs(1)}}, "drift repaired")
    assert "drift repair" in daemon.log()

    # Reload: 10.66.1.2 vanishes, 10.66.1.3 appears, 10.66.1.1 loses its dead server and
    # gains 10.66.0.4. The surviving healthy 10.66.1.1 servers must never leave the table.
    config.write_text(config_text({"10.66.1.1": [1, 2, 4], "10.66.1.3": [2]}))
    want = {"10.66.1.1:80": {rs(1), rs(2), rs(4)}, "10.66.1.3:80": {rs(2)}}
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT_S
    samples = 0
    while True:
        daemon.alive()
        got = view(ipvsadm.list())
        samples += 1
        assert {rs(1), rs(2)} <= got.get("10.66.1.1:80", set()), \
            f"a surviving healthy server left during the reload: {got}"
        assert FOREIGN in got
        got.pop(FOREIGN)
        if got == want:
            break
        assert time.monotonic() < deadline, f"reload never converged: {got} != {want}"
    wait_until(lambda: "reload: virtual servers" in daemon.log(), timeout_s=WAIT_S,
               what="the reload to be logged")
    converge(ipvsadm, wait_until, daemon, want, "after reload, steady")

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=WAIT_S) == 0, daemon.log()
    assert view(ipvsadm.list()) == {FOREIGN: set()}, daemon.log()
    assert not (tmp_path / "fc.pid").exists()
