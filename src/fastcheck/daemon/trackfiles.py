"""FILE_CHECK's tracked files, followed as keepalived follows them: read first, then inotify.

Owns: `TrackFiles` — reading the file of every FILE probe before the table is first written
(`first_readings`: the runtime gives these to health before anything is added), watching
each file's directory with inotify (IN_CLOSE_WRITE | IN_DELETE | IN_MOVE, as keepalived),
turning an event into a reading for every FILE probe on that file and reporting a result
only when the probe's verdict (up, weight offset) changed; polling, at the probe's
delay_loop and with a warning, a file whose filesystem sends no inotify events for changes
made elsewhere (NFS, CIFS, FUSE, 9p, /proc …) or when inotify cannot be had; and what
the probe engine is given instead of the whole plan (`polled_plan`, `polled_changes`:
FILE probes never reach it, in process or in workers).
Must not: decide health (results go to the runtime's on_result like any probe's; FILE
checks have no retry: the loader gives them retry 0, as keepalived has none), read or
interpret the number (probes/file.py does), or write the files.

inotify through inotify_simple: a small maintained wrapper of libc's inotify_init1 /
inotify_add_watch (ctypes, no threads of its own) whose descriptor goes on our event loop.

keepalived 2.2.7 reference (trackers/track_file.c init_track_files, process_inotify,
process_track_file; check/check_daemon.c start_check reads the files — init_track_files,
set_track_file_weights, set_track_file_checkers_down — before init_services adds anyone):
- the path is resolved (realpath) once; the watch is on its directory, so a file that does
  not exist yet is followed from the moment it is created;
- IN_CLOSE_WRITE / IN_MOVED_TO: the file is read; IN_DELETE / IN_MOVED_FROM: the value is
  0 without reading; a number out of range is ignored (the previous value stands);
- a change acts at once, with no retry.
Differences kept on purpose: a directory that does not exist (keepalived drops the
track_file with a configuration error) or a filesystem without inotify events is polled
at delay_loop, so the file is still followed; an inotify queue overflow re-reads every
file (keepalived would lose the events).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

from fastcheck.errors import ProbeError
from fastcheck.health import events as ev
from fastcheck.model import Check, CheckKind, Config, RsKey
from fastcheck.probeplan import PlanDiff, PlannedProbe, ProbePlan
from fastcheck.probes.file import FileProbe
from fastcheck.probes.result import Failure, ProbeResult

from .engine import OnResult

log = logging.getLogger("fastcheck")

# Filesystems whose files change without inotify events (remote writers, kernel state).
NO_INOTIFY_FS: Final = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph",
                                  "afs", "glusterfs", "lustre", "gpfs", "proc", "sysfs",
                                  "fuse", "fuseblk"})

Verdict = tuple[bool, int | None]


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem holding `path` (a directory), from mountinfo: the mount
    with the same device, else the longest mount point above it; None when unknown."""
    try:
        st_dev = os.stat(path).st_dev
        with open(mountinfo, encoding="utf-8", errors="replace") as lines:
            mounts = [line.split(" - ", 1) for line in lines]
    except OSError:
        return None
    device = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    by_dev, best, best_len = None, None, -1
    for head, _, tail in ((m[0], None, m[1]) for m in mounts if len(m) == 2):
        fields, fstype = head.split(), tail.split()[0]
        point = fields[4].replace("\\040", " ")
        if fields[2] == device:
            by_dev = fstype
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > best_len:
            best, best_len = fstype, len(point)
    return by_dev or best


def without_inotify(fstype: str | None) -> bool:
    return fstype is not None and (fstype in NO_INOTIFY_FS or fstype.startswith("fuse."))


def file_checks(plan: ProbePlan, config: Config) -> dict[int, Check]:
    """The FILE probes of `plan` and the Check each stands for."""
    found: dict[int, Check] = {}
    for vs in config.virtual_servers:
        for rs in vs.real_servers:
            for check in rs.checks:
                if check.kind is CheckKind.FILE:
                    probe_id = plan.ids.get(check.probe_key)
                    if probe_id is not None:
                        found.setdefault(probe_id, check)
    return found


def _probe(check: Check, config: Config) -> FileProbe | ProbeResult:
    try:
        return FileProbe(check, {t.name: t for t in config.track_files})
    except ProbeError as error:  # the loader refuses this; never seen in practice
        return ProbeResult.down(Failure.LOCAL, 0.0, str(error))


