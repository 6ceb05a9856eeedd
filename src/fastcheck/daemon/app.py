"""The daemon: one `Runtime` owns all mutable state of a running fastcheck.

Owns: the configuration in force, its probe plan, the scheduler and its driver, the
probe runner, the health state (through the `Health` protocol), the IPVS backend and the
copy of the table fastcheck last applied; start-up adoption of the kernel table, the
result → health → reconcile → apply cycle, periodic drift repair, reload (SIGHUP), the
dump (SIGUSR1) and stop (SIGTERM/SIGINT) with release of fastcheck's services.
Must not: decide health (health/ does, behind the protocol), compute operations itself
(ipvs/reconcile does), parse configuration text, or touch services it does not own:
only services of the configuration in force (or applied earlier) are ever changed, unless
`lvs_flush` / `lvs_flush_on_stop all` say otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from fastcheck.diff import ConfigDiff
from fastcheck.errors import FastcheckError
from fastcheck.health.events import CheckerUp, ProbeRescheduled, RetryRequested
from fastcheck.ipvs.backend import IpvsBackend, OpFailure
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, Op, ServiceOp
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import Service, ServiceKey, Table, desired_table
from fastcheck.model import CheckKey, Config, VsKey
from fastcheck.probeplan import ProbePlan, plan_probes
from fastcheck.probes.result import Failure, ProbeResult

from . import dump, gcpolicy
from .addresses import VipTracker
from .engine import LocalEngine, OnResult, ProbeEngine
from .log import (
    DETAIL,
    RepeatLimiter,
    event_messages,
    failure_message,
    op_messages,
    with_suppressed,
)
from .notify import Notifier
from .observe import Observer, Observers
from .reader import ReadFailure, ReadLimits, ReadResult, default_limits, one_line, read_config
from .reload import ReloadPlan, prepare, remove_with_retries, split_removals
from .trackfiles import TrackFiles, polled_changes, polled_plan, starting_events

log = logging.getLogger("fastcheck")

EXIT_OK, EXIT_FAILED, EXIT_RELOAD_FAILED = 0, 1, 2


# ----------------------------------------------------------------------------- health


class Health(Protocol):
    """What the runtime needs from the health layer (sans-IO; time comes in as `now`).

    `fastcheck.health.HealthState` is the real one. Events are opaque to the runtime and
    logged with `str()`, except `ProbeRescheduled`, which moves that probe's next run
    (`engine.reschedule`).
    """

    def on_result(self, now: float, probe_id: int, result: ProbeResult) -> list[Any]: ...

    def on_tick(self, now: float) -> list[Any]:
        """Time-driven work (slow start, budget windows), called at `next_deadline()`."""
        ...

    def next_deadline(self) -> float | None: ...

    def live_table(self) -> Table:
        """The IPVS table current health asks for. The runtime never edits it."""
        ...

    def changed_services(self) -> set[ServiceKey]:
        """Services whose destinations changed since the last call (then forgotten);
        after results and ticks only these are reconciled."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state for the SIGUSR1 dump."""
        ...

    def startup_events(self) -> list[Any]: ...

    def settle(self) -> list[Any]:
        """After a carry-over: the flips the new configuration implies."""
        ...

    def shutdown(self, release: bool = True) -> list[Any]:
        """What a stop announces (omega notifiers); `release` False: the table stays
        (--dont-release-ipvs), nothing is announced."""
        ...

    def set_vip_present(self, vs_key: VsKey, present: bool) -> list[Any]:
        """ha_suspend: whether the VS's address is on this host (results wait while not)."""
        ...


# engine_factory(loop, plan, config, on_result, options, rng, *, on_fatal) → the probe
# engine; on_fatal(message) is for an engine that cannot go on (workers keep dying).
EngineFactory = Callable[..., ProbeEngine]


