"""`fastcheck genhash`: the MD5 digest of a web page, as keepalived's genhash prints it.

Owns: the command's options (genhash's spellings), one blocking fetch of one url, the
sans-IO accumulation of that response (`PageReader`), the verbose report laid out like
genhash's (`hexdump_lines`, `verbose_lines`) and the exit status.
Must not: build request bytes or parse the header itself — `probes/httpwire.py` owns both,
so the digest printed here is the one an HTTP_GET/SSL_GET url ``digest`` is compared with
— nor build its own TLS settings (`probes/http.client_context`), nor decide health.

keepalived 2.2.7 behaviour followed (keepalived/check/check_genhash.c, check_http.c and
lib/utils.c dump_buffer): the request is the checker's; the body is everything after the
first CRLF CRLF up to Content-Length (or EOF), chunked encoding included, hashed whatever
the status line says; the output is the bare hex digest, and with -v the header and body
hexdumps, the digest dump (not with -S: genhash's TLS reader skips it), the digest and the
"Global response time" line. -s takes an IP address only; -V is sent as the Host header and,
with -I, as the TLS server name.

Where this command differs, on purpose:
- errors (refused, timeout, TLS, no response) are one line on stderr and exit status 1;
  genhash prints them on stdout or stderr and exits 0. Usage errors exit 2 (genhash: 1).
- -t bounds the whole fetch and defaults to 5 s; genhash re-arms it for every read and
  by default waits forever.
- the body dump is one continuous hexdump; genhash dumps each read() separately, restarting
  the offsets at 0000 (identical whenever the body arrives with the header, as small pages do).
- a status outside 200-299 still prints the digest (as genhash does) plus a warning on
  stderr: an HTTP_GET url with that digest fails unless its status_code allows the status.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import socket
    import ssl

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT_S = 5.0
PROTOCOLS = ("1.0", "1.0c", "1.0C", "1.1")
RECV_BYTES = 65536

_DELIM_BEGIN, _DELIM_END = "-----------------------[", "]-----------------------"
HTTP_HEADER_HEXA = f"{_DELIM_BEGIN}    HTTP Header Buffer    {_DELIM_END}"
HTTP_HEADER_ASCII = f"{_DELIM_BEGIN} HTTP Header Ascii Buffer {_DELIM_END}"
HTML_HEADER_HEXA = f"{_DELIM_BEGIN}        HTML Buffer        {_DELIM_END}"
HTML_HASH = f"{_DELIM_BEGIN}    HTML hash resulting    {_DELIM_END}"
HTML_HASH_FINAL = f"{_DELIM_BEGIN} HTML hash final resulting {_DELIM_END}"


class GenhashError(Exception):
    """The page could not be fetched; the message is the whole story for the user."""


# --------------------------------------------------------------------------- sans-IO


def hexdump_lines(data: bytes) -> list[str]:
    """genhash's dump_buffer: decimal offset, 2 x 8 hex bytes around " -", printable ASCII.

    The offset is the byte index modulo 65536, at least four digits, as keepalived prints it.
    """
    lines = []
    for start in range(0, len(data), 16):
        row = data[start:start + 16]
        cells = [f" {byte:02x}" for byte in row] + ["   "] * (16 - len(row))
        text = "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in row).ljust(16)
        lines.append(f"{start & 0xFFFF:04d} {''.join(cells[:8])} -{''.join(cells[8:])}"
                     f"   {text}")
    return lines


class PageReader:
    """One response, fed as received: the header, the hashed body bytes and their MD5.

    The header ends at the first CRLF CRLF; the body is hashed raw (chunk lines included)
    up to Content-Length when the header gives one, else to EOF — genhash's digest.
    ``keep_body`` keeps the hashed bytes for the verbose dump.
    """

    def __init__(self, *, keep_body: bool = False) -> None:
        self._pending: bytearray | None = bytearray()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._body = bytearray() if keep_body else None
        self.head: bytes | None = None
        self.status_code: int | None = None
        self.content_length: int | None = None
        self.body_bytes = 0  # bytes received after the header, hashed or not
        self.hashed_bytes = 0

    def feed(self, data: bytes) -> None:
        """Take the next bytes; raises GenhashError when the header grows without an end."""
        from fastcheck.probes.httpwire import (
            HEADER_END,
            MAX_HEADER_BYTES,
            parse_content_length,
            parse_status_code,
        )

        if self._pending is not None:
            seen = len(self._pending)
            self._pending += data
            end = self._pending.find(HEADER_END, max(0, seen - 3))
            if end < 0:
                if len(self._pending) > MAX_HEADER_BYTES:
                    raise GenhashError(f"response header above {MAX_HEADER_BYTES} bytes "
                                       "without an end (no CRLF CRLF)")
                return
            self.head = bytes(self._pending[:end + 4])
            data = bytes(self._pending[end + 4:])
            self._pending = None
            self.status_code = parse_status_code(self.head)
            self.content_length = parse_content_length(self.head)
        self.body_bytes += len(data)
        if self.content_length is not None:
            data = data[:max(0, self.content_length - self.hashed_bytes)]
        if data:
            self.hashed_bytes += len(data)
            self._md5.update(data)
            if self._body is not None:
                self._body += data

    @property
    def received_anything(self) -> bool:
        return self.head is not None or bool(self._pending)

    @property
    def body(self) -> bytes:
        """The hashed body bytes (empty unless ``keep_body``)."""
        return bytes(self._body or b"")

    @property
    def digest(self) -> bytes:
        return self._md5.digest()


def header_text(head: bytes) -> str:
    """The header as genhash's printf("%.*s") shows it: up to a NUL, CRs kept."""
    return head.split(b"\0", 1)[0].decode("utf-8", "replace")


