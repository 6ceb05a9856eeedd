"""Reload removals with bounded retries (MemoryBackend failure injection) and the pid file."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import subprocess
import sys

import pytest

from fastcheck.config.loader import load_text
from fastcheck.daemon.pidfile import PidFile, PidFileError, running_pid
from fastcheck.daemon.reload import backoff_s, prepare, remove_with_retries, split_removals
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.ops import Verb
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import desired_table
from fastcheck.probeplan import plan_probes

OLD = """
virtual_server 10.0.0.1 80 {
    protocol TCP
    real_server 192.168.0.1 80 { TCP_CHECK { connect_timeout 1 } }
    real_server 192.168.0.2 80 { TCP_CHECK { connect_timeout 1 } }
}
virtual_server 10.0.0.2 80 {
    protocol TCP
    real_server 192.168.0.3 80 { TCP_CHECK { connect_timeout 1 } }
}
"""
NEW = """
virtual_server 10.0.0.1 80 {
    protocol TCP
    real_server 192.168.0.1 80 { TCP_CHECK { connect_timeout 1 } }
    real_server 192.168.0.4 80 { TCP_CHECK { connect_timeout 1 } }
}
"""
log = logging.getLogger("test_reload")


def setup() -> tuple[MemoryBackend, list, list]:
    old, _ = load_text(OLD, filename="old.conf")
    new, _ = load_text(NEW, filename="new.conf")
    backend = MemoryBackend()
    assert backend.apply(reconcile(desired_table(old), {})) == []
    removals, rest = split_removals(reconcile(desired_table(new), backend.read()))
    return backend, removals, rest


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def test_split_keeps_removals_apart_in_order():
    _, removals, rest = setup()
    assert [op.verb for op in removals] == [Verb.DELETE] * 2  # a destination, then a service
    assert all(op.verb is not Verb.DELETE for op in rest) and rest


def test_removals_succeed_first_time_without_sleeping():
    backend, removals, _ = setup()
    sleeps = Sleeps()
    outcome = asyncio.run(remove_with_retries(backend, removals, 10, sleeps, log))
    assert outcome.ok and outcome.attempts == 1 and sleeps.calls == []
    assert len(backend.table) == 1


def test_removal_recovers_on_second_attempt(caplog):
    backend, removals, _ = setup()
    backend.fail(lambda op: op.verb is Verb.DELETE, errno.EBUSY, times=1)
    sleeps = Sleeps()
    with caplog.at_level(logging.ERROR, logger="test_reload"):
        outcome = asyncio.run(remove_with_retries(backend, removals, 10, sleeps, log))
    assert outcome.ok and outcome.attempts == 2
    assert sleeps.calls == [backoff_s(1)]
    assert any("attempt 1/10" in r.getMessage() and "EBUSY" in r.getMessage()
               for r in caplog.records)
    # the users' patch's own words, which their alerts match on
    assert [r.getMessage() for r in caplog.records if "clear diff" in r.getMessage()] == \
        ["clear diff services error, have tried 1 times"]
    assert len(backend.table) == 1  # the vanished service is gone


def test_only_failed_ops_are_retried():
    backend, removals, _ = setup()
    first = removals[0]
    backend.fail(lambda op: op == first, errno.EIO, times=2)
    outcome = asyncio.run(remove_with_retries(backend, removals, 5, Sleeps(), log))
    assert outcome.ok and outcome.attempts == 3
    assert backend.applied.count(first) == 1


def test_exhausting_every_attempt_reports_failure(caplog):
    backend, removals, _ = setup()
    backend.fail(lambda op: op.verb is Verb.DELETE, errno.EIO)
    sleeps = Sleeps()
    with caplog.at_level(logging.ERROR, logger="test_reload"):
        outcome = asyncio.run(remove_with_retries(backend, removals, 4, sleeps, log))
    assert not outcome.ok and outcome.attempts == 4
    assert len(outcome.failures) == len(removals)
    assert len(sleeps.calls) == 3  # no pause after the last attempt
    messages = [r.getMessage() for r in caplog.records]
    for k in range(1, 5):
        assert any(f"attempt {k}/4" in m for m in messages)


def test_a_stop_request_ends_the_retries():
    backend, removals, _ = setup()
    backend.fail(lambda op: op.verb is Verb.DELETE, errno.EIO)
    sleeps = Sleeps()
    outcome = asyncio.run(remove_with_retries(backend, removals, 10, sleeps, log,
                                              give_up=lambda: len(sleeps.calls) >= 2))
    assert not outcome.ok and outcome.attempts == 2


def test_nothing_to_remove_is_no_attempt():
    outcome = asyncio.run(remove_with_retries(MemoryBackend(), [], 3, Sleeps(), log))
    assert outcome.ok and outcome.attempts == 0


def test_backoff_doubles_and_is_capped():
    assert [backoff_s(k) for k in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert backoff_s(30) == 2.0


def test_prepare_carries_probe_ids():
    old, _ = load_text(OLD, filename="old.conf")
    new, _ = load_text(NEW, filename="new.conf")
    plan = plan_probes(old)
    step = prepare(old, new, plan)
    assert len(step.plan_diff.added) == 1 and len(step.plan_diff.removed) == 2
    assert step.plan_diff.kept == 1
    assert step.config_diff.vs_removed


# ------------------------------------------------------------------------- pid file


def test_pid_file_is_exclusive(tmp_path):
    path = str(tmp_path / "fc.pid")
    with PidFile(path):
        assert running_pid(path) == os.getpid()
        with pytest.raises(PidFileError, match="already running as pid"):
            PidFile(path).acquire()
    assert not os.path.exists(path)


def test_pid_file_held_by_another_process(tmp_path):
    path = str(tmp_path / "fc.pid")
    code = ("import sys, time; from fastcheck.daemon.pidfile import PidFile; "
            f"p = PidFile({path!r}); p.acquire(); print('ok', flush=True); "
            "sys.stdin.read(); p.release()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ok"
        with pytest.raises(PidFileError, match=f"pid {child.pid}"):
            PidFile(path).acquire()
    finally:
        child.communicate("", timeout=10)
    PidFile(path).acquire()  # free again once the holder exits


def test_stale_pid_file_is_recovered(tmp_path):
    path = str(tmp_path / "fc.pid")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    with open(path, "w") as handle:
        handle.write(dead.stdout)
    with pytest.raises(PidFileError, match="stale"):
        running_pid(path)
    pid_file = PidFile(path)
    pid_file.acquire()
    assert running_pid(path) == os.getpid()
    pid_file.release()


def test_running_pid_without_file(tmp_path):
    with pytest.raises(PidFileError, match="is fastcheck running"):
        running_pid(str(tmp_path / "none.pid"))
