"""The status endpoint's health snapshot lets the event loop run between virtual servers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from fastcheck.config.loader import load_text
from fastcheck.daemon.app import Runtime
from fastcheck.health import HealthState
from fastcheck.probeplan import plan_probes
from fastcheck.synthetic import farm


def test_sliced_snapshot_equals_the_whole_one_and_lets_the_loop_in(run) -> None:
    config, _ = load_text(farm(40, 10))
    holder = SimpleNamespace(health=HealthState(config, plan_probes(config)))

    async def scenario() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        sliced = await Runtime.health_snapshot(holder, slice_s=0.0)  # type: ignore[arg-type]
        task.cancel()
        assert sliced == holder.health.snapshot()
        assert len(sliced["virtual_servers"]) == 40
        assert ticks - before >= 30  # the loop ran between virtual servers

    run(scenario())
