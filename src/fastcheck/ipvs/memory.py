"""An IPVS table held in memory: for tests, `--dry-run` and benchmarks.

Owns: a table that answers operations the way the kernel does (EEXIST, ENOENT/ESRCH,
EOPNOTSUPP for FULLNAT unless enabled) and failure injection, so error paths — a removal
the kernel refuses, a flaky add — can be tested without a kernel.
Must not: be used to talk to the kernel; it never touches the system.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from fastcheck.ipvs.backend import (
    FULLNAT_UNSUPPORTED,
    Counters,
    KernelInfo,
    OpFailure,
    ServiceStats,
    Timeouts,
    already_agrees,
    failure,
    needs_fullnat,
)
from fastcheck.ipvs.ops import DestinationOp, LocalAddressOp, Op, ServiceOp, Verb
from fastcheck.ipvs.table import Service, ServiceKey, Table

OpFilter = Callable[[Op], bool]


@dataclass(slots=True)
class InjectedFailure:
    matches: OpFilter
    code: int
    remaining: int | None  # None: fail forever


@dataclass(slots=True)
class MemoryBackend:
    """A kernel-like IPVS table in memory. `applied` records every op that changed it."""

    fullnat: bool = False
    name: str = "memory"
    table: Table = field(default_factory=dict)
    applied: list[Op] = field(default_factory=list)
    injected: list[InjectedFailure] = field(default_factory=list)
    current_timeouts: Timeouts = field(default_factory=lambda: Timeouts(900, 120, 300))

    def fail(self, matches: OpFilter, code: int = errno.EIO, times: int | None = None) -> None:
        """Makes matching ops fail with `code` (`times` times, or always)."""
        self.injected.append(InjectedFailure(matches, code, times))

    def read(self) -> Table:
        return {key: Service(svc.settings, dict(svc.destinations), svc.local_addresses)
                for key, svc in self.table.items()}

    def apply(self, ops: Sequence[Op]) -> list[OpFailure]:
        failures: list[OpFailure] = []
        for op in ops:
            if not self.fullnat and needs_fullnat(op):
                failures.append(failure(op, errno.EOPNOTSUPP, FULLNAT_UNSUPPORTED))
                continue
            code = self._injected(op)
            if code == 0:
                code = self._apply_one(op)
            if code and not already_agrees(op, code):
                failures.append(failure(op, code))
        return failures

    def _injected(self, op: Op) -> int:
        for rule in self.injected:
            if rule.matches(op) and (rule.remaining is None or rule.remaining > 0):
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule.code
        return 0

    def _apply_one(self, op: Op) -> int:
        service = self.table.get(op.service)
        if isinstance(op, ServiceOp):
            return self._service(op, service)
        if service is None:
            return errno.ESRCH
        if isinstance(op, DestinationOp):
            return self._destination(op, service)
        return self._local_address(op, service)

    def _service(self, op: ServiceOp, service: Service | None) -> int:
        if op.verb is Verb.ADD:
            if service is not None:
                return errno.EEXIST
            assert op.settings is not None
            self.table[op.service] = Service(op.settings)
        elif service is None:
            return errno.ESRCH
        elif op.verb is Verb.EDIT:
            assert op.settings is not None
            service.settings = op.settings
        else:
            del self.table[op.service]
        self.applied.append(op)
        return 0

    def _destination(self, op: DestinationOp, service: Service) -> int:
        present = op.destination in service.destinations
        if op.verb is Verb.ADD and present:
            return errno.EEXIST
        if op.verb is not Verb.ADD and not present:
            return errno.ENOENT
        if op.verb is Verb.DELETE:
            del service.destinations[op.destination]
        else:
            assert op.settings is not None
            service.destinations[op.destination] = op.settings
        self.applied.append(op)
        return 0

    def _local_address(self, op: LocalAddressOp, service: Service) -> int:
        present = op.address in service.local_addresses
        if op.verb is Verb.ADD:
            if present:
                return errno.EEXIST
            service.local_addresses = service.local_addresses | {op.address}
        else:
            if not present:
                return errno.ENOENT
            service.local_addresses = service.local_addresses - {op.address}
        self.applied.append(op)
        return 0

    def statistics(self) -> dict[ServiceKey, ServiceStats]:
        return {key: ServiceStats(Counters(), {dest: Counters() for dest in svc.destinations})
                for key, svc in self.table.items()}

    def info(self) -> KernelInfo:
        return KernelInfo("memory", 4096, self.fullnat)

    def flush(self) -> None:
        self.table.clear()

    def timeouts(self) -> Timeouts:
        return self.current_timeouts

    def set_timeouts(self, timeouts: Timeouts) -> None:
        # As the kernel: 0 leaves a timeout unchanged.
        current = self.current_timeouts
        self.current_timeouts = replace(
            current, tcp_s=timeouts.tcp_s or current.tcp_s,
            tcpfin_s=timeouts.tcpfin_s or current.tcpfin_s, udp_s=timeouts.udp_s or current.udp_s)

    def close(self) -> None:
        pass
