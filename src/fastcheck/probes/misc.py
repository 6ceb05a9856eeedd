"""MISC_CHECK probe: run the check script, as its user, and report what its exit status says.

Owns: running one check script at a time, killing its whole group when it outlives
misc_timeout, and mapping its end to a `ProbeResult`. The mechanics shared with notify
scripts (argv splitting, the account, the security test, spawning, output tail, exit
waiting) live in fastcheck/scripts.py; this docstring records the keepalived behaviour.
Must not: decide health (retry — 0 by default — belongs to health/), apply weights, run
a shell, or know keyword spellings.

keepalived behaviour followed (2.2.7, keepalived/check/check_misc.c, lib/notify.c, and
lib/parser.c alloc_strvec_quoted_escaped):
- argv: ``misc_path``'s string is split at white space outside quotes; ``'`` and ``"``
  quote (and may start mid-word), backslash escapes work inside and outside quotes
  (``\\n \\t \\xHH \\0oo \\cX``, any other character stands for itself); an unterminated
  quote or a trailing backslash is an error (misc_path_handler / set_script_params_array).
- account (notify.c set_uid_gid, get_default_script_user, set_script_env): `Script.user`
  (config/ has already put global script_user there) with its own group unless a group
  is named; without a user, ``keepalived_script`` if that user exists, else the daemon's
  own account. The child switches group, supplementary groups (to the group alone) and
  user before exec, and gets its own process group (setpgid(0, 0)).
- security (notify.c check_script_secure / check_security): a script that runs as root
  (user or group 0, or a set-uid/gid-root file) is insecure when any directory on its
  path, or the file, is not owned by root or is writable by a non-root group or by all
  (directories with the sticky bit excepted). With enable_script_security such a check
  is disabled — here: the constructor raises `ProbeError`; without, it runs and
  `MiscProbe.warnings` says why it should not.
- exit (misc_check_child_thread): 0 is up; with misc_dynamic 2..255 is up with weight
  exit − 2; anything else, or death by a signal, is down (SCRIPT_EXIT).
- timeout (misc_check_child_thread, THREAD_CHILD_TIMEOUT): after misc_timeout the group
  gets SIGTERM, and SIGKILL when the script is still there after 2 s; once the script is
  gone, its group gets SIGKILL so no child outlives it. The result is SCRIPT_TIMEOUT.

What `ProbeResult.weight` means here: the ABSOLUTE weight the script asks for (exit − 2;
None = the configured weight, which is what exit 0 means). keepalived turns it into an
offset (exit − 2 − the real server's configured weight) because it owns the real server;
a probe is shared by every owner of the same check, so health/ does that subtraction.
FILE_CHECK's weight, in contrast, is an offset (see probes/file.py).

Where this probe differs, on purpose:
- one run at a time: `run` while a run is in progress joins it and returns its result;
  no second process is started (keepalived schedules the next run after the child ends,
  so it never overlaps either). Cancelling the last caller waiting for a run, or `close`,
  kills the script's group at once.
- a script that cannot be started (missing, not executable, account switch refused —
  e.g. a user is named but fastcheck is not root) is LOCAL, run after run. keepalived
  disables such a check at load and, should exec fail later, has the child exit 0: up.
- a file that is not an executable format (no ``#!``) runs through /bin/sh as execvp
  would; keepalived (with libmagic) runs it through system(). Commands beginning with
  ``<`` or ``>`` (keepalived hands those to /bin/sh as file-existence tests) are refused.
- a script that ignores SIGTERM and exits 0 after its timeout is still SCRIPT_TIMEOUT.
- without a user, keepalived_script is the default only when fastcheck runs as root.
- the last 512 bytes of stdout+stderr are kept and the last line is put in the detail
  (keepalived sends both to /dev/null). Children still writing after the script ended
  find the pipe closed.
- no PR_SET_PDEATHSIG: should fastcheck die, a running script is not sent SIGTERM (a
  clean shutdown calls `close`). A script that exits normally may leave children behind,
  as under keepalived; only a timeout or a kill takes the whole group down.

`run` returns within misc_timeout + term_grace_s (2 s), plus up to 10 s more only when a
SIGKILLed script cannot die (uninterruptible sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable

from fastcheck.errors import ProbeError
from fastcheck.model import Check, GlobalDefs, MiscParams
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.scripts import (
    DEFAULT_SCRIPT_USER,
    REAP_WAIT_S,
    TERM_GRACE_S,
    ExitWaiter,
    ScriptOutput,
    kill_group,
    resolve_account,
    script_insecurity,
    spawn,
    split_command,
)

__all__ = ["DEFAULT_SCRIPT_USER", "MiscProbe", "probe_misc", "script_insecurity",
           "split_command"]


class MiscProbe:
    """One MISC_CHECK, prepared once (argv, account, security verdict).

    The constructor raises `ProbeError` where keepalived disables the check at load (bad
    quoting, unknown user or group, an insecure script under enable_script_security);
    `run` only ever returns a `ProbeResult`. Call `close` before dropping a probe whose
    script may be running (a reload that removes the check, shutdown).
    """

    __slots__ = ("_account", "_dynamic", "_gid", "_task", "_timeout_s", "_uid", "_waiters",
                 "argv", "term_grace_s", "warnings")

    def __init__(self, check: Check, global_defs: GlobalDefs | None = None, *,
                 term_grace_s: float = TERM_GRACE_S) -> None:
        params = check.params
        if not isinstance(params, MiscParams):
            raise ProbeError(f"{check.kind.value} is not a MISC check")
        try:
            self.argv = split_command(params.script.command)
        except ValueError as exc:
            raise ProbeError(f"misc_path: {exc}") from None
        if not self.argv or not self.argv[0]:
            raise ProbeError("misc_path names no program")
        if self.argv[0][0] in "<>":
            raise ProbeError(f"misc_path {self.argv[0]!r}: shell redirections need a "
                             "shell, and fastcheck runs none; use a script")
        if params.timeout_s <= 0:
            raise ProbeError(f"misc_timeout {params.timeout_s:g} s is not positive")
        security = bool(global_defs and global_defs.enable_script_security)
        self._uid, self._gid, self._account = resolve_account(params.script, security)
        problem = script_insecurity(self.argv[0], self._uid, self._gid)
        if problem and security:
            raise ProbeError(f"script {self.argv[0]} disabled by enable_script_security: "
                             f"{problem}")
        self.warnings: tuple[str, ...] = (f"script {self.argv[0]}: {problem}",) \
            if problem else ()
        self._dynamic = params.dynamic
        self._timeout_s = params.timeout_s
        self.term_grace_s = term_grace_s
        self._task: asyncio.Task[ProbeResult] | None = None
        self._waiters = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self, *, loop_time: Callable[[], float] | None = None) -> ProbeResult:
        """Run the script once — or join the run in progress — and report its end.

        Cancelling the last caller waiting for a run kills the script (its whole group).
        """
        task = self._task
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                self._run_once(loop_time or time.monotonic))
            self._task = task
        self._waiters += 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._waiters == 1:
                task.cancel()
            raise
        finally:
            self._waiters -= 1

    async def close(self) -> None:
        """Kill a running script (its whole group) and wait for it to be reaped."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ one run

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int]:
        """Start the script; returns it and the read end of its output pipe."""
        return spawn(self.argv, self._uid, self._gid)

    async def _run_once(self, clock: Callable[[], float]) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = clock()
        try:
            proc, read_fd = self._spawn()
        except OSError as exc:
            return ProbeResult.down(Failure.LOCAL, clock() - start, self._spawn_error(exc))
        output = ScriptOutput(loop, read_fd)
        exit_waiter = ExitWaiter(loop, proc)
        try:
            if await exit_waiter.wait(self._timeout_s):
                return self._verdict(proc.returncode, clock() - start, output.close())
            kill_group(proc.pid, signal.SIGTERM)
            how = "SIGTERM"
            if not await exit_waiter.wait(self.term_grace_s):
                how = "SIGTERM, then SIGKILL"
            kill_group(proc.pid, signal.SIGKILL)  # the script, or what it left behind
            await exit_waiter.wait(REAP_WAIT_S)
            return ProbeResult.down(Failure.SCRIPT_TIMEOUT, clock() - start,
                                    f"{self.argv[0]}: still running after "
                                    f"{self._timeout_s:g} s; killed its group ({how})")
        except asyncio.CancelledError:
            kill_group(proc.pid, signal.SIGKILL)
            await exit_waiter.wait(REAP_WAIT_S)
            raise
        finally:
            exit_waiter.close()
            output.close()

    def _verdict(self, code: int | None, latency_s: float, said: str) -> ProbeResult:
        tail = f" — {said!r}" if said else ""
        if code == 0:
            return ProbeResult.up(latency_s, detail=f"exit 0{tail}")
        if code is not None and code >= 2 and self._dynamic:
            return ProbeResult.up(latency_s, weight=code - 2,
                                  detail=f"exit {code}: weight {code - 2}{tail}")
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit status {code}"
        return ProbeResult.down(Failure.SCRIPT_EXIT, latency_s, f"{self.argv[0]}: {how}{tail}")

    def _spawn_error(self, exc: OSError) -> str:
        program = self.argv[0]
        if isinstance(exc, PermissionError) and self._uid is not None and os.geteuid() != 0:
            return (f"cannot run {program} as {self._account}: fastcheck runs as uid "
                    f"{os.geteuid()}, and only root may switch users")
        if isinstance(exc, FileNotFoundError):
            return f"cannot run {program}: not found"
        return f"cannot run {program} as {self._account}: {exc.strerror or exc}"


async def probe_misc(check: Check, global_defs: GlobalDefs | None = None, *,
                     loop_time: Callable[[], float] | None = None) -> ProbeResult:
    """Run a MISC_CHECK once; set-up problems come back as LOCAL failures."""
    try:
        probe = MiscProbe(check, global_defs=global_defs)
    except ProbeError as exc:
        return ProbeResult.down(Failure.LOCAL, 0.0, str(exc))
    return await probe.run(loop_time=loop_time)
