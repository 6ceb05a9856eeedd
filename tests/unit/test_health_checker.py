"""health/: one checker's retry/rise machine, quorum arithmetic, the removal budget."""

from __future__ import annotations

import pytest

from fastcheck.health.budget import RemovalBudget
from fastcheck.health.checker import RETRYABLE, Checker, CheckState, Step
from fastcheck.health.quorum import (
    IPVS_WEIGHT_LIMIT,
    initial_quorum,
    next_quorum,
    real_weight,
    threshold,
)
from fastcheck.model import (
    Check,
    CheckKey,
    CheckKind,
    Family,
    Protocol,
    RsKey,
    Target,
    TcpParams,
    VsKey,
    VsKind,
)
from fastcheck.probes.result import Failure


def make(retry: int = 2, alpha: bool = False) -> Checker:
    check = Check(CheckKind.TCP, Target("10.0.0.1", 80), TcpParams(), 5.0, 1.0, retry, 2.0,
                  0.0, alpha, False)
    rs = RsKey(VsKey(VsKind.ADDRESS, Family.INET, Protocol.TCP, "1.1.1.1", 80), "10.0.0.1", 80)
    return Checker(CheckKey(rs, check.probe_key, 0), check, 7)


@pytest.mark.parametrize("retry", [0, 1, 2, 5])
def test_down_after_retry_plus_one_failures(retry: int) -> None:
    c = make(retry)
    for attempt in range(1, retry + 1):
        assert c.step(False, Failure.TIMEOUT, 1) is Step.RETRY
        assert c.failures == attempt and c.state is CheckState.RETRYING and c.up
    assert c.step(False, Failure.TIMEOUT, 1) is Step.WENT_DOWN
    assert not c.up
    # already down: no more retry requests, nothing happens
    assert c.step(False, Failure.TIMEOUT, 1) is Step.NONE
    assert c.step(True, None, 1) is Step.WENT_UP
    assert c.failures == 0 and c.state is CheckState.UP


def test_success_resets_retry_counter() -> None:
    c = make(2)
    assert c.step(False, Failure.REFUSED, 1) is Step.RETRY
    assert c.step(False, Failure.REFUSED, 1) is Step.RETRY
    assert c.step(True, None, 1) is Step.NONE
    assert c.failures == 0 and c.state is CheckState.UP
    assert c.step(False, Failure.REFUSED, 1) is Step.RETRY  # counting starts over


def test_http_status_mismatch_is_an_immediate_failure_as_in_keepalived_1_2() -> None:
    assert set(RETRYABLE) == set(Failure)
    assert [f for f, retry in RETRYABLE.items() if not retry] == [Failure.HTTP_STATUS]
    c = make(3)
    assert c.step(False, Failure.HTTP_STATUS, 1) is Step.WENT_DOWN  # retry 3 is not used
    c = make(1)
    assert c.step(False, Failure.DIGEST, 1) is Step.RETRY  # other failures still retry
    assert c.step(False, Failure.HTTP_STATUS, 1) is Step.WENT_DOWN


def test_alpha_starts_down_and_first_failures_still_retry() -> None:
    c = make(1, alpha=True)
    assert c.state is CheckState.DOWN and not c.up
    assert c.step(False, Failure.TIMEOUT, 1) is Step.RETRY  # before the first run
    assert c.step(False, Failure.TIMEOUT, 1) is Step.NONE  # exhausted: stays down
    assert c.step(False, Failure.TIMEOUT, 1) is Step.NONE  # has run: no retries now
    assert c.step(True, None, 1) is Step.WENT_UP


def test_alpha_first_success_brings_it_up() -> None:
    c = make(3, alpha=True)
    assert c.step(True, None, 1) is Step.WENT_UP


