"""Integration fixtures: every asyncio test runs under the stock loop and under uvloop.

`run(coro)` runs a coroutine to completion on a fresh loop of the parametrized kind.
`source_port` is a free port below the ephemeral range, for `bind_port` tests: a port
picked from the ephemeral range can be handed to another socket before the probe binds it.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine to completion on a fresh loop of the parametrized kind."""
    factory = LOOP_FACTORIES[request.param]

    def run_it(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)
    return run_it


@pytest.fixture
def source_port() -> int:
    rng = random.Random()
    for _ in range(100):
        port = rng.randint(20000, 29999)
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free source port in 20000-29999")
