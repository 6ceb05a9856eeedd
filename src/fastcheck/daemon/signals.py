"""The daemon's process shell: signals, the event loop, and the real health layer.

Owns: mapping SIGHUP → reload, SIGUSR1 → dump, SIGTERM/SIGINT → stop onto a `Runtime`'s
requests, running one Runtime to the end on uvloop, and choosing the health layer
(`fastcheck.health.HealthState` + `carry_over`) when the caller gives none.
Must not: hold daemon state (the Runtime does) or parse arguments (cli.py does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastcheck.diff import ConfigDiff
from fastcheck.errors import FastcheckError
from fastcheck.ipvs.backend import IpvsBackend
from fastcheck.model import Config
from fastcheck.probeplan import ProbePlan

from .app import EngineFactory, Health, HealthCarry, HealthFactory, Options, Runtime
from .observe import Observer
from .systemd import observer_from_environment

log = logging.getLogger("fastcheck")

SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


def install(runtime: Runtime) -> None:
    loop = runtime.loop
    loop.add_signal_handler(signal.SIGHUP, runtime.request_reload)
    loop.add_signal_handler(signal.SIGUSR1, runtime.request_dump)
    loop.add_signal_handler(signal.SIGTERM, runtime.request_stop)
    loop.add_signal_handler(signal.SIGINT, runtime.request_stop)


def remove(runtime: Runtime) -> None:
    for signum in SIGNALS:
        runtime.loop.remove_signal_handler(signum)


def load_health(options: Any = None) -> tuple[HealthFactory, HealthCarry]:
    """The real health layer: `HealthState` and `carry_over` with `options` (a
    `health.HealthOptions`; None = keepalived's behaviour)."""
    try:
        from fastcheck.health import HealthState, carry_over
    except ImportError as error:
        raise FastcheckError(f"the health layer is not available: {error}") from None

    def create(config: Config, plan: ProbePlan) -> Health:
        return HealthState(config, plan, options)

    def carry(old: Any, config: Config, plan: ProbePlan, config_diff: ConfigDiff) -> Health:
        return carry_over(old, config, plan, config_diff, options)

    return create, carry


def raise_open_files_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard one (one socket per probe in flight at
    tens of thousands of real servers); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, error)
        return soft
    log.debug("open-files limit raised from %d to %d", soft, hard)
    return hard


def run_daemon(options: Options, backend: IpvsBackend, config: Config,
               health_factory: HealthFactory, health_carry: HealthCarry, *,
               install_signals: bool = True,
               loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
               observers: Iterable[Observer] = (),
               engine_factory: EngineFactory | None = None,
               environ: Mapping[str, str] | None = None) -> int:
    """Runs a Runtime to the end on uvloop (by default); returns the exit status.

    Under systemd (`NOTIFY_SOCKET` in `environ`, default `os.environ`) a
    `systemd.SystemdObserver` joins `observers`: READY/RELOADING/STOPPING, STATUS, watchdog.
    """
    raise_open_files_limit()
    notifying = observer_from_environment(os.environ if environ is None else environ)
    if notifying is not None:
        observers = [*observers, notifying]
    if loop_factory is None:
        import uvloop

        loop_factory = uvloop.new_event_loop

    async def main() -> int:
        runtime = Runtime(config, backend, health_factory, health_carry, options,
                          observers=observers, engine_factory=engine_factory)
        if install_signals:
            install(runtime)
        try:
            return await runtime.run()
        finally:
            if install_signals:
                remove(runtime)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())
