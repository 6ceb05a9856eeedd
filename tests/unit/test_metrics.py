"""Metrics, /healthz judgement, routing and `fastcheck status` formatting — no sockets."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastcheck.daemon.app import Counters
from fastcheck.daemon.engine import EngineStats
from fastcheck.daemon.metrics import Metrics, lag_family
from fastcheck.daemon.pace import PaceJudge
from fastcheck.daemon.status import StatusServer, healthz_response, parse_listen
from fastcheck.health.events import Cause, RealServerDown, RealServerUp, RemovalBudgetTripped
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.scheduler import LagHistogram
from fastcheck.statuscmd import table_lines

SNAPSHOT: dict[str, Any] = {
    "virtual_servers": [{
        "vs": "TCP 10.0.0.1:80", "quorum_up": True, "weight_sum": 2,
        "sorry_server_active": False,
        "real_servers": [
            {"rs": "10.1.0.1:80 of TCP 10.0.0.1:80", "up": True, "held_by_budget": False,
             "weight": 2, "effective_weight": 2, "table_weight": 2, "slow_start": False,
             "checks": [{"kind": "TCP_CHECK", "state": "up", "failures": 0}]},
            {"rs": "10.1.0.2:80 of TCP 10.0.0.1:80", "up": False, "held_by_budget": True,
             "weight": 1, "effective_weight": 1, "table_weight": 1, "slow_start": False,
             "checks": [{"kind": "HTTP_GET", "state": "down", "failures": 3}]},
        ]}],
    "removal_budget": {"enabled": True, "tripped": 1, "held": 1},
}


def stats(lags: list[float], started: int | None = None) -> EngineStats:
    histogram = LagHistogram()
    for lag in lags:
        histogram.record(lag)
    return EngineStats(workers=1, probes=10, running=0,
                       started=len(lags) if started is None else started, missed_runs=0,
                       start_lag=histogram, implementations={"tcpconnect": "py"})


class FakeRuntime:
    def __init__(self, engine_stats: EngineStats) -> None:
        self.engine = SimpleNamespace(stats=lambda: engine_stats)
        self.counters = Counters(ops_applied=7, op_failures=2, repairs=1, repaired_ops=3)
        self.health = SimpleNamespace(snapshot=lambda: SNAPSHOT)
        self.started_at = 1_700_000_000.0
        self.clock = 0.0
        self.loop = SimpleNamespace(time=lambda: self.clock)

    async def health_snapshot(self) -> dict[str, Any]:
        return self.health.snapshot()

    def status(self, health: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"pid": 1, **SNAPSHOT}


def respond(server: StatusServer, method: str, target: str) -> Any:
    return asyncio.run(server.respond(method, target))


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


# ----------------------------------------------------------------------------- healthz


def test_healthz_is_503_when_the_pace_judge_says_probes_start_late() -> None:
    judge = PaceJudge(max_lag_s=0.5)
    judge.look(0.0, stats([]))
    pace = judge.look(5.0, stats([2.0] * 100))  # every start 2 s late
    response = healthz_response(pace, started=True, stopping=False)
    assert response.status == 503
    assert b"scheduler lagging: probes start" in response.body
    assert b"over the 500 ms limit" in response.body


def test_healthz_is_503_on_a_stall_and_200_when_keeping_up() -> None:
    judge = PaceJudge(stall_s=30.0)
    judge.look(0.0, stats([0.001] * 5))
    ok = healthz_response(judge.look(5.0, stats([0.001] * 10)), started=True, stopping=False)
    assert (ok.status, ok.body) == (200, b"ok\n")
    stalled = judge.look(60.0, stats([0.001] * 10))  # nothing started for 55 s
    response = healthz_response(stalled, started=True, stopping=False)
    assert response.status == 503 and b"no probe started" in response.body


def test_healthz_before_start_and_while_stopping() -> None:
    assert healthz_response(None, started=False, stopping=False).body == b"starting\n"
    judge = PaceJudge()
    pace = judge.look(0.0, stats([]))
    assert healthz_response(pace, started=True, stopping=True).status == 503


def test_server_healthz_route_uses_its_judge() -> None:
    server = StatusServer(judge=PaceJudge(max_lag_s=0.1))
    server.runtime = FakeRuntime(stats([]))  # type: ignore[assignment]
    server._started = True
    server.judge.look(0.0, stats([]))
    server.judge.look(5.0, stats([1.0] * 50))
    assert respond(server, "GET", "/healthz").status == 503
    server.judge.look(10.0, stats([1.0] * 50 + [0.001] * 50, started=100))
    assert respond(server, "GET", "/healthz?verbose=1").status == 200


def test_server_healthz_looks_afresh_when_its_timer_fell_behind() -> None:
    server = StatusServer(judge=PaceJudge(max_lag_s=0.1), pace_every_s=5.0)
    runtime = FakeRuntime(stats([1.0] * 50 + [0.001] * 50, started=100))
    server.runtime = runtime  # type: ignore[assignment]
    server._started = True
    server.judge.look(0.0, stats([]))
    server.judge.look(5.0, stats([1.0] * 50))
    server._looked_at = 5.0
    runtime.clock = 9.0  # within two periods: the last judgement stands
    assert respond(server, "GET", "/healthz").status == 503
    runtime.clock = 60.0  # stale: the route asks the judge again
    assert respond(server, "GET", "/healthz").status == 200


# ----------------------------------------------------------------------------- routes


def test_routes_status_metrics_and_errors() -> None:
    server = StatusServer()
    server.runtime = FakeRuntime(stats([0.002]))  # type: ignore[assignment]
    status = respond(server, "GET", "/status")
    assert status.status == 200 and json.loads(status.body)["pid"] == 1
    metrics = respond(server, "GET", "/metrics")
    assert metrics.content_type.startswith("text/plain; version=0.0.4")
    assert respond(server, "GET", "/other").status == 404
    refused = respond(server, "DELETE", "/status")
    assert refused.status == 405 and ("Allow", "GET, HEAD") in refused.headers
    head = status.encode(head_only=True)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert f"Content-Length: {len(status.body)}".encode() in head


# ----------------------------------------------------------------------------- metrics


def test_hook_fed_counters_by_kind_failure_and_event() -> None:
    metrics = Metrics(lambda: None)
    kinds = {1: "TCP_CHECK", 2: "HTTP_GET"}
    metrics.on_results(kinds.__getitem__, [
        (1, ProbeResult.up(0.003)),
        (1, ProbeResult.down(Failure.REFUSED, 0.0001)),
        (2, ProbeResult.down(Failure.HTTP_STATUS, 0.2)),
        (2, ProbeResult.down(Failure.HTTP_STATUS, 0.3)),
    ])
    metrics.on_events([RealServerUp(rs=None, weight=1, script=None),  # type: ignore[arg-type]
                       RealServerDown(rs=None, script=None),  # type: ignore[arg-type]
                       RealServerDown(rs=None, script=None, cause=Cause.STOP),  # type: ignore[arg-type]
                       RemovalBudgetTripped(removals_in_window=3, limit=2, trips=1)])
    metrics.on_reload(True, 0.2)
    metrics.on_reload(False, 0.01)
    found = samples(metrics.exposition())
    assert found[("fastcheck_probe_results_total",
                  frozenset({("kind", "TCP_CHECK"), ("result", "ok")}))] == 1
    assert found[("fastcheck_probe_results_total",
                  frozenset({("kind", "HTTP_GET"), ("result", "failed")}))] == 2
    assert found[("fastcheck_probe_failures_total",
                  frozenset({("kind", "HTTP_GET"), ("failure", "http_status")}))] == 2
    assert found[("fastcheck_probe_failures_total",
                  frozenset({("kind", "TCP_CHECK"), ("failure", "refused")}))] == 1
    assert found[("fastcheck_probe_latency_seconds_bucket",
                  frozenset({("kind", "HTTP_GET"), ("le", "0.25")}))] == 1
    assert found[("fastcheck_real_server_transitions_total", frozenset({("to", "up")}))] == 1
    # the stop's omega "down" is not a transition
    assert found[("fastcheck_real_server_transitions_total", frozenset({("to", "down")}))] == 1
    assert found[("fastcheck_health_events_total",
                  frozenset({("event", "RealServerDown")}))] == 2
    assert found[("fastcheck_removal_budget_trips_total", frozenset())] == 1
    assert found[("fastcheck_reloads_total", frozenset({("result", "failed")}))] == 1
    assert found[("fastcheck_reload_duration_seconds_count", frozenset())] == 2


def test_scrape_time_figures_from_the_runtime() -> None:
    runtime = FakeRuntime(stats([0.001, 0.001, 0.5]))
    found = samples(Metrics(lambda: runtime).exposition())  # type: ignore[arg-type, return-value]
    a = frozenset({("vs", "TCP 10.0.0.1:80"), ("rs", "10.1.0.1:80")})
    b = frozenset({("vs", "TCP 10.0.0.1:80"), ("rs", "10.1.0.2:80")})
    assert found[("fastcheck_real_server_up", a)] == 1
    assert found[("fastcheck_real_server_up", b)] == 0
    assert found[("fastcheck_real_server_held_by_budget", b)] == 1
    assert found[("fastcheck_real_server_weight", a)] == 2
    assert found[("fastcheck_removal_budget_tripped", frozenset())] == 1
    assert found[("fastcheck_ipvs_operations_total", frozenset())] == 7
    assert found[("fastcheck_ipvs_operation_errors_total", frozenset())] == 2
    assert found[("fastcheck_drift_repairs_total", frozenset())] == 1
    assert found[("fastcheck_drift_repair_operations_total", frozenset())] == 3
    assert found[("fastcheck_implementation_info",
                  frozenset({("hot_path", "tcpconnect"), ("implementation", "py")}))] == 1
    assert found[("fastcheck_scheduler_start_lag_seconds_count", frozenset())] == 3


def test_lag_histogram_becomes_cumulative_buckets() -> None:
    histogram = LagHistogram()
    for value in (0.001, 0.001, 0.5, 500.0):  # the last one is past every bound
        histogram.record(value)
    family = lag_family("fastcheck_x_seconds", "x", histogram)
    buckets = [(s.labels["le"], s.value) for s in family.samples if s.name.endswith("_bucket")]
    values = [v for _, v in buckets]
    assert values == sorted(values)  # cumulative
    assert buckets[-1] == ("+Inf", 4)
    assert buckets[-2][1] == 3
    assert dict(buckets)["0.001"] == 2


# ----------------------------------------------------------------------------- listen


@pytest.mark.parametrize(("text", "expected"), [
    ("9469", ("127.0.0.1", 9469)),
    ("127.0.0.2:80", ("127.0.0.2", 80)),
    ("localhost:9000", ("127.0.0.1", 9000)),
    ("[::1]:9469", ("::1", 9469)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("0.0.0.0:9469", "not a loopback address"),
    ("[2001:db8::1]:80", "not a loopback address"),
    ("::1:9469", "[ADDR]:PORT"),
    ("127.0.0.1:0", "from 1 to 65535"),
    ("127.0.0.1:http", "from 1 to 65535"),
    ("example.org:80", "not an IP address"),
])
def test_parse_listen_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_listen(text)


def test_parse_listen_remote_when_allowed() -> None:
    assert parse_listen("0.0.0.0:9469", allow_remote=True) == ("0.0.0.0", 9469)


# ----------------------------------------------------------------------------- table


def test_status_table_rows_and_summary() -> None:
    lines = table_lines({**SNAPSHOT, "pid": 42, "dry_run": True, "counters": {"probes": 2},
                         "engine": {"lag_p99_s": 0.0021}})
    assert lines[0].split()[:4] == ["VIRTUAL", "SERVER", "REAL", "SERVER"]
    assert lines[1].split() == ["TCP", "10.0.0.1:80", "10.1.0.1:80", "up", "2", "TCP_CHECK",
                                "up"]
    assert lines[2].split()[:3] == ["10.1.0.2:80", "down", "(held)"]
    assert lines[2].endswith("HTTP_GET down (3 failures)")
    assert lines[-1] == ("2 real servers in 1 virtual server: 1 up, 1 down (1 held by the "
                         "removal budget); 2 probes, start lag p99 2.1 ms; pid 42, dry run")


def test_run_status_listen_alone_means_the_status_commands_default() -> None:
    from fastcheck.cli import build_parser
    from fastcheck.daemon.status import DEFAULT_STATUS_PORT
    from fastcheck.statuscmd import DEFAULT_ENDPOINT

    parser = build_parser()
    assert parser.parse_args(["run"]).status_listen is None  # off by default
    alone = parser.parse_args(["run", "--status-listen"]).status_listen
    assert alone == DEFAULT_ENDPOINT == f"127.0.0.1:{DEFAULT_STATUS_PORT}"
    assert parser.parse_args(["status"]).endpoint == DEFAULT_ENDPOINT
