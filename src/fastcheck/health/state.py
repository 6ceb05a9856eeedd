"""HealthState: every checker, real server and virtual server's health, and the live table.

Owns: the sans-IO health decision for a whole configuration — per-check retry machines
(checker.py), per-real-server aggregation (up iff every checker is up; no checks =
always up), effective weights (MISC absolute, FILE offset, clamped), per-VS quorum with
hysteresis (quorum.py), sorry servers, the removal budget (budget.py), what start-up
and a reload announce (`settle`: keepalived's init_services order) and a stop
(`shutdown`: omega), ha_suspend, and `live_table()`: the IPVS table
the current health asks for, kept up to date incrementally.
Must not: do I/O, read a clock, import asyncio/socket, run scripts or talk to the
scheduler — it emits events (events.py) and the daemon acts on them.

keepalived 2.2.7 references (check/ipwrapper.c): `update_svr_checker_state` and
`set_checker_state` (a real server is alive when its count of failed checkers is 0),
`update_svr_wgt` (weight edits apply only when the server is in the pool and no sorry
server replaces it), `update_quorum_state`/`perform_quorum_state` (on quorum loss with a
sorry server, the alive servers leave the pool and the sorry server enters; on gain the
reverse; without a sorry server only the notifiers run), `weigh_live_realservers`.
Dynamic weights (check/check_misc.c, check_file.c): each checker holds a weight delta;
effective = configured + Σ deltas, where MISC misc_dynamic gives an absolute weight
(delta = weight − configured) and FILE an offset. A MISC success without a weight (exit
0) means the configured weight; a failure drops the delta only once the check is down —
retries keep it (keepalived check_misc.c `cur_weight`). The kernel gets
`real_weight(effective)`. Under a sorry server, inhibit_on_failure servers stay in the
table at weight 0 (ipvswrapper.c `ipvs_cmd` turns their removal into weight 0).

Incremental table: the table is built once from `desired_table` (so services, settings,
FULLNAT local addresses and canonical destination settings are identical to it) and
then edited in place per real-server change; `changed_services()` says which services
were touched since the last call. One result costs O(services of that VS); only a quorum
flip rewrites one VS. ha_suspend: fastcheck owns no VIPs, so the VIP counts as present
until `set_vip_present(vs, False)`; while absent, results for that VS are ignored
(keepalived suspends its checkers), and state resumes when the VIP is back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

from fastcheck.health import cadence
from fastcheck.health import events as ev
from fastcheck.health.budget import RemovalBudget
from fastcheck.health.checker import UP_STATES, Checker, CheckState, HealthOptions, Step
from fastcheck.health.quorum import initial_quorum, next_quorum, real_weight, threshold
from fastcheck.ipvs.table import (
    DestinationKey,
    DestinationSettings,
    ServiceKey,
    Table,
    desired_table,
    service_keys,
)
from fastcheck.model import (
    CheckKey,
    CheckKind,
    Config,
    Forwarding,
    RealServer,
    RsKey,
    TunnelChecksum,
    TunnelType,
    VirtualServer,
    VsKey,
)
from fastcheck.probeplan import ProbePlan
from fastcheck.probes.result import ProbeResult


def _settings(forwarding: Forwarding, weight: int) -> DestinationSettings:
    """Canonical destination settings, as `desired_table` writes them."""
    return DestinationSettings(
        weight=weight, method=forwarding.method,
        tunnel_type=None if forwarding.tunnel_type is TunnelType.IPIP
        else forwarding.tunnel_type,
        tunnel_port=forwarding.tunnel_port,
        tunnel_checksum=None if forwarding.tunnel_checksum is TunnelChecksum.NOCSUM
        else forwarding.tunnel_checksum)


class _Vs:
    __slots__ = ("budget", "cfg", "key", "live_sum", "quorum_up", "servers", "services",
                 "sorry_key", "sorry_rs", "sorry_settings", "vip_present")

    def __init__(self, cfg: VirtualServer, services: tuple[ServiceKey, ...]) -> None:
        self.cfg = cfg
        self.key = cfg.key
        self.services = services
        self.servers: list[_Rs] = []
        self.live_sum = 0
        self.quorum_up = True
        self.vip_present = True
        self.budget: RemovalBudget | None = None
        sorry = cfg.sorry_server
        self.sorry_key = DestinationKey(sorry.address, sorry.port) if sorry else None
        self.sorry_rs = RsKey(cfg.key, sorry.address, sorry.port) if sorry else None
        self.sorry_settings = _settings(sorry.forwarding, 1) if sorry else None

    @property
    def sorry_active(self) -> bool:
        return self.sorry_key is not None and not self.quorum_up


class _Rs:
    __slots__ = ("base", "cfg", "checkers", "contrib", "dest", "failed", "held", "key",
                 "put", "ramp_start", "table_weight", "up", "vs", "weight")

    def __init__(self, key: RsKey, cfg: RealServer, vs: _Vs,
                 base: DestinationSettings) -> None:
        self.key, self.cfg, self.vs, self.base = key, cfg, vs, base
        self.dest = DestinationKey(cfg.address, cfg.port)
        self.checkers: list[Checker] = []
        self.failed = 0
        self.up = True
        self.held = False  # down, but kept in the table by the removal budget
        self.weight = real_weight(cfg.weight)  # effective, clamped
        self.table_weight = self.weight  # effective, slow-start ramp applied
        self.contrib = 0  # what this server adds to its VS's live weight sum
        self.ramp_start: float | None = None
        self.put: int | None = -1  # weight last written to the table (None = absent)


class HealthState:
    """The health of one configuration. Feed results in, take events and the table out."""

    def __init__(self, config: Config, plan: ProbePlan,
                 options: HealthOptions | None = None) -> None:
        self.config = config
        self.plan = plan
        self.options = options or HealthOptions()
        self._table: Table = desired_table(config)
        self._changed: set[ServiceKey] = set()
        self._vs: dict[VsKey, _Vs] = {}
        self._rs: dict[RsKey, _Rs] = {}
        self._checkers: dict[CheckKey, Checker] = {}
        self._by_probe: dict[int, list[tuple[Checker, _Rs]]] = {}
        self._clocks: dict[int, tuple[float, float, bool, bool]] = {}  # see _clock_of
        self._ramping: dict[RsKey, _Rs] = {}
        ids = plan.ids
        for vs_cfg in config.virtual_servers:
            vs = _Vs(vs_cfg, tuple(service_keys(vs_cfg, config)))
            self._vs[vs.key] = vs
            first = self._table[vs.services[0]].destinations if vs.services else {}
            for rs_cfg in vs_cfg.real_servers:
                rs_key = RsKey(vs.key, rs_cfg.address, rs_cfg.port)
                dest = DestinationKey(rs_cfg.address, rs_cfg.port)
                base = first.get(dest) or _settings(rs_cfg.forwarding, rs_cfg.weight)
                rs = _Rs(rs_key, rs_cfg, vs, base)
                vs.servers.append(rs)
                self._rs[rs_key] = rs
                for check_key, check in rs_cfg.check_keys(rs_key):
                    probe_id = ids.get(check_key.probe, -1)
                    checker = Checker(check_key, check, probe_id)
                    checker.decisive = True  # a fresh start: one failure is enough
                    rs.checkers.append(checker)
                    self._checkers[check_key] = checker
                    self._by_probe.setdefault(probe_id, []).append((checker, rs))
        opts = self.options
        # The removal budget(s): one over every real server, or one per VS (None = global).
        self.budget = RemovalBudget(opts.budget_share, opts.budget_window_s, len(self._rs))
        self.budgets: dict[VsKey | None, RemovalBudget] = {}
        for vs in self._vs.values():
            if opts.budget_per_vs:
                vs.budget = self.budgets[vs.key] = RemovalBudget(
                    opts.budget_share, opts.budget_window_s, len(vs.servers))
            else:
                vs.budget = self.budget
        if not opts.budget_per_vs:
            self.budgets[None] = self.budget
        self._tripped: dict[RemovalBudget, VsKey | None] = {}
        # What `settle()` announces next: the start state of these virtual and real
        # servers (all of them on a fresh start; what a reload adds), and events a
        # reload computed (removals, revived servers) — see reload.py.
        self._fresh_vs: set[VsKey] = set(self._vs)
        self._fresh_rs: set[RsKey] = set(self._rs)
        self._sorry_new: set[VsKey] = set()  # kept VS given a new sorry server
        self._pending: list[ev.Event] = []
        self._derive_all(initial=True)

    # ------------------------------------------------------------------ building

    def _derive_all(self, initial: bool) -> None:
        """Recompute every derived field and rewrite the table (start-up, reload)."""
        for vs in self._vs.values():
            vs.live_sum = 0
            for rs in vs.servers:
                rs.failed = sum(1 for c in rs.checkers if not c.up)
                rs.up = rs.failed == 0
                if rs.up:
                    if rs.held and rs.vs.budget is not None:
                        rs.vs.budget.forget(rs.key)
                    rs.held = False
                rs.weight = self._effective(rs)
                rs.table_weight = self._ramped(rs, rs.ramp_start) if rs.ramp_start is not None \
                    else rs.weight
                rs.contrib = rs.weight if rs.up or rs.held else 0
                vs.live_sum += rs.contrib
            if initial:
                vs.quorum_up = initial_quorum(vs.live_sum, vs.cfg.quorum, vs.cfg.hysteresis)
            self._sync_vs(vs)

    def _effective(self, rs: _Rs) -> int:
        configured = rs.cfg.weight
        weight = configured
        for checker in rs.checkers:
            weight += checker.offset
            if checker.weight is not None:
                weight += checker.weight - configured
        return real_weight(weight)

    def _ramped(self, rs: _Rs, now: float) -> int:
        """Slow start: the step reached at `now` (1 … steps) of the ramp to rs.weight."""
        opts = self.options
        start = rs.ramp_start if rs.ramp_start is not None else now
        step_s = opts.slow_start_s / opts.slow_start_steps
        done = min(opts.slow_start_steps, int((now - start) / step_s) + 1)
        if done >= opts.slow_start_steps:
            return rs.weight
        return max(1, math.ceil(rs.weight * done / opts.slow_start_steps)) if rs.weight else 0

    # ------------------------------------------------------------------ the table

    def _dest_weight(self, rs: _Rs) -> int | None:
        in_pool = rs.up or rs.held
        if rs.vs.sorry_active:  # perform_quorum_state: the alive servers leave the pool,
            # and ipvs_cmd turns the removal of an inhibited one into weight 0
            return 0 if rs.cfg.inhibit_on_failure else None
        if in_pool:
            return rs.table_weight
        return 0 if rs.cfg.inhibit_on_failure else None

    def _put(self, rs: _Rs) -> None:
        weight = self._dest_weight(rs)
        if weight == rs.put:
            return
        rs.put = weight
        settings = None if weight is None else (
            rs.base if rs.base.weight == weight else replace(rs.base, weight=weight))
        table, changed = self._table, self._changed
        for key in rs.vs.services:
            dests = table[key].destinations
            if settings is None:
                dests.pop(rs.dest, None)
            else:
                dests[rs.dest] = settings
            changed.add(key)

    def _sync_vs(self, vs: _Vs) -> None:
        for rs in vs.servers:
            self._put(rs)
        if vs.sorry_key is None or vs.sorry_settings is None:
            return
        inhibit = vs.cfg.sorry_server.inhibit if vs.cfg.sorry_server else False
        weight = 1 if vs.sorry_active else (0 if inhibit else None)
        for key in vs.services:
            dests = self._table[key].destinations
            if weight is None:
                dests.pop(vs.sorry_key, None)
            else:
                dests[vs.sorry_key] = replace(vs.sorry_settings, weight=weight)
            self._changed.add(key)

    def live_table(self) -> Table:
        """The IPVS table current health asks for. A live view: read it, never edit it."""
        return self._table

    def changed_services(self) -> set[ServiceKey]:
        """Services whose destinations changed since the last call (then forgotten)."""
        changed, self._changed = self._changed, set()
        return changed

    # ------------------------------------------------------------------ results

    def on_result(self, now: float, probe_id: int, result: ProbeResult) -> list[ev.Event]:
        """Apply one probe result to every check that owns the probe and wants this run
        (each owner keeps its own cadence: cadence.py), then say when the probe must run
        next if that is not its next slot (`ProbeRescheduled`)."""
        owners = self._by_probe.get(probe_id)
        events: list[ev.Event] = []
        if not owners:
            return events
        rise = self.options.rise
        started = now - result.latency_s
        clock = self._clocks.get(probe_id)
        if clock is None:
            clock = self._clocks[probe_id] = self._clock_of(probe_id, owners)
        interval, tolerance, scheduled, shared = clock
        want = math.inf
        for checker, rs in owners:
            if rs.vs.cfg.ha_suspend and not rs.vs.vip_present \
                    and checker.check.kind is not CheckKind.FILE:
                continue  # suspended; track files act even then (check_file.c)
            timing = checker.cadence
            if shared and started < timing.due - tolerance:
                want = min(want, timing.due)
                continue  # not this owner's run: keepalived would not have checked yet
            check = checker.check
            state = checker.state
            if state is CheckState.UP and result.ok:  # the steady state, kept cheap
                self._step(now, probe_id, checker, rs, True, result, rise, events)
                if checker.state is CheckState.UP:
                    timing.due = due = started + check.delay_loop_s
                    if due < want:
                        want = due
                    continue
                cadence.rearm(check, timing, was_up=True, first=False, up=checker.up,
                              retrying=False, ok=True, result=result, started=started,
                              now=now)
                want = min(want, timing.due)
                continue
            was_up, first = state in UP_STATES, not checker.has_run
            ok = cadence.verdict(check, timing, was_up, result)
            if ok is None:  # an HTTP url pass goes on: nothing to decide yet
                cadence.rearm(check, timing, was_up=False, first=False, up=False,
                              retrying=False, ok=None, result=result, started=started,
                              now=now)
                want = min(want, timing.due)
                continue
            step = self._step(now, probe_id, checker, rs, ok, result, rise, events)
            cadence.rearm(check, timing, was_up=was_up, first=first, up=checker.up,
                          retrying=step is Step.RETRY, ok=ok, result=result,
                          started=started, now=now)
            want = min(want, timing.due)
        if scheduled and want < math.inf:
            natural = started + interval  # about when the next slot comes
            if not natural - tolerance <= want <= natural:
                events.append(ev.ProbeRescheduled(probe_id, max(0.0, want - now)))
        if self._tripped:
            self._recover(now, events)
        return events

    def _clock_of(self, probe_id: int,
                  owners: list[tuple[Checker, _Rs]]) -> tuple[float, float, bool, bool]:
        """(interval, tolerance, scheduled, shared) of a probe, for `on_result`: whether
        the health layer moves it, and whether its owners take only the runs they want."""
        planned = self.plan.probes.get(probe_id)
        interval = planned.interval_s if planned is not None else math.inf
        scheduled = owners[0][0].check.kind not in cadence.WATCHED
        shared = scheduled and len(owners) > 1  # a lone owner asked for every run it gets
        return interval, cadence.tolerance_s(interval), scheduled, shared

    def _step(self, now: float, probe_id: int, checker: Checker, rs: _Rs, ok: bool,
              result: ProbeResult, rise: int, events: list[ev.Event]) -> Step:
        """One owner takes one result (`ok`: its verdict, see cadence.verdict)."""
        if result.ok:
            # MISC_CHECK: an exit status of 0 (no weight) means the configured weight
            checker.weight = result.weight
            if result.weight_offset is not None:
                checker.offset = result.weight_offset
        else:
            checker.offset = 0
        step = checker.step(ok, None if ok else result.failure, rise)
        if not result.ok and not checker.up:
            checker.weight = None  # keepalived keeps it while retries remain
        if step is Step.RETRY:
            events.append(ev.RetryRequested(probe_id, checker.key,
                                            checker.check.delay_before_retry_s,
                                            checker.failures))
        elif step is Step.WENT_UP:
            rs.failed -= 1
            events.append(ev.CheckerUp(checker.key))
        elif step is Step.WENT_DOWN:
            rs.failed += 1
            events.append(ev.CheckerDown(checker.key, checker.failures))
        elif step is Step.CONFIRMED:
            self._confirm(checker, rs, ok, events)
        self._update_rs(now, rs, events)
        return step

    def _confirm(self, checker: Checker, rs: _Rs, ok: bool, events: list[ev.Event]) -> None:
        """A check's first result left it as it started (alpha, or a failure): keepalived
        logs the check's line and runs the real server's notifier for its current state."""
        events.append(ev.CheckerUp(checker.key) if ok
                      else ev.CheckerDown(checker.key, checker.failures))
        inhibit = rs.cfg.inhibit_on_failure
        if rs.up:
            events.append(ev.RealServerUp(rs.key, rs.weight, rs.cfg.notify_up,
                                          inhibit=inhibit, cause=ev.Cause.START))
        else:
            events.append(ev.RealServerDown(rs.key, rs.cfg.notify_down, rs.held,
                                            inhibit=inhibit, cause=ev.Cause.START))

    def _update_rs(self, now: float, rs: _Rs, events: list[ev.Event]) -> None:
        want_up = rs.failed == 0
        weight = self._effective(rs)
        if weight != rs.weight:
            if want_up or not rs.up:  # a check going down drops its weight silently
                events.append(ev.WeightChanged(rs.key, rs.weight, weight, rs.up))
            rs.weight = weight
        if want_up != rs.up:
            rs.up = want_up
            budget = rs.vs.budget or self.budget
            if want_up:
                was_held = budget.came_back(rs.key)
                rs.held = False
                if self.options.slow_start_s > 0 and not was_held:
                    rs.ramp_start = now
                    self._ramping[rs.key] = rs
                events.append(ev.RealServerUp(rs.key, weight, rs.cfg.notify_up,
                                              inhibit=rs.cfg.inhibit_on_failure))
            else:
                removed, tripped = budget.request_removal(now, rs.key)
                rs.held = not removed
                rs.ramp_start = None
                self._ramping.pop(rs.key, None)
                if tripped:
                    scope = None if budget is self.budget else rs.vs.key
                    self._tripped[budget] = scope
                    events.append(ev.RemovalBudgetTripped(
                        len(budget.recent), budget.limit, budget.trips, scope))
                events.append(ev.RealServerDown(rs.key, rs.cfg.notify_down, rs.held,
                                                inhibit=rs.cfg.inhibit_on_failure))
        rs.table_weight = self._ramped(rs, now) if rs.ramp_start is not None else rs.weight
        self._refresh(rs, events)

    def _refresh(self, rs: _Rs, events: list[ev.Event]) -> None:
        vs = rs.vs
        contrib = rs.weight if rs.up or rs.held else 0
        if contrib != rs.contrib:
            vs.live_sum += contrib - rs.contrib
            rs.contrib = contrib
        self._put(rs)
        self._check_quorum(vs, events)

    def _check_quorum(self, vs: _Vs, events: list[ev.Event],
                      cause: ev.Cause = ev.Cause.CHECK) -> None:
        cfg = vs.cfg
        up = next_quorum(vs.quorum_up, vs.live_sum, cfg.quorum, cfg.hysteresis)
        if up is vs.quorum_up:
            return
        limit = threshold(vs.quorum_up, cfg.quorum, cfg.hysteresis)
        vs.quorum_up = up
        self._quorum_events(vs, limit, cause, events, swap=True)
        if vs.sorry_key is not None:
            self._sync_vs(vs)

    def _quorum_events(self, vs: _Vs, limit: int, cause: ev.Cause, events: list[ev.Event],
                       swap: bool) -> None:
        """keepalived `update_quorum_state`: the quorum event of vs's current state and,
        with a sorry server, its swap (`swap`: it was in the table, or is going in)."""
        cfg = vs.cfg
        if vs.quorum_up:
            events.append(ev.QuorumGained(vs.key, vs.live_sum, limit, cfg.quorum_up,
                                          quorum=cfg.quorum, hysteresis=cfg.hysteresis,
                                          cause=cause))
        else:
            events.append(ev.QuorumLost(vs.key, vs.live_sum, limit, cfg.quorum_down,
                                        quorum=cfg.quorum, hysteresis=cfg.hysteresis,
                                        cause=cause))
        if vs.sorry_rs is not None and (swap or not vs.quorum_up):
            inhibit = cfg.sorry_server.inhibit if cfg.sorry_server else False
            events.append(ev.SorryServerOut(vs.key, vs.sorry_rs, inhibit) if vs.quorum_up
                          else ev.SorryServerIn(vs.key, vs.sorry_rs, inhibit))

    def _recover(self, now: float, events: list[ev.Event]) -> None:
        for budget, scope in list(self._tripped.items()):
            released = budget.try_recover(now)
            if released is None:
                continue
            del self._tripped[budget]
            for key in released:
                rs = self._rs[key]  # type: ignore[index]  # budget keys are RsKeys
                rs.held = False
                self._refresh(rs, events)
            events.append(ev.RemovalBudgetRecovered(len(released), scope))

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        """When `on_tick` has work: a slow-start step or the removal budget's window."""
        deadlines = []
        for budget in self._tripped:
            deadline = budget.next_deadline()
            if deadline is not None:
                deadlines.append(deadline)
        opts = self.options
        if self._ramping:
            step_s = opts.slow_start_s / opts.slow_start_steps
            for rs in self._ramping.values():
                start = rs.ramp_start or 0.0
                done = int((rs.table_weight * opts.slow_start_steps) // max(rs.weight, 1))
                deadlines.append(start + max(done, 1) * step_s)
        return min(deadlines) if deadlines else None

    def on_tick(self, now: float) -> list[ev.Event]:
        events: list[ev.Event] = []
        for rs in list(self._ramping.values()):
            rs.table_weight = self._ramped(rs, now)
            if rs.table_weight == rs.weight:
                rs.ramp_start = None
                del self._ramping[rs.key]
            self._put(rs)
        if self._tripped:
            self._recover(now, events)
        return events

    # ------------------------------------------------------------------ VIPs, shutdown

    def set_vip_present(self, vs_key: VsKey, present: bool) -> list[ev.Event]:
        """ha_suspend: tell whether the VS's VIP is on this host (default: present)."""
        vs = self._vs.get(vs_key)
        if vs is not None:
            vs.vip_present = present
        return []

    def shutdown(self, release: bool = True) -> list[ev.Event]:
        """What a stop announces (keepalived ipwrapper.c `clear_services`): for each virtual
        server with omega, notify_down of every live real server still in the table, then
        quorum_down whatever its quorum state (`update_vs_notifies(vs, stopping=true)`
        always notifies). With `lvs_flush_on_stop` the table is flushed and only the
        quorum_down notifiers run. With `release` False (--dont-release-ipvs) keepalived
        skips `clear_services` and fastcheck announces nothing either."""
        events: list[ev.Event] = []
        if not release:
            return events
        flushed = self.config.global_defs.lvs_flush_on_stop != "off"
        for vs in self._vs.values():
            if not vs.cfg.omega:
                continue
            cfg = vs.cfg
            if not flushed:
                for rs in vs.servers:
                    if rs.up and rs.put is not None:
                        events.append(ev.RealServerDown(rs.key, rs.cfg.notify_down,
                                                        inhibit=rs.cfg.inhibit_on_failure,
                                                        cause=ev.Cause.STOP))
            weight_sum = vs.live_sum if flushed else 0
            events.append(ev.QuorumLost(vs.key, weight_sum, cfg.quorum - cfg.hysteresis,
                                        cfg.quorum_down, quorum=cfg.quorum,
                                        hysteresis=cfg.hysteresis, cause=ev.Cause.STOP))
        return events

    # ------------------------------------------------------------------ start, reload, status

    def startup_events(self) -> list[ev.Event]:
        """What start-up announces (keepalived `init_services`): see `settle()`."""
        return self.settle()

    def settle(self) -> list[ev.Event]:
        """What start-up or a reload announces, in keepalived's order (ipwrapper.c
        `clear_diff_services`, then `init_service_vs` for each virtual server):

        - after a reload, the events it computed (`carry_over`): notify_down of live real
          servers it removed, quorum_down of virtual servers it removed, notify_up of
          failed real servers whose failed checks it replaced;
        - with `rs_init_notifies`, notify_up of each new live real server;
        - a new virtual server starts with quorum down: "Gained quorum" and quorum_up
          once its real servers are in, or, if they are not enough and it has a sorry
          server, "Starting with quorum down" and quorum_down (`update_quorum_state`
          init=true; without a sorry server it says nothing);
        - a kept virtual server: the quorum flip the new configuration implies; one
          without quorum that a reload gives a new sorry server "starts with quorum
          down" again: the new sorry server goes in and quorum_down runs.
        """
        events, self._pending = self._pending, []
        init_notifies = self.config.global_defs.rs_init_notifies
        for vs in self._vs.values():
            if init_notifies and self._fresh_rs:
                for rs in vs.servers:
                    if rs.key in self._fresh_rs and rs.up:
                        events.append(ev.RealServerUp(rs.key, rs.weight, rs.cfg.notify_up,
                                                      inhibit=rs.cfg.inhibit_on_failure,
                                                      cause=ev.Cause.START))
            if vs.key not in self._fresh_vs:
                self._check_quorum(vs, events, ev.Cause.START)
                if vs.key in self._sorry_new and not vs.quorum_up:  # the new one goes in
                    cfg = vs.cfg
                    self._quorum_events(vs, threshold(False, cfg.quorum, cfg.hysteresis),
                                        ev.Cause.START, events, swap=True)
            elif vs.quorum_up or vs.sorry_rs is not None:
                cfg = vs.cfg
                self._quorum_events(vs, threshold(False, cfg.quorum, cfg.hysteresis),
                                    ev.Cause.START, events, swap=False)
        self._fresh_vs.clear()
        self._fresh_rs.clear()
        self._sorry_new.clear()
        return events

    def real_server_up(self, rs_key: RsKey) -> bool:
        return self._rs[rs_key].up

    def quorum_up(self, vs_key: VsKey) -> bool:
        return self._vs[vs_key].quorum_up

    def checker(self, key: CheckKey) -> Checker:
        return self._checkers[key]

    def snapshot(self) -> dict[str, object]:
        """Every VS, RS and check's state as JSON-able data (SIGUSR1, status)."""
        return {"virtual_servers": list(self.vs_snapshots()),
                "removal_budget": self.budget_snapshot()}

    def vs_snapshots(self) -> Iterator[dict[str, object]]:
        """`snapshot()`'s virtual servers one at a time, so a caller on the event loop can
        let other work in between at tens of thousands of real servers."""
        for vs in self._vs.values():
            item: dict[str, object] = {
                "vs": str(vs.key), "quorum": vs.cfg.quorum, "hysteresis": vs.cfg.hysteresis,
                "quorum_up": vs.quorum_up, "weight_sum": vs.live_sum,
                "sorry_server_active": vs.sorry_active, "vip_present": vs.vip_present,
                "real_servers": [{
                    "rs": str(rs.key), "up": rs.up, "held_by_budget": rs.held,
                    "weight": rs.cfg.weight, "effective_weight": rs.weight,
                    "table_weight": rs.put, "slow_start": rs.ramp_start is not None,
                    "checks": [c.snapshot() for c in rs.checkers],
                } for rs in vs.servers]}
            if self.options.budget_per_vs and vs.budget is not None:
                item["removal_budget"] = vs.budget.snapshot()
            yield item

    def budget_snapshot(self) -> dict[str, object]:
        if self.options.budget_per_vs:
            return {"enabled": self.budget.enabled, "per_vs": True,
                    "tripped": len(self._tripped),
                    "trips": sum(b.trips for b in self.budgets.values()),
                    "held": sum(len(b.held) for b in self.budgets.values())}
        return self.budget.snapshot()

