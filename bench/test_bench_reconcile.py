"""Reconcile and apply at farm scale: 2,000 services × 20 destinations, memory backend.

Figures: `python -m pytest bench/test_bench_reconcile.py --benchmark-enable`. The netlink
figures come from the kernel suite inside the VM (tests/kernel), reported separately.
"""

from __future__ import annotations

import pytest

from fastcheck.config.loader import load_text
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import desired_table
from fastcheck.synthetic import farm

SERVICES, DESTINATIONS = 2000, 20


@pytest.fixture(scope="module")
def tables():
    old = desired_table(load_text(farm(SERVICES, DESTINATIONS))[0])
    new = desired_table(load_text(farm(SERVICES, DESTINATIONS, revision=1))[0])
    return old, new


@pytest.mark.benchmark(group="reconcile-2000x20")
def test_reconcile_from_empty(benchmark, tables):
    old, _ = tables
    ops = benchmark(reconcile, old, {})
    assert len(ops) == SERVICES * (DESTINATIONS + 1)


@pytest.mark.benchmark(group="reconcile-2000x20")
def test_reconcile_reload(benchmark, tables):
    old, new = tables
    ops = benchmark(reconcile, new, old)
    assert 0 < len(ops) < SERVICES * DESTINATIONS


@pytest.mark.benchmark(group="reconcile-2000x20")
def test_reconcile_in_sync(benchmark, tables):
    old, _ = tables
    assert benchmark(reconcile, old, old) == []


@pytest.mark.benchmark(group="reconcile-2000x20")
def test_apply_from_empty_memory_backend(benchmark, tables):
    """42,000 operations; ops/s = 42,000 / mean."""
    old, _ = tables
    ops = reconcile(old, {})

    def apply() -> MemoryBackend:
        backend = MemoryBackend()
        assert backend.apply(ops) == []
        return backend

    backend = benchmark.pedantic(apply, rounds=5, iterations=1)
    assert backend.read() == old
