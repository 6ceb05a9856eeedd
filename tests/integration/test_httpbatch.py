"""HttpBatchProber (plain HTTP_GET on the exchange engine) against real loopback servers.

Every scenario of the coroutine probe's suite that plain HTTP has is run through the batched
prober, under asyncio and uvloop, with both engine twins; most compare the two paths'
results directly (same failure class; the same detail where it does not come from the
loop's own error text). The runner test checks that HTTP_GET goes the batched way and
SSL_GET does not. Servers are test_http_probe's (threads with blocking sockets).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import time
from types import ModuleType
from typing import Any

import pytest
from test_http_probe import (  # the coroutine probe's servers and helpers
    Server,
    chunked,
    free_port,
    http_check,
    md5,
    replying,
    reset_after,
    response,
    trickling,
)

from fastcheck._ext._select import REQUIRE_EXTENSIONS_ENV, env_flag
from fastcheck.config.loader import load_text
from fastcheck.model import Check, CheckKind, Target, UrlSpec
from fastcheck.probeplan import plan_probes
from fastcheck.probes.http import HttpProbe, probe_http
from fastcheck.probes.httpbatch import HttpBatchProber, batchable
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.runner import ProbeRunner


@pytest.fixture(params=("c", "py"))
def twin(request: pytest.FixtureRequest) -> ModuleType:
    module = f"fastcheck._ext.exchange_{request.param}"
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if request.param != "c" or env_flag(REQUIRE_EXTENSIONS_ENV):
            raise
        pytest.skip(f"{module} is not importable ({exc}); build it with `pip install -e .`")


@pytest.fixture
def batch(run: Any, twin: ModuleType) -> Any:
    """``batch(check, **HttpProbe kw)``: one check run through a fresh HttpBatchProber."""
    def run_batch(check: Check, **kw: Any) -> ProbeResult:
        async def main() -> ProbeResult:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[ProbeResult] = loop.create_future()
            prober = HttpBatchProber(loop, lambda token, r: done.set_result(r),
                                     twin.ExchangeEngine())
            try:
                prober.start(5, HttpProbe(check, **kw))
                return await asyncio.wait_for(done, 10)
            finally:
                prober.close()
        result = run(main())
        assert isinstance(result, ProbeResult)
        return result
    return run_batch


def same(batched: ProbeResult, coroutine: ProbeResult, *, detail: bool = True) -> None:
    assert (batched.ok, batched.failure) == (coroutine.ok, coroutine.failure)
    if detail:
        assert batched.detail == coroutine.detail


BODY = b"hello world\n"
SCENARIOS: dict[str, tuple[bytes, tuple[UrlSpec, ...], Failure | None]] = {
    "status": (response(), (UrlSpec("/"),), None),
    "status-404": (response(status="404 Not Found"), (UrlSpec("/missing"),),
                   Failure.HTTP_STATUS),
    "status-range": (response(status="302 Found"),
                     (UrlSpec("/", status_codes=((300, 399),)),), None),
    "no-reason": (b"HTTP/1.0 200\r\n\r\n", (UrlSpec("/"),), None),
    "digest": (response(BODY), (UrlSpec("/", digest=md5(BODY)),), None),
    "digest-bad": (response(BODY), (UrlSpec("/", digest=md5(b"other")),), Failure.DIGEST),
    "digest-content-length": (response(BODY, headers=("Content-Length: 5",), length=False)
                              + b"", (UrlSpec("/", digest=md5(BODY[:5])),), None),
    "digest-eof": (response(BODY, length=False), (UrlSpec("/", digest=md5(BODY)),), None),
    "digest-chunked": (chunked(b"abc", b"defg"),
                       (UrlSpec("/", digest=md5(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")),),
                       None),
    "regex": (response(BODY), (UrlSpec("/", regex="wor"),), None),
    "regex-miss": (response(BODY), (UrlSpec("/", regex="^nothing"),), Failure.REGEX),
    "regex-no-match": (response(BODY), (UrlSpec("/", regex="wor", regex_no_match=True),),
                       Failure.REGEX),
    "urls": (response(BODY), (UrlSpec("/a"), UrlSpec("/bad", digest=md5(b"x")),
                              UrlSpec("/c")), Failure.DIGEST),
    "garbage": (b"garbage\r\n\r\n", (UrlSpec("/"),), Failure.PROTOCOL),
    "double-space": (b"HTTP/1.0  200 OK\r\n\r\n", (UrlSpec("/"),), Failure.PROTOCOL),
    "empty": (b"", (UrlSpec("/"),), Failure.PROTOCOL),
    "half-header": (b"HTTP/1.0 200 OK\r\nServer: x\r\n", (UrlSpec("/"),), Failure.PROTOCOL),
    "content-length-too-large": (b"HTTP/1.0 200 OK\r\nContent-Length: 9999999\r\n\r\n",
                                 (UrlSpec("/", digest=md5(b"")),), Failure.TOO_LARGE),
    "body-too-large": (response(b"z" * (2 << 20), length=False),
                       (UrlSpec("/", regex="never"),), Failure.TOO_LARGE),
    "header-too-large": (b"HTTP/1.0 200 OK\r\n" + b"X: y\r\n" * 20000,
                         (UrlSpec("/"),), Failure.TOO_LARGE),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_verdict_as_the_coroutine_probe(run: Any, batch: Any, name: str) -> None:
    data, urls, failure = SCENARIOS[name]
    with Server(replying(data)) as srv:
        check = http_check(srv.port, *urls)
        batched = batch(check)
        coroutine = run(probe_http(check))
        requests = srv.requests
    assert batched.failure is failure
    same(batched, coroutine)
    assert batched.latency_s > 0
    if not batched.ok:
        failed = next(u for u in urls if u.digest == md5(b"x")) if name == "urls" else urls[0]
        assert batched.detail.startswith(f"{failed.path}: ")
    # the same request bytes, url by url, on both paths
    half = len(requests) // 2
    assert requests[:half] == requests[half:]


def test_urls_stop_at_the_first_failure(batch: Any) -> None:
    with Server(replying(response(BODY))) as srv:
        result = batch(http_check(srv.port, UrlSpec("/a"), UrlSpec("/b", digest=md5(b"x")),
                                  UrlSpec("/c")))
    assert result.failure is Failure.DIGEST and result.detail.startswith("/b:")
    assert [r.split(b" ")[1] for r in srv.requests] == [b"/a", b"/b"]


def test_request_bytes_and_ipv6_host(batch: Any) -> None:
    with Server(replying(response()), family=socket.AF_INET6) as srv:
        assert batch(http_check(srv.port, address="::1")).ok
    assert srv.requests == [(f"GET / HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\n"
                             f"Host: [::1]:{srv.port}\r\n\r\n").encode()]


def test_small_max_body_bytes(batch: Any) -> None:
    body = b"q" * 5000
    with Server(replying(response(body, length=False))) as srv:
        small = batch(http_check(srv.port, UrlSpec("/", digest=md5(body))), max_body_bytes=1000)
        fits = batch(http_check(srv.port, UrlSpec("/", digest=md5(body))), max_body_bytes=5000)
    assert small.failure is Failure.TOO_LARGE and fits.ok


def test_status_only_check_stops_after_the_header(batch: Any) -> None:
    def handle(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        for _ in range(30):
            conn.sendall(b"x" * 1000)
            time.sleep(0.1)

    with Server(handle) as srv:
        result = batch(http_check(srv.port, timeout_s=5))
    assert result.ok and result.latency_s < 2


def test_trickle_times_out_in_the_response(batch: Any) -> None:
    with Server(trickling(response(b"a" * 100))) as srv:
        result = batch(http_check(srv.port, UrlSpec("/", digest=md5(b"a" * 100)),
                                  timeout_s=0.5))
    assert result.failure is Failure.TIMEOUT
    assert result.detail == "/: no complete answer within 0.5 s (response)"
    assert result.latency_s >= 0.5


def test_reset_mid_response(run: Any, batch: Any) -> None:
    partial = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 500
    with Server(reset_after(partial)) as srv:
        check = http_check(srv.port, UrlSpec("/", digest=md5(b"p" * 100000)))
        batched = batch(check)
        same(batched, run(probe_http(check)), detail=False)
    assert batched.failure is Failure.RESET and "reading the response" in batched.detail


def test_refused(run: Any, batch: Any) -> None:
    check = http_check(free_port())
    result = batch(check)
    same(result, run(probe_http(check)))
    assert result.detail == "/: connection refused"


def test_bind_options(batch: Any, source_port: int) -> None:
    target_kw: dict[str, Any] = dict(bind_address="127.0.0.1", bind_port=source_port)
    if os.geteuid() == 0:
        target_kw |= dict(bind_interface="lo", fwmark=7)
    with Server(replying(response())) as srv:
        target = Target("127.0.0.1", srv.port, **target_kw)
        assert batch(http_check(srv.port, target=target)).ok
    assert srv.peers[0] == ("127.0.0.1", source_port)


def test_bind_failures_are_local(run: Any, batch: Any) -> None:
    with Server(replying(response())) as srv:
        check = http_check(srv.port, target=Target("127.0.0.1", srv.port,
                                                   bind_address="192.0.2.1"))
        result = batch(check)
        same(result, run(probe_http(check)), detail=False)
        assert result.failure is Failure.LOCAL
        if os.geteuid() == 0:
            no_dev = http_check(srv.port, target=Target("127.0.0.1", srv.port,
                                                        bind_interface="nosuchdev0"))
            assert batch(no_dev).failure is Failure.LOCAL
    assert srv.peers == []


def test_check_without_urls_is_up(run: Any, twin: ModuleType) -> None:
    check = http_check(free_port())
    object.__setattr__(check.params, "urls", ())

    async def main() -> list[ProbeResult]:
        loop = asyncio.get_running_loop()
        got: list[ProbeResult] = []
        prober = HttpBatchProber(loop, lambda token, r: got.append(r), twin.ExchangeEngine())
        prober.start(1, HttpProbe(check))
        assert got == []  # never from inside start
        await asyncio.sleep(0.01)
        prober.close()
        return got

    (result,) = run(main())
    assert result.ok


def test_tls_checks_are_not_batchable() -> None:
    tls = HttpProbe(http_check(443, kind=CheckKind.HTTPS))
    assert not batchable(tls) and batchable(HttpProbe(http_check(80)))
    link_local = http_check(80, target=Target("fe80::1", 80, bind_interface="lo"))
    assert not batchable(HttpProbe(link_local))


CONFIG = """
virtual_server 10.0.0.1 80 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 127.0.0.1 {http} {{
        HTTP_GET {{
            url {{
                path /health
                status_code 200
            }}
            connect_timeout 2
        }}
    }}
    real_server 127.0.0.1 {https} {{
        SSL_GET {{
            url {{
                path /health
                status_code 200
            }}
            connect_timeout 2
        }}
    }}
}}
"""


def test_runner_batches_http_get_and_not_ssl_get(run: Any) -> None:
    with Server(replying(response())) as srv:
        https_port = free_port()  # refused: SSL_GET fails either way
        config, _ = load_text(CONFIG.format(http=srv.port, https=https_port),
                              filename="batch.conf")
        plan = plan_probes(config)

        async def main() -> dict[int, ProbeResult]:
            loop = asyncio.get_running_loop()
            results: dict[int, ProbeResult] = {}
            runner = ProbeRunner(loop, plan, config, results.__setitem__)
            try:
                for probe_id in plan.probes:
                    runner.start(probe_id)
                assert runner._http is not None and runner._http.running == 1
                assert len(runner._tasks) == 1  # the SSL_GET
                for _ in range(500):
                    if len(results) == len(plan.probes):
                        break
                    await asyncio.sleep(0.01)
            finally:
                runner.close()
            return results

        results = run(main())
    kinds = {pid: probe.key for pid, probe in plan.probes.items()}
    assert len(results) == 2, kinds
    outcomes = sorted((r.ok, r.failure is Failure.REFUSED) for r in results.values())
    assert outcomes == [(False, True), (True, False)]


def test_pending_connect_times_out_in_the_connect_phase(batch: Any) -> None:
    # A listener that never accepts, its queue filled: our SYN is dropped.
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            time.sleep(0.05)
            result = batch(http_check(port, timeout_s=0.3))
        finally:
            for filler in fillers:
                filler.close()
    assert result.failure is Failure.TIMEOUT
    assert result.detail == "/: no complete answer within 0.3 s (connect)"


def test_on_result_errors_go_to_the_loop_handler(run: Any, twin: ModuleType) -> None:
    with Server(replying(response())) as srv:
        check = http_check(srv.port)

        async def main() -> list[dict[str, Any]]:
            loop = asyncio.get_running_loop()
            seen: list[dict[str, Any]] = []
            loop.set_exception_handler(lambda loop, context: seen.append(context))
            delivered: list[int] = []

            def on_result(token: int, result: ProbeResult) -> None:
                delivered.append(token)
                raise RuntimeError("observer bug")

            prober = HttpBatchProber(loop, on_result, twin.ExchangeEngine())
            try:
                prober.start(1, HttpProbe(check))
                prober.start(2, HttpProbe(check))
                for _ in range(300):
                    if len(delivered) == 2:
                        break
                    await asyncio.sleep(0.01)
            finally:
                prober.close()
            assert sorted(delivered) == [1, 2]  # the first raise did not lose the second
            return seen

        seen = run(main())
    assert len(seen) == 2 and isinstance(seen[0]["exception"], RuntimeError)
