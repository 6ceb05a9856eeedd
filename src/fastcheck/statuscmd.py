"""`fastcheck status`: the running daemon's virtual and real servers, from its endpoint.

Owns: fetching `/status` from the daemon's status endpoint (`fastcheck run
--status-listen`, default 127.0.0.1:9469) with urllib, and printing it as a table (one
line per real server: state, weight, checks) with a summary line, or as JSON (`--json`).
Must not: talk to IPVS, read the configuration, or signal the daemon. Top-level imports
stay light: every command line imports this module.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any, TextIO

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_ENDPOINT = "127.0.0.1:9469"  # = fastcheck.daemon.status.DEFAULT_STATUS_PORT
HINT = "is `fastcheck run --status-listen` enabled?"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "status", help="show the running daemon's virtual and real servers",
        description="Ask the running daemon's status endpoint (fastcheck run "
                    "--status-listen) for the state of every virtual and real server and "
                    "print it as a table, or as JSON with --json.")
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, metavar="[HOST:]PORT",
                        help=f"the daemon's --status-listen address (default "
                             f"{DEFAULT_ENDPOINT}); [ADDR]:PORT for IPv6")
    parser.add_argument("--json", action="store_true",
                        help="print the daemon's /status document as it is")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for the daemon (default 5)")
    parser.set_defaults(handler=run)


def _url(endpoint: str) -> str:
    from fastcheck.daemon.status import parse_listen

    host, port = parse_listen(endpoint, allow_remote=True)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def fetch(url: str, timeout_s: float) -> dict[str, Any]:
    """The daemon's /status document; raises OSError/ValueError with a readable message."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(request, timeout=timeout_s) as response:
        document = json.loads(response.read().decode("utf-8"))
    if not isinstance(document, dict) or "virtual_servers" not in document:
        raise ValueError("the answer is not a fastcheck status document")
    return document


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        url = _url(args.endpoint)
    except ValueError as error:
        print(f"fastcheck status: --endpoint {error}", file=err)
        return EXIT_FAILED
    try:
        document = fetch(url, args.timeout)
    except urllib.error.HTTPError as error:
        print(f"fastcheck status: {url} answered {error.code} {error.reason}", file=err)
        return EXIT_FAILED
    except urllib.error.URLError as error:
        reason = getattr(error.reason, "strerror", None) or error.reason
        print(f"fastcheck status: no daemon answers at {url} ({reason}); {HINT}", file=err)
        return EXIT_FAILED
    except (OSError, ValueError) as error:  # timeouts, resets, bad JSON
        print(f"fastcheck status: cannot read {url}: {error}; {HINT}", file=err)
        return EXIT_FAILED
    if args.json:
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        for line in table_lines(document):
            print(line, file=out)
    return EXIT_OK


# ----------------------------------------------------------------------------- table


def rs_state(rs: dict[str, Any]) -> str:
    if rs.get("up"):
        return "up (slow start)" if rs.get("slow_start") else "up"
    return "down (held)" if rs.get("held_by_budget") else "down"


def checks_text(checks: Iterable[dict[str, Any]]) -> str:
    parts = []
    for check in checks:
        text = f"{check.get('kind', '?')} {check.get('state', '?')}"
        failures = check.get("failures") or 0
        if failures and check.get("state") != "up":
            text += f" ({failures} failure{'s' if failures != 1 else ''})"
        parts.append(text)
    return ", ".join(parts) or "-"


def _weight(rs: dict[str, Any]) -> str:
    weight = rs.get("effective_weight")
    text = str(weight) if weight is not None else "-"
    table = rs.get("table_weight")
    if table is None or (isinstance(table, int) and table < 0):
        return text if rs.get("up") else f"{text} (out)"
    return text if table == weight else f"{text} (table {table})"


def table_lines(document: dict[str, Any]) -> list[str]:
    """The status document as aligned lines: a header, one row per real server, a summary."""
    rows: list[tuple[str, ...]] = [("VIRTUAL SERVER", "REAL SERVER", "STATE", "WEIGHT",
                                    "CHECKS")]
    vs_count = up = down = held = 0
    for vs in document.get("virtual_servers", ()):
        vs_count += 1
        name = str(vs.get("vs"))
        if vs.get("quorum_up") is False:
            name += " (quorum lost)"
        if vs.get("sorry_server_active"):
            name += " (sorry server)"
        servers = vs.get("real_servers") or []
        if not servers:
            rows.append((name, "-", "-", "-", "-"))
        for index, rs in enumerate(servers):
            if rs.get("up"):
                up += 1
            else:
                down += 1
                held += 1 if rs.get("held_by_budget") else 0
            address = str(rs.get("rs")).removesuffix(f" of {vs.get('vs')}")
            rows.append((name if index == 0 else "", address, rs_state(rs),
                         _weight(rs), checks_text(rs.get("checks") or ())))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([*(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])), row[4]])
             for row in rows]
    lines.append(_summary(document, vs_count, up, down, held))
    return lines


def _summary(document: dict[str, Any], vs_count: int, up: int, down: int, held: int) -> str:
    total = up + down
    text = (f"{total} real server{'s' if total != 1 else ''} in {vs_count} virtual "
            f"server{'s' if vs_count != 1 else ''}: {up} up, {down} down")
    if held:
        text += f" ({held} held by the removal budget)"
    engine = document.get("engine") or {}
    counters = document.get("counters") or {}
    probes = counters.get("probes", engine.get("probes"))
    if probes is not None:
        text += f"; {probes} probes"
    lag = engine.get("lag_p99_s")
    if isinstance(lag, int | float):
        text += f", start lag p99 {lag * 1000:.1f} ms"
    text += f"; pid {document.get('pid', '?')}"
    if document.get("dry_run"):
        text += ", dry run"
    if document.get("stopping"):
        text += ", stopping"
    return text
