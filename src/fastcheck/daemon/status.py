"""The daemon's local status endpoint: /metrics, /status and /healthz over HTTP.

Owns: `StatusServer`, an observer that serves a minimal HTTP/1.x GET/HEAD endpoint on the
daemon's own event loop (no thread: the runtime's state is single-threaded) — request
head size-limited, read and write timeouts, a cap on simultaneous clients, one response
per connection; the routes (`/metrics` Prometheus text, `/status` the runtime's status
as JSON, `/healthz` the scheduler's pace as judged by `PaceJudge`); and
`parse_listen`, the `[HOST:]PORT` syntax with its loopback-only rule.
Must not: change the runtime, decide on its own whether the scheduler keeps up (the one
judgement is `PaceJudge`'s), or block the loop on a slow client.

/healthz: 200 "ok" while probes start on time; 503 and the reason (late starts, a stall,
"starting", "stopping") otherwise. The judge looks every `pace_every_s` seconds, so its
window is the last few seconds whatever the polling rate of the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastcheck.errors import FastcheckError

from .observe import Batch, Observer
from .pace import Pace, PaceJudge

if TYPE_CHECKING:
    from .app import Runtime
    from .metrics import Metrics

log = logging.getLogger("fastcheck")

DEFAULT_STATUS_PORT = 9469
DEFAULT_STATUS_HOST = "127.0.0.1"
MAX_HEAD_BYTES = 8192
READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 10.0
MAX_CLIENTS = 16
PACE_EVERY_S = 5.0
TEXT = "text/plain; charset=utf-8"

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}


def parse_listen(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[V6]:PORT` → (host, port); HOST defaults to 127.0.0.1.
    Raises ValueError with a readable message; a non-loopback HOST needs `allow_remote`."""
    text = text.strip()
    host, port_text = DEFAULT_STATUS_HOST, text
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or not text[close + 1:].startswith(":"):
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDR]:PORT")
        host, port_text = text[1:close], text[close + 2:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDR]:PORT")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    if host == "localhost":
        host = DEFAULT_STATUS_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not address.is_loopback and not allow_remote:
        raise ValueError(f"{text!r}: {host} is not a loopback address; the endpoint has no "
                         "authentication, add --status-allow-remote to serve it there")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}",
                 f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", "Connection: close",
                 "Cache-Control: no-store",
                 *(f"{name}: {value}" for name, value in self.headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), default=str).encode() + b"\n"


def _text(status: int, text: str, *headers: tuple[str, str]) -> Response:
    return Response(status, TEXT, (text + "\n").encode(), headers)


