"""The TCP connect engine twins (tcpconnect_c / tcpconnect_py), their selector, the adapter.

Loopback only: every connect here goes to 127.0.0.1 / ::1 (a listener of ours, a bound
port that does not listen, or a listener whose accept queue we filled so SYNs are dropped
and the connect stays pending). Time is passed in: most tests use made-up ``now`` values.
Namespaced tests (timeouts to a silent host, TIME_WAIT) live in
tests/integration/test_tcp_probe.py.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcheck._ext._select import REQUIRE_EXTENSIONS_ENV, env_flag, implementation_of
from fastcheck.model import Target
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.tcp import TcpProber, result_for

API = {"TcpConnectEngine"}
ENGINE_API = {"fileno", "submit", "poll", "next_deadline", "close", "in_flight", "queued",
              "max_in_flight", "__enter__", "__exit__"}  # fmt: skip
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


# --- loopback helpers ---------------------------------------------------------------------


def listener(host: str = "127.0.0.1", backlog: int = 128) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> int:
    """Accept and close whatever is in a listener's accept queue."""
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with listener() as sock:
        yield sock


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound by us but not listening: a SYN to it is answered with RST."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def pending_port() -> Iterator[int]:
    """A loopback listener whose accept queue is full: SYNs are dropped, connects hang."""
    with listener(backlog=0) as sock:
        port = sock.getsockname()[1]
        fillers = []
        for _ in range(3):  # a backlog of 0 still queues one; the rest stay SYN_SENT
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait until the queue is really full
            if _accept_queue_length(port) >= 1:
                break
            time.sleep(0.01)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


def _accept_queue_length(port: int) -> int:
    out = subprocess.run(
        ["ss", "-Htln", "sport", "=", f":{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[1]) if len(out) > 1 else 0


def wait_results(engine: Any, count: int, *, limit_s: float = 10.0,
                 servers: tuple[socket.socket, ...] = ()) -> list[tuple[int, int, float]]:
    """Poll with the real clock until ``count`` results arrived (bounded by ``limit_s``)."""
    results: list[tuple[int, int, float]] = []
    end = time.monotonic() + limit_s
    with select.epoll() as waiter:
        waiter.register(engine.fileno(), select.EPOLLIN)
        while len(results) < count and time.monotonic() < end:
            waiter.poll(0.05)
            results += engine.poll(time.monotonic())
            for sock in servers:
                drain(sock)
    return results


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


# --- API and selector ---------------------------------------------------------------------


def test_twins_export_the_same_api(tcpconnect_twins: tuple[ModuleType, ModuleType]) -> None:
    c, py = tcpconnect_twins
    assert set(c.__all__) == set(py.__all__) == API
    assert implementation_of(c) == "c"
    assert implementation_of(py) == "py"
    for twin in (c, py):
        assert set(dir(twin.TcpConnectEngine)) >= ENGINE_API


def test_compiled_twin_is_the_default() -> None:
    try:
        import fastcheck._ext.tcpconnect_c  # noqa: F401
    except ImportError as exc:
        if env_flag(REQUIRE_EXTENSIONS_ENV):
            raise
        pytest.skip(f"tcpconnect_c not built: {exc}")
    code = "from fastcheck._ext import tcpconnect as t; print(t.IMPLEMENTATION, t.TcpConnectEngine)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCHECK_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.startswith("c ") and "tcpconnect_c" in out
    env["FASTCHECK_NO_EXTENSIONS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.startswith("py ") and "tcpconnect_py" in out


def test_fresh_engine_is_idle(tcpconnect_impl: ModuleType) -> None:
    with tcpconnect_impl.TcpConnectEngine(7) as engine:
        assert (engine.in_flight, engine.queued, engine.max_in_flight) == (0, 0, 7)
        assert engine.next_deadline() is None
        assert engine.poll(1.0) == []
        assert not readable(engine.fileno())


@pytest.mark.parametrize("window", [0, -1, 2**20 + 1])
def test_window_must_be_positive_and_bounded(tcpconnect_impl: ModuleType, window: int) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        tcpconnect_impl.TcpConnectEngine(window)


def test_closed_engine_refuses_work(tcpconnect_impl: ModuleType, server: socket.socket) -> None:
    engine = tcpconnect_impl.TcpConnectEngine()
    engine.submit(1, "127.0.0.1", server.getsockname()[1], 1.0, 0.0)
    engine.close()
    engine.close()  # idempotent
    assert engine.in_flight == 0
    for call in (engine.fileno, lambda: engine.poll(1.0),
                 lambda: engine.submit(2, "127.0.0.1", 80, 1.0, 0.0)):  # fmt: skip
        with pytest.raises(ValueError, match="closed"):
            call()


# --- argument validation ------------------------------------------------------------------

GOOD = {"token": 1, "address": "127.0.0.1", "port": 80, "timeout_s": 1.0, "now": 0.0}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"address": "1.2.3"}, ValueError),
        ({"address": ""}, ValueError),
        ({"address": "localhost"}, ValueError),
        ({"address": "fe80::1%lo"}, ValueError),  # no scope ids
        ({"address": "1.2.3.4\0"}, ValueError),
        ({"address": "\ud800"}, ValueError),
        ({"address": b"127.0.0.1"}, TypeError),
        ({"address": None}, TypeError),
        ({"port": 0}, ValueError),
        ({"port": 65536}, ValueError),
        ({"port": 80.0}, TypeError),
        ({"port": "80"}, TypeError),
        ({"token": 2**63}, ValueError),
        ({"token": -(2**63) - 1}, ValueError),
        ({"token": 1.5}, TypeError),
        ({"timeout_s": -0.1}, ValueError),
        ({"timeout_s": math.inf}, ValueError),
        ({"timeout_s": math.nan}, ValueError),
        ({"timeout_s": "1"}, TypeError),
        ({"now": math.nan}, ValueError),
        ({"bind_address": "::1"}, ValueError),  # other family
        ({"bind_address": "nope"}, ValueError),
        ({"bind_port": 65536}, ValueError),
        ({"bind_port": -1}, ValueError),
        ({"bind_interface": ""}, ValueError),
        ({"bind_interface": "x" * 16}, ValueError),
        ({"bind_interface": "e\0"}, ValueError),
        ({"bind_interface": b"lo"}, TypeError),
        ({"fwmark": 2**32}, ValueError),
        ({"fwmark": -1}, ValueError),
    ],
)
def test_invalid_arguments_raise_at_submit(
    tcpconnect_impl: ModuleType, changes: dict[str, Any], error: type[Exception]
) -> None:
    with tcpconnect_impl.TcpConnectEngine() as engine:
        with pytest.raises(error):
            engine.submit(**(GOOD | changes))
        assert (engine.in_flight, engine.queued) == (0, 0)


