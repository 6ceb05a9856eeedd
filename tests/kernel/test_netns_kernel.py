"""`net_namespace` with real IPVS (in the VM): the table is written inside the namespace.

A namespace made for the test holds a dummy interface with the real servers' addresses
(10.77.0.x, local to it) and a TCP listener on one of them; the host's own IPVS table has
a foreign service. `fastcheck run` (not a dry run) with `net_namespace` must build its
table inside the namespace (`ip netns exec NS ipvsadm -Ln`), leave the host's table as it
was, and release its services inside the namespace on SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from guestkernel import ip, view

pytestmark = pytest.mark.kernel

WAIT_S = 60.0
NS = "fckns"
FOREIGN = ("10.99.0.1:80", "10.99.0.2:80")
LISTEN = """
import socket, sys
sock = socket.socket()
sock.bind(("10.77.0.2", 8080))
sock.listen(64)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def namespace(clean_ipvs) -> Iterator[str]:
    ip("netns", "add", NS)
    listener = None
    try:
        ip("-n", NS, "link", "set", "lo", "up")
        ip("-n", NS, "link", "add", "fck0", "type", "dummy")
        for host in (2, 3):
            ip("-n", NS, "addr", "add", f"10.77.0.{host}/24", "dev", "fck0")
        ip("-n", NS, "link", "set", "fck0", "up")
        listener = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", LISTEN],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        yield NS
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=30)
        subprocess.run(["ip", "netns", "del", NS], check=False, capture_output=True)


def test_ipvs_table_is_written_inside_the_namespace(
        namespace: str, clean_ipvs, tmp_path: Path, wait_until: Callable[..., object]) -> None:
    for foreign in FOREIGN:
        clean_ipvs("-A", "-t", foreign, "-s", "rr")
    host_before = clean_ipvs.list()

    def inside() -> dict[str, set[str]]:
        done = subprocess.run(["ip", "netns", "exec", namespace, "ipvsadm", "-Ln"],
                              capture_output=True, text=True, check=True)
        return view(done.stdout)

    assert inside() == {}
    config = tmp_path / "fc.conf"
    config.write_text(
        f"net_namespace {namespace}\n"
        "virtual_server 10.77.0.100 80 {\n    delay_loop 0.5\n    lb_algo rr\n"
        "    lb_kind NAT\n    protocol TCP\n"
        + "".join(f"    real_server 10.77.0.{host} 8080 {{\n        TCP_CHECK {{\n"
                  "            connect_timeout 1\n            retry 0\n        }\n    }\n"
                  for host in (2, 3))
        + "}\n")
    log_path = tmp_path / "fc.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastcheck.cli", "run", "-f", str(config),
             "--pid-file", str(tmp_path / "fc.pid"), "--dump-file", str(tmp_path / "fc.data"),
             "--dump-json", str(tmp_path / "fc.json"), "--repair-interval", "1"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        def converged() -> bool:
            assert proc.poll() is None, log_path.read_text()
            return inside() == {"10.77.0.100:80": {"10.77.0.2:8080"}}

        wait_until(converged, timeout_s=WAIT_S, interval_s=0.2,
                   what="the namespace's table to hold the healthy server")
        assert clean_ipvs.list() == host_before  # the host's table is untouched
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert inside() == {}  # released inside the namespace
    assert set(view(clean_ipvs.list())) == set(FOREIGN)
    assert f"running in network namespace {namespace}" in log_path.read_text()