def local_engine(loop: asyncio.AbstractEventLoop, plan: ProbePlan, config: Config,
                 on_result: OnResult, options: Options, rng: random.Random | None, *,
                 on_fatal: Callable[[str], None] | None = None) -> ProbeEngine:
    """The in-process engine (the default); it has no way to fail as a whole."""
    return LocalEngine(loop, plan, config, on_result, rng=rng,
                       max_in_flight=options.max_in_flight,
                       bootstrap_s=options.scheduler_bootstrap_s)


# reader(path, config_id, limits) → the new configuration, read off the event loop.
ConfigReader = Callable[[str, str | None, ReadLimits], Awaitable[ReadResult]]

# factory(config, plan) → the health of a fresh start (e.g. HealthState).
HealthFactory = Callable[[Config, ProbePlan], Health]
# carry(old, new_config, new_plan, config_diff) → the health after a reload (carry_over).
HealthCarry = Callable[[Any, Config, ProbePlan, ConfigDiff], Health]


@dataclass(frozen=True, slots=True)
class Options:
    config_path: str
    config_id: str | None = None
    dry_run: bool = False
    release_on_stop: bool = True  # False: --dont-release-ipvs
    repair_interval_s: float = 5.0
    reload_attempts: int = 10
    reload_timeout_s: float | None = None  # None: reader.default_limits from the size
    reload_memory_bytes: int | None = None  # of the configuration in force
    stop_timeout_s: float = 10.0
    data_path: str = dump.DEFAULT_DATA_PATH
    json_path: str = dump.DEFAULT_JSON_PATH
    max_in_flight: int | None = None
    scheduler_bootstrap_s: float = 1.0  # keepalived's 1 s before the first checks


@dataclass(slots=True)
class Counters:
    results: int = 0
    ops_applied: int = 0
    op_failures: int = 0
    repairs: int = 0  # drift-repair passes that found differences
    repaired_ops: int = 0
    reloads: int = 0
    reload_failures: int = 0
    events: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


def copy_table(table: Table) -> Table:
    return {key: Service(svc.settings, dict(svc.destinations), svc.local_addresses, svc.owner)
            for key, svc in table.items()}


def restrict(table: Table, keys: Iterable[ServiceKey]) -> Table:
    """The part of `table` about services in `keys` (what fastcheck owns)."""
    return {key: table[key] for key in keys if key in table}


def _sleep_for(seconds: float) -> Any:
    return asyncio.sleep(seconds)


