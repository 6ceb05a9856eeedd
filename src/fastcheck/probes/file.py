"""FILE_CHECK probe: read a tracked file's number and say what it means for the real server.

Owns: reading the file of a `TrackFile` (at most 127 bytes, as keepalived), parsing its
number like C ``strtol(buf, NULL, 0)``, and keepalived's rule turning value, weight and
``reverse`` into up/down and a weight offset.
Must not: decide health (FILE_CHECK has no retry, rise or fall of its own — health/
applies results as they come), watch the file,
write the file (``init_file`` belongs to the daemon), touch the network, or know keyword
spellings. The daemon follows the files (daemon/trackfiles.py: inotify, polling where
there is none) and calls `FileProbe.read` when one changed.

keepalived behaviour followed (2.2.7, keepalived/trackers/track_file.c process_track_file,
update_track_file_status, process_update_checker_track_file_status; check/check_file.c):
- the value is ``strtol`` of the first 127 bytes, base 0: leading white space, a sign,
  ``0x`` hex, a leading ``0`` octal, decimal otherwise; it stops at the first other
  character, and no digits at all is 0. A missing, unreadable or empty file is 0.
- a number outside [-2**31, 2**31] (or overflowing C long) is ignored: the previous value
  stands. This is the one thing a `FileProbe` remembers between runs (initially 0, as
  keepalived's last_status).
- weight 0: the file is a flag. Value 0 is up, anything else down; ``reverse`` swaps the
  two (0 down, anything else up). No weight offset.
- weight ≠ 0: status = value × weight × (−1 with reverse), clamped to 32 bits. The real
  server is down only in keepalived's fault state, status == −2**31 (IPVS_WEIGHT_FAULT —
  any product at or below it, after the clamp); otherwise it is up and ``weight_offset``
  in the result is the status: an OFFSET to add to the real server's configured weight (the sum
  is clamped to 0..2**31−1 by whoever applies it — check_data.h real_weight).

Note on ``dynamic``: keepalived 2.2.7 applies the offset of every FILE_CHECK with a
non-zero weight; its parser has no ``dynamic`` keyword for FILE_CHECK (only the man page
mentions one). This probe therefore reports the offset whether or not `FileParams.dynamic`
is set, so a migrated configuration keeps its weights; `dynamic` changes nothing here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from fastcheck.errors import ProbeError
from fastcheck.model import Check, FileParams, TrackFile
from fastcheck.probes.result import Failure, ProbeResult

__all__ = ["IPVS_WEIGHT_FAULT", "FileProbe", "file_status", "probe_file", "strtol"]

READ_BYTES: Final = 127
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
IPVS_WEIGHT_FAULT: Final = INT32_MIN
_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1
_SPACE: Final = frozenset(b" \t\n\v\f\r")
_DIGITS: Final = {8: frozenset(b"01234567"), 10: frozenset(b"0123456789"),
                  16: frozenset(b"0123456789abcdefABCDEF")}


def strtol(data: bytes) -> int | None:
    """C ``strtol(data, NULL, 0)`` on a 64-bit system; None where it sets ERANGE."""
    i, n = 0, len(data)
    while i < n and data[i] in _SPACE:
        i += 1
    negative = False
    if i < n and data[i] in b"+-":
        negative = data[i] == ord("-")
        i += 1
    base = 10
    if data[i:i + 1] == b"0":
        if data[i + 1:i + 2] in (b"x", b"X") and i + 2 < n and data[i + 2] in _DIGITS[16]:
            base, i = 16, i + 2
        else:
            base = 8
    digits = _DIGITS[base]
    j = i
    while j < n and data[j] in digits:
        j += 1
    if j == i:
        return 0
    value = int(data[i:j], base)
    value = -value if negative else value
    if value < _LONG_MIN or value > _LONG_MAX:
        return None
    return value


def file_status(value: int, weight: int, reverse: bool) -> tuple[bool, int | None]:
    """keepalived's verdict on a tracked value: ``(up, weight offset or None)``."""
    if weight == 0:
        return (value == 0) != reverse, None
    status = value * weight * (-1 if reverse else 1)
    status = max(INT32_MIN, min(INT32_MAX, status))
    if status == IPVS_WEIGHT_FAULT:
        return False, None
    return True, status


def read_value(path: str) -> tuple[int | None, str]:
    """The number in ``path`` (None: out of range) and how it was read, for the detail."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return 0, f"cannot open ({exc.strerror}), taken as 0"
    try:
        data = os.read(fd, READ_BYTES)
    except OSError as exc:
        return 0, f"cannot read ({exc.strerror}), taken as 0"
    finally:
        os.close(fd)
    if not data:
        return 0, "empty, taken as 0"
    return strtol(data), ""


class FileProbe:
    """One FILE_CHECK, bound to its track_file's path and weight.

    ``track_files`` are the configuration's `TrackFile`s (``Config.track_files``), or a
    mapping of them by name; the constructor raises `ProbeError` when the check names one
    that is not there.
    """

    __slots__ = ("_last", "path", "reverse", "weight")

    def __init__(self, check: Check,
                 track_files: Mapping[str, TrackFile] | Iterable[TrackFile]) -> None:
        params = check.params
        if not isinstance(params, FileParams):
            raise ProbeError(f"{check.kind.value} is not a FILE check")
        if isinstance(track_files, Mapping):
            found = track_files.get(params.track_file)
        else:
            found = next((t for t in track_files if t.name == params.track_file), None)
        if found is None:
            raise ProbeError(f"FILE_CHECK: track_file {params.track_file!r} is not defined")
        self.path = found.path
        self.weight = params.weight
        self.reverse = params.reverse
        self._last = 0

    async def run(self, *, loop_time: Callable[[], float] | None = None) -> ProbeResult:
        """Read the file once (synchronously: a local read of 127 bytes at most)."""
        return self.read(loop_time or time.monotonic)

    def read(self, clock: Callable[[], float] = time.monotonic, *,
             gone: bool = False) -> ProbeResult:
        """Read the file now; ``gone``: it was deleted or moved away, which keepalived
        (process_inotify) takes as the value 0 without reading."""
        start = clock()
        value, how = (0, "deleted or moved away, taken as 0") if gone else read_value(self.path)
        if value is None or value < INT32_MIN or value > INT32_MAX + 1:
            how = f"out-of-range number ignored, keeping {self._last}"
            value = self._last
        self._last = value
        up, offset = file_status(value, self.weight, self.reverse)
        detail = f"{self.path}: value {value}" + (f" ({how})" if how else "")
        if up:
            return ProbeResult.up(clock() - start, weight_offset=offset, detail=detail)
        if self.weight:
            detail += f" × weight {self.weight}{' reversed' if self.reverse else ''} " \
                      "reaches the fault state"
        return ProbeResult.down(Failure.FILE, clock() - start, detail)


async def probe_file(check: Check,
                     track_files: Mapping[str, TrackFile] | Iterable[TrackFile], *,
                     loop_time: Callable[[], float] | None = None) -> ProbeResult:
    """Run a FILE_CHECK once (forgetting the last value); set-up problems are LOCAL."""
    try:
        probe = FileProbe(check, track_files)
    except ProbeError as exc:
        return ProbeResult.down(Failure.LOCAL, 0.0, str(exc))
    return await probe.run(loop_time=loop_time)
