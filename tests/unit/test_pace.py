"""PaceJudge: the one 'is the scheduler keeping up' judgement (watchdog, /healthz)."""

from __future__ import annotations

from fastcheck.daemon.engine import EngineStats
from fastcheck.daemon.pace import PaceJudge
from fastcheck.scheduler import LagHistogram


def stats(lags: list[float], started: int, probes: int = 10) -> EngineStats:
    histogram = LagHistogram()
    for lag in lags:
        histogram.record(lag)
    return EngineStats(workers=1, probes=probes, running=0, started=started, missed_runs=0,
                       start_lag=histogram)


def test_on_time_starts_keep_up() -> None:
    judge = PaceJudge(max_lag_s=0.1)
    pace = judge.look(0.0, stats([0.001] * 100, started=100))
    assert pace.keeping_up and pace.started == 100


def test_late_starts_since_the_last_look_do_not_keep_up() -> None:
    judge = PaceJudge(max_lag_s=0.1)
    judge.look(0.0, stats([0.001] * 100, started=100))
    pace = judge.look(5.0, stats([0.001] * 100 + [2.0] * 50, started=150))
    assert not pace.keeping_up
    assert "late" in pace.reason


def test_old_lag_is_forgotten_once_starts_are_on_time_again() -> None:
    judge = PaceJudge(max_lag_s=0.1)
    judge.look(0.0, stats([2.0] * 50, started=50))
    pace = judge.look(5.0, stats([2.0] * 50 + [0.001] * 500, started=550))
    assert pace.keeping_up


def test_no_start_for_longer_than_stall_is_a_stall() -> None:
    judge = PaceJudge(stall_s=10.0)
    judge.look(0.0, stats([0.0] * 5, started=5))
    assert judge.look(9.0, stats([0.0] * 5, started=5)).keeping_up
    pace = judge.look(11.0, stats([0.0] * 5, started=5))
    assert not pace.keeping_up and "no probe started" in pace.reason


def test_no_probes_is_not_a_stall() -> None:
    judge = PaceJudge(stall_s=1.0)
    judge.look(0.0, stats([], started=0, probes=0))
    assert judge.look(100.0, stats([], started=0, probes=0)).keeping_up