def _outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except (TypeError, ValueError) as exc:
        return "TypeError" if isinstance(exc, TypeError) else "ValueError"
    return "accepted"


address_text = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded),
    st.text(alphabet="0123456789abcdef.:%x ", max_size=45),
    st.text(max_size=8),
)
submit_args = st.fixed_dictionaries(
    {
        "token": st.integers(min_value=-(2**64), max_value=2**64),
        "address": address_text,
        "port": st.integers(min_value=-2, max_value=70000),
        "timeout_s": st.one_of(st.floats(), st.integers(min_value=-5, max_value=5)),
        "now": st.floats(),
    },
    optional={
        "bind_address": st.one_of(st.none(), address_text),
        "bind_port": st.one_of(st.none(), st.integers(min_value=-2, max_value=70000)),
        "bind_interface": st.one_of(st.none(), st.text(max_size=18)),
        "fwmark": st.one_of(st.none(), st.integers(min_value=-2, max_value=2**33)),
    },
)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(args=submit_args)
def test_twins_validate_alike(
    tcpconnect_twins: tuple[ModuleType, ModuleType], pending_port: int, args: dict[str, Any]
) -> None:
    """Both twins accept or reject the same arguments, with the same exception type.

    Each engine's one slot holds a connect that never completes, so an accepted submit
    only queues: no packet ever leaves for the arbitrary addresses generated here.
    """
    outcomes = []
    for twin in tcpconnect_twins:
        with twin.TcpConnectEngine(1) as engine:
            engine.submit(0, "127.0.0.1", pending_port, 60.0, 0.0)
            assert engine.in_flight == 1
            outcomes.append(_outcome(lambda engine=engine: engine.submit(**args)))
            assert engine.queued == (outcomes[-1] == "accepted")
    assert outcomes[0] == outcomes[1]