def verbose_lines(page: PageReader, url: str, elapsed_us: int, *,
                  tls: bool = False) -> list[str]:
    """genhash -v's report of a fetched page, line by line (no trailing newlines).

    Over TLS genhash never prints the digest dump (its TLS reader skips dump_digest), and
    neither does this, so the two reports stay line for line the same.
    """
    head = page.head or b""
    lines = [HTTP_HEADER_HEXA, *hexdump_lines(head), HTTP_HEADER_ASCII]
    lines += (header_text(head) + "\n").split("\n")[:-1]
    if page.hashed_bytes:
        lines += [HTML_HEADER_HEXA, *hexdump_lines(page.body)]
    if not tls:
        lines += ["", HTML_HASH, *hexdump_lines(page.digest), HTML_HASH_FINAL]
    lines += [page.digest.hex(), "", f"Global response time for [{url}] = {elapsed_us} usecs"]
    return lines


def status_warning(page: PageReader) -> str | None:
    """Why an HTTP_GET url with this digest would still fail, or None."""
    if page.status_code is None:
        first = (page.head or b"").split(b"\r\n", 1)[0][:60]
        return f"the status line {first!r} is not HTTP: an HTTP_GET url fails on it"
    if not 200 <= page.status_code <= 299:
        return (f"status {page.status_code}: an HTTP_GET url with this digest fails unless "
                f"its status_code allows {page.status_code}")
    if page.content_length is not None and page.body_bytes < page.content_length:
        return (f"Content-Length {page.content_length} but the server closed after "
                f"{page.body_bytes} body bytes")
    return None


# --------------------------------------------------------------------------- I/O


@dataclass(frozen=True, slots=True)
class Request:
    address: str
    port: int
    url: str
    tls: bool = False
    sni: bool = False
    virtualhost: str | None = None
    protocol: str = "1.0"
    fwmark: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def fetch(request: Request, *, keep_body: bool = False) -> tuple[PageReader, int]:
    """Fetch one url and read the response to EOF; returns it and the time taken in µs.

    Raises GenhashError with a one-line message when the page cannot be fetched.
    """
    import socket
    import ssl

    from fastcheck.model import HttpParams, Target, UrlSpec, format_endpoint
    from fastcheck.probes.httpwire import build_request, request_host
    from fastcheck.probes.sockopts import describe_error, open_socket, socket_address

    target = Target(request.address, request.port, fwmark=request.fwmark)
    where = format_endpoint(request.address, request.port)
    url = UrlSpec(request.url)
    params = HttpParams((url,), http_protocol=request.protocol,
                        virtualhost=request.virtualhost, enable_sni=request.sni)
    payload = build_request(request.url, request_host(url, params, request.address,
                                                      request.port), request.protocol)
    try:
        sock = open_socket(target, socket.SOCK_STREAM)
    except OSError as exc:
        raise GenhashError(f"cannot set up the socket: {describe_error(exc)}") from None
    page = PageReader(keep_body=keep_body)
    start = time.monotonic()
    deadline = start + request.timeout_s
    phase = "connecting to"
    stream: socket.socket | ssl.SSLSocket = sock
    try:
        sock.settimeout(request.timeout_s)
        sock.connect(socket_address(target))
        if request.tls:
            phase = "in the handshake with"
            stream = _tls_handshake(sock, request, deadline)
        phase = "sending the request to"
        _settle(stream, deadline)
        stream.sendall(payload)
        phase = "reading the response from"
        while True:
            _settle(stream, deadline)
            data = stream.recv(RECV_BYTES)
            if not data:
                break
            page.feed(data)
    except TimeoutError:
        raise GenhashError(f"timed out {phase} {where} after {request.timeout_s:g} s "
                           "(raise it with -t)") from None
    except ConnectionRefusedError:
        raise GenhashError(f"connection refused by {where}") from None
    except ssl.SSLError as exc:
        hint = " (is it serving TLS?)" if stream is sock else ""
        raise GenhashError(f"TLS error {phase} {where}: {exc.reason or exc}{hint}") from None
    except OSError as exc:
        raise GenhashError(f"error {phase} {where}: {describe_error(exc)}") from None
    finally:
        sock.close()
    elapsed_us = int((time.monotonic() - start) * 1_000_000)
    if page.head is None:
        if page.received_anything:
            raise GenhashError(f"{where} closed the connection before the end of the "
                               "response header")
        raise GenhashError(f"no data received from {where}: it closed the connection "
                           "without a response")
    return page, elapsed_us