class _Watch:
    """One tracked file: its resolved directory and name, and the FILE probes reading it."""

    __slots__ = ("directory", "interval_s", "name", "probes", "timer")

    def __init__(self, directory: str, name: str) -> None:
        self.directory, self.name = directory, name
        self.probes: list[int] = []
        self.interval_s = float("inf")
        self.timer: asyncio.TimerHandle | None = None


def _resolve(path: str) -> tuple[str, str]:
    """(directory, name) as keepalived resolves them: realpath of the file, or of its
    directory when the file does not exist yet."""
    if os.path.exists(path):
        path = os.path.realpath(path)
        return os.path.dirname(path), os.path.basename(path)
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.realpath(directory), name


class TrackFiles:
    """The FILE probes of the configuration in force. One owner: the daemon's runtime."""

    MASK: Final = 0x8 | 0x200 | 0x40 | 0x80  # IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM/TO

    def __init__(self, loop: asyncio.AbstractEventLoop, on_result: OnResult, config: Config,
                 *, fs_type: Callable[[str], str | None] = filesystem_type) -> None:
        self._loop = loop
        self._on_result = on_result
        self._config = config
        self._fs_type = fs_type
        self._checks: dict[int, Check] = {}
        self._probes: dict[int, FileProbe] = {}
        self._fresh: dict[int, tuple[Check, FileProbe]] = {}  # read, not followed yet
        self._verdicts: dict[int, Verdict] = {}
        self._watches: dict[str, _Watch] = {}  # resolved path → watch
        self._by_wd: dict[int, dict[str, _Watch]] = {}
        self._inotify: Any = None
        self._closed = False

    # ------------------------------------------------------------------ readings

    def first_readings(self, plan: ProbePlan, config: Config,
                       known: Collection[int] = ()) -> list[tuple[int, ProbeResult]]:
        """Reads now the file of every FILE probe of `plan` not in `known`: the starting
        state the runtime gives health before the table is written. Changes nothing that
        is followed until `start`/`reload` takes the plan."""
        readings = []
        now = self._loop.time
        for probe_id, check in file_checks(plan, config).items():
            if probe_id in known:
                continue
            probe = _probe(check, config)
            if isinstance(probe, ProbeResult):
                readings.append((probe_id, probe))
                continue
            result = probe.read(now)
            self._fresh[probe_id] = (check, probe)
            readings.append((probe_id, result))
        return readings

    def _read(self, watch: _Watch, gone: bool = False) -> None:
        for probe_id in watch.probes:
            probe = self._probes.get(probe_id)
            if probe is None:
                continue
            result = probe.read(self._loop.time, gone=gone)
            verdict = (result.ok, result.weight_offset)
            if self._verdicts.get(probe_id) != verdict:
                self._verdicts[probe_id] = verdict
                self._on_result(probe_id, result)

    # ------------------------------------------------------------------ following

    def ids(self) -> frozenset[int]:
        return frozenset(self._probes)

    def accept(self, probe_id: int) -> bool:
        return probe_id in self._probes

    def follow(self, plan: ProbePlan, config: Config) -> None:
        """Follows the FILE probes of `plan` (start and every reload): watches are set up
        afresh, then every file is read once more so that no change in between is lost."""
        self._config = config
        checks = file_checks(plan, config)
        probes: dict[int, FileProbe] = {}
        for probe_id, check in checks.items():
            fresh = self._fresh.pop(probe_id, None)
            old = self._probes.get(probe_id)
            if old is not None and self._checks.get(probe_id) == check:
                probes[probe_id] = old
            elif fresh is not None and fresh[0] == check:
                probes[probe_id] = fresh[1]
                result = fresh[1].read(self._loop.time)
                self._verdicts[probe_id] = (result.ok, result.weight_offset)
            else:
                made = _probe(check, config)
                if isinstance(made, FileProbe):
                    probes[probe_id] = made
        self._fresh.clear()
        self._checks, self._probes = checks, probes
        self._verdicts = {i: v for i, v in self._verdicts.items() if i in probes}
        self._unwatch()
        for probe_id, probe in probes.items():
            directory, name = _resolve(probe.path)
            path = os.path.join(directory, name)
            watch = self._watches.get(path)
            if watch is None:
                watch = self._watches[path] = _Watch(directory, name)
            watch.probes.append(probe_id)
            watch.interval_s = min(watch.interval_s, plan.probes[probe_id].interval_s)
        for watch in self._watches.values():
            self._arm(watch)
        for watch in self._watches.values():
            self._read(watch)

    def _inotify_instance(self) -> Any:
        if self._inotify is None:
            from inotify_simple import INotify

            self._inotify = INotify(nonblocking=True)
            self._loop.add_reader(self._inotify.fileno(), self._on_events)
        return self._inotify

    def _arm(self, watch: _Watch) -> None:
        fstype = self._fs_type(watch.directory)
        if without_inotify(fstype):
            return self._poll(watch, f"is on a {fstype} filesystem, which sends no inotify "
                                     "events for every change")
        if not os.path.isdir(watch.directory):
            return self._poll(watch, "is in a directory that does not exist")
        try:
            wd = self._inotify_instance().add_watch(watch.directory, self.MASK)
        except OSError as error:
            return self._poll(watch, f"cannot be watched with inotify ({error.strerror})")
        self._by_wd.setdefault(wd, {})[watch.name] = watch

    def _poll(self, watch: _Watch, why: str) -> None:
        interval = watch.interval_s if watch.interval_s != float("inf") else 60.0
        log.warning("track file %s %s; polling it every %g s instead",
                    os.path.join(watch.directory, watch.name), why, interval)

        def tick() -> None:
            watch.timer = self._loop.call_later(interval, tick)
            self._read(watch)

        watch.timer = self._loop.call_later(interval, tick)

    def _unwatch(self) -> None:
        for watch in self._watches.values():
            if watch.timer is not None:
                watch.timer.cancel()
        self._watches.clear()
        if self._inotify is not None:
            for wd in list(self._by_wd):
                with contextlib.suppress(OSError):  # a directory gone: its watch went too
                    self._inotify.rm_watch(wd)
        self._by_wd.clear()

    def _on_events(self) -> None:
        try:
            events = self._inotify.read(timeout=0)
        except OSError as error:
            log.error("track files: reading inotify events failed: %s", error.strerror)
            return
        for event in events:
            if event.mask & 0x4000:  # IN_Q_OVERFLOW: events were lost; read everything
                for watch in self._watches.values():
                    self._read(watch)
                continue
            if event.mask & 0x8000:  # IN_IGNORED: the directory is gone (or unmounted)
                for watch in self._by_wd.pop(event.wd, {}).values():
                    self._poll(watch, "lost its directory")
                continue
            if event.mask & 0x40000000:  # IN_ISDIR
                continue
            watch = self._by_wd.get(event.wd, {}).get(event.name)
            if watch is not None:
                self._read(watch, gone=bool(event.mask & (0x200 | 0x40)))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unwatch()
        if self._inotify is not None:
            self._loop.remove_reader(self._inotify.fileno())
            self._inotify.close()
            self._inotify = None


