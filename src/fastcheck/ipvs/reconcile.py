"""From (desired table, observed table) to the ordered operations that make them agree.

Owns: the pure comparison and the order operations go out in — new services and
destinations first, so a service is never left empty while it is being changed, edits
next, removals last. Applying the result and reconciling again yields nothing.
Must not: talk to the kernel or know about health.
"""

from __future__ import annotations

from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, Op, ServiceOp, Verb
from fastcheck.ipvs.table import Service, ServiceKey, Table


def reconcile(desired: Table, observed: Table) -> list[Op]:
    adds: list[Op] = []
    edits: list[Op] = []
    removals: list[Op] = []
    for key in sorted(desired, key=ServiceKey.sort_key):
        want = desired[key]
        have = observed.get(key)
        if have is None:
            adds.append(ServiceOp(Verb.ADD, key, want.settings))
            have = Service(want.settings)
        elif have.settings != want.settings:
            edits.append(ServiceOp(Verb.EDIT, key, want.settings, have.settings))
        for dest, settings in want.destinations.items():
            current = have.destinations.get(dest)
            if current is None:
                adds.append(DestinationOp(Verb.ADD, key, dest, settings))
            elif current != settings:
                edits.append(DestinationOp(Verb.EDIT, key, dest, settings, current))
        for address in sorted(want.local_addresses - have.local_addresses):
            adds.append(LocalAddressOp(Verb.ADD, key, address))
        for dest in have.destinations.keys() - want.destinations.keys():
            removals.append(DestinationOp(Verb.DELETE, key, dest, None,
                                          have.destinations[dest]))
        for address in sorted(have.local_addresses - want.local_addresses):
            removals.append(LocalAddressOp(Verb.DELETE, key, address))
    for key in sorted(observed.keys() - desired.keys(), key=ServiceKey.sort_key):
        removals.append(ServiceOp(Verb.DELETE, key, None, observed[key].settings))
    removals.sort(key=_removal_order)
    return adds + edits + removals


def _removal_order(op: Op) -> tuple[int, tuple[int, int, int, str, int], str]:
    rank = 1 if isinstance(op, ServiceOp) else 0
    detail = str(getattr(op, "destination", getattr(op, "address", "")))
    return rank, op.service.sort_key(), detail