# --- results over loopback ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_connects_to_a_listener(tcpconnect_impl: ModuleType, host: str) -> None:
    with listener(host) as sock, tcpconnect_impl.TcpConnectEngine() as engine:
        port = sock.getsockname()[1]
        start = time.monotonic()
        engine.submit(42, host, port, 5.0, start)
        assert engine.in_flight == 1 and engine.next_deadline() == pytest.approx(start + 5.0)
        results = wait_results(engine, 1)
        assert [(token, err) for token, err, _ in results] == [(42, 0)]
        assert 0.0 <= results[0][2] < 5.0
        assert engine.in_flight == 0 and engine.next_deadline() is None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_closed_port_is_refused(tcpconnect_impl: ModuleType, host: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as bound, tcpconnect_impl.TcpConnectEngine() as engine:
        bound.bind((host, 0))
        engine.submit(7, host, bound.getsockname()[1], 5.0, time.monotonic())
        results = wait_results(engine, 1)
        assert [(token, err) for token, err, _ in results] == [(7, errno.ECONNREFUSED)]


def test_latency_is_poll_time_minus_start(
    tcpconnect_impl: ModuleType, server: socket.socket
) -> None:
    with tcpconnect_impl.TcpConnectEngine() as engine:
        engine.submit(1, "127.0.0.1", server.getsockname()[1], 5.0, 100.0)
        with select.epoll() as waiter:
            waiter.register(engine.fileno(), select.EPOLLIN)
            assert waiter.poll(5.0)  # the connect finished
        assert engine.poll(100.25) == [(1, 0, 0.25)]


def test_deadlines_expire_in_order(tcpconnect_impl: ModuleType, pending_port: int) -> None:
    with tcpconnect_impl.TcpConnectEngine() as engine:
        for token, timeout in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 1.0), (5, 3.0)]:
            engine.submit(token, "127.0.0.1", pending_port, timeout, 10.0)
        assert engine.next_deadline() == 11.0
        assert engine.poll(10.5) == []
        assert engine.poll(11.0) == [(2, errno.ETIMEDOUT, 1.0), (4, errno.ETIMEDOUT, 1.0)]
        assert engine.next_deadline() == 12.0
        assert engine.poll(12.5) == [(3, errno.ETIMEDOUT, 2.5)]
        assert engine.next_deadline() == 13.0
        assert engine.in_flight == 2
        assert engine.poll(20.0) == [(1, errno.ETIMEDOUT, 10.0), (5, errno.ETIMEDOUT, 10.0)]
        assert engine.next_deadline() is None and engine.in_flight == 0


def test_zero_timeout_expires_at_the_next_poll(
    tcpconnect_impl: ModuleType, pending_port: int
) -> None:
    with tcpconnect_impl.TcpConnectEngine() as engine:
        engine.submit(1, "127.0.0.1", pending_port, 0, 5.0)
        assert engine.poll(5.0) == [(1, errno.ETIMEDOUT, 0.0)]


def test_queued_check_times_out_from_its_start(
    tcpconnect_impl: ModuleType, pending_port: int
) -> None:
    with tcpconnect_impl.TcpConnectEngine(1) as engine:
        engine.submit(1, "127.0.0.1", pending_port, 1.0, 0.0)
        engine.submit(2, "127.0.0.1", pending_port, 1.0, 0.0)
        assert (engine.in_flight, engine.queued) == (1, 1)
        assert engine.poll(1.0) == [(1, errno.ETIMEDOUT, 1.0)]
        assert (engine.in_flight, engine.queued) == (1, 0)
        assert engine.next_deadline() == 2.0
        assert engine.poll(2.0) == [(2, errno.ETIMEDOUT, 1.0)]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    window=st.integers(min_value=1, max_value=6),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("submit"), st.sampled_from([0.0, 0.5, 1.0, 1.5, 3.0])),
            st.tuples(st.just("submit"), st.floats(min_value=0, max_value=5)),
            st.tuples(st.just("advance"), st.floats(min_value=0, max_value=2)),
        ),
        max_size=30,
    ),
)
def test_twins_expire_deadlines_alike(
    tcpconnect_twins: tuple[ModuleType, ModuleType],
    pending_port: int,
    window: int,
    steps: list[tuple[str, float]],
) -> None:
    """Heap (C) and per-timeout FIFOs (py) expire the same checks at the same polls, in
    the same order, with the same latencies and next deadlines, queue or no queue."""
    traces = []
    for twin in tcpconnect_twins:
        trace: list[object] = []
        now = 100.0
        with twin.TcpConnectEngine(window) as engine:
            for token, (kind, value) in enumerate(steps):
                if kind == "submit":
                    engine.submit(token, "127.0.0.1", pending_port, value, now)
                else:
                    now += value
                    trace.append(engine.poll(now))
                trace.append((engine.next_deadline(), engine.in_flight, engine.queued))
            for _ in range(len(steps) + 1):  # drain: each poll may start queued checks
                now += 10
                trace.append(engine.poll(now))
            assert (engine.in_flight, engine.queued) == (0, 0)
        traces.append(trace)
    assert traces[0] == traces[1]
    assert sorted(t for batch in traces[0] if isinstance(batch, list) for t, _, _ in batch) == [
        token for token, (kind, _) in enumerate(steps) if kind == "submit"
    ]


