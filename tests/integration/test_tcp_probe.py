"""TCP connect checks inside a network namespace of our own: silent hosts, missing routes,
and the TIME_WAIT table, for both engine twins and under asyncio and uvloop.

The namespace has ``lo`` and an interface ``d0`` holding 10.254.0.1/24. Where the kernel
has the dummy driver, ``d0`` is a dummy interface (it discards everything sent to it);
otherwise it is one end of a veth pair whose other end has no address, with a permanent
neighbour entry for 10.254.0.2 so no ARP is needed: the SYN goes to a MAC nobody owns and
is dropped. Either way 10.254.0.2 never answers. 10.99.0.0/16 has no route (ENETUNREACH)
and 10.253.0.0/24 an ``unreachable`` route (EHOSTUNREACH). Code runs in the namespace
through ``ip netns exec`` in a subprocess; the namespace is always deleted afterwards.
No packet leaves the namespace or loopback.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from daemonproc import ip, network_namespace

SILENT = "10.254.0.2"
NO_ROUTE = "10.99.0.1"
UNREACHABLE_ROUTE = "10.253.0.1"


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    with network_namespace("fctcp") as name:
        if ip("-n", name, "link", "add", "d0", "type", "dummy", check=False).returncode != 0:
            ip("-n", name, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
            ip("-n", name, "link", "set", "d0p", "up")
        ip("-n", name, "addr", "add", "10.254.0.1/24", "dev", "d0")
        ip("-n", name, "link", "set", "d0", "up")
        ip("-n", name, "neigh", "replace", SILENT, "lladdr", "02:00:00:00:00:02", "dev", "d0",
           "nud", "permanent")  # fmt: skip
        ip("-n", name, "route", "add", "unreachable", "10.253.0.0/24")
        yield name


def run_in(netns: str, script: str, *args: object, timeout: float = 60) -> object:
    """Run a Python ``script`` inside ``netns``; it prints one JSON document."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script, *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


ENGINE_SCRIPT = """
import importlib, json, select, sys, time
impl = sys.argv[1]
engine = importlib.import_module(f"fastcheck._ext.tcpconnect_{impl}").TcpConnectEngine()
now = time.monotonic()
engine.submit(1, "10.254.0.2", 80, 0.3, now)
engine.submit(2, "10.254.0.2", 443, 0.6, now)
engine.submit(3, "10.99.0.1", 80, 0.3, now)
engine.submit(4, "10.253.0.1", 80, 0.3, now)
submitted = time.monotonic()
results = []
with select.epoll() as waiter:
    waiter.register(engine.fileno(), select.EPOLLIN)
    end = now + 10
    while len(results) < 4 and time.monotonic() < end:
        deadline = engine.next_deadline()
        wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
        waiter.poll(wait)
        results += engine.poll(time.monotonic())
print(json.dumps({"results": results, "in_flight": engine.in_flight}))
"""


@pytest.mark.parametrize("impl", ["c", "py"])
def test_silent_host_times_out_and_missing_routes_fail(netns: str, impl: str) -> None:
    out = run_in(netns, ENGINE_SCRIPT, impl)
    assert isinstance(out, dict)
    results = {token: (err, latency) for token, err, latency in out["results"]}
    assert out["in_flight"] == 0
    assert set(results) == {1, 2, 3, 4}
    assert results[1][0] == results[2][0] == errno.ETIMEDOUT
    assert 0.3 - 1e-6 <= results[1][1] < 2.0
    assert 0.6 - 1e-6 <= results[2][1] < 2.0
    assert results[3] == (errno.ENETUNREACH, 0.0)  # connect() failed at once
    assert results[4] == (errno.EHOSTUNREACH, 0.0)


PROBER_SCRIPT = """
import asyncio, importlib, json, socket, sys
import uvloop
from fastcheck.model import Target
from fastcheck.probes.tcp import TcpProber
impl, loop_name = sys.argv[1], sys.argv[2]
twin = importlib.import_module(f"fastcheck._ext.tcpconnect_{impl}")
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
port = server.getsockname()[1]
targets = {
    1: Target("10.254.0.2", 80),
    2: Target("10.99.0.1", 80),
    3: Target("10.253.0.1", 80),
    4: Target("127.0.0.1", port),
    5: Target("10.254.0.2", 80, bind_address="10.254.0.1", bind_interface="d0", fwmark=7),
}
got = {}

async def main():
    done = asyncio.Event()
    def on_result(token, result):
        got[token] = [result.ok, result.failure and result.failure.name, result.latency_s]
        if len(got) == len(targets):
            done.set()
    prober = TcpProber(asyncio.get_running_loop(), on_result, twin.TcpConnectEngine())
    for token, target in targets.items():
        prober.start(token, target, 0.25)
    await asyncio.wait_for(done.wait(), 10)
    prober.close()

(uvloop.run if loop_name == "uvloop" else asyncio.run)(main())
print(json.dumps(got))
"""


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("impl", ["c", "py"])
def test_prober_maps_namespace_failures(netns: str, impl: str, loop_name: str) -> None:
    got = run_in(netns, PROBER_SCRIPT, impl, loop_name)
    assert isinstance(got, dict)
    outcome = {int(token): (ok, failure) for token, (ok, failure, _) in got.items()}
    assert outcome == {
        1: (False, "TIMEOUT"),
        2: (False, "UNREACHABLE"),
        3: (False, "UNREACHABLE"),
        4: (True, None),
        5: (False, "TIMEOUT"),
    }
    assert got["1"][2] >= 0.25 - 1e-3  # uvloop's clock has millisecond resolution


TIME_WAIT_SCRIPT = """
import importlib, json, select, socket, subprocess, sys, time
impl, checks = sys.argv[1], int(sys.argv[2])

def time_wait():
    out = subprocess.run(["ss", "-Htan", "state", "time-wait"], capture_output=True, text=True,
                         check=True).stdout
    return len(out.splitlines())

def drain(server):
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return
        conn.close()

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(4096)
server.setblocking(False)
port = server.getsockname()[1]
before = time_wait()
engine = importlib.import_module(f"fastcheck._ext.tcpconnect_{impl}").TcpConnectEngine(256)
now = time.monotonic()
for token in range(checks):
    engine.submit(token, "127.0.0.1", port, 10.0, now)
results = []
with select.epoll() as waiter:
    waiter.register(engine.fileno(), select.EPOLLIN)
    end = now + 60
    while len(results) < checks and time.monotonic() < end:
        waiter.poll(0.05)
        results += engine.poll(time.monotonic())
        drain(server)
drain(server)
after = time_wait()
# Control: the same count, closed gracefully, does fill TIME_WAIT (so the count works).
control = min(checks, 200)
for _ in range(control):
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.close()
    drain(server)
time.sleep(0.05)
graceful = time_wait()
print(json.dumps({"ok": sum(1 for _, err, _ in results if err == 0), "before": before,
                  "after": after, "graceful": graceful, "control": control}))
"""


@pytest.mark.parametrize("impl", ["c", "py"])
def test_reset_close_leaves_no_time_wait(netns: str, impl: str) -> None:
    out = run_in(netns, TIME_WAIT_SCRIPT, impl, 5000)
    assert isinstance(out, dict)
    assert out["ok"] == 5000
    assert out["after"] - out["before"] < 20  # reset close: nothing lingers
    assert out["graceful"] - out["after"] >= out["control"] // 2  # the count does see them
