"""FILE_CHECK probe on real files in a temporary directory, under asyncio and uvloop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastcheck.model import Check, CheckKind, FileParams, Target, TrackFile
from fastcheck.probes.file import FileProbe, file_status, probe_file, strtol
from fastcheck.probes.result import Failure, ProbeResult


def file_check(name: str = "state", weight: int = 1, reverse: bool = False,
               dynamic: bool = False) -> Check:
    return Check(kind=CheckKind.FILE, target=Target("192.0.2.1", 0),
                 params=FileParams(name, weight, reverse, dynamic), delay_loop_s=1.0,
                 connect_timeout_s=5.0, retry=0, delay_before_retry_s=1.0, warmup_s=0.0,
                 alpha=False, log_all_failures=False)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def probe_of(path: Path, **check: Any) -> FileProbe:
    return FileProbe(file_check(**check), [TrackFile("other", "/nonexistent"),
                                           TrackFile("state", str(path))])


def once(run: Callable[..., Any], path: Path, content: bytes | None, **check: Any
         ) -> ProbeResult:
    if content is not None:
        path.write_bytes(content)
    result = run(probe_of(path, **check).run())
    assert isinstance(result, ProbeResult)
    return result


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(("content", "value"), [
    (b"5\n", 5), (b"  -3", -3), (b"\t\n 12abc", 12), (b"+7", 7), (b"0x10", 16),
    (b"0XfF", 255), (b"-0x10", -16), (b"010", 8), (b"08", 0), (b"0x", 0), (b"0xg", 0),
    (b"abc", 0), (b"", 0), (b"- 5", 0), (b"\x005", 0), (b"12\x0034", 12),
    (b"9223372036854775807", 2**63 - 1), (b"-9223372036854775808", -(2**63)),
    (b"9223372036854775808", None), (b"0x1" + b"0" * 16, None),
])
def test_strtol(content: bytes, value: int | None) -> None:
    assert strtol(content) == value


@pytest.mark.parametrize(("value", "weight", "reverse", "expected"), [
    (0, 0, False, (True, None)), (1, 0, False, (False, None)), (-4, 0, False, (False, None)),
    (0, 0, True, (False, None)), (3, 0, True, (True, None)),
    (5, 1, False, (True, 5)), (5, 2, True, (True, -10)), (-5, 10, False, (True, -50)),
    (0, 7, False, (True, 0)), (-(2**31), 1, False, (False, None)),
    (-(2**30), 2, False, (False, None)), (2**31, -1, False, (False, None)),
    (2**31, 1, True, (False, None)), (2**31, 1, False, (True, 2**31 - 1)),
    (-(2**31) + 1, 1, False, (True, -(2**31) + 1)), (10**6, -(2**31 - 1), False, (False, None)),
])
def test_file_status(value: int, weight: int, reverse: bool,
                     expected: tuple[bool, int | None]) -> None:
    assert file_status(value, weight, reverse) == expected


# --------------------------------------------------------------------------- probes


def test_weighted_value_is_an_offset(run: Callable[..., Any], state: Path) -> None:
    result = once(run, state, b"5\n", weight=3)
    assert result.ok and result.weight_offset == 15
    assert "value 5" in result.detail


def test_dynamic_changes_nothing(run: Callable[..., Any], state: Path) -> None:
    with_dynamic = once(run, state, b"5\n", weight=3, dynamic=True)
    without = once(run, state, None, weight=3, dynamic=False)
    assert (with_dynamic.ok, with_dynamic.weight_offset) == (True, 15)
    assert (without.ok, without.weight_offset) == (True, 15)


def test_reverse(run: Callable[..., Any], state: Path) -> None:
    result = once(run, state, b"5", weight=2, reverse=True)
    assert result.ok and result.weight_offset == -10


def test_fault_state_is_down(run: Callable[..., Any], state: Path) -> None:
    result = once(run, state, b"-2147483648", weight=1)
    assert not result.ok and result.failure is Failure.FILE
    assert "fault" in result.detail
    assert once(run, state, b"2147483648", weight=1, reverse=True).failure is Failure.FILE


def test_weight_zero_is_a_flag(run: Callable[..., Any], state: Path) -> None:
    up = once(run, state, b"0\n", weight=0)
    assert up.ok and up.weight_offset is None
    down = once(run, state, b"1\n", weight=0)
    assert down.failure is Failure.FILE and "value 1" in down.detail
    assert not once(run, state, b"0", weight=0, reverse=True).ok
    assert once(run, state, b"-9", weight=0, reverse=True).ok


def test_missing_file_reads_as_zero(run: Callable[..., Any], state: Path) -> None:
    result = once(run, state, None, weight=0)
    assert result.ok and "taken as 0" in result.detail
    assert once(run, state, None, weight=0, reverse=True).failure is Failure.FILE
    assert once(run, state, None, weight=5).weight_offset == 0


def test_directory_and_empty_file_read_as_zero(run: Callable[..., Any],
                                               tmp_path: Path) -> None:
    assert once(run, tmp_path, None, weight=0).ok
    assert once(run, tmp_path / "empty", b"", weight=0, reverse=True).failure is Failure.FILE


def test_only_127_bytes_are_read(run: Callable[..., Any], state: Path) -> None:
    result = once(run, state, b" " * 126 + b"42", weight=1)
    assert result.weight_offset == 4


def test_out_of_range_value_keeps_the_previous_one(run: Callable[..., Any],
                                                   state: Path) -> None:
    probe = probe_of(state, weight=2)
    state.write_bytes(b"5")
    assert run(probe.run()).weight_offset == 10
    for big in (b"99999999999", b"-2147483649", b"99999999999999999999999"):
        state.write_bytes(big)
        result = run(probe.run())
        assert result.ok and result.weight_offset == 10, big
        assert "ignored" in result.detail
    state.write_bytes(b"2147483648")  # INT32_MAX + 1 is still accepted
    assert run(probe.run()).weight_offset == 2**31 - 1


def test_value_changes_between_runs(run: Callable[..., Any], state: Path) -> None:
    probe = probe_of(state, weight=0)
    for content, ok in ((b"0", True), (b"1", False), (b"0", True)):
        state.write_bytes(content)
        assert run(probe.run()).ok is ok


def test_undefined_track_file_is_local(run: Callable[..., Any]) -> None:
    result = run(probe_file(file_check("nope"), [TrackFile("state", "/x")]))
    assert result.failure is Failure.LOCAL and "nope" in result.detail


def test_track_files_by_name(run: Callable[..., Any], state: Path) -> None:
    state.write_bytes(b"4")
    probe = FileProbe(file_check(weight=1), {"state": TrackFile("state", str(state))})
    assert run(probe.run()).weight_offset == 4
