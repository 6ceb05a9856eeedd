"""HTTP_GET and SSL_GET probes: fetch each url of a check in turn and report one result.

Owns: the socket of each url fetch (options set by probes/sockopts.py), the TLS
client context built from the SSL block, the per-url deadline, and turning socket and TLS
errors into `Failure`s. Wire format and verdicts live in `probes/httpwire.py`. The daemon
runs plain HTTP_GET through `probes/httpbatch.py` (the batched engine), which judges with
the same reader and `failure_of`; this probe runs SSL_GET and the rest.
Must not: decide health — retries, keepalived's "re-check only the failed url" memory and
fast_recovery belong to health/cadence.py — nor keep state between runs, nor know
keyword spellings.

keepalived behaviour followed (2.2.7, keepalived/check/check_http.c unless named):
- urls are fetched one after another, one connection each; the first failing url ends the
  run, and the result names it (`failed_url`) for health/'s url pass (http_connect_thread
  / epilog). A check without urls is up.
- the request is keepalived's request_template (see httpwire.build_request).
- TLS (check_ssl.c build_ssl_ctx, ssl_connect): no certificate verification; client
  certificate, key and key password from the SSL block; SNI only with enable_sni, from
  the virtualhost; a server closing without close_notify is a normal end of the body.
- status, then MD5 digest of the raw body (chunked bodies are not decoded, bytes past
  Content-Length are not hashed), then regex — http_handle_response's order.
- bind address/port, interface and fwmark as core/layer4.c socket_bind_connect sets them.

Where this probe differs, on purpose:
- connect_timeout bounds the *whole* fetch of one url (connect, handshake, request and
  response); keepalived re-arms it for every read, so a trickling server holds it forever.
- the body is read only while a digest or regex needs it, and stops at Content-Length;
  beyond max_body_bytes (1 MiB by default) the url fails with TOO_LARGE. keepalived reads
  every response to EOF, and its header must fit its 4 KiB buffer (ours: 64 KiB).
- a reset after the header is RESET for SSL_GET too (keepalived judges what it got).
- a status line without a reason phrase ("HTTP/1.1 200\\r\\n") is accepted; keepalived
  fails it. Content-Length is read from its header line in any case; keepalived takes the
  first case-sensitive "Content-Length:" anywhere in its first buffer.
- a regex is matched once against the whole body: keepalived's streaming partial match
  never confirms a match that touches the end of the body (e.g. ``foo$``, ``\\s*$``).
- certificates are not verified, even with an SSL block ``ca``: keepalived 2.2.7 loads the
  ca file but never sets SSL_VERIFY_PEER, and a migrated configuration whose ca does not
  match its servers must not take the farm down. ``verify_with_ca=True`` verifies the
  chain (never the host name: targets are addresses) for a future opt-in keyword.
- the SNI name comes from HttpParams.virtualhost, which includes the real server's
  virtualhost; keepalived's ssl_connect skips the real server's (but its Host header uses it).
- no SO_LINGER 5 on the socket: sockets are aborted, never left lingering in close().
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl as sslmod
import time
from collections.abc import Callable
from typing import cast

from fastcheck.errors import ProbeError
from fastcheck.model import Check, CheckKind, HttpParams, SslConfig, Target
from fastcheck.probes.httpwire import (
    DEFAULT_MAX_BODY_BYTES,
    RegexUnsupported,
    ResponseReader,
    UrlCheck,
    Verdict,
)
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.probes.sockopts import open_socket

_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN,
                          errno.ENETDOWN})


def client_context(config: SslConfig | None = None, *,
                   verify_with_ca: bool = False) -> sslmod.SSLContext:
    """The TLS client context of SSL_GET checks; build it once per configuration.

    Certificates are not verified unless ``verify_with_ca`` and ``config.ca`` are set;
    host names never are. Ciphers are OpenSSL's DEFAULT at security level 1 — what
    keepalived's plain TLS_method context offers — not Python's stricter client list.
    Raises `ProbeError` when a file of the SSL block cannot be loaded.
    """
    context = sslmod.SSLContext(sslmod.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = sslmod.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=1")
    context.options |= getattr(sslmod, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if config is None:
        return context
    try:
        if config.certificate:
            context.load_cert_chain(config.certificate, config.key, config.password)
        elif config.key:
            raise ProbeError(f"SSL key {config.key} given without a certificate")
        if config.ca:
            context.load_verify_locations(cafile=config.ca)
            if verify_with_ca:
                context.verify_mode = sslmod.CERT_REQUIRED
    except (OSError, sslmod.SSLError) as exc:
        raise ProbeError(f"SSL block: cannot load certificate, key or ca: {exc}") from None
    return context


class _Exchange(asyncio.Protocol):
    """Sends one request and feeds the reply to a `ResponseReader` until it has enough."""

    def __init__(self, reader: ResponseReader, request: bytes,
                 done: asyncio.Future[None]) -> None:
        self.reader = reader
        self._request = request
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        if not self.done.done() and self.reader.feed(data):
            self.done.set_result(None)

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)


class HttpProbe:
    """One HTTP_GET/SSL_GET check, prepared once (requests, regexes, TLS context).

    The constructor raises `ProbeError` for what can never work (a regex option Python's
    re lacks, an unloadable SSL file): call it when a configuration is loaded. `run` only
    ever returns a `ProbeResult`.
    """

    __slots__ = ("_address", "_target", "_timeout_s", "_tls", "urls")

    def __init__(self, check: Check, *, ssl: SslConfig | None = None,
                 tls_context: sslmod.SSLContext | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        params = check.params
        if not isinstance(params, HttpParams):
            raise ProbeError(f"{check.kind.value} is not an HTTP check")
        target = check.target
        self._target = target
        self._timeout_s = check.connect_timeout_s
        self._address: tuple[str, int] = (target.address, target.port)
        urls = []
        for url in params.urls:
            try:
                urls.append(UrlCheck.prepare(url, params, target.address, target.port,
                                             max_body_bytes=max_body_bytes))
            except RegexUnsupported as exc:
                raise ProbeError(f"url {url.path}: {exc}") from None
        self.urls: tuple[UrlCheck, ...] = tuple(urls)
        self._tls: sslmod.SSLContext | None = None
        if check.kind is CheckKind.HTTPS:
            self._tls = tls_context if tls_context is not None else client_context(ssl)

    @property
    def target(self) -> Target:
        return self._target

    @property
    def timeout_s(self) -> float:
        """The bound of one url's whole fetch (connect_timeout)."""
        return self._timeout_s

    @property
    def uses_tls(self) -> bool:
        return self._tls is not None

    async def run(self, *, loop_time: Callable[[], float] | None = None) -> ProbeResult:
        """Fetch every url in order; the first failure is the result.

        Latency covers all urls, measured with ``loop_time`` (default `time.monotonic`:
        uvloop's own clock only ticks in milliseconds). Deadlines use the loop's clock.
        """
        loop = asyncio.get_running_loop()
        clock = loop_time or time.monotonic
        start = clock()
        for index, url in enumerate(self.urls):
            failure, detail = await self._fetch(loop, url)
            if failure is not None:
                return ProbeResult.down(failure, clock() - start, f"{url.url.path}: {detail}",
                                        failed_url=index)
        return ProbeResult.up(clock() - start)

    # ------------------------------------------------------------------ one url

    def _socket(self) -> socket.socket:
        return open_socket(self._target, socket.SOCK_STREAM)

    async def _fetch(self, loop: asyncio.AbstractEventLoop, url: UrlCheck) -> Verdict:
        try:
            sock = self._socket()
        except OSError as exc:
            return (Failure.LOCAL, f"cannot set up the socket: {exc}")
        phase = "connect"
        transport: asyncio.BaseTransport | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                await loop.sock_connect(sock, self._address)
                phase = "tls" if self._tls is not None else "response"
                done: asyncio.Future[None] = loop.create_future()
                exchange = _Exchange(url.reader(), url.request, done)
                transport, _ = await loop.create_connection(
                    lambda: exchange, sock=sock, ssl=self._tls,
                    server_hostname=(url.sni or "") if self._tls is not None else None)
                phase = "response"
                await done
                return exchange.reader.verdict()
        except TimeoutError:
            return (Failure.TIMEOUT, f"no complete answer within {self._timeout_s:g} s "
                                     f"({phase})")
        except OSError as exc:
            return _failure_of(phase, exc)
        finally:
            if transport is not None:
                transport.abort()
            sock.close()


