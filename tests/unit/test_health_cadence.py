"""Each owner's cadence against keepalived 2.2.7's timers, on a simulated clock (sans-IO).

The scheduler and the health layer run together as the daemon wires them (a result goes
to `HealthState.on_result`, a `ProbeRescheduled` to `Scheduler.reschedule`), probing a
simulated server. The expected times come from small models of keepalived's own timers,
written from check/check_tcp.c `tcp_epilog` and check/check_http.c `epilog` /
`timeout_epilog`: one timer per checker, re-armed when a check ends.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from fastcheck.config.loader import load_text
from fastcheck.health import HealthState
from fastcheck.health import events as ev
from fastcheck.health.cadence import Cadence, verdict
from fastcheck.model import Check, Config, RsKey
from fastcheck.probeplan import plan_probes
from fastcheck.probes.result import Failure, ProbeResult
from fastcheck.scheduler import Scheduler

RS = "172.16.0.1"
Probe = Callable[[float], ProbeResult]  # time → the result of a run starting then


def tcp(alive: Callable[[float], bool]) -> Probe:
    return lambda t: ProbeResult.up() if alive(t) else ProbeResult.down(Failure.REFUSED)


def http(failing: Callable[[float], int | None]) -> Probe:
    """`failing(t)`: the first url that fails at t (None: every url answers)."""
    def run(t: float) -> ProbeResult:
        url = failing(t)
        if url is None:
            return ProbeResult.up()
        return ProbeResult.down(Failure.HTTP_STATUS if url < 0 else Failure.REFUSED,
                                failed_url=url)
    return run


def config(*virtual_servers: str) -> Config:
    text = "".join(
        f"virtual_server 10.0.0.1 {80 + i} {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
        f" real_server {RS} 80 {{\n{checks} }}\n}}\n"
        for i, checks in enumerate(virtual_servers))
    cfg, _ = load_text(text)
    return cfg


def simulate(cfg: Config, probe: Probe, end: float) -> dict[int, list[tuple[float, str]]]:
    """Run every probe of `cfg` until `end`; runs take no time, the first starts at 0.

    Returns, per virtual server (index), its real server's transitions [(time, up/down)]
    and, under -1, the start of every probe run.
    """
    plan = plan_probes(cfg)
    health = HealthState(cfg, plan)
    sched = Scheduler(random.Random(1))
    for planned in plan.probes.values():
        sched.add(planned.id, 0.0, planned.interval_s)
    vs_index = {vs.key: i for i, vs in enumerate(cfg.virtual_servers)}
    seen: dict[int, list[tuple[float, str]]] = {i: [] for i in vs_index.values()}
    seen[-1] = []
    while (now := sched.next_deadline()) is not None and now < end:
        for probe_id in sched.due(now):
            seen[-1].append((now, ""))
            sched.finished(probe_id, now)
            for event in health.on_result(now, probe_id, probe(now)):
                if isinstance(event, ev.ProbeRescheduled):
                    sched.reschedule(event.probe_id, now, event.delay_s)
                elif isinstance(event, ev.RealServerDown | ev.RealServerUp):
                    state = "up" if isinstance(event, ev.RealServerUp) else "down"
                    seen[vs_index[event.rs.vs]].append((now, state))
    return seen


# ------------------------------------------------------------- keepalived's own timers


def keepalived_tcp(alive: Callable[[float], bool], delay_loop: float, retry: int,
                   delay_before_retry: float, end: float) -> list[tuple[float, str]]:
    """One TCP_CHECK checker as check_tcp.c runs it: tcp_epilog re-arms after each check."""
    t, retry_it, up, seen = 0.0, 0, True, []
    while t < end:
        ok = alive(t)
        if ok or retry_it >= retry:
            delay, retry_it = delay_loop, 0
            if ok != up:
                up = ok
                seen.append((t, "up" if ok else "down"))
        else:
            delay, retry_it = delay_before_retry, retry_it + 1
        t += delay
    return seen


def keepalived_http(failing: Callable[[float], int | None], urls: int, delay_loop: float,
                    retry: int, delay_before_retry: float, end: float,
                    fast_recovery: bool = False) -> list[tuple[float, str]]:
    """One HTTP_GET checker as check_http.c runs it: one url per check; epilog's
    REGISTER_CHECKER_NEW / _RETRY / _FAILED (timeout_epilog when already down)."""
    t, url_it, failed_url, retry_it, up, seen = 0.0, 0, None, 0, True, []
    while t < end:
        bad = failing(t)
        ok = bad is None or bad > url_it
        if ok:  # REGISTER_CHECKER_NEW
            url_it, retry_it = url_it + 1, 0
            if url_it == urls and failed_url is None:
                if not up:
                    up = True
                    seen.append((t, "up"))
                url_it = 0
            elif failed_url is not None:
                failed_url, url_it = None, 0
            delay = delay_loop
        elif up:  # REGISTER_CHECKER_RETRY
            retry_it += 1
            if retry_it > retry:
                up = False
                seen.append((t, "down"))
                failed_url = url_it
            delay = max(delay_before_retry, delay_loop) if failed_url is not None \
                else delay_before_retry
        else:  # REGISTER_CHECKER_FAILED
            delay = max(delay_before_retry, delay_loop) if failed_url is not None \
                else delay_before_retry
        if fast_recovery and not up and failed_url is None:
            assert ok, "keepalived re-runs this url at once, in a loop: not modelled"
            delay = 0.0
        t += delay
    return seen


# ------------------------------------------------------------------ item 5: retry spacing


def test_delay_before_retry_longer_than_delay_loop_is_honoured() -> None:
    """delay_loop 2, retry 2, delay_before_retry 5: the retries come 5 s apart
    (tcp_epilog arms delay_before_retry whatever delay_loop is)."""
    def alive(t: float) -> bool:
        return t < 10.5

    checks = " TCP_CHECK {\n delay_loop 2\n retry 2\n delay_before_retry 5\n warmup 0\n }\n"
    seen = simulate(config(checks), tcp(alive), 40.0)
    assert seen[0] == keepalived_tcp(alive, 2.0, 2, 5.0, 40.0) == [(22.0, "down")]


@pytest.mark.parametrize("back", [21.5, 25.0, 31.5, 43.7])
def test_a_down_tcp_check_is_rechecked_at_keepalived_cadence(back: float) -> None:
    """While down, TCP_CHECK goes on counting retries: delay_loop, then `retry` checks
    delay_before_retry apart, so a recovery is seen when keepalived sees it."""
    def alive(t: float) -> bool:
        return t < 0.5 or t >= back

    checks = " TCP_CHECK {\n delay_loop 10\n retry 1\n delay_before_retry 1\n warmup 0\n }\n"
    seen = simulate(config(checks), tcp(alive), 80.0)
    expected = keepalived_tcp(alive, 10.0, 1, 1.0, 80.0)
    assert seen[0] == expected
    assert expected[0] == (11.0, "down")


def test_a_down_http_check_waits_the_longer_of_its_delays() -> None:
    """HTTP_GET while down re-checks its failed url every max(delay_before_retry,
    delay_loop) (epilog, REGISTER_CHECKER_FAILED with failed_url set)."""
    def failing(t: float) -> int | None:
        return 0 if 0.5 <= t < 40.0 else None

    checks = (" HTTP_GET {\n url {\n path /\n }\n delay_loop 10\n retry 0\n"
              " delay_before_retry 15\n warmup 0\n }\n")
    seen = simulate(config(checks), http(failing), 120.0)
    expected = keepalived_http(failing, 1, 10.0, 0, 15.0, 120.0)
    assert seen[0] == expected
    # 25 s, 40 s (the url answers again: a pass begins), 50 s (the pass is complete)
    assert expected == [(10.0, "down"), (50.0, "up")]


# -------------------------------------------------- item 6: owners of a merged probe


def test_a_merged_probe_leaves_each_owner_its_own_cadence_and_retries() -> None:
    """The same TCP_CHECK target in a strict virtual server (delay_loop 2, retry 1,
    delay_before_retry 1) and a lenient one (delay_loop 30, retry 3, delay_before_retry 5)
    is probed once, yet each removes the server when its own keepalived checker would: the
    strict one 3 s after the last good check, the lenient one 45 s after (it used to be
    removed after a few seconds, counting the strict owner's runs as its retries)."""
    def alive(t: float) -> bool:
        return t < 0.5 or t >= 100.3

    strict = " TCP_CHECK {\n delay_loop 2\n retry 1\n delay_before_retry 1\n warmup 0\n }\n"
    lenient = " TCP_CHECK {\n delay_loop 30\n retry 3\n delay_before_retry 5\n warmup 0\n }\n"
    cfg = config(strict, lenient)
    assert len(plan_probes(cfg)) == 1  # probed once
    seen = simulate(cfg, tcp(alive), 200.0)
    assert seen[0] == keepalived_tcp(alive, 2.0, 1, 1.0, 200.0)
    assert seen[1] == keepalived_tcp(alive, 30.0, 3, 5.0, 200.0)
    assert seen[0][0] == (3.0, "down") and seen[1][0] == (45.0, "down")
    # fewer runs than two keepalived checkers, never more than one at a time
    starts = [t for t, _ in seen[-1]]
    assert starts == sorted(set(starts))


def test_owners_with_unrelated_delay_loops_each_keep_theirs() -> None:
    strict = " TCP_CHECK {\n delay_loop 3\n warmup 0\n }\n"
    lenient = " TCP_CHECK {\n delay_loop 7\n retry 2\n delay_before_retry 2\n warmup 0\n }\n"

    def alive(t: float) -> bool:
        return not 20.5 <= t < 61.0

    seen = simulate(config(strict, lenient), tcp(alive), 120.0)
    assert seen[0] == keepalived_tcp(alive, 3.0, 1, 1.0, 120.0)
    assert seen[1] == keepalived_tcp(alive, 7.0, 2, 2.0, 120.0)


# ----------------------------------------------------- item 8: HTTP url pass, fast_recovery


def _http_checks(urls: int, extra: str = "") -> str:
    paths = "".join(f" url {{\n path /u{i}\n }}\n" for i in range(urls))
    return (f" HTTP_GET {{\n{paths} delay_loop 5\n retry 1\n delay_before_retry 2\n"
            f" warmup 0\n{extra} }}\n")


def test_a_failed_http_server_comes_back_only_after_a_complete_pass() -> None:
    """Three urls; the second fails from 0.5 s to 30 s. keepalived re-checks the failed url
    (12, 17 … 32 s), then passes over all three urls one check (delay_loop) apart: back
    at 47 s, not at 32 s."""
    def failing(t: float) -> int | None:
        return 1 if 0.5 <= t < 30.0 else None

    seen = simulate(config(_http_checks(3)), http(failing), 100.0)
    assert seen[0] == keepalived_http(failing, 3, 5.0, 1, 2.0, 100.0)
    assert seen[0] == [(7.0, "down"), (47.0, "up")]


def test_fast_recovery_passes_at_once() -> None:
    def failing(t: float) -> int | None:
        return 1 if 0.5 <= t < 30.0 else None

    seen = simulate(config(_http_checks(3, " fast_recovery\n")), http(failing), 100.0)
    assert seen[0] == keepalived_http(failing, 3, 5.0, 1, 2.0, 100.0, fast_recovery=True)
    assert seen[0] == [(7.0, "down"), (32.0, "up")]


def test_a_url_failing_during_the_pass_is_retried_and_the_pass_goes_on() -> None:
    """Down on url 0; url 0 answers from 30 s but url 2 only from 50 s: the pass (37, 42,
    47 s) waits on url 2, re-checked delay_before_retry apart (49, 51 s), keepalived's
    REGISTER_CHECKER_FAILED path once the failed url is cleared."""
    def failing(t: float) -> int | None:
        if 0.5 <= t < 30.0:
            return 0
        return 2 if 30.0 <= t < 50.0 else None

    seen = simulate(config(_http_checks(3)), http(failing), 100.0)
    assert seen[0] == keepalived_http(failing, 3, 5.0, 1, 2.0, 100.0)
    assert seen[0] == [(7.0, "down"), (51.0, "up")]


def test_verdict_of_one_url_per_run_without_fast_recovery() -> None:
    cfg = config(_http_checks(3))
    check: Check = cfg.virtual_servers[0].real_servers[0].checks[0]
    timing = Cadence()
    timing.failed_url = 1
    assert verdict(check, timing, False, ProbeResult.down(Failure.REFUSED, failed_url=0)) \
        is False  # the run stopped before the failed url: still failed
    assert verdict(check, timing, False, ProbeResult.down(Failure.REFUSED, failed_url=2)) \
        is None  # url 1 answers: the pass begins
    assert (timing.failed_url, timing.pass_at) == (None, 0)
    assert verdict(check, timing, False, ProbeResult.up()) is None
    assert verdict(check, timing, False, ProbeResult.up()) is None
    assert verdict(check, timing, False, ProbeResult.up()) is True
    assert verdict(check, timing, True, ProbeResult.down(Failure.REFUSED, failed_url=2)) \
        is False  # up: every url counts


def test_snapshot_shows_each_owners_clock() -> None:
    cfg = config(" TCP_CHECK {\n delay_loop 2\n warmup 0\n }\n")
    plan = plan_probes(cfg)
    health = HealthState(cfg, plan)
    health.on_result(0.0, 0, ProbeResult.up())
    key = next(iter(k for k in health._checkers if k.rs == RsKey(cfg.virtual_servers[0].key,
                                                                   RS, 80)))
    assert health.checker(key).snapshot()["due"] == 2.0
