"""FILE_CHECK followed as keepalived follows it: real files, real inotify, both loops.

`TrackFiles` on its own: a file is read first, then every change (write and close, delete,
rename into place) reaches `on_result` at once and only when the verdict changed; a file on
a filesystem without inotify events, or in a directory that does not exist yet, is polled
at its delay_loop with a warning. End to end, `fastcheck run --dry-run`: a server whose
file says fault is never added, a weight offset is in the first table, and changes act at
once (delay_loop 60 s) with no retry (`retry 3` on the real server does not apply).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemonproc import DryRun

from fastcheck.config.loader import load_text
from fastcheck.daemon.trackfiles import (
    TrackFiles,
    filesystem_type,
    polled_changes,
    polled_plan,
    without_inotify,
)
from fastcheck.model import CheckKind
from fastcheck.probeplan import diff_plans, plan_probes
from fastcheck.probes.result import ProbeResult


def config_text(path: Path, *, weight: str = "0", delay_loop: float = 60.0,
                extra_rs: str = "") -> str:
    return (f"track_file state {{\n    file {path}\n    weight {weight}\n}}\n"
            f"virtual_server 127.1.0.1 80 {{\n    delay_loop {delay_loop}\n    protocol TCP\n"
            "    real_server 127.0.0.1 8080 {\n        weight 10\n        retry 3\n"
            "        FILE_CHECK {\n            track_file state\n        }\n    }\n"
            f"{extra_rs}}}\n")


class Results:
    def __init__(self) -> None:
        self.got: list[tuple[int, ProbeResult]] = []
        self.changed = asyncio.Event()

    def __call__(self, probe_id: int, result: ProbeResult) -> None:
        self.got.append((probe_id, result))
        self.changed.set()

    async def next(self, timeout: float = 2.0) -> ProbeResult:
        await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()
        return self.got[-1][1]

    async def quiet(self, seconds: float = 0.3) -> None:
        count = len(self.got)
        await asyncio.sleep(seconds)
        assert self.got[count:] == []


def setup(path: Path, **kw: Any) -> tuple[Any, Any]:
    config, _ = load_text(config_text(path, **kw))
    return config, plan_probes(config)


def test_loader_gives_file_checks_no_retry_and_no_alpha(tmp_path: Path) -> None:
    config, _ = load_text(config_text(tmp_path / "x").replace("retry 3", "retry 3\n alpha"))
    (check,) = config.virtual_servers[0].real_servers[0].checks
    assert check.kind is CheckKind.FILE and check.retry == 0 and not check.alpha


def test_changes_act_at_once_and_only_when_the_verdict_changes(run, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("0\n")
    config, plan = setup(state)

    async def scenario() -> None:
        results = Results()
        files = TrackFiles(asyncio.get_running_loop(), results, config)
        first = files.first_readings(plan, config)
        assert [r.ok for _, r in first] == [True]
        files.follow(plan, config)
        try:
            await results.quiet()  # nothing changed since the first reading
            began = time.monotonic()
            state.write_text("1\n")  # write and close: fault, at once (delay_loop is 60 s)
            assert not (await results.next()).ok
            assert time.monotonic() - began < 2
            state.write_text("7\n")  # still fault: nothing to say
            await results.quiet()
            state.unlink()  # deleted: 0, up
            assert (await results.next()).ok
            staged = tmp_path / "staged"
            staged.write_text("3")
            await results.quiet()  # another file in the directory
            staged.rename(state)  # moved into place: read
            assert not (await results.next()).ok
            state.write_text("0x7fffffffff")  # out of range: ignored, the fault stands
            await results.quiet()
        finally:
            files.close()

    run(scenario())


def test_weight_offsets_follow_the_file(run, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("5")
    config, plan = setup(state, weight="2")

    async def scenario() -> None:
        results = Results()
        files = TrackFiles(asyncio.get_running_loop(), results, config)
        ((_, first),) = files.first_readings(plan, config)
        assert first.ok and first.weight_offset == 10
        files.follow(plan, config)
        try:
            state.write_text("-3")
            result = await results.next()
            assert result.ok and result.weight_offset == -6
        finally:
            files.close()

    run(scenario())


def test_filesystem_without_inotify_is_polled_with_a_warning(run, tmp_path: Path,
                                                             caplog) -> None:
    state = tmp_path / "state"
    state.write_text("0")
    config, plan = setup(state, delay_loop=0.2)

    async def scenario() -> None:
        results = Results()
        files = TrackFiles(asyncio.get_running_loop(), results, config,
                           fs_type=lambda path: "nfs4")
        files.first_readings(plan, config)
        files.follow(plan, config)
        try:
            assert files._inotify is None  # no watch was even tried
            state.write_text("1")
            assert not (await results.next()).ok
        finally:
            files.close()

    with caplog.at_level(logging.WARNING, logger="fastcheck"):
        run(scenario())
    assert f"track file {state} is on a nfs4 filesystem" in caplog.text
    assert "polling it every 0.2 s instead" in caplog.text


def test_missing_directory_is_polled_until_it_appears(run, tmp_path: Path, caplog) -> None:
    state = tmp_path / "later" / "state"
    config, plan = setup(state, delay_loop=0.2)

    async def scenario() -> None:
        results = Results()
        files = TrackFiles(asyncio.get_running_loop(), results, config)
        ((_, first),) = files.first_readings(plan, config)
        assert first.ok  # a missing file reads 0
        files.follow(plan, config)
        try:
            state.parent.mkdir()
            state.write_text("1")
            assert not (await results.next()).ok
        finally:
            files.close()

    with caplog.at_level(logging.WARNING, logger="fastcheck"):
        run(scenario())
    assert "is in a directory that does not exist" in caplog.text


def test_a_reload_follows_the_new_files(run, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text("0")
    two.write_text("1")
    config, plan = setup(one)
    new_config, _ = load_text(config_text(one) + config_text(two).replace(
        "track_file state", "track_file other").replace("127.1.0.1", "127.1.0.2"))
    new_plan = plan_probes(new_config, previous=plan)

    async def scenario() -> None:
        results = Results()
        files = TrackFiles(asyncio.get_running_loop(), results, config)
        files.first_readings(plan, config)
        files.follow(plan, config)
        try:
            fresh = files.first_readings(new_plan, new_config, plan.probes)
            assert [r.ok for _, r in fresh] == [False]  # only the new probe is read
            files.follow(new_plan, new_config)
            await results.quiet()  # its reading was handed over already
            two.write_text("0")
            assert (await results.next()).ok
            assert files.accept(fresh[0][0])
        finally:
            files.close()

    run(scenario())


def test_the_probe_engine_never_sees_file_probes(tmp_path: Path) -> None:
    _, plan = setup(tmp_path / "state", extra_rs=(
        "    real_server 127.0.0.2 8080 {\n        TCP_CHECK {\n        }\n    }\n"))
    polled = polled_plan(plan)
    assert [p.key.kind for p in polled.probes.values()] == [CheckKind.TCP]
    assert len(polled.ids) == 1 and len(plan) == 2
    empty, _ = load_text("")
    changes = polled_changes(diff_plans(plan, plan_probes(empty, previous=plan)), plan)
    assert len(changes.removed) == 1


def test_filesystem_type_reads_mountinfo(tmp_path: Path) -> None:
    assert filesystem_type("/proc") == "proc"
    assert filesystem_type(str(tmp_path)) not in (None, "proc")
    assert without_inotify("nfs") and without_inotify("fuse.sshfs")
    assert not without_inotify("ext4") and not without_inotify(None)


# ------------------------------------------------------------------------ end to end


def wait_for(daemon: DryRun, want: Callable[[dict[int, int]], bool],
             timeout: float = 3.0) -> dict[int, int]:
    """Polls the dumped table ({port: weight}) until `want` holds; returns it."""
    doc = daemon.wait_dump(lambda doc: want(weights(doc)), "became what was wanted", timeout,
                           show=weights)
    return weights(doc)


def weights(doc: dict[str, Any]) -> dict[int, int]:
    return {d["port"]: d["weight"] for s in doc["ipvs"] for d in s["destinations"]}


def test_daemon_reads_files_first_and_follows_them_at_once(tmp_path: Path) -> None:
    fault, offset = tmp_path / "fault", tmp_path / "offset"
    fault.write_text("1\n")
    offset.write_text("5\n")
    config = tmp_path / "fc.conf"
    config.write_text(
        f"track_file fault {{\n    file {fault}\n    weight 0\n}}\n"
        f"track_file offset {{\n    file {offset}\n    weight 2\n}}\n"
        "virtual_server 127.1.0.1 80 {\n    delay_loop 60\n    protocol TCP\n"
        "    real_server 127.0.0.1 8001 {\n        weight 10\n        retry 3\n"
        "        FILE_CHECK {\n            track_file fault\n        }\n    }\n"
        "    real_server 127.0.0.1 8002 {\n        weight 10\n"
        "        FILE_CHECK {\n            track_file offset\n        }\n    }\n}\n")
    daemon = DryRun(tmp_path, config)
    try:
        daemon.wait_log("starting:", timeout=20)
        assert wait_for(daemon, lambda t: True) == {8002: 20}  # offset in place
        fault.write_text("0\n")
        wait_for(daemon, lambda t: t == {8001: 10, 8002: 20})
        offset.write_text("-2\n")
        wait_for(daemon, lambda t: t == {8001: 10, 8002: 6})
        fault.write_text("3\n")  # no retry: gone at the first word
        wait_for(daemon, lambda t: t == {8002: 6})
        assert daemon.stop(timeout=15) == 0
    finally:
        daemon.kill()
    text = daemon.text()
    first_add = text.split("starting:", 1)[1]
    # never added at start, so never removed then: the first word about 8001 is its add
    assert first_add.index("Adding service [127.0.0.1]:tcp:8001") < \
        first_add.index("Removing service [127.0.0.1]:tcp:8001")
