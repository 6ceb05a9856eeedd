"""`fastcheck doctor`: is this host ready to run fastcheck, and what to change if not.

Owns: the command — its parser (`register(subparsers)`), `run(args, out, err)`, loading
the optional configuration to size limits against, and printing the findings as a table
or as JSON. Exit status 0 when nothing fails (warnings included), 1 when something does.
Must not: judge (doctor/diagnose.py does) or read the host (doctor/facts.py does), nor
import anything heavy at module level: every command line imports this module.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from fastcheck.doctor.diagnose import Finding, Needs

EXIT_OK, EXIT_FAILED = 0, 1
WIDTH = 100


def register(subparsers: Any) -> None:
    """Add the `doctor` command to the `fastcheck` command line."""
    parser = subparsers.add_parser(
        "doctor", help="check this host: hot paths, IPVS, privileges, limits, sysctls",
        description="Report what fastcheck needs from this host — compiled hot paths, kernel "
                    "IPVS, CAP_NET_ADMIN/CAP_NET_RAW, open-file limits, ephemeral ports, "
                    "TIME_WAIT and other sysctls — each as ok/warn/fail with the command "
                    "that fixes it. With -f FILE, limits are sized against that "
                    "configuration. Exit status 1 when something fails.")
    parser.add_argument("-f", "--use-file", dest="file", default=None, metavar="FILE",
                        help="configuration to size the limits against (optional)")
    parser.add_argument("-i", "--config-id", default=None,
                        help="id matched by @id conditional lines (default: short hostname)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--root", default="/", metavar="DIR",
                        help="read /proc, /sys and /lib/modules below DIR (default /); "
                             "kernel IPVS is only asked over netlink for /")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`fastcheck doctor`; never raises: an unexpected error is a message and status 1."""
    try:
        return _run(args, out)
    except BrokenPipeError:
        raise  # the reader went away (| head): main() treats that as success
    except Exception as error:  # a doctor must not die with a traceback
        print(f"fastcheck doctor: unexpected error: {type(error).__name__}: {error}",
              file=err)
        return EXIT_FAILED


def _config(args: argparse.Namespace) -> tuple[Finding | None, Needs | None]:
    from fastcheck.doctor.diagnose import Finding, Status, needs_of

    if args.file is None:
        return None, None
    from fastcheck.config.loader import load_file
    from fastcheck.errors import ConfigError, FastcheckError
    from fastcheck.probeplan import plan_probes

    fix = f"fastcheck check-config -f {args.file} lists every problem"
    try:
        config, _ = load_file(args.file, config_id=args.config_id)
    except ConfigError as error:
        first = error.diagnostics[0] if error.diagnostics else "unknown error"
        return Finding("config", Status.FAIL, f"{len(error.diagnostics)} error(s), first: "
                                              f"{first}", fix), None
    except (FastcheckError, OSError) as error:
        return Finding("config", Status.FAIL, f"{args.file}: {error}", fix), None
    needs = needs_of(plan_probes(config))
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(needs.by_kind.items()))
    found = f"{args.file}: {needs.checks} checks as {needs.probes} probes" + \
        (f" ({kinds})" if kinds else "")
    return Finding("config", Status.OK, found), needs


def _run(args: argparse.Namespace, out: TextIO) -> int:
    import json

    from fastcheck.doctor.diagnose import Status, diagnose, worst
    from fastcheck.doctor.facts import read_facts

    config_finding, needs = _config(args)
    facts = read_facts(args.root)
    findings = ([config_finding] if config_finding else []) + diagnose(facts, needs)
    status = worst(findings)
    if args.json:
        json.dump({"status": status.value,
                   "hot_paths": dict(sorted(facts.implementations.items())),
                   "needs": None if needs is None else _needs_json(needs),
                   "findings": [finding.to_json() for finding in findings]}, out, indent=2)
        out.write("\n")
    else:
        for line in table_lines(findings):
            print(line, file=out)
    return EXIT_FAILED if status is Status.FAIL else EXIT_OK


def _needs_json(needs: Needs) -> dict[str, Any]:
    return {"checks": needs.checks, "probes": needs.probes, "by_kind": dict(needs.by_kind),
            "sockets": needs.sockets, "file_descriptors": needs.fds,
            "connections_per_minute": round(needs.connections_per_minute, 1),
            "busiest_destination_per_minute": round(needs.busiest_per_minute, 1)}


def table_lines(findings: list[Finding]) -> list[str]:
    """The findings as a table: status, name, what was found, and a fix line under it."""
    import textwrap

    from fastcheck.doctor.diagnose import Status

    label = {Status.OK: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL"}
    name_width = max([len("CHECK")] + [len(f.name) for f in findings])
    indent = " " * (7 + name_width + 2)
    lines = [f"{'STATUS':<7}{'CHECK':<{name_width + 2}}FOUND"]
    for finding in findings:
        head = f"{label[finding.status]:<7}{finding.name:<{name_width + 2}}"
        lines += textwrap.wrap(finding.found, WIDTH, initial_indent=head,
                               subsequent_indent=indent, break_on_hyphens=False) or [head]
        if finding.fix:
            lines += textwrap.wrap(finding.fix, WIDTH, initial_indent=indent + "fix: ",
                                   subsequent_indent=indent + "     ",
                                   break_on_hyphens=False)
    counts = {status: sum(f.status is status for f in findings) for status in Status}
    verdict = "something fails (exit 1)" if counts[Status.FAIL] else "nothing fails (exit 0)"
    lines.append(f"{counts[Status.FAIL]} fail, {counts[Status.WARN]} warn, "
                 f"{counts[Status.OK]} ok: {verdict}")
    return lines