def test_setup_errors_are_results_and_wake_the_fd(
    tcpconnect_impl: ModuleType, server: socket.socket
) -> None:
    port = server.getsockname()[1]
    with tcpconnect_impl.TcpConnectEngine() as engine:
        engine.submit(1, "127.0.0.1", port, 1.0, 3.0, bind_interface="fcnodev0")
        engine.submit(2, "127.0.0.1", port, 1.0, 3.0, bind_address="192.0.2.1")  # not ours
        assert engine.in_flight == 0
        assert readable(engine.fileno())
        assert engine.poll(4.0) == [(1, errno.ENODEV, 0.0), (2, errno.EADDRNOTAVAIL, 0.0)]
        assert not readable(engine.fileno())
        assert engine.poll(5.0) == []


def test_descriptor_exhaustion_is_a_result(
    tcpconnect_impl: ModuleType, server: socket.socket
) -> None:
    import resource

    port = server.getsockname()[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with tcpconnect_impl.TcpConnectEngine() as engine:
        probe = os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor now
        os.close(probe)
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe + 2, hard))
        try:
            for token in range(6):
                engine.submit(token, "127.0.0.1", port, 5.0, 0.0)
            in_flight = engine.in_flight
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert 0 < in_flight < 6
        results = wait_results(engine, 6, servers=(server,))
        errors = sorted(err for _, err, _ in results)
        assert errors == [0] * in_flight + [errno.EMFILE] * (6 - in_flight)


def test_bind_address_and_port(tcpconnect_impl: ModuleType, server: socket.socket) -> None:
    server.setblocking(True)
    server.settimeout(5)
    port = server.getsockname()[1]
    with socket.socket() as spare:  # a free port to bind from
        spare.bind(("127.0.0.1", 0))
        source_port = spare.getsockname()[1]
    with tcpconnect_impl.TcpConnectEngine() as engine:
        engine.submit(1, "127.0.0.1", port, 5.0, 0.0, bind_address="127.0.0.2")
        assert [err for _, err, _ in wait_results(engine, 1)] == [0]
        conn, peer = server.accept()
        conn.close()
        assert peer[0] == "127.0.0.2" and peer[1] != 0
        engine.submit(2, "127.0.0.1", port, 5.0, 0.0, bind_address="127.0.0.3",
                      bind_port=source_port)  # fmt: skip
        engine.submit(3, "127.0.0.1", port, 5.0, 0.0, bind_port=source_port)  # same port
        assert sorted(err for _, err, _ in wait_results(engine, 2)) == [0, 0]
        peers = set()
        for _ in range(2):
            conn, peer = server.accept()
            conn.close()
            peers.add(peer)
        # both checks used the fixed source port (SO_REUSEADDR lets them share it)
        assert peers == {("127.0.0.3", source_port), ("127.0.0.1", source_port)}


def test_bind_address_ipv6(tcpconnect_impl: ModuleType) -> None:
    with listener("::1") as sock, tcpconnect_impl.TcpConnectEngine() as engine:
        sock.setblocking(True)
        sock.settimeout(5)
        engine.submit(1, "::1", sock.getsockname()[1], 5.0, 0.0, bind_address="::1")
        assert [err for _, err, _ in wait_results(engine, 1)] == [0]
        conn, peer = sock.accept()
        conn.close()
        assert peer[0] == "::1"


def test_bind_interface_and_fwmark(tcpconnect_impl: ModuleType, server: socket.socket) -> None:
    with tcpconnect_impl.TcpConnectEngine() as engine:
        engine.submit(1, "127.0.0.1", server.getsockname()[1], 5.0, 0.0, bind_interface="lo",
                      fwmark=0x1234)  # fmt: skip
        (result,) = wait_results(engine, 1)
    if result[1] == errno.EPERM:
        pytest.skip("SO_MARK needs CAP_NET_ADMIN")
    assert result[:2] == (1, 0)


