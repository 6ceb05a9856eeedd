"""Notifiers: runs notify_up/notify_down/quorum_up/quorum_down and feeds the lvs notify FIFO.

Owns: turning health events (`RealServerUp`, `RealServerDown`, `QuorumGained`,
`QuorumLost`) into script runs — argv split as keepalived does (no shell), the account
(the script's user/group, else global script_user/script_group, else as misc checks do),
keepalived's script security test, a timeout per run (SIGTERM then SIGKILL of the
script's process group) — a bounded queue with bounded concurrency where the scripts of
one real server (or one virtual server's quorum) run one after another in event order,
and writing keepalived's notify FIFO lines (their text is `log.fifo_line`'s).
Must not: decide health, word keepalived's lines (daemon/log.py does), block the event
loop (spawns are fork/exec, exits are awaited through pidfds), raise out of `on_event`
(failures are logged and counted), or know keyword spellings.

keepalived (2.2.7 lib/notify.c notify_exec, check/ipwrapper.c do_rs_notifies,
do_vs_notifies, notify_fifo_rs/vs) passes no arguments beyond the configured command
line, never waits for a notify script and never kills it. fastcheck, on purpose: a run
is killed after `timeout_s`; runs are ordered per real server / virtual server; a stop
(`close`) waits for queued runs within its budget and kills what is left.

The FIFO is opened write-only and non-blocking for each line while no reader holds it;
a line that finds no reader, or a full pipe, is dropped and counted (keepalived opens it
read-write, so lines pile up unread until the pipe is full). It is created (0644) when
missing and removed on close if fastcheck created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

from fastcheck.errors import ProbeError
from fastcheck.health.events import QuorumGained, QuorumLost, RealServerDown, RealServerUp
from fastcheck.model import GlobalDefs, Script
from fastcheck.scripts import (
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

from .log import fifo_line, rs_text, vs_text

log = logging.getLogger("fastcheck")

DEFAULT_TIMEOUT_S: Final = 10.0
DEFAULT_MAX_RUNNING: Final = 8
DEFAULT_MAX_QUEUED: Final = 10_000


@dataclass(slots=True)
class NotifyCounters:
    started: int = 0
    succeeded: int = 0
    failed: int = 0  # non-zero exit, killed by a signal, or could not be started
    timed_out: int = 0
    skipped: int = 0  # refused at preparation (bad quoting, unknown user, insecure)
    dropped: int = 0  # queue full, or still queued when `close` ran out of time
    fifo_lines: int = 0
    fifo_dropped: int = 0  # no reader, full pipe, or a write error

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class _Prepared:
    argv: tuple[str, ...]
    uid: int | None
    gid: int | None
    account: str


@dataclass(frozen=True, slots=True)
class _Job:
    what: str  # "notify_up of [10.0.0.5]:tcp:80 of VS [10.0.0.1]:tcp:80"
    script: Script
    key: Hashable  # runs with the same key are serialised


def _job_of(event: Any) -> _Job | None:
    if isinstance(event, RealServerUp | RealServerDown) and event.script is not None:
        name = "notify_up" if isinstance(event, RealServerUp) else "notify_down"
        what = f"{name} of {rs_text(event.rs)} of VS {vs_text(event.rs.vs)}"
        return _Job(what, event.script, ("rs", event.rs))
    if isinstance(event, QuorumGained | QuorumLost) and event.script is not None:
        name = "quorum_up" if isinstance(event, QuorumGained) else "quorum_down"
        return _Job(f"{name} of VS {vs_text(event.vs)}", event.script, ("vs", event.vs))
    return None


class Notifier:
    """Runs notify scripts for health events; owned (and closed) by the daemon's Runtime.

    `on_event` is synchronous and never raises; `close` is awaited once, at stop.
    `global_defs` is the global definitions in force, or a callable returning them (so a
    reload's script_user / enable_script_security apply to later runs).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 global_defs: GlobalDefs | Callable[[], GlobalDefs], *,
                 fifo_path: str | Script | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 term_grace_s: float = TERM_GRACE_S, max_running: int = DEFAULT_MAX_RUNNING,
                 max_queued: int = DEFAULT_MAX_QUEUED, dry_run: bool = False) -> None:
        if timeout_s <= 0 or max_running < 1 or max_queued < 1:
            raise ValueError("timeout_s, max_running and max_queued must be positive")
        self.loop = loop
        self._global_defs: Callable[[], GlobalDefs] = \
            global_defs if callable(global_defs) else (lambda: global_defs)
        self.timeout_s = timeout_s
        self.term_grace_s = term_grace_s
        self.max_running = max_running
        self.max_queued = max_queued
        self.dry_run = dry_run
        self.counters = NotifyCounters()
        self._queues: dict[Hashable, deque[_Job]] = {}
        self._ready: deque[Hashable] = deque()  # keys with work and nothing running
        self._queued = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._prepared: dict[tuple[Script, GlobalDefs], _Prepared | None] = {}
        self._closed = False
        # A Script is keepalived's `lvs_notify_fifo PATH [user [group]]`: a FIFO fastcheck
        # creates is given to that account (default: as for scripts).
        owner = fifo_path if isinstance(fifo_path, Script) else None
        self.fifo_path = fifo_path.command if isinstance(fifo_path, Script) else fifo_path
        self._fifo_fd = -1
        self._fifo_created = False
        self._fifo_warned = False
        if self.fifo_path is not None and not dry_run:
            self._make_fifo(self.fifo_path, owner)

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def queued(self) -> int:
        return self._queued

    # ------------------------------------------------------------------ events

    def on_event(self, event: Any) -> None:
        """Queue the event's script (if any) and write its FIFO line (if any)."""
        try:
            line = fifo_line(event)
            if line is not None and self.fifo_path is not None:
                if self.dry_run:
                    log.info("[dry-run] would write %r to %s", line.rstrip(), self.fifo_path)
                else:
                    self._write_fifo(line)
            job = _job_of(event)
            if job is not None:
                self._submit(job)
        except Exception:  # a notifier must never take the daemon down
            log.exception("notify: handling %r failed", event)

    def _submit(self, job: _Job) -> None:
        if self._closed:
            log.warning("notify: %s not run: stopping", job.what)
            self.counters.dropped += 1
            return
        if self.dry_run:
            log.info("[dry-run] would run %s: %s", job.what, job.script.command)
            return
        if self._queued >= self.max_queued:
            log.error("notify: %s dropped: %d scripts already queued", job.what, self._queued)
            self.counters.dropped += 1
            return
        queue = self._queues.get(job.key)
        if queue is None:
            queue = self._queues[job.key] = deque()
            self._ready.append(job.key)  # no run of this key in progress
        queue.append(job)
        self._queued += 1
        self._idle.clear()
        self._pump()

    def _pump(self) -> None:
        while self._ready and len(self._tasks) < self.max_running:
            key = self._ready.popleft()
            job = self._queues[key].popleft()
            self._queued -= 1
            task = self.loop.create_task(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(lambda t, key=key: self._finished(t, key))
        if not self._tasks and not self._queued:
            self._idle.set()

    def _finished(self, task: asyncio.Task[None], key: Hashable) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("notify: run failed: %r", task.exception())
        queue = self._queues.get(key)
        if queue:
            self._ready.append(key)  # its next script, behind other keys already waiting
        else:
            self._queues.pop(key, None)
        self._pump()

    # ------------------------------------------------------------------ one run

    def _prepare(self, job: _Job) -> _Prepared | None:
        """argv and account of a script, once per (script, global defs); None = refused."""
        defs = self._global_defs()
        cache_key = (job.script, defs)
        if cache_key in self._prepared:
            return self._prepared[cache_key]
        script = job.script
        if script.user is None and defs.script_user is not None:
            script = Script(script.command, defs.script_user, defs.script_group)
        prepared: _Prepared | None = None
        try:
            argv = split_command(script.command)
            if not argv or not argv[0]:
                raise ProbeError("the command names no program")
            if argv[0][0] in "<>":
                raise ProbeError("shell redirections need a shell, and fastcheck runs none")
            uid, gid, account = resolve_account(script, defs.enable_script_security)
            problem = script_insecurity(argv[0], uid, gid)
            if problem and defs.enable_script_security:
                raise ProbeError(f"disabled by enable_script_security: {problem}")
            if problem:
                log.warning("notify: script %s: %s", argv[0], problem)
            prepared = _Prepared(argv, uid, gid, account)
        except (ValueError, ProbeError) as exc:
            log.error("notify: %r will not run: %s", script.command, exc)
        self._prepared[cache_key] = prepared
        return prepared

    async def _run(self, job: _Job) -> None:
        prep = self._prepare(job)
        if prep is None:
            self.counters.skipped += 1
            return
        try:
            proc, read_fd = spawn(prep.argv, prep.uid, prep.gid)
        except OSError as exc:
            self.counters.failed += 1
            log.warning("notify: %s: cannot run %s as %s: %s", job.what, prep.argv[0],
                        prep.account, exc.strerror or exc)
            return
        self.counters.started += 1
        log.debug("notify: %s: started %s (pid %d)", job.what, prep.argv[0], proc.pid)
        output = ScriptOutput(self.loop, read_fd)
        waiter = ExitWaiter(self.loop, proc)
        try:
            if await waiter.wait(self.timeout_s):
                said = output.close()
                self._report(job, prep, proc.returncode, said)
                return
            kill_group(proc.pid, signal.SIGTERM)
            how = "SIGTERM"
            if not await waiter.wait(self.term_grace_s):
                how = "SIGTERM, then SIGKILL"
            kill_group(proc.pid, signal.SIGKILL)
            await waiter.wait(REAP_WAIT_S)
            self.counters.timed_out += 1
            log.warning("notify: %s: %s still running after %g s; killed its group (%s)",
                        job.what, prep.argv[0], self.timeout_s, how)
        except asyncio.CancelledError:
            kill_group(proc.pid, signal.SIGKILL)
            await waiter.wait(REAP_WAIT_S)
            self.counters.failed += 1
            log.warning("notify: %s: %s killed: fastcheck is stopping", job.what, prep.argv[0])
            raise
        finally:
            waiter.close()
            output.close()

    def _report(self, job: _Job, prep: _Prepared, code: int | None, said: str) -> None:
        if code == 0:
            self.counters.succeeded += 1
            return
        self.counters.failed += 1
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit status {code}"
        tail = f" — {said!r}" if said else ""
        log.warning("notify: %s: %s: %s%s", job.what, prep.argv[0], how, tail)

    # ------------------------------------------------------------------ FIFO

    def _make_fifo(self, path: str, owner: Script | None) -> None:
        try:
            os.mkfifo(path, 0o644)
            self._fifo_created = True
        except FileExistsError:
            pass
        except OSError as exc:
            log.error("notify: cannot create the notify FIFO %s: %s", path, exc.strerror)
            self.fifo_path = None
            return
        if self._fifo_created and owner is not None:
            try:
                uid, gid, _ = resolve_account(owner, False)
                if uid is not None:
                    os.chown(path, uid, -1 if gid is None else gid)
            except (ProbeError, OSError) as exc:
                log.warning("notify: notify FIFO %s: cannot give it to %s: %s", path,
                            owner.user, exc)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            log.error("notify: notify FIFO %s: %s", path, exc.strerror)
            self.fifo_path = None
            return
        if not stat.S_ISFIFO(mode):
            log.error("notify: %s is not a FIFO; no notify FIFO lines are written", path)
            self.fifo_path = None

    def _write_fifo(self, line: str) -> None:
        path = self.fifo_path
        assert path is not None
        data = line.encode()
        if self._fifo_fd < 0:
            try:
                self._fifo_fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                                        | os.O_NOFOLLOW)
            except OSError as exc:
                self._fifo_drop(exc)
                return
        try:
            written = os.write(self._fifo_fd, data)  # < PIPE_BUF: all or nothing
        except OSError as exc:
            if exc.errno != errno.EAGAIN:  # EPIPE: the reader left; reopen next time
                os.close(self._fifo_fd)
                self._fifo_fd = -1
            self._fifo_drop(exc)
            return
        if written != len(data):
            self._fifo_drop(None)
            return
        self.counters.fifo_lines += 1
        self._fifo_warned = False

    def _fifo_drop(self, exc: OSError | None) -> None:
        self.counters.fifo_dropped += 1
        if not self._fifo_warned:  # once per run of drops
            self._fifo_warned = True
            why = "no reader" if exc is not None and exc.errno == errno.ENXIO else \
                "the reader is not keeping up" if exc is not None and exc.errno == errno.EAGAIN \
                else (exc.strerror if exc is not None else "short write")
            log.warning("notify: FIFO %s: %s; dropping lines until it works again",
                        self.fifo_path, why)

    # ------------------------------------------------------------------ stop

    async def close(self, timeout_s: float) -> None:
        """Let queued and running scripts finish within `timeout_s`, then kill the rest."""
        self._closed = True
        if self._tasks or self._queued:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
        if self._queued:
            log.warning("notify: stopping: %d queued script(s) not run", self._queued)
            self.counters.dropped += self._queued
            self._queues.clear()
            self._ready.clear()
            self._queued = 0
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._fifo_fd >= 0:
            os.close(self._fifo_fd)
            self._fifo_fd = -1
        if self._fifo_created and self.fifo_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.fifo_path)
            self._fifo_created = False
