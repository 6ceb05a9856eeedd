"""Helpers the integration tests share: loopback ports, network namespaces made for a test,
and `fastcheck run --dry-run` as a subprocess read back through its log and SIGUSR1 dumps.

Test files import it by name (pytest puts this directory on sys.path), as they import
`UpIfLastOk` from test_daemon. It holds no tests and no fixtures: each test file keeps its
own fixtures, made from these pieces, and its own timeouts, passed in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# ------------------------------------------------------------------------ loopback ports


def listener() -> tuple[socket.socket, int]:
    """A TCP listener on 127.0.0.1 (the kernel completes handshakes: enough for TCP_CHECK)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, sock.getsockname()[1]


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on (a connection to it is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 20.0,
             detail: Callable[[], str] | None = None) -> None:
    """Polls `predicate` (an OSError counts as not yet) until it holds; fails after
    `timeout_s`, saying `what` it waited for and, if given, `detail()`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    tail = "" if detail is None else f":\n{detail()}"
    raise AssertionError(f"timed out waiting for {what}{tail}")


# ------------------------------------------------------------------------ network namespaces

LISTEN = """
import socket, sys
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(64)
print("ready", flush=True)
sys.stdin.read()
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=check)


@contextmanager
def network_namespace(prefix: str) -> Iterator[str]:
    """A namespace `<prefix><pid>` with `lo` up, always deleted afterwards; skips the test
    without root, iproute2 or the right to create one."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create a network namespace")
    name = f"{prefix}{os.getpid()}"
    created = ip("netns", "add", name, check=False)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
    try:
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        ip("netns", "del", name, check=False)


class NamespaceListener:
    """A listener on 127.0.0.1:port inside a namespace, started and stopped at will."""

    def __init__(self, netns: str, port: int) -> None:
        self.netns, self.port = netns, port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable, "-c",
                                      LISTEN, str(self.port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


# ------------------------------------------------------------------------ the daemon

FASTCHECK = (sys.executable, "-m", "fastcheck.cli")


def reap(proc: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """Kills `proc` if it still runs, and waits for it (a test's `finally`)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=timeout_s)


def table(doc: dict[str, Any]) -> dict[str, set[int]]:
    """A dump's IPVS table as {virtual address: {real server ports}}."""
    return {s["address"]: {d["port"] for d in s["destinations"]} for s in doc["ipvs"]}


class DryRun:
    """`fastcheck run --dry-run -f CONFIG` in a subprocess, with its pid file, dumps
    (fc.pid, fc.data, fc.json) and log (fc.log, stdout and stderr) in `tmp`.

    `command` replaces `python -m fastcheck.cli` (a script with a test double, say);
    `dump_timeout_s` bounds each SIGUSR1 dump."""

    def __init__(self, tmp: Path, config: Path, *extra: str,
                 command: Sequence[str] = FASTCHECK, dump_timeout_s: float = 10.0) -> None:
        self.conf = config
        self.log_path, self.json_path = tmp / "fc.log", tmp / "fc.json"
        self.pid_path = tmp / "fc.pid"
        self.dump_timeout_s = dump_timeout_s
        self.argv = [*command, "run", "-f", str(config), "--dry-run",
                     "--pid-file", str(self.pid_path), "--dump-file", str(tmp / "fc.data"),
                     "--dump-json", str(self.json_path), *extra]
        with open(self.log_path, "w") as log:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, *texts: str, timeout: float = 15.0) -> None:
        """Until every one of `texts` is in the log."""
        deadline = time.monotonic() + timeout
        while not all(t in self.text() for t in texts):
            assert self.proc.poll() is None, "daemon died:\n" + self.text()
            missing = [t for t in texts if t not in self.text()]
            assert time.monotonic() < deadline, f"never logged {missing!r}:\n{self.text()}"
            time.sleep(0.02)

    def dump(self) -> dict[str, Any]:
        """SIGUSR1, then the JSON document it writes."""
        self.json_path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + self.dump_timeout_s
        while not self.json_path.exists():
            assert self.proc.poll() is None, "daemon died"
            assert time.monotonic() < deadline, "no dump"
            time.sleep(0.02)
        return dict(json.loads(self.json_path.read_text()))

    def wait_dump(self, done: Callable[[dict[str, Any]], bool], what: str, timeout: float,
                  show: Callable[[dict[str, Any]], object] = table) -> dict[str, Any]:
        """Dumps until `done(document)`; the document. Fails after `timeout`, showing
        `show(last document)`."""
        deadline = time.monotonic() + timeout
        while not done(doc := self.dump()):
            assert time.monotonic() < deadline, f"never {what}: {show(doc)}"
            time.sleep(0.05)
        return doc

    def reload(self, text: str) -> None:
        self.conf.write_text(text)
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and the exit status; a daemon still running at `timeout` is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                reap(self.proc)
        return self.proc.returncode

    def kill(self) -> None:
        reap(self.proc)