def test_fwmark_is_set_on_the_socket(
    monkeypatch: pytest.MonkeyPatch, server: socket.socket
) -> None:
    """White box, pure twin: the socket carries SO_MARK (and the device) when it connects."""
    from fastcheck._ext import tcpconnect_py

    seen: list[tuple[int, bytes]] = []
    configure = tcpconnect_py._configure

    def spy(sock: socket.socket, options: Any) -> None:
        configure(sock, options)
        seen.append((sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK),
                     sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)))  # fmt: skip

    monkeypatch.setattr(tcpconnect_py, "_configure", spy)
    with tcpconnect_py.TcpConnectEngine() as engine:
        engine.submit(1, "127.0.0.1", server.getsockname()[1], 5.0, 0.0, bind_interface="lo",
                      fwmark=0xFEED)  # fmt: skip
        (result,) = wait_results(engine, 1)
    if result[1] == errno.EPERM:
        pytest.skip("SO_MARK needs CAP_NET_ADMIN")
    assert [(mark, device.rstrip(b"\0")) for mark, device in seen] == [(0xFEED, b"lo")]


def test_window_bounds_in_flight_and_queues_the_rest(tcpconnect_impl: ModuleType) -> None:
    servers = tuple(listener(f"127.0.0.{n}", 4096) for n in range(1, 5))
    ports = [(f"127.0.0.{n}", s.getsockname()[1]) for n, s in enumerate(servers, 1)]
    total, window = 10_000, 100
    try:
        with tcpconnect_impl.TcpConnectEngine(window) as engine:
            now = time.monotonic()
            for token in range(total):
                host, port = ports[token % len(ports)]
                engine.submit(token, host, port, 10.0, now)
            assert (engine.in_flight, engine.queued) == (window, total - window)
            results: list[tuple[int, int, float]] = []
            end = time.monotonic() + 60
            with select.epoll() as waiter:
                waiter.register(engine.fileno(), select.EPOLLIN)
                while len(results) < total and time.monotonic() < end:
                    waiter.poll(0.05)
                    results += engine.poll(time.monotonic())
                    assert engine.in_flight <= window
                    for sock in servers:
                        drain(sock)
            assert (engine.in_flight, engine.queued) == (0, 0)
    finally:
        for sock in servers:
            sock.close()
    assert sorted(token for token, _, _ in results) == list(range(total))
    assert {err for _, err, _ in results} == {0}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    window=st.integers(min_value=1, max_value=8),
    plan=st.lists(st.sampled_from(["open", "closed", "local"]), min_size=1, max_size=40),
)
def test_twins_agree_on_a_mixed_batch(
    tcpconnect_twins: tuple[ModuleType, ModuleType],
    server: socket.socket,
    closed_port: int,
    window: int,
    plan: list[str],
) -> None:
    """Any mix of reachable, refusing and unbindable targets, any window: one result per
    check, the same errno from both twins, never more than ``window`` in flight."""
    port = server.getsockname()[1]
    outcomes = []
    for twin in tcpconnect_twins:
        with twin.TcpConnectEngine(window) as engine:
            for token, kind in enumerate(plan):
                if kind == "open":
                    engine.submit(token, "127.0.0.1", port, 10.0, 0.0)
                elif kind == "closed":
                    engine.submit(token, "127.0.0.1", closed_port, 10.0, 0.0)
                else:
                    engine.submit(token, "127.0.0.1", port, 10.0, 0.0, bind_address="192.0.2.9")
                assert engine.in_flight <= window
            results = wait_results(engine, len(plan), servers=(server,))
        outcomes.append(sorted((token, err) for token, err, _ in results))
    expected = {"open": 0, "closed": errno.ECONNREFUSED, "local": errno.EADDRNOTAVAIL}
    assert outcomes[0] == outcomes[1] == [(t, expected[k]) for t, k in enumerate(plan)]


# --- the asyncio adapter ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "failure"),
    [
        (errno.ECONNREFUSED, Failure.REFUSED),
        (errno.ETIMEDOUT, Failure.TIMEOUT),
        (errno.ENETUNREACH, Failure.UNREACHABLE),
        (errno.EHOSTUNREACH, Failure.UNREACHABLE),
        (errno.ECONNRESET, Failure.RESET),
        (errno.EMFILE, Failure.LOCAL),
        (errno.EADDRNOTAVAIL, Failure.LOCAL),
        (errno.ENODEV, Failure.LOCAL),
    ],
)
def test_errno_maps_to_failure(err: int, failure: Failure) -> None:
    result = result_for(err, 0.5)
    assert (result.ok, result.failure, result.latency_s) == (False, failure, 0.5)
    assert os.strerror(err) in result.detail


