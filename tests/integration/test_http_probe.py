"""HTTP_GET / SSL_GET probe against real servers on loopback, under asyncio and uvloop.

Servers run in threads with blocking sockets, so they behave the same whichever loop the
probe runs on, and so keepalived's own `genhash` can be pointed at them for digest parity.
TLS tests need `trustme` (certificates made per session) and skip without it; the parity
tests need /usr/bin/genhash (Debian's keepalived package) and skip without it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastcheck.model import (
    Check,
    CheckKind,
    HttpParams,
    SslConfig,
    Target,
    UrlSpec,
)
from fastcheck.probes.http import HttpProbe, client_context, probe_http
from fastcheck.probes.result import Failure, ProbeResult

Handler = Callable[[socket.socket, bytes], None]
GENHASH = shutil.which("genhash") or "/usr/bin/genhash"


# --------------------------------------------------------------------------- servers


def response(body: bytes = b"hello world\n", status: str = "200 OK",
             headers: tuple[str, ...] = (), *, length: bool = True,
             version: str = "HTTP/1.0") -> bytes:
    lines = [f"{version} {status}", "Server: test", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def replying(data: bytes) -> Handler:
    def handle(conn: socket.socket, request: bytes) -> None:
        conn.sendall(data)
    return handle


def reset_after(data: bytes) -> Handler:
    """Send ``data``, then close with SO_LINGER 0: the kernel sends a RST."""
    def handle(conn: socket.socket, request: bytes) -> None:
        conn.sendall(data)
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return handle


def trickling(data: bytes, every_s: float = 0.2) -> Handler:
    def handle(conn: socket.socket, request: bytes) -> None:
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(every_s)
    return handle


def chunked(*chunks: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    return head + body


class Server:
    """A loopback server in a thread; each connection gets ``handler(conn, request_head)``.

    ``tls`` wraps accepted connections server-side (handshake failures are recorded and
    the connection dropped); ``raw`` skips reading a request (for TLS-abort scripts).
    """

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None,
                 raw: bool = False, family: int = socket.AF_INET) -> None:
        self.handler, self.tls, self.raw = handler, tls, raw
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.sock = socket.create_server((host, 0), family=family)
        self.port: int = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.peers: list[tuple[Any, ...]] = []
        self.sni: list[str | None] = []
        self.errors: list[BaseException] = []
        if tls is not None:
            tls.sni_callback = self._on_sni
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _on_sni(self, sslobj: Any, name: str | None, context: Any) -> None:
        self.sni.append(name)

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:  # close() shut the listening socket down
                return
            self.peers.append(peer)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            head = b""
            if not self.raw:
                while b"\r\n\r\n" not in head:
                    data = conn.recv(4096)
                    if not data:
                        break
                    head += data
                self.requests.append(head)
            self.handler(conn, head)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self._thread.join(2)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- helpers




def http_check(port: int, *urls: UrlSpec, kind: CheckKind = CheckKind.HTTP,
               timeout_s: float = 3.0, address: str = "127.0.0.1",
               target: Target | None = None, **params: Any) -> Check:
    return Check(kind=kind, target=target or Target(address, port),
                 params=HttpParams(urls=urls or (UrlSpec("/"),), **params),
                 delay_loop_s=5.0, connect_timeout_s=timeout_s, retry=1,
                 delay_before_retry_s=1.0, warmup_s=0.0, alpha=False, log_all_failures=False)


def probe(run: Callable[..., Any], check: Check, **kw: Any) -> ProbeResult:
    result = run(probe_http(check, **kw))
    assert isinstance(result, ProbeResult)
    return result


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- plain HTTP


def test_success_and_request_bytes(run: Any) -> None:
    with Server(replying(response())) as srv:
        result = probe(run, http_check(srv.port, UrlSpec("/index.html")))
    assert result.ok and result.failure is None and result.latency_s > 0
    assert srv.requests == [
        b"GET /index.html HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\n"
        b"Host: 127.0.0.1:%d\r\n\r\n" % srv.port]


def test_ipv6_target_host_header(run: Any) -> None:
    try:
        srv = Server(replying(response()), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    with srv:
        result = probe(run, http_check(srv.port, address="::1"))
    assert result.ok
    assert b"\r\nHost: [::1]:%d\r\n" % srv.port in srv.requests[0]


@pytest.mark.parametrize(("protocol", "line", "close"), [
    ("1.0", b"HTTP/1.0", False), ("1.0C", b"HTTP/1.0", True), ("1.1", b"HTTP/1.1", True)])
def test_http_protocol(run: Any, protocol: str, line: bytes, close: bool) -> None:
    with Server(replying(response())) as srv:
        assert probe(run, http_check(srv.port, http_protocol=protocol)).ok
    request = srv.requests[0]
    assert request.startswith(b"GET / " + line + b"\r\n")
    assert (b"\r\nConnection: close\r\n" in request) is close


def test_virtualhost_host_header(run: Any) -> None:
    with Server(replying(response())) as srv:
        check = http_check(srv.port, UrlSpec("/a"), UrlSpec("/b", virtualhost="b.example"),
                           virtualhost="www.example")
        assert probe(run, check).ok
    hosts = [re.search(rb"\r\nHost: ([^\r]*)\r\n", r)[1] for r in srv.requests]  # type: ignore[index]
    assert hosts == [b"www.example", b"b.example"]  # no port after a virtualhost


def test_status_mismatch(run: Any) -> None:
    with Server(replying(response(status="404 Not Found"))) as srv:
        result = probe(run, http_check(srv.port, UrlSpec("/missing")))
    assert (result.ok, result.failure) == (False, Failure.HTTP_STATUS)
    assert "/missing" in result.detail and "404" in result.detail


@pytest.mark.parametrize(("status", "codes", "ok"), [
    ("301 Moved", ((200, 299),), False),
    ("301 Moved", ((200, 200), (300, 399)), True),
    ("503 Busy", ((500, 503),), True),
    ("204 No Content", ((200, 203), (205, 299)), False),
    ("100 Continue", ((100, 100),), True),
])
def test_status_ranges(run: Any, status: str, codes: tuple[tuple[int, int], ...],
                       ok: bool) -> None:
    with Server(replying(response(status=status))) as srv:
        result = probe(run, http_check(srv.port, UrlSpec("/", status_codes=codes)))
    assert result.ok is ok
    assert result.failure is (None if ok else Failure.HTTP_STATUS)


def test_status_line_without_reason_is_accepted(run: Any) -> None:
    with Server(replying(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n")) as srv:
        assert probe(run, http_check(srv.port)).ok


def test_urls_in_order_first_failure_wins(run: Any) -> None:
    def handle(conn: socket.socket, request: bytes) -> None:
        path = request.split(b" ")[1]
        conn.sendall(response(status="200 OK" if path != b"/bad" else "500 Oops"))

    with Server(handle) as srv:
        check = http_check(srv.port, UrlSpec("/one"), UrlSpec("/bad"), UrlSpec("/three"))
        result = probe(run, check)
    assert result.failure is Failure.HTTP_STATUS and result.detail.startswith("/bad:")
    assert [r.split(b" ")[1] for r in srv.requests] == [b"/one", b"/bad"]  # stopped there


def test_digest_match_and_mismatch(run: Any) -> None:
    body = bytes(range(256)) * 50 + b"\r\n\r\nafter a blank line"
    with Server(replying(response(body))) as srv:
        good = probe(run, http_check(srv.port, UrlSpec("/", digest=md5(body))))
        bad = probe(run, http_check(srv.port, UrlSpec("/", digest=md5(body + b"x"))))
    assert good.ok
    assert bad.failure is Failure.DIGEST and md5(body) in bad.detail


def test_digest_stops_at_content_length(run: Any) -> None:
    data = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello, and more than promised"
    with Server(replying(data)) as srv:
        assert probe(run, http_check(srv.port, UrlSpec("/", digest=md5(b"hello")))).ok


def test_digest_of_chunked_body_is_raw(run: Any) -> None:
    data = chunked(b"hello ", b"world")
    raw_body = data.split(b"\r\n\r\n", 1)[1]
    with Server(replying(data)) as srv:
        check = http_check(srv.port, UrlSpec("/", digest=md5(raw_body)), http_protocol="1.1")
        assert probe(run, check).ok


@pytest.mark.parametrize(("url", "ok"), [
    (UrlSpec("/", regex="status: *OK"), True),
    (UrlSpec("/", regex="status: *DOWN"), False),
    (UrlSpec("/", regex="status: *DOWN", regex_no_match=True), True),
    (UrlSpec("/", regex="status: *OK", regex_no_match=True), False),
    (UrlSpec("/", regex="STATUS: *ok", regex_options=("caseless",)), True),
    (UrlSpec("/", regex="^status", regex_options=("multiline",)), True),
    (UrlSpec("/", regex="^status"), False),  # the body starts with "<html>"
    (UrlSpec("/", regex="status: *OK", regex_min_offset=7), True),   # match starts at 7
    (UrlSpec("/", regex="status: *OK", regex_min_offset=8), False),
    (UrlSpec("/", regex="status: *OK", regex_max_offset=7), True),
    (UrlSpec("/", regex="status: *OK", regex_max_offset=6), False),
    (UrlSpec("/", regex="(?<=<html>\n)status", regex_min_offset=7), True),  # lookbehind
    (UrlSpec("/", regex="OK$"), False),  # $: before the final newline only, not mid-body
    (UrlSpec("/", regex="</html>$"), True),
])
def test_regex(run: Any, url: UrlSpec, ok: bool) -> None:
    body = b"<html>\nstatus: OK\n" + b"filler " * 3000 + b"</html>\n"
    with Server(replying(response(body))) as srv:
        result = probe(run, http_check(srv.port, url))
    assert result.ok is ok
    assert result.failure is (None if ok else Failure.REGEX)


def test_regex_far_into_a_large_body(run: Any) -> None:
    body = b"x" * 700_000 + b"MARKER" + b"y" * 100
    with Server(replying(response(body))) as srv:
        assert probe(run, http_check(srv.port, UrlSpec("/", regex="MARK(ER)"))).ok


def test_unsupported_regex_option_is_local(run: Any) -> None:
    check = http_check(free_port(), UrlSpec("/", regex="a+", regex_options=("ungreedy",)))
    result = probe(run, check)
    assert result.failure is Failure.LOCAL and "ungreedy" in result.detail
    with pytest.raises(Exception, match="ungreedy"):
        HttpProbe(check)


def test_status_only_check_stops_after_the_header(run: Any) -> None:
    # The body never ends, but nothing needs it: the check is up without waiting.
    def handle(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        for _ in range(50):
            conn.sendall(b"x" * 1000)
            time.sleep(0.1)

    with Server(handle) as srv:
        started = time.monotonic()
        assert probe(run, http_check(srv.port, timeout_s=3)).ok
        assert time.monotonic() - started < 1


# --------------------------------------------------------------------------- failures


def test_slow_trickle_times_out(run: Any) -> None:
    with Server(trickling(response(b"a" * 100))) as srv:
        started = time.monotonic()
        result = probe(run, http_check(srv.port, UrlSpec("/", digest=md5(b"a" * 100)),
                                       timeout_s=1.0))
        elapsed = time.monotonic() - started
    assert result.failure is Failure.TIMEOUT
    assert 0.9 < elapsed < 1.6 and 0.9 < result.latency_s < 1.6


def test_silent_server_times_out(run: Any) -> None:
    with Server(lambda conn, req: time.sleep(2)) as srv:
        result = probe(run, http_check(srv.port, timeout_s=0.5))
    assert result.failure is Failure.TIMEOUT


def test_oversized_body(run: Any) -> None:
    body = b"z" * (2 << 20)
    with Server(replying(response(body, length=False))) as srv:
        result = probe(run, http_check(srv.port, UrlSpec("/", regex="never")))
        small = probe(run, http_check(srv.port, UrlSpec("/", digest=md5(body))),
                      max_body_bytes=1000)
        bigger = probe(run, http_check(srv.port, UrlSpec("/", digest=md5(body))),
                       max_body_bytes=3 << 20)
    assert result.failure is Failure.TOO_LARGE
    assert small.failure is Failure.TOO_LARGE
    assert bigger.ok


def test_oversized_content_length_fails_before_the_body(run: Any) -> None:
    with Server(replying(b"HTTP/1.0 200 OK\r\nContent-Length: 9999999\r\n\r\n")) as srv:
        result = probe(run, http_check(srv.port, UrlSpec("/", digest=md5(b""))))
    assert result.failure is Failure.TOO_LARGE and "9999999" in result.detail


@pytest.mark.parametrize("data", [
    b"garbage\r\n\r\n", b"HTTP/1.0 OK 200\r\n\r\n", b"HTTP/1.0  200 OK\r\n\r\n",
    b"\x16\x03\x01\x00\x05hello\r\n\r\n"])
def test_garbage_status_line(run: Any, data: bytes) -> None:
    with Server(replying(data)) as srv:
        result = probe(run, http_check(srv.port))
    assert result.failure is Failure.PROTOCOL


@pytest.mark.parametrize("data", [b"", b"HTTP/1.0 200 OK\r\nServer: x\r\n"])
def test_closed_before_the_header_ends(run: Any, data: bytes) -> None:
    with Server(replying(data)) as srv:
        result = probe(run, http_check(srv.port))
    assert result.failure is Failure.PROTOCOL


def test_reset_mid_response(run: Any) -> None:
    partial = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 500
    with Server(reset_after(partial)) as srv:
        result = probe(run, http_check(srv.port, UrlSpec("/", digest=md5(b"p" * 100000))))
    assert result.failure is Failure.RESET


def test_refused(run: Any) -> None:
    result = probe(run, http_check(free_port()))
    assert result.failure is Failure.REFUSED


def test_bind_address_port_interface_fwmark(run: Any, source_port: int) -> None:
    port = source_port
    target_kw = dict(bind_address="127.0.0.1", bind_port=port)
    if os.geteuid() == 0:
        target_kw |= dict(bind_interface="lo", fwmark=7)  # need CAP_NET_RAW / NET_ADMIN
    with Server(replying(response())) as srv:
        check = http_check(srv.port, target=Target("127.0.0.1", srv.port, **target_kw))
        assert probe(run, check).ok
    assert srv.peers[0] == ("127.0.0.1", port)


def test_bind_failures_are_local(run: Any) -> None:
    with Server(replying(response())) as srv:
        wrong = http_check(srv.port, target=Target("127.0.0.1", srv.port,
                                                   bind_address="192.0.2.1"))
        result = probe(run, wrong)
        assert result.failure is Failure.LOCAL
        if os.geteuid() == 0:
            no_dev = http_check(srv.port, target=Target("127.0.0.1", srv.port,
                                                        bind_interface="nosuchdev0"))
            assert probe(run, no_dev).failure is Failure.LOCAL


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    trustme = pytest.importorskip("trustme")
    from cryptography.hazmat.primitives import serialization

    out = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("www.example.test", "127.0.0.1")
    client = ca.issue_cert("client.example.test")
    ca.cert_pem.write_to_path(str(out / "ca.pem"))
    other_ca.cert_pem.write_to_path(str(out / "other-ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(out / "client.pem"))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), None)
    (out / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    return {"ca": ca, "server": server, "dir": out}


def server_context(pki: dict[str, Any], *, client_ca: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki["server"].configure_cert(context)
    if client_ca:
        pki["ca"].configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_ssl_get_success_without_verification(run: Any, pki: dict[str, Any]) -> None:
    body = b"secure hello\n"
    with Server(replying(response(body)), tls=server_context(pki)) as srv:
        check = http_check(srv.port, UrlSpec("/", digest=md5(body)), kind=CheckKind.HTTPS)
        result = probe(run, check)
    assert result.ok, result
    assert srv.sni == [None]  # no SNI unless enable_sni


def test_ssl_get_sni(run: Any, pki: dict[str, Any]) -> None:
    with Server(replying(response()), tls=server_context(pki)) as srv:
        check = http_check(srv.port, UrlSpec("/"), UrlSpec("/u", virtualhost="u.example.test"),
                           kind=CheckKind.HTTPS, enable_sni=True,
                           virtualhost="www.example.test")
        assert probe(run, check).ok
    assert srv.sni == ["www.example.test", "u.example.test"]
    assert b"\r\nHost: www.example.test\r\n" in srv.requests[0]


def test_ssl_get_sni_without_virtualhost_sends_none(run: Any, pki: dict[str, Any]) -> None:
    with Server(replying(response()), tls=server_context(pki)) as srv:
        assert probe(run, http_check(srv.port, kind=CheckKind.HTTPS, enable_sni=True)).ok
    assert srv.sni == [None]


def test_ssl_get_ca_verification(run: Any, pki: dict[str, Any]) -> None:
    d = pki["dir"]
    with Server(replying(response()), tls=server_context(pki)) as srv:
        check = http_check(srv.port, kind=CheckKind.HTTPS)

        def verified(ca: str) -> Any:
            context = client_context(SslConfig(ca=str(d / ca)), verify_with_ca=True)
            return run(HttpProbe(check, tls_context=context).run())

        good, bad = verified("ca.pem"), verified("other-ca.pem")
        # As keepalived 2.2.7: a ca in the SSL block does not turn verification on.
        lax = probe(run, check, ssl=SslConfig(ca=str(d / "other-ca.pem")))
    assert good.ok
    assert bad.failure is Failure.TLS and "certificate" in bad.detail.lower()
    assert lax.ok


def test_ssl_get_client_certificate_with_password(run: Any, pki: dict[str, Any]) -> None:
    d = pki["dir"]
    config = SslConfig(certificate=str(d / "client.pem"), key=str(d / "client.key"),
                       password="s3cret")
    with Server(replying(response()), tls=server_context(pki, client_ca=True)) as srv:
        check = http_check(srv.port, kind=CheckKind.HTTPS)
        with_cert = probe(run, check, ssl=config)
        without = probe(run, check)
    assert with_cert.ok
    assert without.failure in (Failure.TLS, Failure.RESET)  # TLS 1.3: rejected after


def test_ssl_block_unloadable_is_local(run: Any, tmp_path: Path) -> None:
    check = http_check(free_port(), kind=CheckKind.HTTPS)
    result = probe(run, check, ssl=SslConfig(ca=str(tmp_path / "missing.pem")))
    assert result.failure is Failure.LOCAL


def test_ssl_get_against_plain_http(run: Any) -> None:
    def handle(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    with Server(handle, raw=True) as srv:
        result = probe(run, http_check(srv.port, kind=CheckKind.HTTPS))
    assert result.failure is Failure.TLS


@pytest.mark.parametrize("how", ["close", "reset"])
def test_ssl_handshake_aborted(run: Any, how: str) -> None:
    def handle(conn: socket.socket, request: bytes) -> None:
        conn.recv(100)  # part of the ClientHello
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with Server(handle, raw=True) as srv:
        result = probe(run, http_check(srv.port, kind=CheckKind.HTTPS))
    assert result.failure is Failure.TLS


def test_ssl_trickle_times_out(run: Any, pki: dict[str, Any]) -> None:
    with Server(trickling(response(b"b" * 50)), tls=server_context(pki)) as srv:
        started = time.monotonic()
        result = probe(run, http_check(srv.port, UrlSpec("/", regex="c"),
                                       kind=CheckKind.HTTPS, timeout_s=1.0))
        assert time.monotonic() - started < 1.6
    assert result.failure is Failure.TIMEOUT


def test_ssl_reset_mid_response(run: Any, pki: dict[str, Any]) -> None:
    partial = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 500
    with Server(reset_after(partial), tls=server_context(pki)) as srv:
        result = probe(run, http_check(srv.port, UrlSpec("/", digest=md5(b"p" * 100000)),
                                       kind=CheckKind.HTTPS))
    assert result.failure is Failure.RESET


def test_ssl_close_without_close_notify_ends_the_body(run: Any, pki: dict[str, Any]) -> None:
    body = b"no close_notify here"

    def handle(conn: socket.socket, request: bytes) -> None:
        conn.sendall(response(body, length=False))
        raw = socket.socket(fileno=os.dup(conn.fileno()))  # close TCP under the TLS layer
        raw.shutdown(socket.SHUT_RDWR)
        raw.close()

    with Server(handle, tls=server_context(pki)) as srv:
        check = http_check(srv.port, UrlSpec("/", digest=md5(body)), kind=CheckKind.HTTPS)
        assert probe(run, check).ok


# --------------------------------------------------------------------------- genhash parity


PAGES: dict[bytes, bytes] = {
    b"/plain": response(b"<html><body>It works!</body></html>\n"),
    b"/empty": response(b""),
    b"/binary": response(bytes(range(256)) * 64 + b"\r\n\r\n\x00\x00tail"),
    b"/large": response(bytes(i * 7 % 251 for i in range(300_000))),
    b"/no-length": response(b"until the server closes\n" * 500, length=False),
    b"/past-length": b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhello world\nEXTRA BYTES",
    b"/chunked": chunked(b"first chunk\n", b"second, longer chunk\n" * 300, b"end"),
}


def serve_pages(conn: socket.socket, request: bytes) -> None:
    path = request.split(b" ")[1] if b" " in request else b"/"
    conn.sendall(PAGES.get(path, response(b"not found", "404 Not Found")))


def genhash(port: int, path: str, *extra: str) -> str:
    """Run keepalived's genhash and return the MD5 it prints.

    keepalived 2.2 prints the bare hex digest; 1.x printed "MD5SUM = <hex>". Accept both.
    """
    proc = subprocess.run([GENHASH, *extra, "-s", "127.0.0.1", "-p", str(port), "-u", path,
                           "-t", "5"], capture_output=True, text=True, timeout=20)
    found = re.search(r"^(?:MD5SUM = )?([0-9a-f]{32})$", proc.stdout, re.MULTILINE)
    assert found, f"genhash printed {proc.stdout!r} {proc.stderr!r}"
    return found[1]


needs_genhash = pytest.mark.skipif(not os.access(GENHASH, os.X_OK),
                                   reason="keepalived's genhash is not installed "
                                          "(apt-get install keepalived)")


@needs_genhash
@pytest.mark.parametrize("path", sorted(p.decode() for p in PAGES))
def test_digest_parity_with_genhash(run: Any, path: str) -> None:
    protocol = "1.1" if path == "/chunked" else "1.0"
    with Server(serve_pages) as srv:
        reference = genhash(srv.port, path, "-P", protocol)
        ours = probe(run, http_check(srv.port, UrlSpec(path, digest=reference),
                                     http_protocol=protocol))
        off = probe(run, http_check(srv.port, UrlSpec(path, digest="0" * 32),
                                    http_protocol=protocol))
    assert ours.ok, (path, reference, ours)
    assert off.failure is Failure.DIGEST and reference in off.detail
    if path == "/chunked":  # genhash hashes the chunked encoding itself, so do we
        assert reference != md5(b"first chunk\n" + b"second, longer chunk\n" * 300 + b"end")


@needs_genhash
@pytest.mark.parametrize("path", ["/plain", "/large", "/no-length"])
def test_digest_parity_with_genhash_over_tls(run: Any, pki: dict[str, Any],
                                             path: str) -> None:
    with Server(serve_pages, tls=server_context(pki)) as srv:
        reference = genhash(srv.port, path, "-S")
        result = probe(run, http_check(srv.port, UrlSpec(path, digest=reference),
                                       kind=CheckKind.HTTPS))
    assert result.ok, (path, reference, result)


@needs_genhash
@pytest.mark.parametrize(("protocol", "genhash_args", "vhost"), [
    ("1.0", [], None), ("1.0C", ["-P", "1.0c"], None), ("1.1", ["-P", "1.1"], None),
    ("1.0", ["-V", "www.example.test"], "www.example.test")])
def test_request_bytes_match_genhash(run: Any, protocol: str, genhash_args: list[str],
                                     vhost: str | None) -> None:
    with Server(serve_pages) as srv:
        genhash(srv.port, "/plain", *genhash_args)
        assert probe(run, http_check(srv.port, UrlSpec("/plain"), http_protocol=protocol,
                                     virtualhost=vhost)).ok
    theirs, ours = srv.requests
    assert ours == theirs


@needs_genhash
def test_sni_and_request_match_genhash(run: Any, pki: dict[str, Any]) -> None:
    with Server(serve_pages, tls=server_context(pki)) as srv:
        genhash(srv.port, "/plain", "-S", "-I", "-V", "www.example.test")
        check = http_check(srv.port, UrlSpec("/plain"), kind=CheckKind.HTTPS,
                           enable_sni=True, virtualhost="www.example.test")
        assert probe(run, check).ok
    assert srv.sni == ["www.example.test", "www.example.test"]
    theirs, ours = srv.requests
    assert ours == theirs