def healthz_response(pace: Pace | None, *, started: bool, stopping: bool) -> Response:
    """The /healthz answer for a judgement (pure; the unit tests drive it)."""
    if stopping:
        return _text(503, "stopping")
    if not started or pace is None:
        return _text(503, "starting")
    if not pace.keeping_up:
        return _text(503, f"scheduler lagging: {pace.reason}")
    return _text(200, "ok")


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an early answer: half-close, then discard what the client still sends (at
    most 64 KiB, 1 s), so that closing on unread data does not reset the connection and
    lose the answer."""
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    left = 65536
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(1.0):
            while left > 0 and (chunk := await reader.read(min(left, 8192))):
                left -= len(chunk)


class StatusServer(Observer):
    """Serves /metrics, /status and /healthz on `host:port` while the daemon runs."""

    name = "status endpoint"

    def __init__(self, host: str = DEFAULT_STATUS_HOST, port: int = DEFAULT_STATUS_PORT, *,
                 judge: PaceJudge | None = None, pace_every_s: float = PACE_EVERY_S,
                 read_timeout_s: float = READ_TIMEOUT_S,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.host = host
        self.port = port
        self.judge = judge or PaceJudge()
        self.pace_every_s = pace_every_s
        self.read_timeout_s = read_timeout_s
        self.max_clients = max_clients
        self.runtime: Runtime | None = None
        self._metrics: Metrics | None = None
        self._server: asyncio.AbstractServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._render_lock = asyncio.Lock()
        self._started = False
        self._stopping = False
        self._looked_at = 0.0
        self._turned_away = 0  # clients being answered 503 right now

    @property
    def metrics(self) -> Metrics:
        if self._metrics is None:
            from .metrics import Metrics  # prometheus_client: only when serving

            self._metrics = Metrics(lambda: self.runtime, lambda: self.judge.last)
        return self._metrics

    # ------------------------------------------------------------------ observer hooks

    async def open(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.metrics  # noqa: B018 - build the registry before the first result
        try:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, limit=MAX_HEAD_BYTES, reuse_address=True)
        except OSError as error:
            raise FastcheckError(
                f"status endpoint: cannot listen on {self.address}: "
                f"{error.strerror or error}") from None
        log.info("status endpoint: http://%s/ (metrics, status, healthz)", self.address)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def started(self, runtime: Runtime) -> None:
        self._started = True
        self._look()

    def results(self, runtime: Runtime, batch: Batch) -> None:
        probes = runtime.plan.probes

        def kind(probe_id: int) -> str:
            probe = probes.get(probe_id)
            return probe.key.kind.value if probe is not None else "unknown"

        self.metrics.on_results(kind, batch)

    def events(self, runtime: Runtime, events: Any) -> None:
        self.metrics.on_events(events)

    def reload_finished(self, runtime: Runtime, ok: bool, duration_s: float) -> None:
        failure = runtime.last_reload_failure
        self.metrics.on_reload(ok, duration_s, failure.kind if failure is not None else None)

    def stopping(self, runtime: Runtime) -> None:
        self._stopping = True

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=1.0)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    # ------------------------------------------------------------------ pace

    def _look(self) -> None:
        """Every `pace_every_s`: the judge looks at the engine's figures."""
        self._timer = None
        runtime = self.runtime
        if runtime is None or self._stopping:
            return
        self._look_now(runtime)
        self._timer = runtime.loop.call_later(self.pace_every_s, self._look)

    def _look_now(self, runtime: Runtime) -> None:
        now = runtime.loop.time()
        try:
            self.judge.look(now, runtime.engine.stats())
        except Exception:
            log.exception("status endpoint: judging the scheduler's pace failed")
        self._looked_at = now

    def _pace(self) -> Pace | None:
        """The judge's latest word; a fresh look if the timer has fallen behind."""
        runtime = self.runtime
        if runtime is not None and self._started and not self._stopping \
                and runtime.loop.time() - self._looked_at > 2 * self.pace_every_s:
            self._look_now(runtime)
        return self.judge.last

    # ------------------------------------------------------------------ routes

    async def respond(self, method: str, target: str) -> Response:
        """The response to `method target`. The state is copied on the loop; large bodies
        (/metrics, /status at thousands of servers) are formatted in a worker thread, one
        at a time, so probes keep starting on time meanwhile."""
        if method not in ("GET", "HEAD"):
            return _text(405, f"{method} is not allowed here", ("Allow", "GET, HEAD"))
        path = target.split("?", 1)[0]
        runtime = self.runtime
        if path == "/healthz":
            return healthz_response(self._pace(), started=self._started,
                                    stopping=self._stopping)
        if path == "/metrics":
            # 0.0.4: every name is a legacy one, understood by Prometheus 2 and 3 alike
            from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

            snapshot = await runtime.health_snapshot() if runtime is not None else None
            scrape = self.metrics.capture(snapshot)
            body = await self._off_loop(self.metrics.render, scrape)
            return Response(200, CONTENT_TYPE_PLAIN_0_0_4, body)
        if path == "/status":
            if runtime is None:
                return _text(503, "starting")
            snapshot = await runtime.health_snapshot()
            body = await self._off_loop(_json, runtime.status(snapshot))  # a fresh copy
            return Response(200, "application/json", body)
        if path == "/":
            return _text(200, "fastcheck: /metrics /status /healthz")
        return _text(404, f"{path} not found; try /metrics, /status or /healthz")

    async def _off_loop(self, render: Callable[[Any], bytes], data: Any) -> bytes:
        async with self._render_lock:
            return await asyncio.get_running_loop().run_in_executor(None, render, data)

    # ------------------------------------------------------------------ HTTP

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_clients or self._server is None:
            await self._turn_away(reader, writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._exchange(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _turn_away(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """503 to a client over the limit. Its request is read first (briefly, bounded):
        closing on unread data would reset the connection and lose the answer."""
        self._turned_away += 1
        try:
            if self._turned_away <= 4 * self.max_clients:
                with contextlib.suppress(TimeoutError, asyncio.LimitOverrunError,
                                         asyncio.IncompleteReadError):
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
                writer.write(_text(503, "busy: too many clients").encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._turned_away -= 1
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout_s)
        except TimeoutError:
            await self._send(writer, _text(408, "request head not received in time"))
            return
        except asyncio.LimitOverrunError:
            await self._send(writer, _text(431, f"request head over {MAX_HEAD_BYTES} bytes"))
            await _linger(reader, writer)
            return
        except asyncio.IncompleteReadError:
            return  # the client went away
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._send(writer, _text(400, "expected: GET /path HTTP/1.1"))
            await _linger(reader, writer)
            return
        method, target = parts[0], parts[1]
        try:
            response = await self.respond(method, target)
        except Exception:
            log.exception("status endpoint: %s %s failed", method, target)
            response = _text(500, "internal error; see the daemon's log")
        await self._send(writer, response, head_only=method == "HEAD")

    async def _send(self, writer: asyncio.StreamWriter, response: Response,
                    head_only: bool = False) -> None:
        writer.write(response.encode(head_only))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
