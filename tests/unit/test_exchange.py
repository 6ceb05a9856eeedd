"""The exchange engine twins (exchange_c / exchange_py) and their selector.

Loopback only: every exchange goes to a server of ours on 127.0.0.1 (threads with blocking
sockets, so they behave the same for both twins), to a bound port that does not listen, or
to a listener whose accept queue we filled so the connect stays pending. Time is passed in;
timeouts are forced by polling with a later made-up ``now``.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcheck._ext._select import REQUIRE_EXTENSIONS_ENV, env_flag

ENGINE_API = {"fileno", "submit", "poll", "next_deadline", "close", "in_flight", "queued",
              "max_in_flight", "__enter__", "__exit__"}
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
Handler = Callable[[socket.socket, bytes], None]


def import_twin(impl: str) -> ModuleType:
    module = f"fastcheck._ext.exchange_{impl}"
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if impl != "c" or env_flag(REQUIRE_EXTENSIONS_ENV):
            raise
        pytest.skip(f"{module} is not importable ({exc}); build it with `pip install -e .`")


@pytest.fixture(scope="session", params=("c", "py"))
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return import_twin(request.param)


@pytest.fixture(scope="session")
def twins() -> tuple[ModuleType, ModuleType]:
    return import_twin("c"), import_twin("py")


# --- loopback servers ----------------------------------------------------------------------


class Server:
    """Each connection: read the request head, then ``handler(conn, head)``, then close."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.peers: list[Any] = []
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append(peer)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    break
                head += data
            self.requests.append(head)
            self.handler(conn, head)
        except OSError as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(2)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replying(data: bytes) -> Handler:
    return lambda conn, head: conn.sendall(data)


def reset_after(data: bytes) -> Handler:
    def handle(conn: socket.socket, head: bytes) -> None:
        conn.sendall(data)
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return handle


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def wait(engine: Any, count: int, *, limit_s: float = 10.0) -> list[tuple[Any, ...]]:
    """Poll with the real clock until ``count`` results came (bounded)."""
    results: list[tuple[Any, ...]] = []
    give_up = time.monotonic() + limit_s
    while len(results) < count and time.monotonic() < give_up:
        results += engine.poll(time.monotonic())
        if len(results) < count:
            time.sleep(0.002)
    assert len(results) == count, results
    return results


def one(engine: Any, *args: Any, **kw: Any) -> tuple[Any, ...]:
    engine.submit(1, *args, **kw)
    (result,) = wait(engine, 1)
    return result


# --- API and selection ---------------------------------------------------------------------


def test_twins_export_the_same_api(twins: tuple[ModuleType, ModuleType]) -> None:
    c, py = twins
    assert set(c.__all__) == set(py.__all__)
    for twin in (c, py):
        assert set(dir(twin.ExchangeEngine)) >= ENGINE_API
        assert (twin.CONNECTING, twin.CONNECTED, twin.MAX_READ) == (0, 1, 65536)


def test_compiled_twin_is_the_default() -> None:
    try:
        import fastcheck._ext.exchange_c  # noqa: F401
    except ImportError as exc:
        if env_flag(REQUIRE_EXTENSIONS_ENV):
            raise
        pytest.skip(f"exchange_c not built: {exc}")
    code = "from fastcheck._ext import exchange as x; print(x.IMPLEMENTATION, x.ExchangeEngine)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCHECK_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("c ") and "exchange_c" in out
    env["FASTCHECK_NO_EXTENSIONS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("py ") and "exchange_py" in out


@pytest.mark.parametrize("args, error", [
    (("nowhere", 80, REQUEST, 1.0, 0.0), ValueError),
    (("127.0.0.1", 0, REQUEST, 1.0, 0.0), ValueError),
    (("127.0.0.1", 80, "text", 1.0, 0.0), TypeError),
    (("127.0.0.1", 80, REQUEST, -1.0, 0.0), ValueError),
    (("127.0.0.1", 80, REQUEST, float("nan"), 0.0), ValueError),
])
def test_bad_arguments_raise(impl: ModuleType, args: tuple[Any, ...],
                             error: type[Exception]) -> None:
    with impl.ExchangeEngine() as engine:
        with pytest.raises(error):
            engine.submit(1, *args)
        with pytest.raises(ValueError):
            engine.submit(1, "127.0.0.1", 80, REQUEST, 1.0, 0.0, max_bytes=0)
        with pytest.raises(TypeError):
            engine.submit(1, "127.0.0.1", 80, REQUEST, 1.0, 0.0, feed=3)
        with pytest.raises(ValueError):
            engine.submit(1, "127.0.0.1", 80, REQUEST, 1.0, 0.0, bind_address="::1")
        assert engine.in_flight == engine.queued == 0


def test_closed_engine_refuses_work(impl: ModuleType) -> None:
    engine = impl.ExchangeEngine()
    engine.close()
    engine.close()
    with pytest.raises(ValueError, match="closed"):
        engine.submit(1, "127.0.0.1", 80, REQUEST, 1.0, 0.0)
    with pytest.raises(ValueError, match="closed"):
        engine.poll(0.0)


# --- exchanges -----------------------------------------------------------------------------


def test_reads_to_eof_and_sends_the_payload(impl: ModuleType) -> None:
    answer = b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 200_000  # several reads
    with Server(replying(answer)) as srv, impl.ExchangeEngine() as engine:
        token, err, latency, stage, data = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0,
                                               time.monotonic(), max_bytes=1 << 20)
    assert (token, err, stage, data) == (1, 0, impl.CONNECTED, answer)
    assert latency > 0 and srv.requests == [REQUEST]