def test_success_maps_to_up() -> None:
    assert result_for(0, 0.002) == ProbeResult.up(0.002)


@pytest.fixture(params=sorted(LOOPS))
def loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = LOOPS[request.param]()
    try:
        yield event_loop
    finally:
        event_loop.close()


def run_prober(
    loop: asyncio.AbstractEventLoop,
    engine: Any,
    starts: list[tuple[int, Target, float]],
    *,
    on_result: Callable[[int, ProbeResult], None] | None = None,
    limit_s: float = 10.0,
) -> dict[int, ProbeResult]:
    """Start every check on a TcpProber and run the loop until all reported (bounded)."""
    got: dict[int, ProbeResult] = {}

    async def main() -> None:
        done = asyncio.Event()

        def record(token: int, result: ProbeResult) -> None:
            got[token] = result
            if on_result is not None:
                on_result(token, result)
            if len(got) == len(starts):
                done.set()

        prober = TcpProber(asyncio.get_running_loop(), record, engine)
        try:
            for token, target, timeout in starts:
                prober.start(token, target, timeout)
            await asyncio.wait_for(done.wait(), limit_s)
        finally:
            prober.close()

    loop.run_until_complete(main())
    return got


def test_prober_reports_up_refused_and_local(
    loop: asyncio.AbstractEventLoop, tcpconnect_impl: ModuleType, server: socket.socket,
    closed_port: int,
) -> None:  # fmt: skip
    port = server.getsockname()[1]
    got = run_prober(loop, tcpconnect_impl.TcpConnectEngine(), [
        (1, Target("127.0.0.1", port), 5.0),
        (2, Target("::1", closed_port), 5.0),
        (3, Target("127.0.0.1", closed_port), 5.0),
        (4, Target("127.0.0.1", port, bind_interface="fcnodev0"), 5.0),
        (5, Target("127.0.0.1", port, bind_address="127.0.0.5", bind_port=0, fwmark=3), 5.0),
    ])  # fmt: skip
    assert got[1].ok and got[5].ok
    assert got[2].failure is Failure.REFUSED
    assert got[3].failure is Failure.REFUSED
    assert got[4].failure is Failure.LOCAL and "No such device" in got[4].detail


def test_prober_times_out_with_its_timer(
    loop: asyncio.AbstractEventLoop, tcpconnect_impl: ModuleType, pending_port: int
) -> None:
    started = loop.time()
    got = run_prober(loop, tcpconnect_impl.TcpConnectEngine(), [
        (1, Target("127.0.0.1", pending_port), 0.2),
        (2, Target("127.0.0.1", pending_port), 0.05),
    ])  # fmt: skip
    elapsed = loop.time() - started
    assert got[1].failure is Failure.TIMEOUT and got[2].failure is Failure.TIMEOUT
    assert got[1].latency_s >= 0.2 - 1e-9 and got[2].latency_s >= 0.05 - 1e-9
    assert elapsed < 2.0


def test_prober_survives_a_failing_callback(
    loop: asyncio.AbstractEventLoop, server: socket.socket
) -> None:
    port = server.getsockname()[1]
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))

    def explode(token: int, result: ProbeResult) -> None:
        if token == 1:
            raise RuntimeError("boom")

    from fastcheck._ext.tcpconnect import TcpConnectEngine

    got = run_prober(loop, TcpConnectEngine(), [
        (1, Target("127.0.0.1", port), 5.0),
        (2, Target("127.0.0.1", port), 5.0),
    ], on_result=explode)  # fmt: skip
    assert set(got) == {1, 2}
    assert [type(c["exception"]) for c in errors] == [RuntimeError]


def test_prober_rejects_bad_targets_and_closes(loop: asyncio.AbstractEventLoop) -> None:
    from fastcheck._ext.tcpconnect import TcpConnectEngine

    engine = TcpConnectEngine()
    prober = TcpProber(loop, lambda token, result: None, engine)
    with pytest.raises(ValueError):
        prober.start(1, Target("not-an-ip", 80), 1.0)
    prober.close()
    prober.close()
    with pytest.raises(ValueError, match="closed"):
        prober.start(2, Target("127.0.0.1", 80), 1.0)
    with pytest.raises(ValueError, match="closed"):
        engine.fileno()
