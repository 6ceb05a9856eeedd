"""Is the scheduler keeping up? One judgement for the systemd watchdog and /healthz.

Owns: `PaceJudge`, which compares successive `EngineStats` snapshots (time passed in as
`now`) and says whether probes start on time: the start-lag p99 of the runs started since
the previous look stays under `max_lag_s`, and when there are probes, some started within
`stall_s`. Cumulative histograms are differenced, so one bad minute long ago does not
count forever, and a quiet stretch does not hide a stall.
Must not: read clocks, feed watchdogs or answer HTTP (its callers do).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastcheck.scheduler import LagHistogram

from .engine import EngineStats

DEFAULT_MAX_LAG_S = 1.0
DEFAULT_STALL_S = 30.0


@dataclass(frozen=True, slots=True)
class Pace:
    keeping_up: bool
    reason: str  # why not, or "ok"
    lag_p99_s: float  # over the runs started since the previous look
    started: int  # runs started since the previous look
    since_last_start_s: float


def _difference(now: LagHistogram, before: list[int] | None) -> LagHistogram:
    recent = LagHistogram(now.bounds)
    if before is None:
        before = [0] * len(now.counts)
    recent.counts = [a - b for a, b in zip(now.counts, before, strict=True)]
    recent.count = sum(recent.counts)
    recent.max = now.max  # an upper bound for the quantile cap; exact max is not kept
    return recent


class PaceJudge:
    """Feed it `look(now, stats)` every few seconds; it answers with a `Pace`."""

    def __init__(self, *, max_lag_s: float = DEFAULT_MAX_LAG_S,
                 stall_s: float = DEFAULT_STALL_S) -> None:
        if max_lag_s <= 0 or stall_s <= 0:
            raise ValueError("max_lag_s and stall_s must be positive")
        self.max_lag_s = max_lag_s
        self.stall_s = stall_s
        self._counts: list[int] | None = None
        self._started = 0
        self._last_start_at: float | None = None
        self.last: Pace | None = None

    def look(self, now: float, stats: EngineStats) -> Pace:
        recent = _difference(stats.start_lag, self._counts)
        self._counts = list(stats.start_lag.counts)
        started = max(0, stats.started - self._started)
        self._started = stats.started
        if started or self._last_start_at is None:
            self._last_start_at = now
        since = now - self._last_start_at
        p99 = recent.quantile(0.99) if recent.count > 0 else 0.0
        if p99 > self.max_lag_s:
            pace = Pace(False, f"probes start {p99 * 1000:.0f} ms late (p99), over the "
                               f"{self.max_lag_s * 1000:.0f} ms limit", p99, started, since)
        elif stats.probes and since > self.stall_s:
            pace = Pace(False, f"no probe started for {since:.0f} s", p99, started, since)
        else:
            pace = Pace(True, "ok", p99, started, since)
        self.last = pace
        return pace
