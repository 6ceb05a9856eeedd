"""`fastcheck run` at its limits inside the VM: least privilege and a bounded stop.

1. Capabilities: the daemon runs under `setpriv` with only CAP_NET_ADMIN (IPVS netlink)
   and CAP_NET_RAW (the ICMP socket of PING_CHECK) in every set, probes a TCP listener and
   a pingable address on a dummy interface (unreachable/refusing neighbours stay out),
   converges, and SIGTERM exits 0 having released its services. /proc/<pid>/status proves
   the process held exactly those two capabilities.
2. Stop on a large table: a synthetic farm (default 5,000 virtual servers x 20 real
   servers, `FASTCHECK_STOP_FARM=VxR` to change it) without check blocks, so no probe ever
   runs (its 172.16.x.y real servers go nowhere in the guest), is applied for real; the
   time from SIGTERM to exit is measured and printed (`-s` shows it), exit 0 and an empty
   table are required, and the bound is generous (emulated VM): it is about not hanging.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from guestkernel import ip, view

from fastcheck.synthetic import farm

pytestmark = pytest.mark.kernel

WAIT_S = 60.0
IFNAME = "fcl0"
PREFIX = "10.67.0"
RS_PORT = 8080
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
ONLY_NET = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
CAPS = "-all,+net_admin,+net_raw"
SETPRIV = ["setpriv", "--reuid=0", f"--inh-caps={CAPS}", f"--ambient-caps={CAPS}",
           f"--bounding-set={CAPS}", "--"]
FARM_ENV = "FASTCHECK_STOP_FARM"
STOP_BOUND_S = 120.0
APPLY_WAIT_S = float(os.environ.get("FASTCHECK_STOP_APPLY_WAIT") or 900)
_CHECK = re.compile(r"        (?:TCP_CHECK|HTTP_GET|MISC_CHECK) \{.*?\n        \}\n", re.S)


@pytest.fixture
def dummy() -> Iterator[str]:
    """PREFIX.1-2/24 on a dummy interface (PREFIX.3-9 route into it and vanish)."""
    ip("link", "set", "lo", "up")
    try:
        ip("link", "add", IFNAME, "type", "dummy")
    except subprocess.CalledProcessError as error:
        pytest.skip(f"no dummy interface in this kernel: {error.stderr.strip()}")
    try:
        for host in (1, 2):
            ip("addr", "add", f"{PREFIX}.{host}/24", "dev", IFNAME)
        ip("link", "set", IFNAME, "up")
        yield PREFIX
    finally:
        subprocess.run(["ip", "link", "del", IFNAME], check=False, capture_output=True)


class Daemon:
    """`fastcheck run` as a subprocess, its output in a log file; killed if left running."""

    def __init__(self, prefix: list[str], config: Path, tmp_path: Path) -> None:
        self.log_path = tmp_path / "fastcheck.log"
        self.pid_file = tmp_path / "fc.pid"
        argv = [*prefix, sys.executable, "-m", "fastcheck.cli", "run", "-f", str(config),
                "--pid-file", str(self.pid_file), "--dump-file", str(tmp_path / "fc.data"),
                "--dump-json", str(tmp_path / "fc.json")]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"fastcheck exited {self.proc.returncode}:\n{self.log()}",
                        pytrace=False)
        return True

    def terminate(self, timeout_s: float) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds from the signal to the exit)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"fastcheck still running {timeout_s:g} s after SIGTERM:\n"
                        f"{self.log()[-4000:]}", pytrace=False)
        return status, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def capabilities(pid: int) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of a process, as masks."""
    caps = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Cap"):
            caps[name] = int(value.strip(), 16)
    return caps


def probed_config(prefix: str) -> str:
    """VS .101: TCP_CHECK on .1 (listening) and .3 (nothing there); VS .102: PING_CHECK on
    .2 (local, answers) and .9 (routed into the dummy device, never answers)."""
    def real(host: int, check: str) -> str:
        return (f"    real_server {prefix}.{host} {RS_PORT} {{\n        {check} {{\n"
                "            connect_timeout 1\n            retry 0\n"
                "            delay_before_retry 0.2\n        }\n    }\n")

    def service(vip: int, reals: str) -> str:
        return (f"virtual_server {prefix}.{vip} 80 {{\n    delay_loop 0.5\n    lb_algo rr\n"
                f"    lb_kind NAT\n    protocol TCP\n{reals}}}\n")

    return "\n".join([
        "global_defs {\n    router_id fastcheck-limits\n}\n",
        service(101, real(1, "TCP_CHECK") + real(3, "TCP_CHECK")),
        service(102, real(2, "PING_CHECK") + real(9, "PING_CHECK")),
    ])


