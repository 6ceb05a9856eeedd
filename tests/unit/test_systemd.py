"""systemd notification: addresses, message format and the observer against a fake
$NOTIFY_SOCKET (an AF_UNIX datagram socket in tmp, or an abstract one), driven with a fake
runtime whose engine stats we choose; and the unit file's settings."""

from __future__ import annotations

import configparser
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fastcheck.daemon.app import Options, ReloadFailure
from fastcheck.daemon.engine import EngineStats
from fastcheck.daemon.pace import DEFAULT_STALL_S, PaceJudge
from fastcheck.daemon.systemd import (
    NotifySocket,
    SystemdObserver,
    message,
    observer_from_environment,
    socket_address,
    stall_limit,
    watchdog_usec,
)
from fastcheck.scheduler import LagHistogram

UNIT = Path(__file__).resolve().parents[2] / "conf" / "fastcheck.service"


# ------------------------------------------------------------------ fake notify socket


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def messages(self) -> list[dict[str, str]]:
        """Every datagram waiting, parsed into KEY → value."""
        out = []
        while True:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


@pytest.fixture(params=["path", "abstract"])
def fake_systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify")
        sock.bind(path)
        env_value = path
    else:
        name = f"fastcheck-test-{os.getpid()}-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        env_value = "@" + name
    with sock:
        yield FakeSystemd(sock, env_value)


# ------------------------------------------------------------------ fake runtime


class FakeLoop:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, Any]] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> Any:
        entry = (self.now + delay, callback)
        self.timers.append(entry)
        return SimpleNamespace(cancel=lambda: self.timers.remove(entry)
                               if entry in self.timers else None)


@dataclass
class FakeEngine:
    started: int = 0
    lag: LagHistogram = field(default_factory=LagHistogram)

    def run(self, count: int, lag_s: float) -> None:
        self.started += count
        for _ in range(count):
            self.lag.record(lag_s)

    def stats(self) -> EngineStats:
        return EngineStats(workers=1, probes=4, running=0, started=self.started,
                           missed_runs=0, start_lag=self.lag)


class FakeHealth:
    def snapshot(self) -> dict[str, Any]:
        return {"virtual_servers": [
            {"vs": "a", "real_servers": [{"up": True}, {"up": False}, {"up": True}]},
            {"vs": "b", "real_servers": [{"up": True}]}]}


def fake_runtime(interval_s: float = 5.0) -> Any:
    probes = {i: SimpleNamespace(interval_s=interval_s) for i in range(4)}
    return SimpleNamespace(loop=FakeLoop(), engine=FakeEngine(), health=FakeHealth(),
                           plan=SimpleNamespace(probes=probes),
                           options=Options(config_path="/etc/keepalived/keepalived.conf"))


def observer(fake: FakeSystemd, watchdog_usec: int | None = 2_000_000) -> SystemdObserver:
    return SystemdObserver(NotifySocket(socket_address(fake.env_value)),
                           watchdog_usec=watchdog_usec, judge=PaceJudge(max_lag_s=1.0))


def advance(runtime: Any, obs: SystemdObserver, seconds: float) -> None:
    runtime.loop.now += seconds
    obs.tick(runtime, runtime.loop.now)


# ------------------------------------------------------------------ pure parts


def test_addresses_paths_and_abstract_names() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@sd-notify/123") == b"\0sd-notify/123"
    for bad in ("", "@", "relative/path", "vsock:2:1234"):
        with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
            socket_address(bad)


