"""A probe shared by two virtual servers keeps each owner's keepalived timing, end to end:
`fastcheck run --dry-run` against a loopback listener, read back through SIGUSR1 dumps.

The real server sits in a strict virtual server (delay_loop 0.3 s, retry 1) and a lenient
one (delay_loop 30 s, retry 3, delay_before_retry 5 s); identical TCP_CHECKs, so one probe.
When the listener goes, the strict one removes it within a second or so; the lenient one
must keep it until its own checker has failed 4 times, 45 s after its last good check (it
used to be removed with the strict one, its retries counted on the strict one's runs).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECK = "connect_timeout 1\n warmup 0\n"
STRICT = f"TCP_CHECK {{\n{CHECK} delay_loop 0.3\n retry 1\n delay_before_retry 0.1\n }}"
LENIENT = f"TCP_CHECK {{\n{CHECK} delay_loop 30\n retry 3\n delay_before_retry 5\n }}"


def listener() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, sock.getsockname()[1]


def dump(proc: subprocess.Popen, json_path: Path) -> dict[str, Any]:
    json_path.unlink(missing_ok=True)
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not json_path.exists():
        assert proc.poll() is None, "daemon died"
        assert time.monotonic() < deadline, "no dump"
        time.sleep(0.02)
    return json.loads(json_path.read_text())


def table(doc: dict[str, Any]) -> dict[str, set[int]]:
    return {s["address"]: {d["port"] for d in s["destinations"]} for s in doc["ipvs"]}


def checks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The check of the real server in each virtual server, in configuration order."""
    return [rs["checks"][0] for vs in doc["health"]["virtual_servers"]
            for rs in vs["real_servers"]]


def wait_until(proc: subprocess.Popen, json_path: Path,
               done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while not done(doc := dump(proc, json_path)):
        assert time.monotonic() < deadline, f"never {what}: {table(doc)}, {checks(doc)}"
        time.sleep(0.05)
    return doc


def test_the_lenient_owner_of_a_shared_probe_keeps_its_own_retries(tmp_path: Path) -> None:
    sock, port = listener()
    conf = tmp_path / "fc.conf"
    conf.write_text("".join(
        f"virtual_server {vip} 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
        f" real_server 127.0.0.1 {port} {{\n {check}\n }}\n}}\n"
        for vip, check in (("10.0.0.1", STRICT), ("10.0.0.2", LENIENT))))
    json_path, log_path = tmp_path / "fc.json", tmp_path / "fc.log"
    argv = [sys.executable, "-m", "fastcheck.cli", "run", "-f", str(conf), "--dry-run",
            "--pid-file", str(tmp_path / "fc.pid"), "--dump-file", str(tmp_path / "fc.data"),
            "--dump-json", str(json_path)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "starting:" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        both = {"10.0.0.1": {port}, "10.0.0.2": {port}}
        # both owners took the first (good) result; the lenient one's next is 30 s away
        doc = wait_until(proc, json_path, lambda d: table(d) == both
                         and all(c["has_run"] for c in checks(d)), "started")
        assert len({c["probe_id"] for c in checks(doc)}) == 1  # one probe, two owners

        sock.close()
        gone = {"10.0.0.1": set(), "10.0.0.2": {port}}
        doc = wait_until(proc, json_path, lambda d: table(d) == gone, "strict removal")
        # The strict owner goes on probing (0.3 s apart, 0.1 s after a failure): a dozen
        # failed runs the lenient owner must not take as its own retries.
        seen = doc["counters"]["results"]
        doc = wait_until(proc, json_path, lambda d: d["counters"]["results"] >= seen + 12,
                         "a dozen more runs")
        assert table(doc) == gone
        lenient = checks(doc)[1]
        assert lenient["state"] == "up" and lenient["failures"] == 0

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        sock.close()