@pytest.fixture
def report(capsys) -> Callable[[str], None]:
    """Prints past the guest's output capture, so the figures show with the host's `-s`."""
    def write(text: str) -> None:
        with capsys.disabled():
            print(text, flush=True)

    return write


def test_run_needs_only_net_admin_and_net_raw(clean_ipvs, wait_until, dummy, daemons,
                                              report, tmp_path):
    ipvsadm = clean_ipvs
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((f"{dummy}.1", RS_PORT))
    listener.listen(16)
    try:
        config = tmp_path / "fastcheck.conf"
        config.write_text(probed_config(dummy))
        daemon = Daemon(SETPRIV, config, tmp_path)
        daemons.append(daemon)
        want = {f"{dummy}.101:80": {f"{dummy}.1:{RS_PORT}"},
                f"{dummy}.102:80": {f"{dummy}.2:{RS_PORT}"}}
        wait_until(lambda: daemon.alive() and view(ipvsadm.list()) == want,
                   timeout_s=WAIT_S, interval_s=0.2, what=f"the table {want}")

        caps = capabilities(daemon.proc.pid)  # setpriv execs: the pid is fastcheck's
        cmdline = Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"fastcheck.cli" in cmdline, cmdline
        report("\nfastcheck capabilities: " + ", ".join(
            f"{name}={mask:#x}" for name, mask in sorted(caps.items())))
        assert caps["CapEff"] == ONLY_NET, caps
        assert caps["CapPrm"] == ONLY_NET, caps
        assert caps["CapBnd"] == ONLY_NET, caps
        assert caps["CapInh"] | caps.get("CapAmb", 0) <= ONLY_NET, caps
        # it still converges after a listener change, with only those capabilities
        listener.close()
        wait_until(lambda: daemon.alive() and view(ipvsadm.list()) == {**want,
                   f"{dummy}.101:80": set()},
                   timeout_s=WAIT_S, interval_s=0.2, what="the TCP server to leave")

        status, took = daemon.terminate(WAIT_S)
        assert status == 0, daemon.log()
        assert view(ipvsadm.list()) == {}, daemon.log()
        assert not daemon.pid_file.exists()
        report(f"least-privilege fastcheck stopped in {took:.2f} s")
    finally:
        listener.close()


def _farm_size() -> tuple[int, int]:
    virtual, _, real = (os.environ.get(FARM_ENV) or "5000x20").partition("x")
    return int(virtual), int(real)


def _counts(text: str) -> tuple[int, int]:
    """(services, destinations) in `ipvsadm -Ln` output."""
    services = destinations = 0
    for line in text.splitlines()[3:]:
        if line.startswith("TCP") or line.startswith("UDP"):
            services += 1
        elif line.startswith("  ->"):
            destinations += 1
    return services, destinations


def test_stop_is_bounded_for_a_large_table(clean_ipvs, wait_until, daemons, report,
                                           tmp_path):
    ipvsadm = clean_ipvs
    virtual, real = _farm_size()
    text = _CHECK.sub("", farm(virtual, real))
    assert "CHECK" not in text and "HTTP_GET" not in text  # nothing is ever probed
    config = tmp_path / "fastcheck.conf"
    config.write_text(text)

    start = time.monotonic()
    daemon = Daemon([], config, tmp_path)
    daemons.append(daemon)
    want = (virtual, virtual * real)
    seen: list[tuple[int, int]] = []

    def applied() -> bool:
        daemon.alive()
        seen.append(_counts(ipvsadm.list()))
        return seen[-1] == want

    wait_until(applied, timeout_s=APPLY_WAIT_S, interval_s=2.0,
               what=f"{want[0]} services / {want[1]} destinations (last {seen[-1:]})")
    loaded = time.monotonic() - start
    report(f"\nfarm {virtual} x {real}: {want[1]} destinations applied {loaded:.1f} s "
          f"after start")

    lines_before = len(daemon.log().splitlines())
    report(f"SIGTERM at {time.strftime('%H:%M:%S', time.localtime())}")
    status, took = daemon.terminate(STOP_BOUND_S * 2)
    report(f"farm {virtual} x {real}: SIGTERM to exit {took:.2f} s (exit {status})")
    log = daemon.log()
    release = log.splitlines()[max(0, lines_before - 3):]
    report("\n".join(release[:12] + (["...", *release[-3:]] if len(release) > 15 else
                                         release[12:])))
    assert status == 0, log[-4000:]
    assert _counts(ipvsadm.list()) == (0, 0), "\n".join(release)
    assert took < STOP_BOUND_S, f"stop took {took:.1f} s"
