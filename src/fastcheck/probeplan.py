"""Which probes run: every check of a configuration, deduplicated into unique probes.

Owns: `plan_probes(config, previous)` → `ProbePlan` (pure), the integer probe ids and
their carrying across reloads, each probe's schedule (interval, warmup) and owners, and
`diff_plans(old, new)` → what a reload asks of the scheduler.
Must not: do I/O, read a clock, schedule anything, or interpret results (retry,
rise/fall and quorum belong to health/).

Identical checks are probed once. Checks group by `Check.probe_key` (kind, target,
connect timeout, parameters): when several virtual servers (or groups) point at the same
real server with the same check, one probe runs and its result feeds every owner
(`CheckKey`), including two identical checks on one real server.

Shared-probe schedule. Owners of one probe may disagree on timing; the probe's slots
follow the *fastest* cadence any owner asked for, and each owner keeps its own:
- interval = the minimum `delay_loop_s` among the owners;
- warmup = the minimum `warmup_s` among the owners;
- each owner takes only the runs it wants and counts `retry` and `delay_before_retry_s`
  its own way (health/cadence.py); after each result health/ moves the probe's next run
  to the earliest time an owner wants it when that is not its next slot
  (`ProbeRescheduled` → `Scheduler.reschedule`, earlier or later).

Ids. A probe's id follows its key: `plan_probes(new, previous=old)` gives every probe
whose key survives the id it had, and new keys fresh ids counting up from
`previous.next_id`, so an id is never reused within a daemon's life (a late result of a
removed probe can never be taken for another probe's). Without `previous`, ids are
0, 1, 2 … in configuration order, deterministic for the same configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastcheck.model import CheckKey, Config, ProbeKey, RsKey


@dataclass(frozen=True, slots=True)
class PlannedProbe:
    """One unique probe: what to probe, how often, and whose result it is."""

    id: int
    key: ProbeKey
    interval_s: float
    warmup_s: float
    owners: tuple[CheckKey, ...]

    @property
    def host(self) -> str:
        """The address a per-target concurrency limit counts against."""
        return self.key.target.address


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """Every unique probe of one configuration. Treat the mappings as read-only."""

    probes: Mapping[int, PlannedProbe]  # id → probe, in id order of first appearance
    ids: Mapping[ProbeKey, int]  # probe key → id
    next_id: int  # the first id the next plan may hand out

    def __len__(self) -> int:
        return len(self.probes)

    def probe_of(self, check: CheckKey) -> PlannedProbe:
        """The probe whose results feed `check` (KeyError if it is not in this plan)."""
        return self.probes[self.ids[check.probe]]

    @property
    def check_count(self) -> int:
        return sum(len(probe.owners) for probe in self.probes.values())


@dataclass(frozen=True, slots=True)
class PlanDiff:
    """What a reload changes for the scheduler; probes not named here run on untouched."""

    added: tuple[PlannedProbe, ...]
    removed: tuple[int, ...]
    retimed: tuple[PlannedProbe, ...]  # kept id, different interval
    kept: int  # number of probes carried over (retimed ones included)


def plan_probes(config: Config, previous: ProbePlan | None = None) -> ProbePlan:
    """Groups every check of `config` into unique probes (see the module docstring)."""
    return _plan(config, previous)


def _plan(config: Config, previous: ProbePlan | None) -> ProbePlan:
    # key → [min delay_loop, min warmup, owners]; dicts keep configuration order.
    groups: dict[ProbeKey, list] = {}
    for vs in config.virtual_servers:
        vs_key = vs.key
        for rs in vs.real_servers:
            for check_key, check in rs.check_keys(RsKey(vs_key, rs.address, rs.port)):
                entry = groups.get(check_key.probe)
                if entry is None:
                    groups[check_key.probe] = [check.delay_loop_s, check.warmup_s, [check_key]]
                    continue
                if check.delay_loop_s < entry[0]:
                    entry[0] = check.delay_loop_s
                if check.warmup_s < entry[1]:
                    entry[1] = check.warmup_s
                entry[2].append(check_key)

    old_ids: Mapping[ProbeKey, int] = previous.ids if previous is not None else {}
    next_id = previous.next_id if previous is not None else 0
    probes: dict[int, PlannedProbe] = {}
    ids: dict[ProbeKey, int] = {}
    for key, (interval, warmup, owners) in groups.items():
        probe_id = old_ids.get(key)
        if probe_id is None:
            probe_id = next_id
            next_id += 1
        ids[key] = probe_id
        probes[probe_id] = PlannedProbe(probe_id, key, interval, warmup, tuple(owners))
    return ProbePlan(probes, ids, next_id)


def diff_plans(old: ProbePlan, new: ProbePlan) -> PlanDiff:
    """Probes to add, remove and retime when `new` (planned with previous=old) replaces `old`."""
    old_probes = old.probes
    added: list[PlannedProbe] = []
    retimed: list[PlannedProbe] = []
    for probe_id, probe in new.probes.items():
        before = old_probes.get(probe_id)
        if before is None:
            added.append(probe)
        elif before.interval_s != probe.interval_s:
            retimed.append(probe)
    new_probes = new.probes
    removed = tuple(probe_id for probe_id in old_probes if probe_id not in new_probes)
    return PlanDiff(tuple(added), removed, tuple(retimed), len(new_probes) - len(added))