def _settle(stream: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    stream.settimeout(remaining)


def _tls_handshake(sock: socket.socket, request: Request, deadline: float) -> ssl.SSLSocket:
    from fastcheck.errors import ProbeError
    from fastcheck.probes.http import client_context

    try:
        context = client_context()
    except ProbeError as exc:  # pragma: no cover - no SSL block here, nothing to load
        raise GenhashError(str(exc)) from None
    name = request.virtualhost if request.sni and request.virtualhost else None
    stream = context.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
    _settle(stream, deadline)
    stream.do_handshake()
    return stream


# --------------------------------------------------------------------------- command


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "genhash", help="print the MD5 digest of a page, like keepalived's genhash",
        description="Fetch URL from SERVER:PORT with keepalived's HTTP_GET request and print "
                    "the MD5 digest of the body, as keepalived's genhash does: the value for "
                    "a url's `digest`. -v also dumps the header, body and digest.")
    parser.add_argument("-s", "--server", required=True, metavar="ADDRESS",
                        help="IP address of the web server (IPv4 or IPv6, no host names)")
    parser.add_argument("-p", "--port", required=True, metavar="PORT",
                        help="TCP port of the web server")
    parser.add_argument("-u", "--url", required=True, metavar="URL",
                        help="path to fetch, sent as written (e.g. /index.html)")
    parser.add_argument("-S", "--use-ssl", action="store_true", help="connect with TLS")
    parser.add_argument("-I", "--use-sni", action="store_true",
                        help="send the virtualhost (-V) as TLS server name")
    parser.add_argument("-V", "--use-virtualhost", dest="virtualhost", metavar="HOST",
                        help="Host header to send (default ADDRESS:PORT)")
    parser.add_argument("-P", "--protocol", default="1.0", metavar="VERSION",
                        help="HTTP version: 1.0 (default), 1.0c (1.0 with Connection: "
                             "close) or 1.1")
    parser.add_argument("-t", "--timeout", default=str(DEFAULT_TIMEOUT_S), metavar="S",
                        help=f"seconds the whole fetch may take (default "
                             f"{DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("-m", "--fwmark", metavar="MARK",
                        help="firewall mark to set on the socket (needs CAP_NET_ADMIN)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="dump the header, body and digest as genhash -v does")
    parser.set_defaults(handler=run)


def request_from_args(args: argparse.Namespace) -> Request:
    """Validate the options; raises ValueError with a one-line message."""
    try:
        address = str(ipaddress.ip_address(args.server))
    except ValueError:
        raise ValueError(f"--server must be an IP address, not {args.server!r}") from None
    if not args.port.isdigit() or not 0 < int(args.port) <= 65535:
        raise ValueError(f"--port must be a number from 1 to 65535, not {args.port!r}")
    url = args.url
    if not url or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError(f"--url must be a path without spaces or control characters, "
                         f"not {url!r}")
    if args.protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be 1.0, 1.0c or 1.1, not {args.protocol!r}")
    try:
        timeout_s = float(args.timeout)
    except ValueError:
        timeout_s = -1.0
    if not 0 < timeout_s < float("inf"):
        raise ValueError(f"--timeout must be a positive number of seconds, not "
                         f"{args.timeout!r}")
    fwmark = None
    if args.fwmark is not None:
        if not args.fwmark.isdigit() or int(args.fwmark) > 0xFFFFFFFF:
            raise ValueError(f"--fwmark must be a number from 0 to 4294967295, not "
                             f"{args.fwmark!r}")
        fwmark = int(args.fwmark) or None
    vhost = args.virtualhost
    if vhost is not None and (not vhost or any(ch.isspace() for ch in vhost)):
        raise ValueError(f"--use-virtualhost must be a host name without spaces, not "
                         f"{vhost!r}")
    return Request(address, int(args.port), url, tls=args.use_ssl, sni=args.use_sni,
                   virtualhost=vhost, protocol=args.protocol, fwmark=fwmark,
                   timeout_s=timeout_s)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        request = request_from_args(args)
    except ValueError as exc:
        print(f"fastcheck genhash: {exc}", file=err)
        return EXIT_USAGE
    try:
        page, elapsed_us = fetch(request, keep_body=args.verbose)
    except GenhashError as exc:
        print(f"fastcheck genhash: {exc}", file=err)
        return EXIT_FAILED
    if args.verbose:
        lines = verbose_lines(page, request.url, elapsed_us, tls=request.tls)
        out.write("".join(f"{line}\n" for line in lines))
    else:
        print(page.digest.hex(), file=out)
    out.flush()
    warning = status_warning(page)
    if warning:
        print(f"fastcheck genhash: warning: {warning}", file=err)
    return EXIT_OK
