"""MISC_CHECK probe running real scripts, under asyncio and uvloop.

Scripts are /bin/sh one-liners (split from misc_path as keepalived splits it) or small
files in a temporary directory. Hanging scripts record their pid and their children's in
a file so the tests can prove the whole process group is gone. Account switching runs as
``nobody`` and needs root. Every test
is bounded (misc timeouts ≤ 1 s, kill grace ≤ 0.5 s). The non-root case forks a child
that drops to ``nobody`` before running the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastcheck.errors import ProbeError
from fastcheck.model import Check, CheckKind, GlobalDefs, MiscParams, Script, Target
from fastcheck.probes.misc import MiscProbe, probe_misc, split_command
from fastcheck.probes.result import Failure, ProbeResult

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="switching accounts needs root")




def misc_check(command: str, *, timeout_s: float = 5.0, dynamic: bool = False,
               user: str | None = None, group: str | None = None) -> Check:
    return Check(kind=CheckKind.MISC, target=Target("192.0.2.1", 0),
                 params=MiscParams(Script(command, user, group), timeout_s, dynamic),
                 delay_loop_s=5.0, connect_timeout_s=timeout_s, retry=0,
                 delay_before_retry_s=1.0, warmup_s=0.0, alpha=False, log_all_failures=False)


def sh(code: str) -> str:
    """A misc_path running ``code`` with /bin/sh (single quotes inside are not allowed)."""
    assert "'" not in code
    return f"/bin/sh -c '{code}'"


def probe(run: Callable[..., Any], check: Check, bound_s: float = 4.0, **kw: Any
          ) -> ProbeResult:
    started = time.monotonic()
    result = run(MiscProbe(check, **kw).run())
    assert isinstance(result, ProbeResult)
    assert time.monotonic() - started < bound_s
    return result


def alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie nobody reaped yet counts as gone)?"""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def pids_in(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


def gone(pids: list[int], within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def script(tmp_path: Path, body: str, name: str = "check.sh", mode: int = 0o755) -> Path:
    path = tmp_path / name
    path.write_text(body)
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------- exit status


def test_exit_zero_is_up(run: Callable[..., Any]) -> None:
    result = probe(run, misc_check("/bin/true"))
    assert result.ok and result.weight is None and result.failure is None


@pytest.mark.parametrize("code", [1, 2, 7, 255])
def test_non_zero_exit_is_down(run: Callable[..., Any], code: int) -> None:
    result = probe(run, misc_check(sh(f"exit {code}")))
    assert result.failure is Failure.SCRIPT_EXIT
    assert f"exit status {code}" in result.detail


@pytest.mark.parametrize(("code", "ok", "weight"), [
    (0, True, None), (1, False, None), (2, True, 0), (12, True, 10), (255, True, 253),
])
def test_dynamic_weights(run: Callable[..., Any], code: int, ok: bool,
                         weight: int | None) -> None:
    result = probe(run, misc_check(sh(f"exit {code}"), dynamic=True))
    assert (result.ok, result.weight) == (ok, weight)
    if not ok:
        assert result.failure is Failure.SCRIPT_EXIT


def test_death_by_signal_is_down(run: Callable[..., Any]) -> None:
    result = probe(run, misc_check(sh("kill -USR1 $$; sleep 5")))
    assert result.failure is Failure.SCRIPT_EXIT and "SIGUSR1" in result.detail


def test_argv_is_split_like_keepalived(run: Callable[..., Any]) -> None:
    result = probe(run, misc_check("/bin/sh -c 'exit \"$1\"' sh 7"))
    assert "exit status 7" in result.detail


def test_output_tail_is_in_the_detail(run: Callable[..., Any]) -> None:
    result = probe(run, misc_check(sh("echo starting; echo database down >&2; exit 1")))
    assert "database down" in result.detail and "starting" not in result.detail
    loud = probe(run, misc_check(sh("head -c 300000 /dev/zero | tr \"\\\\0\" x; echo; "
                                    "echo last words")))
    assert loud.ok and "last words" in loud.detail


def test_script_without_shebang_runs_through_sh(run: Callable[..., Any],
                                                tmp_path: Path) -> None:
    path = script(tmp_path, "exit 3\n")
    assert "exit status 3" in probe(run, misc_check(str(path))).detail


# --------------------------------------------------------------------------- cannot run


def test_missing_script_is_local(run: Callable[..., Any], tmp_path: Path) -> None:
    result = probe(run, misc_check(str(tmp_path / "nope.sh")))
    assert result.failure is Failure.LOCAL and "not found" in result.detail


def test_non_executable_script_is_local(run: Callable[..., Any], tmp_path: Path) -> None:
    path = script(tmp_path, "#!/bin/sh\nexit 0\n", mode=0o644)
    result = probe(run, misc_check(str(path)))
    assert result.failure is Failure.LOCAL


@pytest.mark.parametrize("command", ["/bin/check 'unterminated", "/bin/check \\", "  ",
                                     "</dev/tcp/127.0.0.1/80"])
def test_what_can_never_work_is_local(run: Callable[..., Any], command: str) -> None:
    result = run(probe_misc(misc_check(command)))
    assert result.failure is Failure.LOCAL


def test_unknown_user_or_group_is_refused() -> None:
    with pytest.raises(ProbeError, match="does not exist"):
        MiscProbe(misc_check("/bin/true", user="no-such-user-x"))
    with pytest.raises(ProbeError, match="does not exist"):
        MiscProbe(misc_check("/bin/true", user="nobody", group="no-such-group-x"))


# --------------------------------------------------------------------------- timeouts


def test_timeout_kills_the_script_and_its_children(run: Callable[..., Any],
                                                   tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    command = sh(f"echo $$ > {pidfile}; sleep 60 & echo $! >> {pidfile}; "
                 f"sh -c \"sleep 61\" & echo $! >> {pidfile}; wait")
    result = probe(run, misc_check(command, timeout_s=0.5))
    assert result.failure is Failure.SCRIPT_TIMEOUT
    assert "0.5 s" in result.detail and "SIGTERM" in result.detail
    assert 0.45 < result.latency_s < 3.0
    pids = pids_in(pidfile)
    assert len(pids) == 3 and gone(pids)


def test_a_script_ignoring_sigterm_is_killed(run: Callable[..., Any], tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    command = sh(f"trap \"\" TERM; echo $$ > {pidfile}; sleep 60 & echo $! >> {pidfile}; "
                 "while :; do wait; done; exit 0")
    result = probe(run, misc_check(command, timeout_s=0.4), term_grace_s=0.3)
    assert result.failure is Failure.SCRIPT_TIMEOUT and "SIGKILL" in result.detail
    assert result.latency_s < 2.0
    assert gone(pids_in(pidfile))


def test_concurrent_runs_share_one_process(run: Callable[..., Any], tmp_path: Path) -> None:
    starts = tmp_path / "starts"

    async def twice() -> tuple[ProbeResult, ProbeResult, bool]:
        misc = MiscProbe(misc_check(sh(f"echo $$ >> {starts}; sleep 0.3; exit 4")))
        first = asyncio.ensure_future(misc.run())
        await asyncio.sleep(0.1)
        running = misc.running
        second = await misc.run()
        return await first, second, running

    first, second, running = run(twice())
    assert running
    assert first == second and "exit status 4" in first.detail
    assert len(pids_in(starts)) == 1


def test_cancelling_the_caller_kills_the_script(run: Callable[..., Any],
                                                tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"

    async def cancel() -> bool:
        misc = MiscProbe(misc_check(sh(f"echo $$ > {pidfile}; sleep 60 & "
                                       f"echo $! >> {pidfile}; wait")))
        task = asyncio.ensure_future(misc.run())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.2)
        return misc.running

    assert run(cancel()) is False
    assert gone(pids_in(pidfile))


def test_close_kills_the_script(run: Callable[..., Any], tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"

    async def close() -> None:
        misc = MiscProbe(misc_check(sh(f"echo $$ > {pidfile}; exec sleep 60")))
        task = asyncio.ensure_future(misc.run())
        await asyncio.sleep(0.3)
        await misc.close()
        assert not misc.running
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    run(close())
    assert time.monotonic() - started < 2.0
    assert gone(pids_in(pidfile))


# --------------------------------------------------------------------------- accounts


@needs_root
def test_runs_as_the_script_user(run: Callable[..., Any]) -> None:
    result = probe(run, misc_check("/usr/bin/id -u", user="nobody"))
    assert result.ok and "65534" in result.detail
    groups = probe(run, misc_check(sh("echo $(id -u) $(id -g) $(id -G)"), user="nobody",
                                   group="daemon"))
    assert groups.ok and "'65534 1 1'" in groups.detail


@needs_root
def test_timeout_kills_a_script_of_another_user(run: Callable[..., Any]) -> None:
    result = probe(run, misc_check("/bin/sleep 30", user="nobody", timeout_s=0.3))
    assert result.failure is Failure.SCRIPT_TIMEOUT


@needs_root
def test_non_root_naming_a_user_is_a_clear_local_failure() -> None:
    """A forked child drops to nobody, then runs a check that names root as its user."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on, only os._exit
        status = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = asyncio.run(MiscProbe(misc_check("/bin/true", user="root")).run())
            os.write(write_fd, f"{result.failure.name if result.failure else 'UP'} "
                               f"{result.detail}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    deadline = time.monotonic() + 20
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the unprivileged child did not finish")
        time.sleep(0.02)
    with os.fdopen(read_fd, "rb") as fh:
        said = fh.read().decode()
    assert said.startswith("LOCAL "), said
    assert "as root" in said and "only root may switch users" in said


# --------------------------------------------------------------------------- security


@needs_root
def test_script_security(run: Callable[..., Any], tmp_path: Path) -> None:
    safe = script(tmp_path, "#!/bin/sh\nexit 0\n", "safe.sh")
    writable = script(tmp_path, "#!/bin/sh\nexit 0\n", "writable.sh")
    writable.chmod(0o777)
    secure = GlobalDefs(enable_script_security=True)
    assert MiscProbe(misc_check(str(safe), user="root"), secure).warnings == ()
    with pytest.raises(ProbeError, match="writable"):
        MiscProbe(misc_check(str(writable), user="root"), secure)
    lax = MiscProbe(misc_check(str(writable)))
    assert lax.warnings and "writable" in lax.warnings[0]
    assert run(lax.run()).ok
    # not run as root: nothing to protect
    assert MiscProbe(misc_check(str(writable), user="nobody"), secure).warnings == ()
    group_writable = tmp_path / "dir"
    group_writable.mkdir()
    os.chmod(group_writable, 0o775)
    os.chown(group_writable, 0, 1)
    inside = script(group_writable, "#!/bin/sh\nexit 0\n")
    with pytest.raises(ProbeError, match="dir is writable"):
        MiscProbe(misc_check(str(inside), user="root"), secure)
    os.chmod(group_writable, 0o775 | stat.S_ISVTX)  # sticky: others cannot replace it
    assert MiscProbe(misc_check(str(inside), user="root"), secure).warnings == ()


def test_security_needs_a_script_user_when_root() -> None:
    if not ROOT:
        pytest.skip("only root would run scripts as root")
    with contextlib.suppress(KeyError):
        pwd.getpwnam("keepalived_script")
        pytest.skip("this system has a keepalived_script user")
    with pytest.raises(ProbeError, match="keepalived_script"):
        MiscProbe(misc_check("/bin/true"), GlobalDefs(enable_script_security=True))


# --------------------------------------------------------------------------- argv


@pytest.mark.parametrize(("text", "argv"), [
    ("/bin/check", ("/bin/check",)),
    ("  /bin/check   a\tb  ", ("/bin/check", "a", "b")),
    ("/bin/check 'a b' \"c d\"", ("/bin/check", "a b", "c d")),
    ("/bin/check a'b c'd", ("/bin/check", "ab cd")),
    ("/bin/check '' x", ("/bin/check", "", "x")),
    ("/bin/check \"it's\" 'say \"hi\"'", ("/bin/check", "it's", 'say "hi"')),
    ("/bin/check a\\ b", ("/bin/check", "a b")),
    ("/bin/check '\\n\\t' \\x41\\x4a \\101 \\cA \\q", ("/bin/check", "\n\t", "AJ", "A", "\x01",
                                                      "q")),
    ("/bin/check \\x414", ("/bin/check", "\x14")),
    ("/bin/check a\\x00\\q", ("/bin/check", "a")),
    ("/bin/check \\x00b", ("/bin/check", "\x0b")),
    ("/bin/check é", ("/bin/check", "é")),
])
def test_split_command(text: str, argv: tuple[str, ...]) -> None:
    assert split_command(text) == argv


@pytest.mark.parametrize("text", ["/bin/check 'open", "/bin/check \"open", "/bin/check \\"])
def test_split_command_errors(text: str) -> None:
    with pytest.raises(ValueError):
        split_command(text)
