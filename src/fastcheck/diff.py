"""diff(old, new): what a reload from one configuration to the next changes.

Owns: matching virtual servers, real servers and checks across two configurations by
their identity keys, deciding which health state survives (a real server that stays
keeps its up/down state and weight; a check whose probe is unchanged keeps its
counters) and the IPVS operations the reload implies.
Must not: apply anything, or read the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastcheck.ipvs.ops import Op
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import desired_table
from fastcheck.model import CheckKey, Config, RealServer, RsKey, VirtualServer, VsKey


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    vs_added: tuple[VsKey, ...]
    vs_removed: tuple[VsKey, ...]
    vs_changed: tuple[VsKey, ...]  # same identity, different service settings or servers
    vs_kept: tuple[VsKey, ...]
    rs_added: tuple[RsKey, ...]
    rs_removed: tuple[RsKey, ...]
    rs_kept: tuple[RsKey, ...]  # health state (up/down, weight) carries over
    checks_added: tuple[CheckKey, ...]
    checks_removed: tuple[CheckKey, ...]
    checks_kept: tuple[CheckKey, ...]  # retry counters and state carry over
    ops: tuple[Op, ...] = field(default=())

    @property
    def unchanged(self) -> bool:
        return not (self.vs_added or self.vs_removed or self.vs_changed or self.rs_added
                    or self.rs_removed or self.checks_added or self.checks_removed or self.ops)


def _index(config: Config) -> tuple[dict[VsKey, VirtualServer], dict[RsKey, RealServer],
                                    dict[CheckKey, None]]:
    servers: dict[VsKey, VirtualServer] = {}
    reals: dict[RsKey, RealServer] = {}
    checks: dict[CheckKey, None] = {}
    for vs in config.virtual_servers:
        vs_key = vs.key
        servers[vs_key] = vs
        for rs in vs.real_servers:
            rs_key = RsKey(vs_key, rs.address, rs.port)
            reals[rs_key] = rs
            checks.update((key, None) for key, _ in rs.check_keys(rs_key))
    return servers, reals, checks


def _ordered(keys: set, reference: dict) -> tuple:
    """Keeps configuration order, so output is stable."""
    return tuple(k for k in reference if k in keys)


def diff(old: Config, new: Config) -> ConfigDiff:
    old_vs, old_rs, old_checks = _index(old)
    new_vs, new_rs, new_checks = _index(new)
    kept_vs = old_vs.keys() & new_vs.keys()
    changed = {key for key in kept_vs if old_vs[key] != new_vs[key]}
    ops = reconcile(desired_table(new), desired_table(old))
    return ConfigDiff(
        vs_added=_ordered(new_vs.keys() - old_vs.keys(), new_vs),
        vs_removed=_ordered(old_vs.keys() - new_vs.keys(), old_vs),
        vs_changed=_ordered(changed, new_vs),
        vs_kept=_ordered(kept_vs - changed, new_vs),
        rs_added=_ordered(new_rs.keys() - old_rs.keys(), new_rs),
        rs_removed=_ordered(old_rs.keys() - new_rs.keys(), old_rs),
        rs_kept=_ordered(old_rs.keys() & new_rs.keys(), new_rs),
        checks_added=_ordered(new_checks.keys() - old_checks.keys(), new_checks),
        checks_removed=_ordered(old_checks.keys() - new_checks.keys(), old_checks),
        checks_kept=_ordered(old_checks.keys() & new_checks.keys(), new_checks),
        ops=tuple(ops),
    )
