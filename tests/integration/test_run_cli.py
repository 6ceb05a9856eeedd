"""`fastcheck run` from the command line: the removal budget and the README quick start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CONFIG = """
virtual_server 10.0.0.1 80 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
    delay_loop 0.3
    warmup 0
{servers}
}}
"""
SERVER = """    real_server 127.0.0.1 {port} {{
        TCP_CHECK {{
            connect_timeout 1
            retry 0
        }}
    }}"""


def closed_ports(count: int) -> list[int]:
    ports = []
    for _ in range(count):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


def run_until(args: list[str], stop_when, timeout_s: float = 20.0) -> str:
    """Runs the daemon until its output satisfies `stop_when` (or time is up), then stops it."""
    proc = subprocess.Popen([sys.executable, "-m", "fastcheck.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not stop_when("".join(lines)):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        reader.join(timeout=5)
    return "".join(lines)


def test_removal_budget_keeps_most_servers_when_all_fail_at_once(tmp_path):
    ports = closed_ports(4)  # nothing listens: every check fails together
    conf = tmp_path / "budget.conf"
    conf.write_text(CONFIG.format(servers="\n".join(SERVER.format(port=p) for p in ports)))
    args = ["run", "-f", str(conf), "--dry-run", "--pid-file", str(tmp_path / "pid"),
            "--removal-budget", "0.5", "--repair-interval", "0"]
    output = run_until(args, lambda text: "Removal budget tripped" in text)
    removed = [line for line in output.splitlines()
               if "Removing service [127.0.0.1]" in line and "removal budget" not in line]
    kept = [line for line in output.splitlines()
            if "Removing service [127.0.0.1]" in line and "kept in IPVS by the removal "
                                                          "budget" in line]
    assert len(removed) == 2, output  # half of four, the rest held back
    assert len(kept) == 2, output

    unlimited = run_until([*args[:-4], "--repair-interval", "0"],
                          lambda text: text.count("Removing service [127.0.0.1]") >= 4)
    assert unlimited.count("Removing service [127.0.0.1]") >= 4
    assert "Removal budget tripped" not in unlimited
    assert "kept in IPVS" not in unlimited


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"),
                    reason="this kernel has IPVS: the quick start would use it, not --dry-run")
def test_readme_quick_start_falls_back_to_dry_run_without_ipvs(tmp_path):
    sample = Path(__file__).resolve().parents[2] / "conf" / "sample.conf"
    output = run_until(["run", "-f", str(sample), "--dry-run-without-ipvs", "--pid-file",
                        str(tmp_path / "pid"), "--repair-interval", "0"],
                       lambda text: "Adding service [127.0.0.1]" in text)
    assert "IPVS is not available" in output and "running as --dry-run" in output
    assert "[dry-run] Adding Virtual Server [127.0.0.100]:tcp:80 (wlc)" in output
    assert "stopped (exit status 0)" in output


def test_log_detail_adds_the_operations_health_already_announced(tmp_path):
    (port,) = closed_ports(1)
    conf = tmp_path / "one.conf"
    conf.write_text(CONFIG.format(servers=SERVER.format(port=port)))
    base = ["run", "-f", str(conf), "--dry-run", "--pid-file", str(tmp_path / "pid"),
            "--repair-interval", "0"]
    removed = f"Removing service [127.0.0.1]:tcp:{port} from VS [10.0.0.1]:tcp:80"

    plain = run_until(base, lambda text: removed in text)
    assert f"TCP connection to [127.0.0.1]:tcp:{port} failed (refused" in plain
    assert f"[dry-run] {removed} (health)" not in plain  # the event line says it once

    detailed = run_until([*base, "--log-detail"],
                         lambda text: f"[dry-run] {removed} (health)" in text)
    assert f"[dry-run] {removed} (health)" in detailed


def test_syslog_target_without_a_syslog_socket_is_a_clear_usage_error(tmp_path):
    if os.path.exists("/dev/log"):
        pytest.skip("/dev/log exists here: logging to syslog would work")
    conf = tmp_path / "one.conf"
    conf.write_text(CONFIG.format(servers=SERVER.format(port=closed_ports(1)[0])))
    result = subprocess.run([sys.executable, "-m", "fastcheck.cli", "run", "-f", str(conf),
                             "--dry-run", "--pid-file", str(tmp_path / "pid"),
                             "--log-target", "syslog"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "/dev/log does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "pid").exists()
