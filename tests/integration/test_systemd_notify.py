"""systemd notification end to end: `fastcheck run --dry-run` under a fake $NOTIFY_SOCKET
probing a loopback listener (READY, watchdog pings, RELOADING/READY on SIGHUP, STOPPING on
SIGTERM); a daemon whose scheduler falls behind feeds no watchdog; and the unit file passes
`systemd-analyze verify`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonproc import reap

from fastcheck.config.loader import load_file
from fastcheck.daemon.app import Options, Runtime, local_engine
from fastcheck.daemon.engine import EngineStats
from fastcheck.daemon.observe import Observer
from fastcheck.daemon.signals import load_health, run_daemon
from fastcheck.ipvs.memory import MemoryBackend

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "conf" / "fastcheck.service"

CONFIG = """
virtual_server 10.0.0.1 80 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
    delay_loop 0.2
    real_server 127.0.0.1 {port} {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
"""

Message = dict[str, str]


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest,
                  tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        sock.bind(str(tmp_path / "notify"))
        value = str(tmp_path / "notify")
    else:
        name = f"fastcheck-it-{os.getpid()}-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        value = "@" + name
    with sock:
        yield sock, value


def parse(data: bytes) -> Message:
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


def wait_for(sock: socket.socket, seen: list[Message], want: Callable[[Message], bool],
              timeout_s: float = 20.0) -> Message:
    """Receives until a message satisfies `want` (bounded in time); keeps all in `seen`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = parse(sock.recv(65536))
        except TimeoutError:
            break
        seen.append(message)
        if want(message):
            return message
    raise AssertionError(f"no such notification within {timeout_s} s; got {seen}")


def test_run_under_a_fake_systemd(tmp_path: Path, listener: int,
                                  notify_socket: tuple[socket.socket, str]) -> None:
    sock, value = notify_socket
    conf = tmp_path / "fastcheck.conf"
    conf.write_text(CONFIG.format(port=listener))
    env = {**os.environ, "NOTIFY_SOCKET": value, "WATCHDOG_USEC": "400000",
           "PYTHONPATH": str(ROOT / "src")}
    env.pop("WATCHDOG_PID", None)
    log_path = tmp_path / "log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastcheck.cli", "run", "-f", str(conf), "--dry-run",
             "--pid-file", str(tmp_path / "pid"), "--repair-interval", "0"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    seen: list[Message] = []
    try:
        ready = wait_for(sock, seen, lambda m: "READY" in m)
        assert ready["READY"] == "1" and seen == [ready]  # nothing before READY=1
        assert ready["STATUS"].startswith("1/1 real servers up, 1 services, ")
        assert (tmp_path / "pid").exists()  # READY comes after the start, not before
        for _ in range(3):  # pinged again and again while probes start on time
            wait_for(sock, seen, lambda m: m == {"WATCHDOG": "1"})

        proc.send_signal(signal.SIGHUP)
        reloading = wait_for(sock, seen, lambda m: "RELOADING" in m)
        assert reloading["RELOADING"] == "1"
        assert 0 < int(reloading["MONOTONIC_USEC"]) \
            <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        after = wait_for(sock, seen, lambda m: "READY" in m)
        assert after["STATUS"].startswith("1/1 real servers up")
        wait_for(sock, seen, lambda m: m == {"WATCHDOG": "1"})  # still fed after a reload

        good = conf.read_text()  # a file the reload must refuse: systemd hears why
        conf.write_text(good + "~SEQ(i," + "9" * 5000 + ",1) x\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(sock, seen, lambda m: "RELOADING" in m)
        refused = wait_for(sock, seen, lambda m: "READY" in m)
        assert refused["STATUS"].startswith("reload failed: 1 error(s); 1/1 real servers up")
        wait_for(sock, seen, lambda m: m == {"WATCHDOG": "1"})  # and the daemon goes on
        conf.write_text(good)

        proc.send_signal(signal.SIGTERM)
        stopping = wait_for(sock, seen, lambda m: "STOPPING" in m)
        assert stopping["STOPPING"] == "1"
        assert proc.wait(timeout=20) == 0
    finally:
        reap(proc, timeout_s=10)
    output = log_path.read_text()
    assert "watchdog every 0.4 s" in output
    assert "not keeping up" not in output and "cannot notify" not in output, output


class StopAfter(Observer):
    """Asks the runtime to stop `delay_s` after the start (bounded test runs)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def started(self, runtime: Runtime) -> None:
        runtime.loop.call_later(self.delay_s, runtime.request_stop)


class LaggingEngine:
    """The real local engine whose stats also report every start as seconds late: a
    scheduler that has fallen far behind, as the pace judge would see it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stats(self) -> EngineStats:
        stats = self.inner.stats()
        stats.started += 1000
        for _ in range(1000):
            stats.start_lag.record(5.0)
        return stats


def test_a_scheduler_that_falls_behind_feeds_no_watchdog(
        tmp_path: Path, listener: int, notify_socket: tuple[socket.socket, str],
        caplog: pytest.LogCaptureFixture) -> None:
    sock, value = notify_socket
    conf = tmp_path / "fastcheck.conf"
    conf.write_text(CONFIG.format(port=listener))
    config, _ = load_file(str(conf))
    factory, carry = load_health()

    def lagging(*args: Any, **kwargs: Any) -> Any:
        return LaggingEngine(local_engine(*args, **kwargs))

    seen: list[Message] = []
    receiver = threading.Thread(
        target=lambda: wait_for(sock, seen, lambda m: "STOPPING" in m), daemon=True)
    receiver.start()
    options = Options(config_path=str(conf), dry_run=True, repair_interval_s=0,
                      scheduler_bootstrap_s=0.0)
    status = run_daemon(options, MemoryBackend(fullnat=True), config, factory, carry,
                        install_signals=False, observers=[StopAfter(1.5)],
                        engine_factory=lagging,
                        environ={"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "200000"})
    assert status == 0
    receiver.join(timeout=20)
    assert seen[0]["READY"] == "1" and seen[-1]["STOPPING"] == "1"
    assert not [m for m in seen if "WATCHDOG" in m], seen
    behind = [m["STATUS"] for m in seen[1:-1]]
    assert len(behind) == 1 and behind[0].startswith(
        "not keeping up: probes start 5000 ms late (p99)"), seen
    assert sum("not keeping up" in r.getMessage() for r in caplog.records) == 1


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit file cannot be verified here")
    # verify wants every Exec binary to exist: point /usr/local/bin/fastcheck at the
    # installed command (or this interpreter) for the copy under test.
    binary = shutil.which("fastcheck") or str(Path(sys.executable).parent / "fastcheck")
    if not os.access(binary, os.X_OK):
        binary = sys.executable
    text = UNIT.read_text()
    assert "/usr/local/bin/fastcheck" in text
    unit = tmp_path / "fastcheck.service"
    unit.write_text(text.replace("/usr/local/bin/fastcheck", binary))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "fastcheck.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
