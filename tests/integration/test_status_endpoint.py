"""The status endpoint of a running daemon (real HTTP requests) and `fastcheck status`.

One daemon runs as a subprocess (`fastcheck run --dry-run --status-listen`) against two
loopback real servers: one listening (up), one closed port (refused → down).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from daemonproc import free_port, listener, wait_for
from prometheus_client.parser import text_string_to_metric_families

from fastcheck.cli import main
from fastcheck.daemon.status import StatusServer

CONFIG = """
virtual_server 10.0.0.1 80 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
    delay_loop 0.2
    real_server 127.0.0.1 {up} {{
        weight 3
        TCP_CHECK {{
            connect_timeout 1
            retry 0
        }}
    }}
    real_server 127.0.0.1 {down} {{
        weight 5
        TCP_CHECK {{
            connect_timeout 1
            retry 0
        }}
    }}
}}
"""
VS = "TCP 10.0.0.1:80"


class Daemon:
    def __init__(self, proc: subprocess.Popen[str], port: int, up: int, down: int) -> None:
        self.proc, self.port, self.up, self.down = proc, port, up, down
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(proc.stdout or ()),
                                       daemon=True)
        self.reader.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def get(self, path: str, method: str = "GET") -> tuple[int, str, str]:
        request = urllib.request.Request(f"http://{self.endpoint}{path}", method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=5) as response:
                return (response.status, response.headers.get("Content-Type", ""),
                        response.read().decode())
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read().decode()

    def output(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def running_daemon(tmp: Path, *extra: str) -> Iterator[Daemon]:
    """A dry-run daemon with its endpoint, once both servers have been judged."""
    server, up = listener()  # the kernel completes handshakes: enough for TCP_CHECK
    down = free_port()
    port = free_port()
    conf = tmp / "farm.conf"
    conf.write_text(CONFIG.format(up=up, down=down))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastcheck.cli", "run", "-f", str(conf), "--dry-run",
         "--pid-file", str(tmp / "pid"), "--repair-interval", "0",
         "--dump-file", str(tmp / "dump"), "--dump-json", str(tmp / "dump.json"),
         "--status-listen", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    d = Daemon(proc, port, up, down)
    try:
        # the down server is seen down after its first (refused) probe
        wait_for(lambda: _rs_states(d) == {up: True, down: False}, "both servers judged")
        yield d
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        d.reader.join(timeout=5)
        server.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("status")) as d:
        yield d


def _rs_states(d: Daemon) -> dict[int, bool]:
    status, _, body = d.get("/status")
    assert status == 200
    states = {}
    for vs in json.loads(body)["virtual_servers"]:
        for rs in vs["real_servers"]:
            if all(check["has_run"] for check in rs["checks"]):
                port = int(rs["rs"].split(" ")[0].rsplit(":", 1)[1])
                states[port] = rs["up"]
    return states


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def test_metrics_are_prometheus_text_with_per_server_state(daemon: Daemon) -> None:
    status, content_type, body = daemon.get("/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = _samples(body)
    up_rs = frozenset({("vs", VS), ("rs", f"127.0.0.1:{daemon.up}")})
    down_rs = frozenset({("vs", VS), ("rs", f"127.0.0.1:{daemon.down}")})
    assert samples[("fastcheck_real_server_up", up_rs)] == 1.0
    assert samples[("fastcheck_real_server_up", down_rs)] == 0.0
    assert samples[("fastcheck_real_server_weight", up_rs)] == 3.0
    assert samples[("fastcheck_real_server_table_weight", up_rs)] == 3.0
    assert ("fastcheck_real_server_table_weight", down_rs) not in samples  # removed
    assert samples[("fastcheck_virtual_server_weight_sum", frozenset({("vs", VS)}))] == 3.0
    refused = frozenset({("kind", "TCP_CHECK"), ("failure", "refused")})
    assert samples[("fastcheck_probe_failures_total", refused)] >= 1.0
    assert not any(name == "fastcheck_probe_failures_total" and ("failure", "refused")
                   not in labels for name, labels in samples)  # nothing else failed
    ok = frozenset({("kind", "TCP_CHECK"), ("result", "ok")})
    assert samples[("fastcheck_probe_results_total", ok)] >= 1.0
    assert samples[("fastcheck_real_server_transitions_total", frozenset({("to", "down")}))] \
        == 1.0
    # start: the service and its two destinations; health: the down one removed
    assert samples[("fastcheck_ipvs_operations_total", frozenset())] == 4.0
    assert samples[("fastcheck_ipvs_operation_errors_total", frozenset())] == 0.0
    assert samples[("fastcheck_scheduler_keeping_up", frozenset())] == 1.0
    lag_count = samples[("fastcheck_scheduler_start_lag_seconds_count", frozenset())]
    assert lag_count >= 2
    assert samples[("fastcheck_scheduler_start_lag_seconds_bucket",
                    frozenset({("le", "+Inf")}))] == lag_count
    impls = {dict(labels)["hot_path"]: dict(labels)["implementation"]
             for name, labels in samples if name == "fastcheck_implementation_info"}
    assert "tcpconnect" in impls and set(impls.values()) <= {"c", "py"}


def test_status_json_lists_both_real_servers(daemon: Daemon) -> None:
    status, content_type, body = daemon.get("/status")
    assert status == 200 and content_type == "application/json"
    document = json.loads(body)
    assert document["dry_run"] is True
    assert document["pid"] == daemon.proc.pid
    [vs] = document["virtual_servers"]
    assert vs["vs"] == VS
    servers = {rs["rs"].split(" ")[0]: rs for rs in vs["real_servers"]}
    assert servers[f"127.0.0.1:{daemon.up}"]["up"] is True
    assert servers[f"127.0.0.1:{daemon.down}"]["up"] is False
    assert servers[f"127.0.0.1:{daemon.down}"]["checks"][0]["state"] == "down"


def test_healthz_and_unknown_paths(daemon: Daemon) -> None:
    assert daemon.get("/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    status, _, body = daemon.get("/nowhere")
    assert status == 404 and "/metrics" in body
    assert daemon.get("/status", method="POST")[0] == 405
    assert daemon.get("/healthz", method="HEAD")[:2] == (200, "text/plain; charset=utf-8")


def _raw(daemon: Daemon, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bad_requests_get_an_answer_not_a_dead_daemon(daemon: Daemon) -> None:
    assert _raw(daemon, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /status HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
    assert _raw(daemon, huge).startswith(b"HTTP/1.1 431 ")
    assert daemon.get("/healthz")[0] == 200  # still serving


def test_status_command_prints_a_table(daemon: Daemon) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "--endpoint", daemon.endpoint], out, err) == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["VIRTUAL", "SERVER", "REAL", "SERVER", "STATE", "WEIGHT",
                                "CHECKS"]
    up_row = next(line for line in lines if f"127.0.0.1:{daemon.up}" in line)
    down_row = next(line for line in lines if f"127.0.0.1:{daemon.down}" in line)
    assert up_row.startswith(VS)
    assert up_row.split()[3:6] == ["up", "3", "TCP_CHECK"]
    assert down_row.split()[1:3] == ["down", "5"] and "(out)" in down_row
    assert "TCP_CHECK down" in down_row
    assert lines[-1].startswith("2 real servers in 1 virtual server: 1 up, 1 down; 2 probes")


def test_status_command_json(daemon: Daemon) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "--endpoint", str(daemon.port), "--json"], out, err) == 0
    document = json.loads(out.getvalue())
    [vs] = document["virtual_servers"]
    assert sorted(rs["up"] for rs in vs["real_servers"]) == [False, True]


def _metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    return _samples(daemon.get("/metrics")[2]).get((name, frozenset(labels.items())))


def test_reload_is_counted_and_timed(daemon: Daemon) -> None:
    before = _metric(daemon, "fastcheck_reloads_total", result="ok") or 0.0
    daemon.proc.send_signal(signal.SIGHUP)  # same file: nothing changes but the count
    wait_for(lambda: _metric(daemon, "fastcheck_reloads_total", result="ok") == before + 1,
             "the reload to be counted")
    assert _metric(daemon, "fastcheck_reload_duration_seconds_count") == before + 1
    assert _metric(daemon, "fastcheck_reloads_total", result="failed") in (None, 0.0)
    assert _rs_states(daemon) == {daemon.up: True, daemon.down: False}  # carried over


def test_healthz_fails_while_the_scheduler_lags(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        assert d.get("/healthz")[0] == 200
        d.proc.send_signal(signal.SIGSTOP)  # freeze the daemon: every probe starts late
        time.sleep(3.0)
        d.proc.send_signal(signal.SIGCONT)
        seen: list[tuple[int, str, str]] = []
        wait_for(lambda: seen.append(d.get("/healthz")) or seen[-1][0] == 503,
                 "/healthz to report the lag", timeout_s=15)
        assert seen[-1][2].startswith("scheduler lagging: probes start")
        assert "over the 1000 ms limit" in seen[-1][2]
        assert _metric(d, "fastcheck_scheduler_keeping_up") == 0.0
        # it recovers by itself once probes start on time again
        wait_for(lambda: d.get("/healthz")[0] == 200, "/healthz to recover", timeout_s=20)


def test_status_command_without_a_daemon_says_how_to_enable_it() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "--endpoint", f"127.0.0.1:{free_port()}"], out, err) == 1
    assert "is `fastcheck run --status-listen` enabled?" in err.getvalue()
    assert "Traceback" not in err.getvalue() and out.getvalue() == ""


def test_port_in_use_is_a_clear_error_before_anything_is_applied(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        conf = tmp_path / "farm.conf"
        conf.write_text(CONFIG.format(up=free_port(), down=free_port()))
        proc = subprocess.run(
            [sys.executable, "-m", "fastcheck.cli", "run", "-f", str(conf), "--dry-run",
             "--pid-file", str(tmp_path / "pid"), "--status-listen", str(port)],
            capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"status endpoint: cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Adding" not in proc.stderr  # nothing was applied


def test_non_loopback_listen_needs_allow_remote(tmp_path: Path) -> None:
    conf = tmp_path / "farm.conf"
    conf.write_text(CONFIG.format(up=free_port(), down=free_port()))
    out, err = io.StringIO(), io.StringIO()
    code = main(["run", "-f", str(conf), "--dry-run", "--pid-file", str(tmp_path / "pid"),
                 "--status-listen", "0.0.0.0:9469"], out, err)
    assert code == 2
    assert "not a loopback address" in err.getvalue()
    assert "--status-allow-remote" in err.getvalue()


# ------------------------------------------------------- the server alone, on both loops


class _Runtime:
    """Just what the endpoint reads (the daemon tests above use the real Runtime)."""

    def __init__(self) -> None:
        from fastcheck.daemon.app import Counters
        from fastcheck.daemon.engine import EngineStats

        self.loop = asyncio.get_running_loop()
        self.engine = SimpleNamespace(stats=lambda: EngineStats(1, 1, 0, 0, 0))
        self.counters = Counters()
        self.started_at = 0.0
        self.health = SimpleNamespace(snapshot=lambda: {"virtual_servers": []})

    async def health_snapshot(self) -> dict[str, Any]:
        return self.health.snapshot()

    def status(self, health: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"pid": 7, "virtual_servers": []}


async def _exchange(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def test_server_on_either_loop_answers_and_times_out_idle_clients(run) -> None:
    async def scenario() -> None:
        port = free_port()
        server = StatusServer("127.0.0.1", port, read_timeout_s=0.2, max_clients=2)
        await server.open(_Runtime())  # type: ignore[arg-type]
        try:
            server.started(server.runtime)  # type: ignore[arg-type]
            answer = await _exchange(port, b"GET /status HTTP/1.0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"pid": 7,
                                                                  "virtual_servers": []}
            idle = await _exchange(port, b"GET /sta")  # never finishes its head
            assert idle.startswith(b"HTTP/1.1 408 ")
            assert (await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    ).endswith(b"\r\n\r\nok\n")
        finally:
            await server.close()
        with pytest.raises(OSError):  # closed: nothing listens any more
            await _exchange(port, b"GET / HTTP/1.0\r\n\r\n")

    run(scenario())


def test_server_on_ipv6_loopback(run) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")

    async def scenario() -> None:
        with socket.socket(socket.AF_INET6) as probe:
            try:
                probe.bind(("::1", 0))
            except OSError as error:
                pytest.skip(f"::1 is not usable here: {error}")
            port = probe.getsockname()[1]
        server = StatusServer("::1", port)
        await server.open(_Runtime())  # type: ignore[arg-type]
        try:
            answer = await _exchange(port, b"GET /nothing HTTP/1.1\r\n\r\n", host="::1")
            assert answer.startswith(b"HTTP/1.1 404 ")
        finally:
            await server.close()

    run(scenario())


def test_server_turns_away_clients_over_its_limit(run) -> None:
    async def scenario() -> None:
        port = free_port()
        server = StatusServer("127.0.0.1", port, max_clients=1)
        await server.open(_Runtime())  # type: ignore[arg-type]
        try:
            _, slow = await asyncio.open_connection("127.0.0.1", port)
            slow.write(b"GET /status HTTP/1.1\r\n")  # and nothing more for now
            for _ in range(200):  # bounded: until the server holds the slow client
                if server._clients:
                    break
                await asyncio.sleep(0.01)
            assert len(server._clients) == 1
            busy = await _exchange(port, b"GET /healthz HTTP/1.1\r\n\r\n")
            assert busy.startswith(b"HTTP/1.1 503 ") and busy.endswith(b"too many clients\n")
            slow.close()
        finally:
            await server.close()

    run(scenario())


def test_daemon_on_two_probe_workers_judges_and_leaves_no_worker_behind(
        tmp_path: Path) -> None:
    with running_daemon(tmp_path, "--workers", "2") as d:
        status = json.loads(d.get("/status")[2])
        pids = status["engine"]["worker_pids"]
        assert status["engine"]["workers"] == 2 and len(pids) == 2
        assert all(os.path.exists(f"/proc/{pid}") for pid in pids)
        assert status["engine"]["implementations"]
    assert d.proc.returncode == 0
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids),
             "the probe workers to exit", timeout_s=10)


def test_bad_worker_count_is_a_usage_error(tmp_path: Path) -> None:
    conf = tmp_path / "farm.conf"
    conf.write_text(CONFIG.format(up=free_port(), down=free_port()))
    result = subprocess.run([sys.executable, "-m", "fastcheck.cli", "run", "-f", str(conf),
                             "--dry-run", "--pid-file", str(tmp_path / "pid"),
                             "--workers", "many"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--workers: workers must be a number or 'auto'" in result.stderr
    assert "Traceback" not in result.stderr
