"""ha_suspend: which virtual servers have their virtual address on this host (pure).

Owns: the addresses each ha_suspend virtual server answers for (`suspend_ranges`: its
address, or every address range of its virtual_server_group) and the rule `vip_present`:
present while at least one of them is configured on an interface of the host (keepalived
counts them, so an address on two interfaces must leave both).
Must not: read addresses from the kernel (daemon/addresses.py does), log, or decide what
suspension does to health (HealthState.set_vip_present does: results are ignored).

keepalived 2.2.7 reference: check/check_api.c update_checker_activity and addr_matches
(a group matches through its address ranges), register_checkers_thread (a checker whose
VS has no address at start is deactivated). Difference kept on purpose: keepalived 2.2.7's
addr_matches returns early for any VS on a group, so a group with ha_suspend never finds
its address and its checks never run; fastcheck matches the group's ranges, as the rest
of that function intends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from fastcheck.model import Config, VsKey

Range = tuple[int, int, int]  # (IP version, first, last) as integers
Address = tuple[int, int]  # (IP version, address as an integer)


def address(text: str) -> Address:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    return ip.version, int(ip)


def suspend_ranges(config: Config) -> dict[VsKey, tuple[Range, ...]]:
    """Every ha_suspend virtual server and the address ranges it answers for."""
    groups = {group.name: group for group in config.vs_groups}
    found: dict[VsKey, tuple[Range, ...]] = {}
    for vs in config.virtual_servers:
        if not vs.ha_suspend:
            continue
        ranges: list[Range] = []
        if vs.address is not None:
            version, value = address(vs.address)
            ranges.append((version, value, value))
        group = groups.get(vs.group) if vs.group is not None else None
        for entry in group.entries if group is not None else ():
            if entry.first is not None and entry.last is not None:
                version, first = address(entry.first)
                ranges.append((version, first, address(entry.last)[1]))
        found[vs.key] = tuple(ranges)
    return found


def vip_present(ranges: tuple[Range, ...], present: Collection[Address]) -> bool:
    """Whether any address in `present` (the host's) falls in one of `ranges`."""
    return any(version == v and first <= value <= last
               for version, first, last in ranges for v, value in present)