def failure_of(phase: str, exc: BaseException) -> Verdict:
    """The verdict of a fetch that ended with ``exc`` in ``phase`` ("connect", "tls" or
    "response"); shared with the batched prober (probes/httpbatch.py)."""
    return _failure_of(phase, exc)


def _failure_of(phase: str, exc: BaseException) -> Verdict:
    """Map an error of one phase of a fetch to a failure class."""
    text = str(exc) or type(exc).__name__
    if phase == "tls" or isinstance(exc, sslmod.SSLError):
        return (Failure.TLS, f"TLS: {text}")
    code = getattr(exc, "errno", None)
    if phase == "connect":
        if isinstance(exc, ConnectionRefusedError):
            return (Failure.REFUSED, "connection refused")
        if code in _UNREACHABLE:
            return (Failure.UNREACHABLE, text)
        if code == errno.ETIMEDOUT:
            return (Failure.TIMEOUT, text)
        if isinstance(exc, ConnectionError):
            return (Failure.RESET, f"connect: {text}")
        return (Failure.LOCAL, f"connect: {text}")
    return (Failure.RESET, f"reading the response: {text}")


async def probe_http(check: Check, *, ssl: SslConfig | None = None,
                     loop_time: Callable[[], float] | None = None,
                     tls_context: sslmod.SSLContext | None = None,
                     max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> ProbeResult:
    """Run an HTTP_GET or SSL_GET check once. Set-up problems come back as LOCAL failures.

    Prefer building one `HttpProbe` per check (and one `client_context` per configuration)
    where a check runs repeatedly: this prepares both on every call.
    """
    try:
        probe = HttpProbe(check, ssl=ssl, tls_context=tls_context,
                          max_body_bytes=max_body_bytes)
    except ProbeError as exc:
        return ProbeResult.down(Failure.LOCAL, 0.0, str(exc))
    return await probe.run(loop_time=loop_time)
