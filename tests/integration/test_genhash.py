"""`fastcheck genhash` against real loopback servers, side by side with keepalived's genhash.

Servers run in threads with blocking sockets and record every request, so the same page
can be fetched by /usr/bin/genhash (Debian's keepalived 2.2.7) and by `fastcheck genhash`
and the digests, the requests and the -v reports compared. The parity tests skip, saying
why, without /usr/bin/genhash; every other test checks against an MD5 computed here.
TLS tests need `trustme` (in the test extras) and skip without it.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastcheck.cli import main
from fastcheck.genhash import HTTP_HEADER_HEXA, hexdump_lines

GENHASH = "/usr/bin/genhash"
BODY = b"<html><body>fastcheck genhash parity</body></html>\n" * 20 + bytes(range(256))

Handler = Callable[[socket.socket, bytes], None]


# --------------------------------------------------------------------------- servers


def page(body: bytes = BODY, status: str = "200 OK", *, length: int | None = -1,
         version: str = "HTTP/1.0") -> bytes:
    """A response; ``length`` -1 means the true Content-Length, None none at all."""
    lines = [f"{version} {status}", "Server: test"]
    if length is not None:
        lines.append(f"Content-Length: {len(body) if length == -1 else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*chunks: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def replying(data: bytes) -> Handler:
    def handle(conn: socket.socket, request: bytes) -> None:
        conn.sendall(data)
    return handle


def silent(conn: socket.socket, request: bytes) -> None:
    time.sleep(3)  # longer than the -t the tests give; the client gives up first


class Server:
    """A loopback server in a thread; ``handler(conn, request)`` answers each connection.

    ``raw`` answers without reading a request first (a plain server meeting a TLS client).
    """

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None,
                 family: int = socket.AF_INET, raw: bool = False) -> None:
        self.handler, self.tls, self.raw = handler, tls, raw
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.sock = socket.create_server((host, 0), family=family)
        self.address, self.port = host, self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.sni: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda sslobj, name, context: self.sni.append(name)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # close() shut the listening socket down
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = b""
            while not self.raw and b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    break
                request += data
            self.requests.append(request)
            self.handler(conn, request)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- runners


def ours(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["genhash", *args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def theirs(*args: str) -> subprocess.CompletedProcess[str]:
    """Run keepalived's genhash; its output decoded with the header's CRs kept."""
    proc = subprocess.run([GENHASH, *args], capture_output=True, timeout=30, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


needs_genhash = pytest.mark.skipif(
    not os.access(GENHASH, os.X_OK),
    reason=f"{GENHASH} (Debian's keepalived) is not installed: no parity reference")


def target(srv: Server, path: str = "/page") -> list[str]:
    return ["-s", srv.address, "-p", str(srv.port), "-u", path]


RESPONSES = {
    "content-length": (page(), BODY),
    "no-content-length": (page(length=None), BODY),
    "bytes-past-content-length": (page(length=100), BODY[:100]),
    "empty-body": (page(b""), b""),
    "chunked": (chunked(b"hello", b" chunked ", b"world"),
                b"5\r\nhello\r\n9\r\n chunked \r\n5\r\nworld\r\n0\r\n\r\n"),
    "status-404": (page(b"not here", "404 Not Found"), b"not here"),
    "http-1.1": (page(version="HTTP/1.1"), BODY),
    "large-many-reads": (page(bytes(range(256)) * 8192, length=None), bytes(range(256)) * 8192),
}


# --------------------------------------------------------------------------- digests


@pytest.mark.parametrize("kind", sorted(RESPONSES))
def test_digest_is_the_md5_of_the_raw_body(kind: str) -> None:
    data, hashed = RESPONSES[kind]
    with Server(replying(data)) as srv:
        status, out, err = ours(*target(srv))
    assert status == 0, err
    assert out == hashlib.md5(hashed).hexdigest() + "\n"


@needs_genhash
@pytest.mark.parametrize("kind", sorted(RESPONSES))
def test_output_equals_genhash(kind: str) -> None:
    data, _ = RESPONSES[kind]
    with Server(replying(data)) as srv:
        reference = theirs(*target(srv))
        status, out, _ = ours(*target(srv))
    assert reference.returncode == 0, reference.stderr
    assert re.fullmatch(r"[0-9a-f]{32}\n", reference.stdout), reference.stdout
    assert (status, out) == (0, reference.stdout)


@needs_genhash
@pytest.mark.parametrize("options", [(), ("-V", "www.example.test"), ("--protocol", "1.0"),
                                     ("-P", "1.0c"), ("--protocol", "1.1"),
                                     ("--use-virtualhost", "v.test", "-P", "1.1")])
def test_request_equals_genhash(options: tuple[str, ...]) -> None:
    with Server(replying(page())) as srv:
        reference = theirs(*target(srv), *options)
        status, out, _ = ours(*target(srv), *options)
    assert (status, out) == (0, reference.stdout)
    assert len(srv.requests) == 2
    assert srv.requests[1] == srv.requests[0]


def test_virtualhost_and_protocol_reach_the_server() -> None:
    with Server(replying(page())) as srv:
        ours(*target(srv))
        ours(*target(srv, "/v"), "--use-virtualhost", "www.example.test", "--protocol", "1.1")
    assert srv.requests[0] == (b"GET /page HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\n"
                               b"Host: 127.0.0.1:%d\r\n\r\n" % srv.port)
    assert srv.requests[1] == (b"GET /v HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\n"
                               b"Connection: close\r\nHost: www.example.test\r\n\r\n")


@needs_genhash
def test_ipv6_equals_genhash() -> None:
    try:
        srv = Server(replying(page()), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with srv:
        reference = theirs(*target(srv))
        status, out, _ = ours(*target(srv))
    assert (status, out) == (0, reference.stdout)
    assert srv.requests[1] == srv.requests[0]
    assert b"Host: [::1]:%d\r\n" % srv.port in srv.requests[1]


def test_large_body_read_to_the_end() -> None:
    body = os.urandom(3 * 1024 * 1024)
    with Server(replying(page(body, length=None))) as srv:
        status, out, _ = ours(*target(srv))
    assert (status, out) == (0, hashlib.md5(body).hexdigest() + "\n")


def test_non_2xx_prints_the_digest_and_warns() -> None:
    with Server(replying(page(b"gone", "503 Service Unavailable"))) as srv:
        status, out, err = ours(*target(srv))
    assert status == 0  # genhash prints the digest of an error page too
    assert out == hashlib.md5(b"gone").hexdigest() + "\n"
    assert err.count("\n") == 1 and "status 503" in err and "status_code" in err


# --------------------------------------------------------------------------- verbose


def _timeless(text: str) -> list[str]:
    return [re.sub(r"= \d+ usecs$", "= N usecs", line) for line in text.split("\n")]


@needs_genhash
@pytest.mark.parametrize("kind", ["content-length", "chunked", "empty-body",
                                  "bytes-past-content-length"])
def test_verbose_report_equals_genhash(kind: str) -> None:
    data, _ = RESPONSES[kind]
    with Server(replying(data)) as srv:
        reference = theirs(*target(srv), "-v")
        status, out, _ = ours(*target(srv), "--verbose")
    assert status == 0
    assert out.splitlines()[0] == HTTP_HEADER_HEXA
    assert _timeless(out) == _timeless(reference.stdout)


def test_verbose_report_layout() -> None:
    with Server(replying(page(b"0123456789abcdefXYZ"))) as srv:
        status, out, _ = ours(*target(srv), "-v")
    lines = out.split("\n")[:-1]  # the header's CRs stay in its lines
    assert status == 0
    body_at = lines.index("-----------------------[        HTML Buffer        ]"
                          "-----------------------")
    assert lines[body_at + 1:body_at + 3] == [
        "0000  30 31 32 33 34 35 36 37 - 38 39 61 62 63 64 65 66   0123456789abcdef",
        "0016  58 59 5a                -                           XYZ             ",
    ]
    digest = hashlib.md5(b"0123456789abcdefXYZ").hexdigest()
    assert lines[-3:-2] == [digest] and lines[-2] == ""
    assert re.fullmatch(r"Global response time for \[/page\] = \d+ usecs", lines[-1])
    assert "Content-Length: 19\r" in lines


def test_hexdump_offsets_are_decimal_and_wrap_like_genhash() -> None:
    lines = hexdump_lines(bytes(65536 + 16))
    assert lines[1].startswith("0016  00")
    assert lines[4095].startswith("65520  00")  # "%.4zu": at least four digits
    assert lines[4096].startswith("0000  00")  # offset & 0xffff


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_server_context() -> Iterator[Callable[[], ssl.SSLContext]]:
    trustme = pytest.importorskip("trustme", reason="trustme (test extras) is not installed")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "www.example.test")

    def make() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        return context

    yield make


def test_https_digest(tls_server_context: Callable[[], ssl.SSLContext]) -> None:
    with Server(replying(page()), tls=tls_server_context()) as srv:
        status, out, err = ours(*target(srv), "--use-ssl")
    assert (status, out) == (0, hashlib.md5(BODY).hexdigest() + "\n"), err


def test_https_verbose_report_has_no_digest_dump(
        tls_server_context: Callable[[], ssl.SSLContext]) -> None:
    """genhash -S -v skips the digest dump (its TLS reader never prints it); so do we."""
    with Server(replying(page(b"tls body")), tls=tls_server_context()) as srv:
        status, out, _ = ours(*target(srv), "-S", "-v")
    lines = out.split("\n")[:-1]
    assert status == 0
    assert "0000  74 6c 73 20 62 6f 64 79 -                           tls body        " in lines
    assert lines[-3:] == [hashlib.md5(b"tls body").hexdigest(), "",
                          lines[-1]] and lines[-1].startswith("Global response time")
    assert not any("hash resulting" in line for line in lines)


def test_https_sni_from_the_virtualhost(tls_server_context: Callable[[], ssl.SSLContext]
                                        ) -> None:
    with Server(replying(page()), tls=tls_server_context()) as srv:
        ours(*target(srv), "-S", "-V", "www.example.test")
        ours(*target(srv), "-S", "-I", "-V", "www.example.test")
    assert srv.sni == [None, "www.example.test"]
    assert all(b"Host: www.example.test\r\n" in request for request in srv.requests)


@needs_genhash
@pytest.mark.parametrize("kind", ["content-length", "no-content-length", "chunked"])
def test_https_equals_genhash(tls_server_context: Callable[[], ssl.SSLContext],
                              kind: str) -> None:
    data, _ = RESPONSES[kind]
    with Server(replying(data), tls=tls_server_context()) as srv:
        reference = theirs(*target(srv), "-S")
        status, out, _ = ours(*target(srv), "-S")
        reference_v = theirs(*target(srv), "-S", "-v")
        status_v, out_v, _ = ours(*target(srv), "-S", "-v")
    assert (status, out) == (0, reference.stdout)
    assert srv.requests[1] == srv.requests[0]
    assert status_v == 0 and _timeless(out_v) == _timeless(reference_v.stdout)


def test_https_against_plain_http_is_a_tls_error() -> None:
    with Server(replying(page(b"", "400 Bad Request")), raw=True) as srv:
        status, out, err = ours(*target(srv), "-S", "-t", "3")
    assert (status, out) == (1, "")
    assert err.count("\n") == 1 and "TLS error" in err and "Traceback" not in err


# --------------------------------------------------------------------------- errors


def _one_line_error(result: tuple[int, str, str], status: int, *words: str) -> None:
    code, out, err = result
    assert (code, out) == (status, "")
    assert err.startswith("fastcheck genhash: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err


def test_refused_port() -> None:
    port = free_port()
    _one_line_error(ours("-s", "127.0.0.1", "-p", str(port), "-u", "/"), 1, "refused",
                    f"127.0.0.1:{port}")


@needs_genhash
def test_refused_port_genhash_prints_no_digest_either() -> None:
    # genhash says "Connection failed" on stdout and exits 0; we exit 1 (see the module).
    reference = theirs("-s", "127.0.0.1", "-p", str(free_port()), "-u", "/")
    assert not re.search(r"[0-9a-f]{32}", reference.stdout + reference.stderr)


def test_closed_without_response() -> None:
    with Server(lambda conn, request: None) as srv:
        result = ours(*target(srv))
    _one_line_error(result, 1, "no data received")


def test_closed_inside_the_header() -> None:
    with Server(replying(b"HTTP/1.0 200 OK\r\nServer: half")) as srv:
        result = ours(*target(srv))
    _one_line_error(result, 1, "before the end of the response header")


def test_timeout() -> None:
    with Server(silent) as srv:
        result = ours(*target(srv), "--timeout", "0.3")
    _one_line_error(result, 1, "timed out", "0.3 s")


@pytest.mark.parametrize(("options", "words"), [
    (("-s", "localhost", "-p", "80", "-u", "/"), ("--server", "IP address", "localhost")),
    (("-s", "127.0.0.1", "-p", "0", "-u", "/"), ("--port",)),
    (("-s", "127.0.0.1", "-p", "http", "-u", "/"), ("--port",)),
    (("-s", "127.0.0.1", "-p", "80", "-u", "/a b"), ("--url",)),
    (("-s", "127.0.0.1", "-p", "80", "-u", ""), ("--url",)),
    (("-s", "127.0.0.1", "-p", "80", "-u", "/", "-P", "2.0"), ("--protocol", "2.0")),
    (("-s", "127.0.0.1", "-p", "80", "-u", "/", "-t", "0"), ("--timeout",)),
    (("-s", "127.0.0.1", "-p", "80", "-u", "/", "-m", "-1"), ("--fwmark",)),
])
def test_bad_options_are_one_line_usage_errors(options: tuple[str, ...],
                                               words: tuple[str, ...]) -> None:
    _one_line_error(ours(*options), 2, *words)


@needs_genhash
def test_bad_host_genhash_refuses_it_too() -> None:
    reference = theirs("-s", "localhost", "-p", "80", "-u", "/")
    assert reference.returncode != 0
    assert "server should be an IP" in reference.stderr


def test_missing_option_is_a_usage_error(capsys: Any) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["genhash", "-s", "127.0.0.1", "-p", "80"])
    assert exited.value.code == 2
    assert "-u/--url" in capsys.readouterr().err


def test_command_line_entry_point() -> None:
    """The installed `fastcheck genhash` works as a process (no traceback, right stream)."""
    script = os.path.join(os.path.dirname(sys.executable), "fastcheck")
    if not os.access(script, os.X_OK):
        pytest.skip(f"no installed fastcheck script next to {sys.executable}")
    with Server(replying(page())) as srv:
        proc = subprocess.run([script, "genhash", *target(srv)], capture_output=True,
                              text=True, timeout=30, check=False)
        refused = subprocess.run([script, "genhash", "-s", "127.0.0.1", "-p",
                                  str(free_port()), "-u", "/"], capture_output=True,
                                 text=True, timeout=30, check=False)
    assert (proc.returncode, proc.stdout) == (0, hashlib.md5(BODY).hexdigest() + "\n")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert "refused" in refused.stderr and "Traceback" not in refused.stderr
