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


def _split(old: dict, new: dict) -> tuple[tuple, tuple, tuple]:
    """(added, removed, kept) keys, each in configuration order; one lookup per key."""
    added, kept = [], []
    for key in new:
        (kept if key in old else added).append(key)
    removed = tuple(key for key in old if key not in new)
    return tuple(added), removed, tuple(kept)


def diff(old: Config, new: Config, *, with_ops: bool = True) -> ConfigDiff:
    """`with_ops=False` skips the IPVS operations (the daemon reconciles live tables)."""
    return _diff(old, new, with_ops)


def _diff(old: Config, new: Config, with_ops: bool) -> ConfigDiff:
    old_vs, old_rs, old_checks = _index(old)
    new_vs, new_rs, new_checks = _index(new)
    vs_added, vs_removed, vs_both = _split(old_vs, new_vs)
    changed = tuple(key for key in vs_both if old_vs[key] != new_vs[key])
    unchanged = tuple(key for key in vs_both if old_vs[key] == new_vs[key])
    rs_added, rs_removed, rs_kept = _split(old_rs, new_rs)
    checks_added, checks_removed, checks_kept = _split(old_checks, new_checks)
    ops = reconcile(desired_table(new), desired_table(old)) if with_ops else []
    return ConfigDiff(
        vs_added=vs_added, vs_removed=vs_removed, vs_changed=changed, vs_kept=unchanged,
        rs_added=rs_added, rs_removed=rs_removed, rs_kept=rs_kept,
        checks_added=checks_added, checks_removed=checks_removed, checks_kept=checks_kept,
        ops=tuple(ops),
    )