def test_watchdog_is_for_the_process_watchdog_pid_names() -> None:
    assert watchdog_usec({"WATCHDOG_USEC": "30000000"}, pid=42) == 30_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) \
        == 30_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_usec({}, pid=42) is None
    assert watchdog_usec({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_usec({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_usec({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "me"}, pid=42) is None


def test_message_is_newline_separated_and_status_stays_one_line() -> None:
    assert message("READY=1", "STATUS=a\nb") == b"READY=1\nSTATUS=a b"


def test_stall_limit_allows_for_long_probe_intervals() -> None:
    assert stall_limit(fake_runtime(interval_s=5.0)) == DEFAULT_STALL_S
    assert stall_limit(fake_runtime(interval_s=60.0)) == 120.0


# ------------------------------------------------------------------ the socket


def test_sends_reach_the_socket(fake_systemd: FakeSystemd) -> None:
    notify = NotifySocket(socket_address(fake_systemd.env_value))
    assert notify.send("READY=1", "STATUS=hello")
    assert notify.send("WATCHDOG=1", wait=True)
    notify.close()
    assert fake_systemd.messages() == [{"READY": "1", "STATUS": "hello"}, {"WATCHDOG": "1"}]


def test_a_failing_socket_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gone"
    notify = NotifySocket(str(path))
    with caplog.at_level(logging.INFO, logger="fastcheck"):
        assert not notify.send("READY=1", wait=True)
        assert not notify.send("WATCHDOG=1")
        assert not notify.send("STOPPING=1")
    warnings = [r for r in caplog.records if "cannot notify" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    assert notify.failures == 3

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # systemd is back
        sock.bind(str(path))
        with caplog.at_level(logging.INFO, logger="fastcheck"):
            assert notify.send("WATCHDOG=1")
        assert "works again" in caplog.records[-1].getMessage()
        assert sock.recv(100) == b"WATCHDOG=1"


# ------------------------------------------------------------------ the observer


def test_protocol_over_a_run(fake_systemd: FakeSystemd) -> None:
    runtime = fake_runtime()
    obs = observer(fake_systemd)
    obs.started(runtime)
    ready = fake_systemd.messages()
    assert ready == [{"READY": "1", "STATUS": ready[0]["STATUS"]}]
    assert ready[0]["STATUS"].startswith("3/4 real servers up, 2 services, ")

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    obs.reload_started(runtime)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, = fake_systemd.messages()
    assert reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert "STATUS" in reloading

    obs.reload_finished(runtime, True, 0.1)
    finished, = fake_systemd.messages()
    assert finished["READY"] == "1" and finished["STATUS"].startswith("3/4 real servers up")
    obs.reload_started(runtime)
    runtime.last_reload_failure = ReloadFailure("timeout", "reading took longer than 15 s")
    obs.reload_finished(runtime, False, 0.1)
    refused = fake_systemd.messages()[-1]
    assert refused["READY"] == "1"
    assert refused["STATUS"].startswith("reload failed: reading took longer than 15 s; 3/4 ")

    assert runtime.loop.timers  # the watchdog / status timer is armed
    obs.stopping(runtime)
    assert fake_systemd.messages()[0]["STOPPING"] == "1"
    assert not runtime.loop.timers  # no more pings once the stop began


def test_watchdog_fed_only_while_keeping_up(fake_systemd: FakeSystemd,
                                            caplog: pytest.LogCaptureFixture) -> None:
    runtime = fake_runtime()
    obs = observer(fake_systemd, watchdog_usec=2_000_000)
    assert obs.tick_s == 1.0  # half the watchdog period
    obs.started(runtime)
    fake_systemd.messages()

    runtime.engine.run(50, lag_s=0.002)
    advance(runtime, obs, 1.0)
    assert {"WATCHDOG": "1"} in fake_systemd.messages()

    with caplog.at_level(logging.WARNING, logger="fastcheck"):
        for _ in range(3):  # a stalled scheduler: every probe starts seconds late
            runtime.engine.run(50, lag_s=8.0)
            advance(runtime, obs, 1.0)
    stalled = fake_systemd.messages()
    assert not [m for m in stalled if "WATCHDOG" in m]
    assert len(stalled) == 1  # STATUS when the episode begins, not at every look
    assert stalled[0]["STATUS"].startswith("not keeping up: probes start 8000 ms late (p99)")
    assert stalled[0]["STATUS"].endswith(", lag p99 8000 ms")
    lagging = [r for r in caplog.records if "not keeping up" in r.getMessage()]
    assert len(lagging) == 1  # once per episode

    runtime.engine.run(50, lag_s=0.002)
    advance(runtime, obs, 1.0)
    recovered = fake_systemd.messages()
    assert {"WATCHDOG": "1"} in recovered
    assert any(m.get("STATUS", "").startswith("3/4 real servers up") for m in recovered)


def test_status_refreshes_every_ten_seconds_with_the_rate(fake_systemd: FakeSystemd) -> None:
    runtime = fake_runtime()
    obs = observer(fake_systemd, watchdog_usec=None)
    assert obs.tick_s == 10.0
    obs.started(runtime)
    fake_systemd.messages()
    runtime.engine.run(200, lag_s=0.004)
    advance(runtime, obs, 10.0)
    status, = fake_systemd.messages()
    assert status == {"STATUS": "3/4 real servers up, 2 services, 20 checks/s, lag p99 4 ms"}
    assert "WATCHDOG" not in status  # no watchdog asked for, none fed


def test_observer_from_environment(fake_systemd: FakeSystemd) -> None:
    assert observer_from_environment({}) is None
    assert observer_from_environment({"NOTIFY_SOCKET": "vsock:2:99"}) is None
    plain = observer_from_environment({"NOTIFY_SOCKET": fake_systemd.env_value})
    assert plain is not None and plain.watchdog_s is None
    watched = observer_from_environment({"NOTIFY_SOCKET": fake_systemd.env_value,
                                         "WATCHDOG_USEC": "30000000",
                                         "WATCHDOG_PID": str(os.getpid())})
    assert watched is not None and watched.watchdog_s == 30.0 and watched.tick_s == 10.0
    other = observer_from_environment({"NOTIFY_SOCKET": fake_systemd.env_value,
                                       "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert other is not None and other.watchdog_s is None
    for made in (plain, watched, other):
        made.notify.close()


# ------------------------------------------------------------------ the unit file


def unit_file() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, value = line.split("=", 1)
        current.setdefault(key, []).append(value)
    return sections


def test_unit_file_asks_for_what_the_daemon_does() -> None:
    service = unit_file()["Service"]
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert int(service["WatchdogSec"][0]) == 30
    assert service["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert "check-config -f /etc/keepalived/keepalived.conf" in service["ExecStartPre"][0]
    assert service["ExecStart"][0].startswith("/usr/local/bin/fastcheck run -f ")
    assert set(service["CapabilityBoundingSet"][0].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(service["AmbientCapabilities"][0].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert "FASTCHECK_REQUIRE_EXTENSIONS=1" in service["Environment"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert int(service["TimeoutStopSec"][0]) > Options(config_path="x").stop_timeout_s
    assert int(service["LimitNOFILE"][0]) >= 65536
    assert service["Restart"] == ["on-failure"]
    configparser.ConfigParser(strict=False, interpolation=None).read_string(UNIT.read_text())