def test_max_bytes_ends_the_exchange(impl: ModuleType) -> None:
    with Server(replying(b"0123456789" * 10)) as srv, impl.ExchangeEngine() as engine:
        _, err, _, stage, data = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0,
                                     time.monotonic(), max_bytes=15)
    assert (err, stage, data) == (0, impl.CONNECTED, b"012345678901234")


def test_feed_decides_when_the_answer_is_complete(impl: ModuleType) -> None:
    # The server sends a head, then keeps the connection open: only feed can end it.
    def handle(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HEAD\r\n")
        time.sleep(0.05)
        conn.sendall(b"DONE\r\n")
        try:
            conn.recv(1)  # our reset wakes this up
        except ConnectionResetError:
            conn_reset.append(True)

    conn_reset: list[bool] = []
    seen = bytearray()

    def feed(chunk: bytes) -> bool:
        seen.extend(chunk)
        return b"DONE" in seen

    with Server(handle) as srv, impl.ExchangeEngine() as engine:
        _, err, _, stage, data = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0,
                                     time.monotonic(), feed=feed)
        deadline = time.monotonic() + 3
        while not conn_reset and time.monotonic() < deadline:
            time.sleep(0.01)
    assert (err, stage, data, bytes(seen)) == (0, impl.CONNECTED, b"", b"HEAD\r\nDONE\r\n")
    assert conn_reset == [True], "the engine closes with a reset"


def test_feed_that_raises_ends_with_eio(impl: ModuleType) -> None:
    def feed(chunk: bytes) -> bool:
        raise RuntimeError("bug")

    with Server(replying(b"hello")) as srv, impl.ExchangeEngine() as engine:
        _, err, _, stage, _ = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0,
                                  time.monotonic(), feed=feed)
    assert (err, stage) == (errno.EIO, impl.CONNECTED)


def test_refused_is_a_connect_failure(impl: ModuleType, closed_port: int) -> None:
    with impl.ExchangeEngine() as engine:
        _, err, _, stage, data = one(engine, "127.0.0.1", closed_port, REQUEST, 5.0,
                                     time.monotonic())
    assert (err, stage, data) == (errno.ECONNREFUSED, impl.CONNECTING, b"")


def test_reset_mid_answer_keeps_what_was_read(impl: ModuleType) -> None:
    with Server(reset_after(b"partial")) as srv, impl.ExchangeEngine() as engine:
        _, err, _, stage, data = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0,
                                     time.monotonic())
    assert (err, stage, data) == (errno.ECONNRESET, impl.CONNECTED, b"partial")


def test_silent_server_times_out_in_the_connected_stage(impl: ModuleType) -> None:
    release = threading.Event()
    with Server(lambda conn, head: release.wait(5)) as srv, impl.ExchangeEngine() as engine:
        engine.submit(7, "127.0.0.1", srv.port, REQUEST, 2.0, 100.0)
        assert engine.next_deadline() == 102.0
        deadline = time.monotonic() + 5
        while not srv.requests and time.monotonic() < deadline:  # connected and sent
            assert engine.poll(100.5) == []
            time.sleep(0.005)
        assert engine.poll(101.9) == []
        assert engine.poll(102.0) == [(7, errno.ETIMEDOUT, 2.0, impl.CONNECTED, b"")]
        assert engine.in_flight == 0 and engine.next_deadline() is None
        release.set()


