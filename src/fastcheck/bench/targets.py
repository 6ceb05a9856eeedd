"""The bench's targets: listeners, an HTTP page server, closed ports, optional namespace.

Owns: binding the listener sockets (on loopback: wildcard address on the `lo` device only;
with `--netns`: inside the bench namespace, which only the veth reaches), the closed ports
failing targets point at (bound, never listening), the target server processes that serve
the listeners, the ICMP permission check, and removing all of it — on normal exit, on an
exception and on SIGINT/SIGTERM (the servers also die with the bench: parent-death signal).
Must not: probe anything, measure the engine, or listen beyond loopback or the namespace.

TCP listeners set TCP_DEFER_ACCEPT: a check's handshake completes (the client is
connected), but the kernel keeps the connection out of the accept queue until data
arrives — and a TCP check sends none and resets, so the queue never fills and nothing in
user space pays for it. The server processes still accept and close whatever does land
there. HTTP listeners also defer accept, so a connection surfaces with its request;
the page server (uvloop protocol, one fixed page, then close) runs in `servers`
processes sharing the listeners.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import time
from collections.abc import Iterable

from fastcheck.bench.layout import (
    LOOPBACK,
    PORT_CEILING,
    PORT_FLOOR,
    Kind,
    LayoutError,
    Ports,
    Space,
)
from fastcheck.bench.netns import Namespace, NetnsError

PAGE = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nok\n")
BACKLOG = 4096
DEFER_ACCEPT_S = 30
_PR_SET_PDEATHSIG = 1


class TargetError(Exception):
    """The targets could not be set up; the message says what to change."""


def icmp_permitted() -> bool:
    """Can this process open the raw ICMP socket PING_CHECK uses (CAP_NET_RAW)?"""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except PermissionError:
        return False
    sock.close()
    return True


def _bind_free(port: int, used: set[int], listen: bool,
               device: str | None) -> tuple[socket.socket, int]:
    """The first free port from `port` up (below the ephemeral range), bound to the
    wildcard address (on `device` only, when given)."""
    while port < PORT_CEILING:
        if port in used:
            port += 1
            continue
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if device is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
            sock.bind(("0.0.0.0", port))
            if listen:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
                sock.listen(BACKLOG)
        except PermissionError as error:
            sock.close()
            raise TargetError(f"cannot bind loopback listeners: {error.strerror}: run "
                              "fastcheck bench as root (binding to the lo device needs "
                              "CAP_NET_RAW)") from None
        except OSError:
            sock.close()
            port += 1
            continue
        used.add(port)
        return sock, port
    raise TargetError(f"no free port left in {PORT_FLOOR}..{PORT_CEILING} for the bench's "
                      "listeners: stop what listens there or lower --targets")


def _pdeathsig() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _serve(tcp: list[socket.socket], http: list[socket.socket], ready: int) -> None:
    """A target server process: drain the TCP listeners, answer HTTP with the page."""
    import asyncio

    import uvloop

    class Page(asyncio.Protocol):
        __slots__ = ("buffer", "transport")

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            if b"\r\n\r\n" in self.buffer:
                transport = self.transport
                transport.write(PAGE)  # type: ignore[attr-defined]
                transport.close()

    def drain(sock: socket.socket) -> None:
        for _ in range(256):
            try:
                conn, _address = sock.accept()
            except OSError:
                return
            conn.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        for sock in tcp:
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), drain, sock)
        servers = [await loop.create_server(Page, sock=sock, backlog=BACKLOG)
                   for sock in http]
        os.write(ready, b"r")
        os.close(ready)
        await stop
        for server in servers:
            server.close()

    uvloop.run(main())


class TargetSet:
    """Listeners, closed port and server processes of one run; `close()` removes them
    (idempotent; also on the way out of `with`)."""

    def __init__(self, space: Space = LOOPBACK) -> None:
        self.space = space
        self.namespace: Namespace | None = None
        self.sockets: list[socket.socket] = []
        self.pids: list[int] = []
        self.ports = Ports((), (), ())

    def __enter__(self) -> TargetSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, listeners: dict[Kind, int], closed: int, servers: int) -> Ports:
        """Binds `listeners[kind]` ports per kind plus `closed` closed ports (in the
        namespace, made first, with `--netns`), starts `servers` server processes on the
        listeners, and returns the ports got."""
        if self.space is not LOOPBACK:
            self.namespace = Namespace()
            try:
                self.namespace.create()
            except NetnsError as error:
                raise TargetError(str(error)) from None
            with self.namespace.inside():
                return self._open(listeners, closed, servers)
        return self._open(listeners, closed, servers)

    def _open(self, listeners: dict[Kind, int], closed: int, servers: int) -> Ports:
        used: set[int] = set()
        got: dict[Kind, list[int]] = {Kind.TCP: [], Kind.HTTP: []}
        by_kind: dict[Kind, list[socket.socket]] = {Kind.TCP: [], Kind.HTTP: []}
        device = self.space.bind_device
        port = PORT_FLOOR
        for kind in (Kind.TCP, Kind.HTTP):
            for _ in range(listeners.get(kind, 0)):
                sock, port = _bind_free(port, used, True, device)
                self.sockets.append(sock)
                by_kind[kind].append(sock)
                got[kind].append(port)
        closed_ports = []
        for _ in range(closed):
            closed_sock, port = _bind_free(port, used, False, device)
            self.sockets.append(closed_sock)
            closed_ports.append(port)
        self.ports = Ports(tuple(got[Kind.TCP]), tuple(got[Kind.HTTP]), tuple(closed_ports))
        if by_kind[Kind.TCP] or by_kind[Kind.HTTP]:
            self._start(by_kind[Kind.TCP], by_kind[Kind.HTTP], servers)
            for sock in by_kind[Kind.TCP] + by_kind[Kind.HTTP]:  # the servers hold them
                self.sockets.remove(sock)
                sock.close()
        return self.ports

    def _start(self, tcp: list[socket.socket], http: list[socket.socket],
               servers: int) -> None:
        readers: list[int] = []
        for _ in range(max(1, servers)):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child process
                status = 0
                try:
                    _pdeathsig()
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops us
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    os.close(read_end)
                    _serve(tcp, http, write_end)
                except BaseException:
                    status = 1
                finally:
                    os._exit(status)
            os.close(write_end)
            self.pids.append(pid)
            readers.append(read_end)
        deadline = time.monotonic() + 30.0
        try:
            for fd in readers:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([fd], [], [], max(0.0, left))
                if not ready or os.read(fd, 1) != b"r":
                    raise TargetError("a target server process did not start")
        finally:
            for fd in readers:
                os.close(fd)

    def server_pids(self) -> Iterable[int]:
        return tuple(self.pids)

    def close(self) -> None:
        # A second Ctrl-C must not cut the clean-up short: hold the signals until done.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self._stop_servers()
        finally:
            if self.namespace is not None:
                self.namespace.remove()
                self.namespace = None
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def _stop_servers(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()
        pids, self.pids = self.pids, []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for pid in pids:
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)


__all__ = ["PAGE", "LayoutError", "TargetError", "TargetSet", "icmp_permitted"]
