"""Human and JSON renderings of a configuration, its IPVS table and a reload diff.

Owns: the stable text formats of `check-config --json`, `plan` and `plan --from`.
Must not: load files or decide anything; it only formats values it is given.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Iterator
from typing import Any

from fastcheck.diff import ConfigDiff
from fastcheck.errors import Position
from fastcheck.ipvs.backend import ServiceStats
from fastcheck.ipvs.table import METHOD_NAMES, DestinationKey, ServiceKey, Table
from fastcheck.model import Config, RsKey


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, tuples and positions → plain JSON values (field order kept)."""
    if isinstance(value, Position):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name if isinstance(value, enum.IntFlag) else value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {name: to_jsonable(item) for name, item in zip(value._fields, value, strict=True)}
    if isinstance(value, list | tuple | frozenset | set):
        return [to_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


def config_json(config: Config) -> dict[str, Any]:
    out = to_jsonable(config)
    for vs_json, vs in zip(out["virtual_servers"], config.virtual_servers, strict=True):
        vs_json["scheduler_flags"] = int(vs.scheduler_flags)
    return out


def summary(config: Config) -> str:
    reals = sum(len(vs.real_servers) for vs in config.virtual_servers)
    checks = sum(len(rs.checks) for vs in config.virtual_servers for rs in vs.real_servers)
    return (f"{len(config.virtual_servers)} virtual servers, {reals} real servers, "
            f"{checks} checks")


def _destination_order(dest: DestinationKey) -> tuple[int, int]:
    return int(ipaddress.ip_address(dest.address)), dest.port


def table_lines(table: Table, stats: dict[ServiceKey, ServiceStats] | None = None
                ) -> Iterator[str]:
    """ipvsadm -Ln style listing of a table; with stats, ActiveConn/InActConn columns."""
    yield "Prot LocalAddress:Port Scheduler Flags"
    header = "  -> RemoteAddress:Port           Forward Weight UThresh LThresh"
    yield header + (" ActiveConn InActConn" if stats is not None else "")
    for key in sorted(table, key=ServiceKey.sort_key):
        service = table[key]
        yield f"{key} {service.settings.describe()}"
        for address in sorted(service.local_addresses, key=ipaddress.ip_address):
            yield f"  laddr {address}"
        counters = stats[key].destinations if stats is not None and key in stats else {}
        for dest in sorted(service.destinations, key=_destination_order):
            s = service.destinations[dest]
            line = (f"  -> {dest!s:<28} {METHOD_NAMES[s.method]:<7} {s.weight:<6} "
                    f"{s.upper_threshold:<7} {s.lower_threshold:<7}")
            if stats is not None:
                c = counters.get(dest)
                line += f" {c.active_connections if c else 0:<10} " \
                        f"{c.inactive_connections if c else 0}"
            yield line.rstrip()


def table_json(table: Table) -> list[dict[str, Any]]:
    return [
        {"service": str(key).split(maxsplit=1)[1] if not key.fwmark else str(key),
         "family": key.family.value, "protocol": key.protocol.value if key.protocol else None,
         "address": key.address, "port": key.port, "fwmark": key.fwmark,
         "settings": to_jsonable(table[key].settings),
         "local_addresses": sorted(table[key].local_addresses),
         "destinations": [{"address": d.address, "port": d.port, **to_jsonable(s)}
                          for d, s in table[key].destinations.items()],
         "virtual_server": str(table[key].owner) if table[key].owner else None}
        for key in sorted(table, key=ServiceKey.sort_key)
    ]


def diff_lines(d: ConfigDiff, *, verbose: bool = False) -> Iterator[str]:
    if d.unchanged:
        yield "no change: the new configuration asks for exactly the same as the old one"
        return
    yield (f"virtual servers: {len(d.vs_added)} added, {len(d.vs_removed)} removed, "
           f"{len(d.vs_changed)} changed, {len(d.vs_kept)} unchanged")
    yield (f"real servers: {len(d.rs_added)} added (start fresh), {len(d.rs_removed)} "
           f"removed, {len(d.rs_kept)} keep their health state")
    yield (f"checks: {len(d.checks_added)} added, {len(d.checks_removed)} removed, "
           f"{len(d.checks_kept)} keep their state")
    yield ""
    yield f"IPVS operations ({len(d.ops)}):"
    for op in d.ops:
        yield f"  {op.describe()}"
    sections: list[tuple[str, tuple[Any, ...]]] = [
        ("virtual servers removed", d.vs_removed), ("virtual servers added", d.vs_added),
        ("virtual servers changed", d.vs_changed), ("real servers removed", d.rs_removed),
        ("real servers added", d.rs_added)]
    if verbose:
        sections.append(("real servers keeping their health state", d.rs_kept))
    for title, keys in sections:
        if keys:
            yield ""
            yield f"{title}:"
            yield from (f"  {key}" for key in keys)


def _rs_json(key: RsKey) -> dict[str, Any]:
    return {"virtual_server": str(key.vs), "address": key.address, "port": key.port}


def diff_json(d: ConfigDiff) -> dict[str, Any]:
    return {
        "unchanged": d.unchanged,
        "virtual_servers": {"added": [str(k) for k in d.vs_added],
                            "removed": [str(k) for k in d.vs_removed],
                            "changed": [str(k) for k in d.vs_changed],
                            "unchanged": [str(k) for k in d.vs_kept]},
        "real_servers": {"added": [_rs_json(k) for k in d.rs_added],
                         "removed": [_rs_json(k) for k in d.rs_removed],
                         "keep_health_state": [_rs_json(k) for k in d.rs_kept]},
        "checks": {"added": len(d.checks_added), "removed": len(d.checks_removed),
                   "keep_state": len(d.checks_kept)},
        "operations": [op.to_json() for op in d.ops],
    }