def test_pending_connect_times_out_in_the_connecting_stage(impl: ModuleType) -> None:
    # A listener that never accepts, its queue filled: further SYNs are dropped.
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.05)
        try:
            with impl.ExchangeEngine() as engine:
                engine.submit(3, "127.0.0.1", port, REQUEST, 1.0, 10.0)
                assert engine.poll(10.5) == []
                assert engine.poll(11.0) == [(3, errno.ETIMEDOUT, 1.0, impl.CONNECTING, b"")]
        finally:
            for s in fillers:
                s.close()


def test_window_queues_and_then_runs_everything(impl: ModuleType) -> None:
    with Server(replying(b"ok")) as srv, impl.ExchangeEngine(max_in_flight=2) as engine:
        for token in range(7):
            engine.submit(token, "127.0.0.1", srv.port, REQUEST, 5.0, time.monotonic())
        assert (engine.in_flight, engine.queued) == (2, 5)
        results = wait(engine, 7)
    assert sorted(r[0] for r in results) == list(range(7))
    assert all(r[1:2] + r[3:] == (0, impl.CONNECTED, b"ok") for r in results)


def test_bind_options_and_set_up_failures(impl: ModuleType) -> None:
    with Server(replying(b"ok")) as srv, impl.ExchangeEngine() as engine:
        result = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0, time.monotonic(),
                     bind_address="127.0.0.2")
        assert result[1] == 0 and srv.peers[-1][0] == "127.0.0.2"
        result = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0, time.monotonic(),
                     bind_address="192.0.2.1")  # not ours: nothing is sent anywhere
        assert result[1:] == (errno.EADDRNOTAVAIL, 0.0, impl.CONNECTING, b"")
        if os.geteuid() == 0:
            result = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0, time.monotonic(),
                         bind_interface="nosuchdev0")
            assert result[1] == errno.ENODEV
            result = one(engine, "127.0.0.1", srv.port, REQUEST, 5.0, time.monotonic(),
                         bind_interface="lo", fwmark=7)
            assert result[1] == 0


def test_close_resets_exchanges_in_flight(impl: ModuleType) -> None:
    reset: list[bool] = []

    def handle(conn: socket.socket, head: bytes) -> None:
        try:
            conn.recv(1)
        except ConnectionResetError:
            reset.append(True)

    with Server(handle) as srv:
        engine = impl.ExchangeEngine()
        engine.submit(1, "127.0.0.1", srv.port, REQUEST, 5.0, time.monotonic())
        deadline = time.monotonic() + 5
        while not srv.requests and time.monotonic() < deadline:
            engine.poll(time.monotonic())
            time.sleep(0.005)
        engine.close()
        while not reset and time.monotonic() < deadline:
            time.sleep(0.01)
    assert reset == [True]


# --- the twins agree -----------------------------------------------------------------------

SCRIPTS = st.tuples(
    st.binary(max_size=3000),                   # what the server sends
    st.sampled_from(["close", "reset"]),        # then how it ends
    st.integers(min_value=1, max_value=4000),   # max_bytes
    st.one_of(st.none(), st.binary(min_size=1, max_size=3)),  # feed: stop at this marker
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=SCRIPTS)
def test_twins_agree(twins: tuple[ModuleType, ModuleType], script: tuple[Any, ...]) -> None:
    answer, ending, max_bytes, marker = script
    handler = replying(answer) if ending == "close" else reset_after(answer)
    outcomes = []
    with Server(handler) as srv:
        for twin in twins:
            seen = bytearray()

            def feed(chunk: bytes, seen: bytearray = seen) -> bool:
                seen.extend(chunk)
                return marker in seen

            with twin.ExchangeEngine() as engine:
                _, err, _, stage, data = one(
                    engine, "127.0.0.1", srv.port, REQUEST, 5.0, time.monotonic(),
                    max_bytes=max_bytes, feed=None if marker is None else feed)
            got = data if marker is None else bytes(seen)
            # what was read is a prefix of the answer; the twins read the same
            outcomes.append((err, stage, got))
    assert outcomes[0] == outcomes[1]
    err, stage, got = outcomes[0]
    assert answer.startswith(got) and len(got) <= max_bytes
    if ending == "close" and marker is None:
        assert (err, got) == (0, answer[:max_bytes])