def polled_plan(plan: ProbePlan) -> ProbePlan:
    """`plan` without its FILE probes: what the probe engine schedules."""
    return dataclasses.replace(
        plan, probes={i: p for i, p in plan.probes.items() if p.key.kind is not CheckKind.FILE},
        ids={key: i for key, i in plan.ids.items() if key.kind is not CheckKind.FILE})


def polled_changes(changes: PlanDiff, old: ProbePlan) -> PlanDiff:
    """A reload's `changes` without FILE probes (`old`: the plan in force until now)."""
    def polled(probe: PlannedProbe) -> bool:
        return probe.key.kind is not CheckKind.FILE

    return dataclasses.replace(
        changes, added=tuple(p for p in changes.added if polled(p)),
        removed=tuple(i for i in changes.removed if i in old.probes and polled(old.probes[i])),
        retimed=tuple(p for p in changes.retimed if polled(p)))


def starting_events(events: Iterable[ev.Event], new_servers: Collection[RsKey]
                    ) -> list[ev.Event]:
    """The events of first readings worth announcing: none about a real server that is
    new (keepalived adds no server whose file says fault, and tells nobody)."""
    kept = []
    for event in events:
        if isinstance(event, ev.RealServerUp | ev.RealServerDown | ev.WeightChanged):
            if event.rs in new_servers:
                continue
        elif isinstance(event, ev.CheckerUp | ev.CheckerDown | ev.RetryRequested) \
                and event.check.rs in new_servers:
            continue
        kept.append(event)
    return kept