class Runtime:
    """One running daemon. `await run()` returns the exit status."""

    def __init__(self, config: Config, backend: IpvsBackend, health_factory: HealthFactory,
                 health_carry: HealthCarry, options: Options, *,
                 loop: asyncio.AbstractEventLoop | None = None,
                 rng: random.Random | None = None,
                 engine_factory: EngineFactory | None = None,
                 observers: Iterable[Observer] = (),
                 config_reader: ConfigReader = read_config) -> None:
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.options = options
        self.config = config
        self.backend = backend
        with gcpolicy.paused(freeze=True):  # large and long-lived: see gcpolicy
            self.plan = plan_probes(config)
            self.health: Health = health_factory(config, self.plan)
        self._carry = health_carry
        self._tick_timer: asyncio.TimerHandle | None = None
        self._tick_at = 0.0
        self.applied: Table = {}
        self.counters = Counters()
        self.observers = Observers(observers)
        self._repeats = RepeatLimiter(max_keys=200_000)
        self.started_at = time.time()
        self.exit_status = EXIT_OK
        # FILE_CHECK files are followed here (inotify); the engine never sees those probes.
        self.track_files = TrackFiles(self.loop, self._on_result, config)
        self.vips = VipTracker(self.loop, lambda: self.health)  # ha_suspend
        self.engine: ProbeEngine = (engine_factory or local_engine)(
            self.loop, polled_plan(self.plan), config, self._on_result, options, rng,
            on_fatal=self.fatal)
        self._owned_keys = frozenset(desired_table(config))
        self._pending: list[tuple[int, ProbeResult]] = []
        self._flush_armed = False
        self._busy = False  # a reload or stop is applying: results wait
        # While a reload's removals are retried: services whose changes wait for them
        # (those being removed from, and those not in the kernel yet), and what waited.
        self._removing: frozenset[ServiceKey] | None = None
        self._held: set[ServiceKey] = set()
        self._stopping = False
        self._wake = asyncio.Event()
        self._want_reload = False
        self._reader = config_reader
        self._read_task: asyncio.Task[ReadResult] | None = None
        self.last_reload_failure: ReloadFailure | None = None
        self._want_dump = False
        self._stop_requested = False
        # lvs_notify_fifo: read once the model has the field (config/ ignores it today).
        self.notifier = Notifier(self.loop, lambda: self.config.global_defs,
                                 fifo_path=getattr(config.global_defs, "lvs_notify_fifo", None),
                                 dry_run=options.dry_run)

    # ------------------------------------------------------------------ requests

    def request_reload(self) -> None:
        self._want_reload = True
        self._wake.set()

    def request_dump(self) -> None:
        self._want_dump = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._read_task is not None:
            self._read_task.cancel()  # a reload still reading its file is abandoned
        self._wake.set()

    def fatal(self, message: str) -> None:
        """Something the daemon cannot run without broke (e.g. probe workers keep dying):
        stop, releasing as usual, and exit with status 1."""
        log.critical("stopping: %s", message)
        self.exit_status = EXIT_FAILED
        self.request_stop()

    # ------------------------------------------------------------------ main loop

    async def run(self) -> int:
        await self.observers.open(self)  # before anything is touched: may refuse to start
        try:
            self.start()
        except BaseException:
            await self.observers.close()
            raise
        self.observers.started(self)
        repair = self.loop.create_task(self._repair_loop())
        reloading: asyncio.Task[bool] | None = None
        try:
            while not self._stop_requested:
                await self._wake.wait()
                self._wake.clear()
                if self._want_dump:
                    self._want_dump = False
                    self.write_dump()
                if reloading is not None and reloading.done():
                    carry_on = self._reload_ended(reloading)
                    reloading = None
                    if not carry_on:
                        break
                if self._want_reload and reloading is None and not self._stop_requested:
                    # A reload runs beside this loop, so that dumps and stops are served
                    # while it reads; SIGHUPs meanwhile make one more reload afterwards.
                    self._want_reload = False
                    reloading = self.loop.create_task(self.reload())
                    reloading.add_done_callback(lambda _: self._wake.set())
        finally:
            repair.cancel()
            if reloading is not None:  # a stop: reading is abandoned, removals give up
                self.request_stop()
                await asyncio.wait([reloading])
                self._reload_ended(reloading)
            await self.stop()
        return self.exit_status

    def _reload_ended(self, task: asyncio.Task[bool]) -> bool:
        """A finished reload task's verdict: False when the daemon must stop."""
        if task.cancelled():
            return False
        error = task.exception()
        if error is None:
            return task.result()
        log.critical("reload: failed while switching to the new configuration: %s; "
                     "stopping fastcheck (exit status %d)", one_line(error), EXIT_FAILED,
                     exc_info=error)
        self.exit_status = EXIT_FAILED
        return False

    def start(self) -> None:
        """Adopts the kernel table (applies only differences) and starts probing; then
        the collector settles once (collect, freeze the survivors: see gcpolicy)."""
        with gcpolicy.paused():
            self._start()
        done = gcpolicy.settle()
        log.debug("start: collector freed %d objects in %.0f ms", done.freed,
                  done.took_s * 1000)

    def _start(self) -> None:
        mode = "dry run: memory table, nothing is sent to the kernel" if self.options.dry_run \
            else f"backend {self.backend.name}"
        log.info("starting: %s; %d probes; %s", self.options.config_path, len(self.plan), mode)
        if self.config.global_defs.lvs_flush:
            log.info("lvs_flush: flushing the whole IPVS table")
            self.backend.flush()
        # Tracked files are read before anything is added (keepalived check_daemon.c):
        # what they say is the starting state, so its events are not announced.
        now = self.loop.time()
        for probe_id, result in self.track_files.first_readings(self.plan, self.config):
            self.health.on_result(now, probe_id, result)
        observed = restrict(self.backend.read(), self._owned_keys)
        self.health.changed_services()  # a full reconcile follows
        live = self.health.live_table()
        ops = reconcile(live, observed)
        adopted = len(observed)
        if adopted:
            log.info("adopting %d existing IPVS services of this configuration", adopted)
        self.applied = observed
        self._apply(ops, live, "start")
        self._handle_events(self.health.startup_events())
        self._arm_tick()
        self.track_files.follow(self.plan, self.config)
        self.vips.follow(self.config)
        self.engine.start(polled_plan(self.plan))

    # ------------------------------------------------------------------ results

    def _on_result(self, probe_id: int, result: ProbeResult) -> None:
        self._pending.append((probe_id, result))
        if not self._flush_armed:
            self._flush_armed = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_armed = False
        if self._busy or self._stopping:
            return  # picked up when the reload is done
        batch, self._pending = self._pending, []
        if not batch:
            return
        now = self.loop.time()
        probes = self.plan.probes
        observed: list[tuple[int, ProbeResult]] | None = [] if len(self.observers) else None
        for probe_id, result in batch:
            self.counters.results += 1
            known = self.track_files.accept(probe_id) or self.engine.accept(probe_id)
            if not known or probe_id not in probes:
                continue  # a late result of a probe a reload removed
            if observed is not None:
                observed.append((probe_id, result))
            if not result.ok:
                self._log_failure(now, probes[probe_id].owners, result)
            try:
                events = self.health.on_result(now, probe_id, result)
            except Exception:
                log.exception("health layer failed on probe %d", probe_id)
                continue
            self._handle_events(events)
        if observed:
            self.observers.results(self, observed)
        self._sync("health")

    def _log_failure(self, now: float, owners: Iterable[CheckKey], result: ProbeResult) -> None:
        """keepalived's per-failure line, once per check and failure class per window."""
        for owner in owners:
            allowed, suppressed = self._repeats.allow((owner, result.failure), now)
            if allowed:
                log.info("%s", with_suppressed(
                    failure_message(owner.probe.kind, owner, result), suppressed))

    def _sync(self, why: str) -> None:
        """Applies what health changed (only those services) and re-arms the health timer."""
        changed = self.health.changed_services()
        if self._removing is not None and changed:
            held = {key for key in changed if key in self._removing or key not in self.applied}
            self._held |= held
            changed -= held
        if changed:
            live = restrict(self.health.live_table(), changed)
            self._apply(reconcile(live, restrict(self.applied, changed)), live, why, changed)
        self._arm_tick()

    def _arm_tick(self) -> None:
        deadline = None if self._stopping else self.health.next_deadline()
        timer = self._tick_timer
        if timer is not None and (deadline is None or deadline != self._tick_at):
            timer.cancel()
            self._tick_timer = timer = None
        if deadline is not None and timer is None:
            self._tick_at = deadline
            self._tick_timer = self.loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._tick_timer = None
        if self._busy or self._stopping:
            return  # the reload re-arms when it is done
        self._handle_events(self.health.on_tick(self.loop.time()))
        self._sync("health")

    def _handle_events(self, events: Iterable[Any]) -> None:
        events = list(events)
        if not events:
            return
        self.observers.events(self, events)
        for event in events:
            self.counters.events += 1
            if isinstance(event, ProbeRescheduled):
                self.engine.reschedule(event.probe_id, event.delay_s)
                continue  # scheduling, not news: neither notified nor logged
            for level, text in event_messages(event):  # keepalived logs, then notifies
                log.log(level, "%s", text)
            if not isinstance(event, RetryRequested):
                self.notifier.on_event(event)
            if isinstance(event, CheckerUp):
                for failure in Failure:  # a new failure after recovery logs at once
                    self._repeats.forget((event.check, failure))

    # ------------------------------------------------------------------ applying

    def _log_op(self, op: Op, why: str) -> None:
        # Health-driven ops repeat what the health events already said (keepalived's
        # "Adding/Removing service ..."): those show with --log-detail only.
        level = DETAIL if why == "health" else logging.INFO
        if not log.isEnabledFor(level):
            return
        for line in op_messages(op, dry_run=self.options.dry_run):
            log.log(level, "%s (%s)", line, why)

    def _log_failures(self, failures: Iterable[OpFailure], why: str) -> int:
        count = 0
        for item in failures:
            count += 1
            log.error("IPVS: %s (%s)", item.error, why)
        self.counters.op_failures += count
        return count

    def _apply(self, ops: list[Op], live: Table, why: str,
               keys: set[ServiceKey] | None = None) -> list[OpFailure]:
        """Applies ops meant to turn `self.applied` into `live` (or, with `keys`, just
        those services of it); keeps the copy honest."""
        if not ops:
            return []
        for op in ops:
            self._log_op(op, why)
        failures = self.backend.apply(ops)
        self.counters.ops_applied += len(ops) - len(failures)
        self.observers.applied(self, ops, failures, why)
        if failures:
            self._log_failures(failures, why)
            self._refresh_applied()
        elif keys is None:
            self.applied = copy_table(live)
        else:
            for key in keys:
                service = live.get(key)
                if service is None:
                    self.applied.pop(key, None)
                else:
                    self.applied[key] = Service(service.settings, dict(service.destinations),
                                                service.local_addresses, service.owner)
        return failures

    def _refresh_applied(self) -> None:
        """After a failure our copy may be wrong: read back what we own."""
        try:
            keys = self._owned_keys | self.applied.keys()
            self.applied = restrict(self.backend.read(), keys)
        except FastcheckError as error:
            log.error("IPVS: reading the table back failed: %s", error)

    async def _repair_loop(self) -> None:
        interval = self.options.repair_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            if not self._busy and self._removing is None and not self._stopping:
                self.repair()

    def repair(self) -> int:
        """Reads the kernel table back and fixes any drift; returns the ops sent."""
        try:
            observed = restrict(self.backend.read(), self._owned_keys | self.applied.keys())
        except FastcheckError as error:
            log.error("drift repair: reading IPVS failed: %s", error)
            return 0
        live = self.health.live_table()
        ops = reconcile(live, observed)
        if ops:
            self.counters.repairs += 1
            self.counters.repaired_ops += len(ops)
            log.warning("drift repair: the kernel table differs from fastcheck's; "
                        "%d operation(s) to repair", len(ops))
            self.applied = observed
            self._apply(ops, live, "repair")
            self.observers.repaired(self, len(ops))
        return len(ops)

    # ------------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """SIGHUP. Returns False when the daemon must stop (removals kept failing)."""
        began = time.monotonic()
        self.last_reload_failure = None
        self.observers.reload_started(self)
        outcome = _ReloadOutcome(carry_on=False, switched=False)
        try:
            outcome = await self._reload()
            if outcome.switched:
                # The previous state's cycles are collected once the reload is over (the
                # table converged, observers told), after what waited for it has run:
                # a full collection holds the loop (~0.3-0.6 s at 40,000 real servers).
                self.loop.call_later(0.001, self._collect_after_reload)
            return outcome.carry_on
        finally:
            self.observers.reload_finished(self, outcome.switched, time.monotonic() - began)

    def _collect_after_reload(self) -> None:
        done = gcpolicy.after_reload()
        log.debug("reload: collector freed %d objects in %.0f ms", done.freed,
                  done.took_s * 1000)

    def read_limits(self) -> ReadLimits:
        """How long and how much memory reading the new file may take."""
        return default_limits(sum(len(vs.real_servers) for vs in self.config.virtual_servers),
                              timeout_s=self.options.reload_timeout_s,
                              memory_bytes=self.options.reload_memory_bytes)

    async def _reload(self) -> _ReloadOutcome:
        """Reads, checks and plans the new file without changing anything; any failure up
        to there keeps the configuration in force untouched (`_refuse`). Only then does it
        switch (`_switch`), where a removal that keeps failing stops the daemon."""
        path = self.options.config_path
        log.info("reloading %s", path)
        task = self.loop.create_task(self._reader(path, self.options.config_id,
                                                  self.read_limits()))
        self._read_task = task
        try:
            result = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._stop_requested or (current is not None and current.cancelling()):
                raise
            log.warning("reload: stopping; abandoned reading %s", path)
            return _ReloadOutcome(carry_on=True, switched=False)
        except Exception as error:  # the reader itself broke: still nothing has changed
            return self._refuse(ReloadFailure("crashed", f"reading failed: {one_line(error)}"),
                                error)
        finally:
            self._read_task = None
        if result.config is None:
            for line in result.errors:
                log.error("%s", line)
            if result.detail:
                log.debug("reload: %s", result.detail.rstrip())
            failure = result.failure or ReadFailure.DIED
            return self._refuse(ReloadFailure(failure.value, result.reason))
        for item in result.warnings:
            log.warning("%s", item)
        before, after = self.config.global_defs.net_namespace, \
            result.config.global_defs.net_namespace
        if after != before:  # keepalived keeps its namespace on reload too, silently
            log.warning("reload: net_namespace %s -> %s does not take effect until a "
                        "restart; probes and IPVS stay in %s", before or "(none)",
                        after or "(none)", before or "the daemon's own namespace")
        with gcpolicy.paused():  # planning builds the next state; collected after
            try:
                step = self._prepare(result.config)
            except Exception as error:
                return self._refuse(ReloadFailure("planning",
                                                  f"planning the new configuration failed: "
                                                  f"{one_line(error)}"), error)
            self._busy = True
            try:
                switched = await self._switch(step)
                return _ReloadOutcome(carry_on=switched, switched=switched)
            finally:
                self._busy = False
                self._flush_pending()

    def _flush_pending(self) -> None:
        """Results that waited while the runtime was busy are judged soon."""
        if self._pending and not self._stopping and not self._flush_armed:
            self._flush_armed = True
            self.loop.call_soon(self._flush)

    def _refuse(self, failure: ReloadFailure,
                error: BaseException | None = None) -> _ReloadOutcome:
        """A reload that changed nothing: the configuration in force runs on."""
        self.counters.reload_failures += 1
        self.last_reload_failure = failure
        if error is not None:
            log.debug("reload: %s", failure.reason, exc_info=error)
        log.error("reload: %s: %s; still running the previous configuration",
                  self.options.config_path, failure.reason)
        return _ReloadOutcome(carry_on=True, switched=False)

    def _prepare(self, new: Config) -> _Prepared:
        """Everything the switch needs, computed before anything changes (pure: the
        health in force, the plan and the applied table are only read)."""
        step = prepare(self.config, new, self.plan)
        health = self._carry(self.health, new, step.plan, step.config_diff)
        now, first = self.loop.time(), self.track_files.first_readings(step.plan, new,
                                                                        self.plan.probes)
        settled = starting_events([e for probe_id, result in first  # new FILE probes
                                   for e in health.on_result(now, probe_id, result)],
                                  step.config_diff.rs_added)
        settled += health.settle()
        health.changed_services()  # a full reconcile follows
        live = health.live_table()
        removals, rest = split_removals(reconcile(live, self.applied))
        return _Prepared(step, health, settled, live, removals, rest)

    async def _switch(self, ready: _Prepared) -> bool:
        step, new, changes = ready.step, ready.step.config, ready.step.plan_diff
        try:
            self.engine.reload(polled_plan(step.plan), new, polled_changes(changes, self.plan))
            self.track_files.follow(step.plan, new)
        except Exception as error:
            log.critical("reload: the probe engine could not take the new configuration: "
                         "%s; stopping fastcheck (exit status %d)", one_line(error),
                         EXIT_FAILED, exc_info=error)
            self.last_reload_failure = ReloadFailure("engine", one_line(error))
            self.exit_status = EXIT_FAILED
            return False
        self.health = ready.health
        self.config, self.plan = new, step.plan
        self.vips.follow(new)
        self._owned_keys = frozenset(ready.live)  # = desired_table(new) keys
        self.counters.reloads += 1
        d = step.config_diff
        log.info("reload: virtual servers +%d -%d ~%d, real servers +%d -%d, probes +%d -%d",
                 len(d.vs_added), len(d.vs_removed), len(d.vs_changed), len(d.rs_added),
                 len(d.rs_removed), len(changes.added), len(changes.removed))

        removals = ready.removals
        for op in removals:
            self._log_op(op, "reload")
        # Results go on being judged and applied to the surviving services meanwhile
        # (retries can take seconds); the rest waits for the removals, as in the patch.
        self._removing = frozenset(op.service for op in removals)
        self._busy = False
        self._flush_pending()
        try:
            outcome = await remove_with_retries(self.backend, removals,
                                                self.options.reload_attempts, _sleep_for, log,
                                                give_up=lambda: self._stop_requested)
        finally:
            self._busy = True
            self._removing = None
        self.counters.ops_applied += len(removals) - len(outcome.failures)
        if removals:
            self.observers.applied(self, removals, outcome.failures, "reload")
        if not outcome.ok:
            self.counters.op_failures += len(outcome.failures)
            self._refresh_applied()
            why = "interrupted by a stop request after" if self._stop_requested \
                else "failed"
            log.critical("reload: removing vanished IPVS entries %s %d attempt(s); "
                         "stopping fastcheck (exit status %d)", why, outcome.attempts,
                         EXIT_RELOAD_FAILED)
            self.last_reload_failure = ReloadFailure("removal", f"removals {why} "
                                                     f"{outcome.attempts} attempt(s)")
            self.exit_status = EXIT_RELOAD_FAILED
            return False
        for op in removals:  # keep our copy in step without a read-back
            _forget(self.applied, op)
        if self._held or (removals and outcome.attempts > 1):
            # health moved on while removals were retried: reconcile everything afresh
            self._held.clear()
            self.health.changed_services()
            live = self.health.live_table()
            self._apply(reconcile(live, self.applied), live, "reload")
        else:
            self._apply(ready.rest, ready.live, "reload")
        # What the reload announces (notify_down of removed servers, quorum of new virtual
        # servers) comes once the table is changed, as keepalived does it.
        self._handle_events(ready.settled)
        self._arm_tick()
        return True

    # ------------------------------------------------------------------ dump

    def write_dump(self) -> None:
        try:
            snapshot = self.health.snapshot()
            stats = self.engine.stats()
            counters = {**self.counters.as_dict(), "probes": len(self.plan),
                        "probes_running": stats.running,
                        "scheduler_missed_runs": stats.missed_runs}
            dump.write_dumps(self.options.data_path, self.options.json_path,
                             self.options.config_path, self.config, self.applied,
                             snapshot, counters)
        except OSError as error:
            log.error("dump: cannot write %s: %s", error.filename, error.strerror)
            return
        log.info("state written to %s and %s", self.options.data_path, self.options.json_path)

    # ------------------------------------------------------------------ status

    async def health_snapshot(self, slice_s: float = 0.005) -> dict[str, Any]:
        """`health.snapshot()` built a virtual server at a time, letting the loop run other
        work every `slice_s`: at 20,000 real servers a snapshot takes ~0.2 s, which would
        otherwise delay that many probe starts (the status endpoint uses this)."""
        health = self.health  # a reload may replace it meanwhile: finish with this one
        parts = getattr(health, "vs_snapshots", None)
        budget = getattr(health, "budget_snapshot", None)
        if parts is None or budget is None:
            return health.snapshot()
        servers = []
        began = time.perf_counter()
        for item in parts():
            servers.append(item)
            if time.perf_counter() - began > slice_s:
                await asyncio.sleep(0)
                began = time.perf_counter()
        return {"virtual_servers": servers, "removal_budget": budget()}

    def status(self, health: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready state of the whole daemon (the status endpoint, `fastcheck status`):
        configuration, counters, engine figures, and every virtual/real server's health
        (`health`: a snapshot made already, e.g. by `health_snapshot()`)."""
        stats = self.engine.stats()
        return {
            "pid": os.getpid(), "config": self.options.config_path,
            "dry_run": self.options.dry_run, "backend": self.backend.name,
            "started_at": self.started_at, "stopping": self._stopping,
            "counters": {**self.counters.as_dict(), "probes": len(self.plan)},
            "engine": {"workers": stats.workers, "probes": stats.probes,
                       "running": stats.running, "started": stats.started,
                       "missed_runs": stats.missed_runs,
                       "lag_p50_s": stats.start_lag.quantile(0.5),
                       "lag_p99_s": stats.start_lag.quantile(0.99),
                       "lag_max_s": stats.start_lag.max,
                       "implementations": stats.implementations,
                       "worker_pids": list(getattr(self.engine, "pids", [])),
                       "worker_restarts": getattr(self.engine, "restarts", 0)},
            "ipvs_services": len(self.applied),
            "ipvs_destinations": sum(len(svc.destinations) for svc in self.applied.values()),
            **(self.health.snapshot() if health is None else health),
        }

    # ------------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Stops probing, then releases fastcheck's services (bounded in time)."""
        if self._stopping:
            return
        self._stopping = True
        self.observers.stopping(self)
        self.engine.close()
        self.track_files.close()
        self.vips.close()
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        self._handle_events(self.health.shutdown(release=self.options.release_on_stop))
        await asyncio.sleep(0)  # let cancelled probe tasks unwind
        flush_mode = self.config.global_defs.lvs_flush_on_stop
        if not self.options.release_on_stop:
            log.info("stopping: leaving the IPVS table as it is (--dont-release-ipvs)")
        elif flush_mode == "all":
            log.info("stopping: lvs_flush_on_stop all: flushing the whole IPVS table")
            try:
                self.backend.flush()
            except FastcheckError as error:
                log.error("IPVS: flush failed: %s", error)
        else:
            self._release()
        await self.notifier.close(self.options.stop_timeout_s)
        await self.observers.close()
        log.info("stopped (exit status %d)", self.exit_status)

    def _release(self) -> None:
        # Only the service deletions are needed: the kernel drops their destinations.
        services = [op for op in reconcile({}, self.applied) if isinstance(op, ServiceOp)]
        log.info("stopping: removing %d IPVS service(s) of this configuration", len(services))
        deadline = self.loop.time() + self.options.stop_timeout_s
        for op in services:
            if self.loop.time() > deadline:
                log.error("stopping: release took longer than %.0f s; %s and later ones left",
                          self.options.stop_timeout_s, op.service)
                break
            self._log_op(op, "stop")
            failures = self.backend.apply([op])
            self._log_failures(failures, "stop")
            if not failures:
                self.applied.pop(op.service, None)


@dataclass(frozen=True, slots=True)
class ReloadFailure:
    """Why the last reload did not take effect: `kind` is a short label (metrics), one of
    the `ReadFailure` values, "planning" (refused: nothing changed), or "engine" /
    "removal" (failed while switching: the daemon stops)."""

    kind: str
    reason: str  # one line


@dataclass(frozen=True, slots=True)
class _Prepared:
    step: ReloadPlan
    health: Health
    settled: list[Any]
    live: Table
    removals: list[Op]
    rest: list[Op]


@dataclass(frozen=True, slots=True)
class _ReloadOutcome:
    carry_on: bool  # False: the daemon must stop
    switched: bool  # the new configuration is in force


def _forget(table: Table, op: Op) -> None:
    service = table.get(op.service)
    if service is None:
        return
    if isinstance(op, DestinationOp):
        service.destinations.pop(op.destination, None)
    elif isinstance(op, LocalAddressOp):
        service.local_addresses = service.local_addresses - {op.address}
    else:
        del table[op.service]