def test_rise_needs_consecutive_successes() -> None:
    c = make(0)
    assert c.step(False, Failure.TIMEOUT, 3) is Step.WENT_DOWN
    assert c.step(True, None, 3) is Step.NONE and c.state is CheckState.RISING
    assert c.step(True, None, 3) is Step.NONE
    assert c.step(False, Failure.TIMEOUT, 3) is Step.NONE and c.state is CheckState.DOWN
    assert c.step(True, None, 3) is Step.NONE
    assert c.step(True, None, 3) is Step.NONE
    assert c.step(True, None, 3) is Step.WENT_UP


def test_rise_one_is_keepalived() -> None:
    c = make(0)
    c.step(False, Failure.TIMEOUT, 1)
    assert c.step(True, None, 1) is Step.WENT_UP


# ------------------------------------------------------------------ quorum arithmetic


def test_real_weight_clamps() -> None:
    assert real_weight(-5) == 0
    assert real_weight(0) == 0
    assert real_weight(7) == 7
    assert real_weight(2**40) == IPVS_WEIGHT_LIMIT == 2**31 - 1


@pytest.mark.parametrize(("quorum", "hyst"), [(1, 0), (5, 0), (5, 2), (10, 3)])
def test_quorum_thresholds_exact(quorum: int, hyst: int) -> None:
    gain, lose = quorum + hyst, quorum - hyst
    assert not next_quorum(False, gain - 1, quorum, hyst)
    assert next_quorum(False, gain, quorum, hyst)
    assert next_quorum(True, max(lose, 1), quorum, hyst)
    if lose - 1 > 0:
        assert not next_quorum(True, lose - 1, quorum, hyst)
    assert not next_quorum(True, 0, quorum, hyst)
    # inside the hysteresis band nothing changes
    for s in range(max(lose, 1), gain):
        assert next_quorum(True, s, quorum, hyst)
        assert not next_quorum(False, s, quorum, hyst)
    assert threshold(True, quorum, hyst) == lose
    assert threshold(False, quorum, hyst) == gain
    assert initial_quorum(gain, quorum, hyst) and not initial_quorum(gain - 1, quorum, hyst)


def test_zero_sum_loses_even_with_quorum_zero() -> None:
    assert not next_quorum(True, 0, 0, 0)
    assert next_quorum(False, 0, 0, 0)  # and is regained at once (keepalived does the same)


# ------------------------------------------------------------------ removal budget


def test_budget_off_always_removes() -> None:
    b = RemovalBudget(None, 10.0, 100)
    assert all(b.request_removal(0.0, i) == (True, False) for i in range(100))
    assert not b.tripped and b.next_deadline() is None


def test_budget_trips_once_and_recovers_when_failures_drop() -> None:
    b = RemovalBudget(0.5, 10.0, 4)  # limit 2
    assert b.limit == 2
    assert b.request_removal(0.0, "a") == (True, False)
    assert b.request_removal(1.0, "b") == (True, False)
    assert b.request_removal(2.0, "c") == (False, True)
    assert b.request_removal(3.0, "d") == (False, False)
    assert b.trips == 1 and b.tripped and set(b.held) == {"c", "d"}
    assert b.next_deadline() == 10.0
    assert b.try_recover(10.5) is None  # 1 recent + 2 held ≥ 2
    assert b.came_back("c") and not b.came_back("zz")
    assert b.try_recover(10.5) is None  # 1 recent + 1 held
    assert b.try_recover(11.0) == ["d"]  # 0 recent + 1 held < 2
    assert not b.tripped and len(b.recent) == 1
    assert b.request_removal(12.0, "e") == (True, False)  # 1 recent: room for one
    assert b.request_removal(12.5, "f") == (False, True)  # 2 recent: over again
    assert b.trips == 2


def test_health_package_is_sans_io() -> None:
    import ast
    from pathlib import Path

    import fastcheck.health

    banned = {"asyncio", "socket", "pyroute2", "time", "selectors", "subprocess"}
    for path in Path(fastcheck.health.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), path
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not {n.split(".")[0] for n in names} & banned, (path, names)
