"""The reload reader: a child process that loads the new file within a deadline and a
memory ceiling, on both loops; cancelling it (a stop) kills and reaps the child."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fastcheck.daemon import reader
from fastcheck.daemon.reader import ReadFailure, ReadLimits, default_limits, read_config

FAULT_HOOK = Path(__file__).resolve().parents[1] / "fault_hook"
SAMPLE = Path(__file__).resolve().parents[2] / "conf" / "sample.conf"
LIMITS = ReadLimits(60.0, 1 << 30)


def test_default_limits_grow_with_the_configuration_in_force() -> None:
    small = default_limits(100)
    assert small == ReadLimits(30.05, reader.MIN_MEMORY_BYTES + 100 * 32768)
    big = default_limits(100_000)
    assert big.timeout_s == 80.0 and big.memory_bytes == (1 << 30) + 100_000 * 32768
    assert default_limits(100_000, timeout_s=3.0, memory_bytes=1 << 28) == \
        ReadLimits(3.0, 1 << 28)


def test_a_valid_file_comes_back_as_the_same_config(run) -> None:
    from fastcheck.config.loader import load_file

    result = run(read_config(str(SAMPLE), None, LIMITS))
    assert result.failure is None and result.config == load_file(str(SAMPLE))[0]


def test_errors_come_back_as_diagnostics_with_file_and_line(run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("virtual_server 10.0.0.1 80 {\n    lb_algo nosuch\n}\n")
    result = run(read_config(str(bad), None, LIMITS))
    assert result.failure is ReadFailure.INVALID and result.config is None
    assert result.errors and all(line.startswith(f"{bad}:") for line in result.errors)


def test_a_missing_file_is_refused(run, tmp_path: Path) -> None:
    result = run(read_config(str(tmp_path / "nothing.conf"), None, LIMITS))
    assert result.config is None and result.failure is ReadFailure.INVALID
    assert "No such file" in " ".join(result.errors)


@pytest.fixture
def hooked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(FAULT_HOOK), *filter(None, [os.environ.get("PYTHONPATH")])]))


def test_a_crash_is_one_line_and_a_traceback(run, tmp_path: Path, hooked: None) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(SAMPLE.read_text() + "# inject: raise\n")
    result = run(read_config(str(conf), None, LIMITS))
    assert result.failure is ReadFailure.CRASHED
    assert result.reason == "the loader failed: RuntimeError: injected loader fault"
    assert "Traceback" in result.detail and "\n" not in result.reason


def test_past_the_memory_ceiling(run, tmp_path: Path, hooked: None) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(SAMPLE.read_text() + "# inject: memory\n")
    result = run(read_config(str(conf), None, ReadLimits(60.0, 256 << 20)))
    assert result.failure is ReadFailure.OUT_OF_MEMORY
    assert result.reason == "reading needs more than 256.0 MiB (--reload-memory-limit)"


def _children() -> set[int]:
    path = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return {int(pid) for pid in path.read_text().split()}


def test_past_the_deadline_the_child_is_killed(run, tmp_path: Path, hooked: None) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(SAMPLE.read_text() + "# inject: hang\n")
    before = _children()
    result = run(read_config(str(conf), None, ReadLimits(1.5, 1 << 30)))
    assert result.failure is ReadFailure.TIMED_OUT
    assert result.reason == "reading took longer than 1.5 s (--reload-timeout); abandoned"
    assert _children() == before  # killed and reaped


def test_cancelling_kills_the_child(run, tmp_path: Path, hooked: None) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(SAMPLE.read_text() + "# inject: hang\n")
    before = _children()

    async def scenario() -> None:
        task = asyncio.ensure_future(read_config(str(conf), None, LIMITS))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if _children() - before:
                break
        assert _children() - before, "the reader never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _children() == before

    run(scenario())


def test_a_reader_that_cannot_start_is_a_failure(run) -> None:
    result = run(read_config(str(SAMPLE), None, LIMITS, python="/nonexistent/python"))
    assert result.failure is ReadFailure.DIED and "cannot start the reader" in result.reason


def test_a_child_that_dies_without_an_answer(run, tmp_path: Path) -> None:
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\necho 'something went badly' >&2\nkill -9 $$\n")
    script.chmod(0o755)
    result = run(read_config(str(SAMPLE), None, LIMITS, python=str(script)))
    assert result.failure is ReadFailure.DIED
    assert result.reason == "the reader process was killed by SIGKILL: something went badly"
