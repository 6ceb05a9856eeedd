"""Notify scripts and the notify FIFO (daemon/notify.py), and their wiring in the Runtime.

Scripts are small /bin/sh files in tmp_path that leave marker files; every wait polls a
condition with a deadline. Each asyncio test runs under the stock loop and uvloop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fastcheck.config.loader import load_file
from fastcheck.daemon.app import Options, Runtime
from fastcheck.daemon.log import fifo_line
from fastcheck.daemon.notify import Notifier
from fastcheck.daemon.signals import load_health
from fastcheck.health.events import (
    Cause,
    CheckerUp,
    QuorumGained,
    QuorumLost,
    RealServerDown,
    RealServerUp,
)
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.model import Family, GlobalDefs, Protocol, RsKey, Script, VsKey, VsKind

VS = VsKey(VsKind.ADDRESS, Family.INET, Protocol.TCP, "10.0.0.1", 80)
RS1 = RsKey(VS, "192.168.0.1", 8080)
RS2 = RsKey(VS, "192.168.0.2", 8080)
FWM = VsKey(VsKind.FWMARK, Family.INET, None, fwmark=7)
V6 = VsKey(VsKind.ADDRESS, Family.INET6, Protocol.UDP, "2001:db8::1", 53)
GROUP = VsKey(VsKind.GROUP, Family.INET, Protocol.TCP, group="web")
Q = {"quorum": 1, "hysteresis": 0}


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


async def until(predicate: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


# ------------------------------------------------------------------------ scripts


def test_scripts_run_for_their_events_with_keepalived_argv(run, tmp_path):
    log = tmp_path / "log"
    cmd = script(tmp_path / "note.sh", f'echo "$#:$*" >> {log}')

    async def scenario() -> None:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs())
        notifier.on_event(RealServerUp(RS1, 1, Script(f"{cmd} up 'rs one'")))
        await until(lambda: len(lines(log)) == 1)
        notifier.on_event(RealServerDown(RS1, Script(f'{cmd} down "rs one"')))
        await until(lambda: len(lines(log)) == 2)
        notifier.on_event(QuorumGained(VS, 3, 2, Script(f"{cmd} quorum\\ up"), **Q))
        await until(lambda: len(lines(log)) == 3)
        notifier.on_event(QuorumLost(VS, 0, 2, Script(f"{cmd} quorum_down x"), **Q))
        await until(lambda: len(lines(log)) == 4)
        # No script, or an event that has none: nothing runs, nothing breaks.
        notifier.on_event(RealServerUp(RS2, 1, None))
        notifier.on_event(CheckerUp(None))  # type: ignore[arg-type]
        notifier.on_event("not an event")
        await notifier.close(5)
        assert notifier.counters.started == notifier.counters.succeeded == 4
        assert notifier.running == 0 and notifier.queued == 0

    run(scenario())
    # No extra arguments beyond the command line; quotes and escapes as keepalived.
    assert lines(log) == ["2:up rs one", "2:down rs one", "1:quorum up", "2:quorum_down x"]


def test_a_script_that_outlives_its_timeout_is_killed_with_its_group(run, tmp_path, caplog):
    child_pid = tmp_path / "child.pid"
    after = tmp_path / "after"
    slow = script(tmp_path / "slow.sh", f"trap '' TERM\nsleep 30 &\necho $! > {child_pid}\n"
                  "wait\nwait")
    fast = script(tmp_path / "fast.sh", f"touch {after}")

    async def scenario() -> float:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs(), timeout_s=0.3,
                            term_grace_s=0.2)
        started = time.monotonic()
        notifier.on_event(RealServerDown(RS1, Script(slow)))
        notifier.on_event(RealServerUp(RS1, 1, Script(fast)))  # queued behind it
        await until(lambda: notifier.counters.succeeded == 1)
        elapsed = time.monotonic() - started
        assert after.exists() and notifier.counters.timed_out == 1
        await notifier.close(5)
        return elapsed

    with caplog.at_level("WARNING", logger="fastcheck"):
        elapsed = run(scenario())
    assert 0.3 <= elapsed < 5
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(pid):
        assert time.monotonic() < deadline, "the script's child survived"
        time.sleep(0.02)
    assert any("still running after 0.3 s" in r.getMessage() and "SIGKILL" in r.getMessage()
               for r in caplog.records)


def test_order_per_real_server_and_concurrency_across_them(run, tmp_path):
    log = tmp_path / "log"
    step = script(tmp_path / "step.sh",
                  f'echo "start $1 $2" >> {log}; sleep 0.05; echo "end $1 $2" >> {log}')
    # Two real servers whose scripts wait for each other: only concurrent runs finish.
    ping, pong = tmp_path / "ping", tmp_path / "pong"
    wait_for = script(tmp_path / "wait_for.sh",
                      'touch "$1"; n=0; while [ ! -e "$2" ]; do n=$((n+1)); '
                      '[ $n -gt 200 ] && exit 1; sleep 0.02; done')

    async def scenario() -> None:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs(), max_running=4)
        for i in range(5):
            notifier.on_event(RealServerUp(RS1, 1, Script(f"{step} rs1 {i}")))
            notifier.on_event(RealServerDown(RS2, Script(f"{step} rs2 {i}")))
        await until(lambda: notifier.counters.succeeded == 10)
        notifier.on_event(RealServerUp(RS1, 1, Script(f"{wait_for} {ping} {pong}")))
        notifier.on_event(RealServerUp(RS2, 1, Script(f"{wait_for} {pong} {ping}")))
        await until(lambda: notifier.counters.succeeded == 12)
        await notifier.close(5)
        assert notifier.counters.failed == 0

    run(scenario())
    for rs in ("rs1", "rs2"):
        mine = [line for line in lines(log) if f" {rs} " in line]
        assert mine == [f"{what} {rs} {i}" for i in range(5) for what in ("start", "end")]


def test_failures_are_logged_and_do_not_stop_the_others(run, tmp_path, caplog):
    ok = tmp_path / "ok"
    failing = script(tmp_path / "fail.sh", "echo something broke >&2; exit 3")
    good = script(tmp_path / "good.sh", f'echo "$1" >> {ok}')

    async def scenario() -> None:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs())
        notifier.on_event(RealServerDown(RS1, Script(failing)))
        notifier.on_event(RealServerDown(RS1, Script(str(tmp_path / "missing.sh"))))
        notifier.on_event(RealServerDown(RS1, Script(f"{good} 'unterminated")))
        notifier.on_event(RealServerDown(RS1, Script(good, user="no-such-user-fc")))
        notifier.on_event(RealServerDown(RS1, Script(f"{good} after")))
        notifier.on_event(QuorumLost(VS, 0, 1, Script(f"{good} quorum"), **Q))
        await until(lambda: len(lines(ok)) == 2)
        await notifier.close(5)
        counters = notifier.counters
        assert (counters.failed, counters.skipped, counters.succeeded) == (2, 2, 2)

    with caplog.at_level("WARNING", logger="fastcheck"):
        run(scenario())
    assert sorted(lines(ok)) == ["after", "quorum"]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "exit status 3 — 'something broke'" in messages
    assert "missing.sh" in messages and "not found" in messages.lower()
    assert "missing terminating" in messages
    assert "no-such-user-fc" in messages


def test_global_script_user_and_security(run, tmp_path, caplog):
    marker = tmp_path / "ran"
    cmd = script(tmp_path / "who.sh", f"id -un > {marker}")
    tmp_path.chmod(0o777)  # writable by everyone: insecure for a script run as root

    async def scenario() -> Notifier:
        secure = GlobalDefs(enable_script_security=True,
                            script_user=None if os.geteuid() else "root")
        notifier = Notifier(asyncio.get_running_loop(), secure)
        notifier.on_event(RealServerUp(RS1, 1, Script(cmd)))
        await notifier.close(5)
        return notifier

    try:
        with caplog.at_level("WARNING", logger="fastcheck"):
            notifier = run(scenario())
    finally:
        tmp_path.chmod(0o755)
    if os.geteuid() == 0:
        assert notifier.counters.skipped == 1 and not marker.exists()
        assert any("enable_script_security" in r.getMessage() for r in caplog.records)
    else:  # not root: the script runs as us and is not a root script
        assert notifier.counters.succeeded == 1


def test_close_kills_what_runs_and_drops_what_waits(run, tmp_path):
    started = tmp_path / "started"
    hang = script(tmp_path / "hang.sh", f"echo $$ > {started}; exec sleep 30")

    async def scenario() -> None:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs(), max_running=1)
        notifier.on_event(RealServerDown(RS1, Script(hang), cause=Cause.STOP))
        notifier.on_event(RealServerDown(RS2, Script(hang), cause=Cause.STOP))
        await until(lambda: started.exists() and bool(started.read_text().strip()))
        t0 = time.monotonic()
        await notifier.close(0.3)
        assert time.monotonic() - t0 < 5
        assert notifier.counters.dropped == 1 and notifier.running == 0
        assert not pid_alive(int(started.read_text()))
        notifier.on_event(RealServerUp(RS1, 1, Script(hang)))  # after close: dropped
        assert notifier.counters.dropped == 2 and notifier.running == 0

    run(scenario())


# ------------------------------------------------------------------------ FIFO


def test_fifo_line_format():
    assert fifo_line(RealServerUp(RS1, 1, None)) == \
        "RS [192.168.0.1]:tcp:8080 [10.0.0.1]:tcp:80 UP\n"
    assert fifo_line(RealServerDown(RsKey(V6, "2001:db8::5", 53), None)) == \
        "RS [2001:db8::5]:udp:53 [2001:db8::1]:udp:53 DOWN\n"
    assert fifo_line(QuorumGained(FWM, 1, 1, None, **Q)) == "VS FWM 7 UP\n"
    assert fifo_line(QuorumLost(GROUP, 0, 1, None, **Q)) == "VS [web]:0 DOWN\n"
    assert fifo_line(CheckerUp(None)) is None  # type: ignore[arg-type]


class FifoReader(threading.Thread):
    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.lines = path, []  # type: list[str]
        self.opened = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.opened.set()
        buffer = b""
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    data = None
                if data:
                    buffer += data
                    *done, buffer = buffer.split(b"\n")
                    self.lines.extend(line.decode() for line in done)
                    if self.lines and self.lines[-1] == "VS [10.0.0.1]:tcp:80 DOWN":
                        return
                else:
                    time.sleep(0.01)
        finally:
            os.close(fd)


def test_fifo_gets_lines_in_event_order_and_drops_without_reader(run, tmp_path):
    path = tmp_path / "lvs.fifo"

    async def scenario() -> None:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs(), fifo_path=str(path))
        assert path.is_fifo()  # created when missing
        notifier.on_event(RealServerUp(RS1, 1, None))  # nobody reads yet: dropped
        assert notifier.counters.fifo_dropped == 1
        reader = FifoReader(path)
        reader.start()
        assert reader.opened.wait(5)
        events = [RealServerUp(RS1, 1, None), QuorumGained(VS, 1, 1, None, **Q),
                  RealServerUp(RS2, 1, None), RealServerDown(RS1, None),
                  RealServerDown(RS2, None), QuorumLost(VS, 0, 1, None, **Q)]
        for event in events:
            notifier.on_event(event)
        await until(lambda: not reader.is_alive())
        assert reader.lines == [fifo_line(event).rstrip("\n") for event in events]
        assert notifier.counters.fifo_lines == len(events)
        await notifier.close(1)
        assert not path.exists()  # we made it, we remove it

    run(scenario())


# ------------------------------------------------------------------------ Runtime wiring


def test_runtime_runs_notify_scripts_of_the_real_health_layer(run, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    log = tmp_path / "log"
    note = script(tmp_path / "note.sh", f'echo "$*" >> {log}')
    path = tmp_path / "fc.conf"
    path.write_text(f"""global_defs {{
    router_id test
}}
virtual_server 10.0.0.1 80 {{
    lb_algo rr
    lb_kind NAT
    protocol TCP
    delay_loop 0.2
    quorum_up "{note} quorum up"
    quorum_down "{note} quorum down"
    real_server 127.0.0.1 {port} {{
        notify_up "{note} rs up"
        notify_down "{note} rs down"
        TCP_CHECK {{ connect_timeout 0.5 }}
    }}
}}
""")
    config, _ = load_file(str(path))
    factory, carry = load_health()

    def options(dry_run: bool) -> Options:
        return Options(config_path=str(path), dry_run=dry_run, repair_interval_s=0,
                       scheduler_bootstrap_s=0.0, data_path=str(tmp_path / "fc.data"),
                       json_path=str(tmp_path / "fc.json"))

    async def scenario(dry_run: bool) -> None:
        backend = MemoryBackend()
        runtime = Runtime(config, backend, factory, carry, options(dry_run))
        task = asyncio.create_task(runtime.run())
        await until(lambda: bool(backend.table))
        sock.close()  # the real server goes away
        await until(lambda: runtime.counters.events >= 2)
        await until(lambda: runtime.notifier.queued == runtime.notifier.running == 0)
        if not dry_run:
            await until(lambda: "rs down" in lines(log) and "quorum down" in lines(log))
        runtime.request_stop()
        assert await asyncio.wait_for(task, 10) == 0

    try:
        run(scenario(dry_run=True))
        assert lines(log) == []  # a dry run runs no scripts
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        run(scenario(dry_run=False))
    finally:
        sock.close()
    got = lines(log)
    # keepalived starts the VS with quorum down and gains it once its server is in
    # (quorum_up at start); the VS's scripts run in order, the server's beside them.
    assert sorted(got) == ["quorum down", "quorum up", "rs down"]
    assert got.index("quorum up") < got.index("quorum down")


def test_fifo_given_as_path_user_group_is_created_for_that_account(run, tmp_path):
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        nobody = None
    path = tmp_path / "owned.fifo"
    user = "nobody" if nobody is not None and os.geteuid() == 0 else None

    async def scenario() -> None:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs(),
                            fifo_path=Script(str(path), user))
        assert path.is_fifo()
        if user is not None:
            assert path.stat().st_uid == nobody.pw_uid
        await notifier.close(1)
        assert not path.exists()

    run(scenario())


def test_an_existing_non_fifo_path_is_refused(run, tmp_path, caplog):
    path = tmp_path / "plain"
    path.write_text("")

    async def scenario() -> None:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs(), fifo_path=str(path))
        assert notifier.fifo_path is None
        notifier.on_event(RealServerUp(RS1, 1, None))
        await notifier.close(1)
        assert notifier.counters.fifo_lines == notifier.counters.fifo_dropped == 0

    with caplog.at_level("ERROR", logger="fastcheck"):
        run(scenario())
    assert path.read_text() == ""
    assert any("is not a FIFO" in r.getMessage() for r in caplog.records)


def test_fifo_reader_leaving_and_coming_back(run, tmp_path):
    path = tmp_path / "lvs.fifo"
    os.mkfifo(path)

    async def scenario() -> None:
        notifier = Notifier(asyncio.get_running_loop(), GlobalDefs(), fifo_path=str(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        notifier.on_event(RealServerUp(RS1, 1, None))
        assert os.read(fd, 4096) == b"RS [192.168.0.1]:tcp:8080 [10.0.0.1]:tcp:80 UP\n"
        os.close(fd)  # the reader leaves: EPIPE, dropped, reopened later
        notifier.on_event(RealServerDown(RS1, None))
        assert notifier.counters.fifo_dropped == 1
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        notifier.on_event(QuorumLost(VS, 0, 1, None, **Q))
        assert os.read(fd, 4096) == b"VS [10.0.0.1]:tcp:80 DOWN\n"
        os.close(fd)
        await notifier.close(1)
        assert path.exists()  # not ours: left in place
        assert notifier.counters.fifo_lines == 2

    run(scenario())
