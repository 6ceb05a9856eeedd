"""The sans-IO scheduler on a fake clock: warmup, drift, overruns, retries, limits, metrics."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcheck.scheduler import LAG_BOUNDS_S, LagHistogram, Scheduler

T0 = 1000.0


def make(**kwargs) -> Scheduler:
    return Scheduler(random.Random(7), **kwargs)


def run_until(sched: Scheduler, end: float, duration=lambda probe_id, start: 0.0):
    """Drives the scheduler like a driver would, jumping the clock from event to event.

    Runs finish after `duration(id, start)`; returns [(id, start)] in start order.
    """
    starts: list[tuple[int, float]] = []
    running: list[tuple[float, int]] = []  # (finish time, id)
    while True:
        deadline = sched.next_deadline()
        upcoming = [t for t in (deadline, min(running)[0] if running else None) if t is not None]
        if not upcoming or min(upcoming) >= end:
            return starts
        now = min(upcoming)
        for finish, probe_id in sorted(r for r in running if r[0] <= now):
            running.remove((finish, probe_id))
            sched.finished(probe_id, now)
        for probe_id in sched.due(now):
            starts.append((probe_id, now))
            running.append((now + duration(probe_id, now), probe_id))


def starts_of(starts: list[tuple[int, float]], probe_id: int) -> list[float]:
    return [t for i, t in starts if i == probe_id]


# --------------------------------------------------------------------------- warmup


def test_warmup_spreads_first_starts_within_bounds():
    sched = make()
    firsts = [sched.add(i, T0, 5.0, warmup_s=3.0) for i in range(2000)]
    assert all(T0 <= t < T0 + 3.0 for t in firsts)
    assert min(firsts) < T0 + 0.1 and max(firsts) > T0 + 2.9  # spread over the whole window
    # roughly uniform: each third of the window holds about a third of the probes
    thirds = [sum(1 for t in firsts if T0 + k <= t < T0 + k + 1) for k in range(3)]
    assert all(550 < n < 780 for n in thirds), thirds


def test_zero_warmup_starts_at_once_and_bootstrap_delays():
    sched = make()
    for i in range(10):
        sched.add(i, T0, 5.0)
    assert sorted(sched.due(T0)) == list(range(10))

    keepalived = make(bootstrap_s=1.0)
    firsts = [keepalived.add(i, T0, 5.0, warmup_s=2.0) for i in range(200)]
    assert all(T0 + 1.0 <= t < T0 + 3.0 for t in firsts)
    assert keepalived.due(T0 + 0.999) == []


def test_warmup_is_reproducible_from_the_injected_random():
    a, b = make(), make()
    assert [a.add(i, T0, 1, 10) for i in range(50)] == [b.add(i, T0, 1, 10) for i in range(50)]


# --------------------------------------------------------------------------- drift


def test_no_drift_over_1000_intervals_with_varying_run_durations():
    rng = random.Random(3)
    sched = make()
    interval = 2.0
    for i in range(5):
        sched.add(i, T0, interval, warmup_s=interval)
    starts = run_until(sched, T0 + 1001 * interval,
                       duration=lambda _i, _t: rng.uniform(0.0, 0.95 * interval))
    for i in range(5):
        times = starts_of(starts, i)
        assert len(times) in (1000, 1001)
        first = times[0]
        for n, t in enumerate(times):
            assert t == pytest.approx(first + n * interval, abs=1e-6)
    assert sched.missed_runs == 0
    assert sched.stats().lag_max_s == pytest.approx(0.0, abs=1e-6)


def test_next_run_is_planned_start_plus_interval_not_finish_plus_interval():
    sched = make()
    sched.add(1, T0, 10.0)
    assert sched.due(T0) == [1]
    sched.finished(1, T0 + 7.5)  # a slow run
    assert sched.next_deadline() == T0 + 10.0


def test_overrun_skips_to_next_future_slot_and_counts_missed_runs():
    sched = make()
    sched.add(1, T0, 1.0)
    assert sched.due(T0) == [1]
    sched.finished(1, T0 + 2.5)  # swallowed the slots at +1 and +2
    assert sched.next_deadline() == T0 + 3.0
    assert sched.missed_runs == 2
    assert sched.due(T0 + 3.0) == [1]
    sched.finished(1, T0 + 4.0)  # exactly one interval: the next slot is now, nothing missed
    assert sched.next_deadline() == T0 + 4.0
    assert sched.missed_runs == 2


def test_late_start_keeps_the_cadence():
    sched = make()
    sched.add(1, T0, 1.0)
    assert sched.due(T0 + 0.4) == [1]  # the loop was late
    sched.finished(1, T0 + 0.5)
    assert sched.next_deadline() == T0 + 1.0
    assert sched.lag.max == pytest.approx(0.4)


# --------------------------------------------------------------------------- retries


def test_reschedule_earlier_retries_and_reanchors():
    sched = make()
    sched.add(1, T0, 10.0)
    sched.due(T0)
    sched.finished(1, T0 + 0.5)
    assert sched.reschedule(1, T0 + 0.5, 2.0)
    assert sched.next_deadline() == T0 + 2.5
    assert sched.due(T0 + 2.5) == [1]
    sched.finished(1, T0 + 3.0)
    # the retry run re-anchors the cadence: delay_loop after the retry's start
    assert sched.next_deadline() == T0 + 12.5
    assert sched.reschedules == 1


def test_reschedule_later_than_the_next_slot_is_honoured():
    """delay_before_retry 5 s with delay_loop 3 s: the retry waits the 5 s (keepalived
    tcp_epilog arms delay_before_retry whatever delay_loop is)."""
    sched = make()
    sched.add(1, T0, 3.0)
    sched.due(T0)
    sched.finished(1, T0 + 0.5)
    assert sched.reschedule(1, T0 + 0.5, 5.0)
    assert sched.next_deadline() == T0 + 5.5
    assert sched.due(T0 + 3.0) == []  # the old slot is gone
    assert sched.due(T0 + 5.5) == [1]
    sched.finished(1, T0 + 5.6)
    assert sched.next_deadline() == T0 + 8.5
    assert sched.reschedules == 1


def test_the_last_request_wins():
    sched = make()
    sched.add(1, T0, 10.0)
    sched.due(T0)
    sched.finished(1, T0 + 1.0)
    sched.reschedule(1, T0 + 1.0, 3.0)
    sched.reschedule(1, T0 + 1.0, 1.0)
    assert sched.next_deadline() == T0 + 2.0
    assert not sched.reschedule(1, T0 + 1.0, 1.0)  # already planned then
    assert sched.due(T0 + 2.0) == [1]
    assert sched.due(T0 + 4.0) == []  # stale heap entries never start it twice


def test_reschedule_while_running_is_dropped():
    sched = make()
    sched.add(1, T0, 10.0)
    sched.due(T0)
    assert not sched.reschedule(1, T0 + 0.2, 1.0)  # about an older result: stale
    sched.finished(1, T0 + 0.5)
    assert sched.next_deadline() == T0 + 10.0


def test_reschedule_of_unknown_probe_is_ignored():
    assert not make().reschedule(99, T0, 1.0)


# --------------------------------------------------------------------------- limits


def test_global_limit_is_honoured_and_waiting_probes_start_in_deadline_order():
    sched = make(max_in_flight=3)
    # added in a scrambled order: the order of starts must come from the deadlines
    for i in (7, 2, 9, 0, 4, 1, 8, 3, 6, 5):
        sched.add(i, T0 - 1.0 + i * 0.01, 60.0)  # deadlines T0-1.0, T0-0.99, ...
    first = sched.due(T0)
    assert first == [0, 1, 2]
    assert sched.in_flight == 3
    assert sched.next_deadline() is None  # saturated: nothing to do until a finish
    assert sched.due(T0 + 0.1) == []
    order = list(first)
    now = T0
    while len(order) < 10:
        now += 0.5
        sched.finished(order[len(order) - 3], now)
        started = sched.due(now)
        assert len(started) == 1
        assert sched.in_flight <= 3
        order += started
    assert order == list(range(10))
    # their lag counts the wait: the last one waited 3.5 s past its deadline of T0 - 0.91
    assert sched.lag.max == pytest.approx(now - (T0 - 1.0 + 0.09))
    assert sched.capacity_waits >= 1


def test_per_target_limit_lets_other_targets_pass_and_keeps_deadline_order():
    sched = make(per_target=1)
    for i, target in enumerate(["a", "a", "a", "b", "c"]):
        sched.add(i, T0 + i * 0.1, 60.0, target=target)
    assert sched.due(T0 + 1.0) == [0, 3, 4]
    assert sched.target_waits == 2
    sched.finished(3, T0 + 1.1)
    assert sched.due(T0 + 1.1) == []  # b's end frees nothing for a
    sched.finished(0, T0 + 1.2)
    assert sched.next_deadline() == T0 + 0.1  # probe 1's planned start, long passed
    assert sched.due(T0 + 1.2) == [1]
    sched.finished(1, T0 + 1.3)
    assert sched.due(T0 + 1.3) == [2]
    assert sched.lag.max == pytest.approx(1.1)  # probe 2: planned T0 + 0.2, started T0 + 1.3


def test_limits_hold_under_random_load():
    rng = random.Random(11)
    sched = make(max_in_flight=20, per_target=2, jitter=0.1)
    targets = [f"10.0.0.{i % 15}" for i in range(300)]
    for i, target in enumerate(targets):
        sched.add(i, T0, rng.choice([0.5, 1.0, 2.0]), warmup_s=1.0, target=target)
    running: dict[int, float] = {}
    now = T0
    peak = 0
    for _ in range(20_000):
        candidates = [t for t in (sched.next_deadline(), min(running.values(), default=None))
                      if t is not None]
        now = max(now, min(candidates))
        for probe_id, finish in list(running.items()):
            if finish <= now:
                del running[probe_id]
                sched.finished(probe_id, now)
        for probe_id in sched.due(now):
            running[probe_id] = now + rng.uniform(0.0, 0.3)
        per_target: dict[str, int] = {}
        for probe_id in running:
            per_target[targets[probe_id]] = per_target.get(targets[probe_id], 0) + 1
        assert len(running) == sched.in_flight <= 20
        assert max(per_target.values(), default=0) <= 2
        peak = max(peak, len(running))
    assert peak == 20


def test_budget_caps_one_call():
    sched = make()
    for i in range(10):
        sched.add(i, T0, 1.0)
    assert len(sched.due(T0, budget=4)) == 4
    assert len(sched.due(T0, budget=4)) == 4
    assert len(sched.due(T0, budget=4)) == 2


# --------------------------------------------------------------------------- add / remove


def test_remove_while_in_flight_is_safe_and_keeps_capacity_until_finished():
    sched = make(max_in_flight=1, per_target=1)
    sched.add(1, T0, 1.0, target="a")
    sched.add(2, T0 + 0.1, 1.0, target="a")
    assert sched.due(T0) == [1]
    assert sched.remove(1)
    assert 1 not in sched and len(sched) == 1
    assert sched.in_flight == 1
    assert sched.due(T0 + 0.5) == []  # the removed run still holds its capacity
    with pytest.raises(ValueError, match="still running"):
        sched.add(1, T0 + 0.5, 1.0)
    assert sched.finished(1, T0 + 0.6) is False
    assert sched.in_flight == 0
    assert sched.due(T0 + 0.6) == [2]
    sched.finished(2, T0 + 0.7)
    assert sched.finished(1, T0 + 0.8) is False  # a second late report is harmless
    assert sched.in_flight == 0
    starts = run_until(sched, T0 + 10.0)
    assert {i for i, _ in starts} == {2}
    sched.add(1, T0 + 10.0, 1.0)  # its run is over: the id may be scheduled again


def test_remove_waiting_probe_never_starts_it_and_add_joins_the_cycle():
    sched = make()
    for i in range(4):
        sched.add(i, T0, 1.0)
    sched.due(T0)
    for i in range(4):
        sched.finished(i, T0 + 0.1)
    assert sched.remove(2)
    assert not sched.remove(2)
    sched.add(7, T0 + 0.5, 1.0)
    starts = run_until(sched, T0 + 5.0)
    assert {i for i, _ in starts} == {0, 1, 3, 7}
    assert starts_of(starts, 7) == [T0 + 0.5, T0 + 1.5, T0 + 2.5, T0 + 3.5, T0 + 4.5]


def test_remove_of_a_probe_parked_behind_its_target():
    sched = make(per_target=1)
    sched.add(1, T0, 1.0, target="a")
    sched.add(2, T0, 1.0, target="a")
    sched.add(3, T0, 1.0, target="a")
    assert sched.due(T0) == [1]
    sched.remove(2)
    sched.finished(1, T0 + 0.2)
    assert sched.due(T0 + 0.2) == [3]


def test_add_rejects_duplicates_and_bad_intervals():
    sched = make()
    sched.add(1, T0, 1.0)
    with pytest.raises(ValueError, match="already"):
        sched.add(1, T0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        sched.add(2, T0, 0.0)
    with pytest.raises(ValueError):
        make(jitter=0.5)
    with pytest.raises(ValueError):
        make(max_in_flight=0)


def test_set_interval_on_reload():
    sched = make()
    sched.add(1, T0, 10.0)
    sched.due(T0)
    sched.finished(1, T0 + 1.0)
    sched.set_interval(1, T0 + 2.0, 2.0)  # pending run at +10 is too far: now + 2
    assert sched.next_deadline() == T0 + 4.0
    sched.due(T0 + 4.0)
    sched.set_interval(1, T0 + 4.5, 5.0)  # in flight: next one 5 s after this start
    sched.finished(1, T0 + 5.0)
    assert sched.next_deadline() == T0 + 9.0
    sched.set_interval(1, T0 + 6.0, 20.0)  # longer: the pending run keeps its time
    assert sched.next_deadline() == T0 + 9.0
    sched.due(T0 + 9.0)
    sched.finished(1, T0 + 9.5)
    assert sched.next_deadline() == T0 + 29.0


# --------------------------------------------------------------------------- jitter


def test_jitter_stays_within_bounds_and_does_not_accumulate():
    rng = random.Random(5)
    sched = Scheduler(random.Random(1), jitter=0.1)
    sched.add(1, T0, 1.0)
    starts = starts_of(run_until(sched, T0 + 500.5,
                                 duration=lambda _i, _t: rng.uniform(0.0, 0.5)), 1)
    assert len(starts) == 501
    offsets = [t - (T0 + n) for n, t in enumerate(starts)]
    assert offsets[0] == 0.0  # the first run is not jittered
    assert all(-0.1 <= off <= 0.1 for off in offsets)
    assert min(offsets) < -0.09 and max(offsets) > 0.09  # it does spread
    assert abs(sum(offsets) / len(offsets)) < 0.01


def test_jitter_spreads_probes_that_started_together():
    sched = Scheduler(random.Random(2), jitter=0.2)
    for i in range(100):
        sched.add(i, T0, 1.0)
    started = sched.due(T0)
    for i in started:
        sched.finished(i, T0 + 0.01)
    second = sorted(set(t for _, t in run_until(sched, T0 + 1.5)))
    assert len(second) == 100  # no two in the same instant
    assert second[0] >= T0 + 0.8 and second[-1] <= T0 + 1.2


# --------------------------------------------------------------------------- histogram


def test_histogram_counts_quantiles_and_max():
    hist = LagHistogram()
    values = [i * 1e-4 for i in range(1, 1001)]  # 0.1 ms … 100 ms
    random.Random(0).shuffle(values)
    for v in values:
        hist.record(v)
    assert hist.count == 1000
    assert hist.max == pytest.approx(0.1)
    assert hist.mean == pytest.approx(sum(values) / 1000)
    for q, exact in ((0.5, 0.05), (0.99, 0.099), (1.0, 0.1)):
        estimate = hist.quantile(q)
        assert exact <= estimate <= exact * 10 ** 0.1 + 1e-12  # one bucket (≈ 26 %) high at most
    assert hist.quantile(0.0) <= 1e-4 * 10 ** 0.1


def test_histogram_bucket_edges_zero_and_overflow():
    hist = LagHistogram()
    hist.record(-1.0)  # negative lag (an early clock) counts as zero
    hist.record(0.0)
    hist.record(LAG_BOUNDS_S[5])  # exactly on a bound: in the bucket it bounds
    hist.record(1e4)  # above the top bound
    assert hist.counts[0] == 2
    assert hist.counts[5] == 1
    assert hist.counts[-1] == 1
    assert hist.quantile(1.0) == 1e4
    assert hist.quantile(0.5) == LAG_BOUNDS_S[0]
    assert len(hist.counts) == len(LAG_BOUNDS_S) + 1
    hist.reset()
    assert hist.count == 0 and hist.quantile(0.99) == 0.0
    with pytest.raises(ValueError):
        hist.quantile(1.5)


def test_histogram_memory_is_fixed():
    hist = LagHistogram()
    size = len(hist.counts)
    rng = random.Random(4)
    for _ in range(50_000):
        hist.record(rng.expovariate(100.0))
    assert len(hist.counts) == size
    assert math.isclose(sum(hist.counts), 50_000)


def test_stats_snapshot():
    sched = make(max_in_flight=1)
    sched.add(1, T0, 1.0)
    sched.add(2, T0, 1.0)
    sched.due(T0)
    sched.due(T0 + 0.5)
    stats = sched.stats()
    assert (stats.scheduled, stats.in_flight, stats.starts) == (2, 1, 1)
    assert stats.capacity_waits == 2  # both calls stopped at the limit with probe 2 due
    assert stats.lag_max_s == 0.0


# --------------------------------------------------------------------------- properties

OPS = st.lists(st.tuples(st.sampled_from(["add", "remove", "tick", "finish", "retry"]),
                         st.integers(0, 7), st.floats(0.0, 3.0)), max_size=120)


@settings(max_examples=150, deadline=None)
@given(OPS, st.sampled_from([None, 1, 3]), st.sampled_from([None, 1, 2]),
       st.sampled_from([0.0, 0.2]))
def test_invariants_under_any_sequence_of_calls(ops, max_in_flight, per_target, jitter):
    sched = Scheduler(random.Random(0), max_in_flight=max_in_flight, per_target=per_target,
                      jitter=jitter)
    now = T0
    running: set[int] = set()  # runs not yet reported finished, removed probes' included
    planned: dict[int, float] = {}
    for op, probe_id, x in ops:
        if op == "add" and probe_id not in sched and probe_id not in running:
            planned[probe_id] = sched.add(probe_id, now, 0.5 + x, warmup_s=x,
                                          target=f"h{probe_id % 3}")
        elif op == "remove":
            assert sched.remove(probe_id) == (probe_id in planned)
            planned.pop(probe_id, None)
        elif op == "tick":
            now += x
            deadline = sched.next_deadline()
            started = sched.due(now)
            assert not (set(started) & running)  # never started twice at once
            assert len(set(started)) == len(started)
            if started:
                assert deadline is not None and deadline <= now
            running.update(started)
        elif op == "finish" and probe_id in running:
            running.discard(probe_id)
            assert sched.finished(probe_id, now) == (probe_id in sched)
        elif op == "retry":
            sched.reschedule(probe_id, now, x)
        assert sched.in_flight == len(running)
        if max_in_flight is not None:
            assert len(running) <= max_in_flight
        if per_target is not None:
            for host in ("h0", "h1", "h2"):
                assert sum(1 for i in running if f"h{i % 3}" == host) <= per_target
        deadline = sched.next_deadline()
        assert deadline is None or deadline >= T0
    # everything drains: finishing all runs leaves nothing in flight
    for probe_id in running:
        sched.finished(probe_id, now)
    assert sched.in_flight == 0


def test_mass_removal_compacts_the_heap():
    sched = make()
    for i in range(5000):
        sched.add(i, T0, 1.0, warmup_s=1.0)
    for i in range(0, 5000, 2):
        sched.remove(i)
    for i in range(1, 4000, 2):
        sched.remove(i)
    assert len(sched._heap) <= 2 * len(sched) + 1024
    starts = run_until(sched, T0 + 1.0)
    assert sorted(i for i, _ in starts) == list(range(4001, 5000, 2))
