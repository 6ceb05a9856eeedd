"""The `fastcheck` command line: argument parsing and exit codes.

Owns: turning a command line into a call of the right component and its result into
output and an exit status (0 fine, 1 the input was wrong, 2 usage). User-caused errors
are printed as messages, never as tracebacks.
Must not: hold logic that a test could not reach without a subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from fastcheck import __version__
from fastcheck.config.loader import load_file
from fastcheck.daemon import gcpolicy
from fastcheck.daemon.app import HealthCarry, HealthFactory, Options
from fastcheck.daemon.dump import DEFAULT_DATA_PATH, DEFAULT_JSON_PATH
from fastcheck.daemon.log import LogSetupError, setup_logging
from fastcheck.daemon.pidfile import DEFAULT_PID_FILE, PidFile, running_pid
from fastcheck.daemon.signals import load_health, run_daemon
from fastcheck.diff import diff
from fastcheck.errors import ConfigError, Diagnostics, FastcheckError, Severity
from fastcheck.health.checker import HealthOptions
from fastcheck.ipvs.backend import IpvsBackend, fullnat_conflicts
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.ops import Op
from fastcheck.ipvs.reconcile import reconcile
from fastcheck.ipvs.table import desired_table
from fastcheck.model import Config
from fastcheck.render import (
    config_json,
    diff_json,
    diff_lines,
    summary,
    table_json,
    table_lines,
)

DEFAULT_CONFIG = "/etc/keepalived/keepalived.conf"
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
# Commands that live in their own module: each has `register(subparsers)`, which adds its
# parser and sets `handler=fn(args, out, err) -> exit status` as a default. Keep their
# top-level imports light: every command line imports them all.
COMMAND_MODULES: tuple[str, ...] = ("fastcheck.doctor", "fastcheck.genhash",
                                    "fastcheck.statuscmd", "fastcheck.bench.command")


def _add_file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--use-file", dest="file", default=DEFAULT_CONFIG,
                        help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("-i", "--config-id", default=None,
                        help="id matched by @id conditional lines (default: short hostname)")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    _add_file_options(parser)
    parser.add_argument("--strict", action="store_true",
                        help="treat every warning as an error")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _auto_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """`auto` → None (the daemon's own default), anything else through `convert`."""
    def auto_or(text: str) -> Any:
        return None if text == "auto" else convert(text)
    return auto_or


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """A byte count: 1073741824, 512M, 2G (binary units; a trailing B or iB is allowed)."""
    body = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = body[-1:] if body[-1:] in _SIZE_UNITS and body[-1:] else ""
    number = body[:-1] if unit else body
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 2G, 512M)") from None
    if not 64 << 20 <= value <= 1 << 50:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 64M")
    return int(value)


def _at_least(low: float, kind: type) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}")
        return value

    return convert


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("must be a share above 0 and at most 1")
    return value


def health_options(args: argparse.Namespace) -> HealthOptions:
    """The health layer's extension settings from `run`'s command line."""
    return HealthOptions(rise=args.rise, slow_start_s=args.slow_start,
                         budget_share=args.removal_budget,
                         budget_window_s=args.removal_budget_window,
                         budget_per_vs=args.removal_budget_per_vs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastcheck", description="Health checks for IPVS farms, keepalived-compatible.")
    parser.add_argument("--version", action="version", version=f"fastcheck {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check-config", help="validate a configuration",
                                description="Load a configuration and report every problem "
                                            "as file:line: message. --json prints the "
                                            "resolved model with all inherited values.")
    _add_config_options(check)

    plan = commands.add_parser("plan", help="show the IPVS table a configuration asks for",
                               description="Print the IPVS services and destinations FILE "
                                           "asks for or, with --from OLDFILE, what a reload "
                                           "from OLDFILE to FILE would change.")
    _add_config_options(plan)
    plan.add_argument("--from", dest="old_file", metavar="OLDFILE",
                      help="configuration in force now; show the reload operations")
    plan.add_argument("-v", "--verbose", action="store_true",
                      help="with --from: also list every real server keeping its state")
    plan.add_argument("--kernel", action="store_true",
                      help="compare with the live kernel IPVS table instead: show the "
                           "operations applying FILE would send")

    ipvs = commands.add_parser("ipvs", help="the live kernel IPVS table")
    ipvs_commands = ipvs.add_subparsers(dest="ipvs_command", required=True, metavar="ACTION")
    show = ipvs_commands.add_parser("show", help="print the live table (like ipvsadm -Ln)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--stats", action="store_true",
                      help="add active/inactive connection counts")

    run = commands.add_parser("run", help="run the health-check daemon in the foreground",
                              description="Probe every real server and keep the IPVS table "
                                          "in sync until SIGTERM/SIGINT. SIGHUP reloads FILE, "
                                          "SIGUSR1 dumps the state.")
    _add_run_options(run)

    reload = commands.add_parser("reload", help="make the running daemon reload its file",
                                 description="Send SIGHUP to the daemon named by the pid file.")
    reload.add_argument("--pid-file", default=DEFAULT_PID_FILE,
                        help=f"pid file of the running daemon (default {DEFAULT_PID_FILE})")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def _add_run_options(run: argparse.ArgumentParser) -> None:
    _add_file_options(run)
    run.add_argument("--dry-run", action="store_true",
                     help="apply to an in-memory table and log every IPVS operation instead")
    run.add_argument("--dry-run-without-ipvs", action="store_true",
                     help="use the kernel when it has IPVS, otherwise run as --dry-run "
                          "(the README's quick start)")
    run.add_argument("--pid-file", default=DEFAULT_PID_FILE,
                     help=f"pid file; one daemon per pid file (default {DEFAULT_PID_FILE})")
    run.add_argument("--dont-release-ipvs", action="store_true",
                     help="leave the IPVS services in place on stop")
    run.add_argument("--repair-interval", type=float, default=5.0, metavar="S",
                     help="seconds between kernel table read-backs repairing drift "
                          "(default 5; 0 disables)")
    run.add_argument("--reload-attempts", type=int, default=10, metavar="N",
                     help="attempts at removing vanished entries on reload before stopping "
                          "with exit status 2 (default 10)")
    run.add_argument("--reload-timeout", type=_auto_or(_at_least(0.1, float)), default=None,
                     metavar="S|auto",
                     help="abandon reading a reload's file after S seconds and keep the "
                          "configuration in force (default auto: 30 s plus 5 s per 10,000 "
                          "real servers in force)")
    run.add_argument("--reload-memory-limit", type=_auto_or(_size), default=None,
                     metavar="SIZE|auto",
                     help="memory (heap and private mappings) a reload's file may take to "
                          "read, e.g. 2G or 512M (default auto: 1 GiB plus 32 KiB per real "
                          "server in force)")
    extensions = run.add_argument_group(
        "fastcheck extensions (off by default: stock configurations behave as under keepalived)")
    extensions.add_argument("--rise", type=_at_least(1, int), default=1, metavar="N",
                            help="successes in a row a down check needs to come back up")
    extensions.add_argument("--slow-start", type=_at_least(0.0, float), default=0.0,
                            metavar="S", help="ramp a recovered real server's weight up over "
                                              "S seconds")
    extensions.add_argument("--removal-budget", type=_share, default=None, metavar="SHARE",
                            help="never remove more than this share (0..1] of the real servers "
                                 "within --removal-budget-window: suspect the director's own "
                                 "network instead")
    extensions.add_argument("--removal-budget-window", type=_at_least(0.001, float),
                            default=10.0, metavar="S", help="window of the removal budget "
                                                            "(default 10 s)")
    extensions.add_argument("--removal-budget-per-vs", action="store_true",
                            help="apply the removal budget per virtual server")
    run.add_argument("--dump-file", default=DEFAULT_DATA_PATH, metavar="PATH",
                     help=f"SIGUSR1 text dump (default {DEFAULT_DATA_PATH})")
    run.add_argument("--dump-json", default=DEFAULT_JSON_PATH, metavar="PATH",
                     help=f"SIGUSR1 JSON dump (default {DEFAULT_JSON_PATH})")
    status = run.add_argument_group(
        "status endpoint (off by default; no authentication: loopback unless allowed)")
    status.add_argument("--status-listen", nargs="?", const="127.0.0.1:9469", default=None,
                        metavar="[HOST:]PORT",
                        help="serve /metrics (Prometheus), /status (JSON) and /healthz on "
                             "HOST:PORT (127.0.0.1:9469 when given alone, where `fastcheck "
                             "status` looks by default); HOST defaults to 127.0.0.1, "
                             "[ADDR]:PORT for IPv6")
    status.add_argument("--status-allow-remote", action="store_true",
                        help="allow a --status-listen HOST that is not a loopback address")
    run.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"],
                     help="log verbosity (default info)")
    run.add_argument("--workers", default="auto", metavar="N|auto",
                     help="probe engine processes: N, or auto (default) = one per CPU when "
                          "the configuration has at least 5,000 probes, else 1 (in process)")
    run.add_argument("--log-target", choices=["stderr", "syslog"], default="stderr",
                     help="stderr (journald picks it up) or syslog via /dev/log "
                          "(default stderr)")
    run.add_argument("--log-facility", default="daemon", metavar="NAME",
                     help="syslog facility with --log-target syslog (default daemon)")
    run.add_argument("-D", "--log-detail", action="store_true",
                     help="also log every IPVS operation and retry (keepalived's -D)")


def _print_diagnostics(diags: Diagnostics, stream: TextIO) -> None:
    for item in diags.items:
        if item.severity is not Severity.ERROR:
            print(item, file=stream)


def _load(path: str, args: argparse.Namespace, err: TextIO) -> Config | None:
    try:
        with gcpolicy.paused(freeze=True):  # a large, long-lived structure: see gcpolicy
            config, diags = load_file(path, config_id=args.config_id, strict=args.strict)
    except ConfigError as error:
        for item in error.diagnostics:
            print(item, file=err)
        print(f"{path}: {len(error.diagnostics)} error(s); configuration not usable",
              file=err)
        return None
    except MemoryError:
        print(f"{path}: out of memory while reading the configuration; not usable", file=err)
        return None
    _print_diagnostics(diags, err)
    return config


def cmd_check_config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = _load(args.file, args, err)
    if config is None:
        return EXIT_INVALID
    if args.json:
        json.dump(config_json(config), out, indent=2)
        out.write("\n")
    else:
        print(f"{args.file}: configuration OK: {summary(config)}", file=out)
    return EXIT_OK


def kernel_backend() -> IpvsBackend:
    """The netlink backend; raises IpvsError when the kernel has no usable IPVS."""
    from fastcheck.ipvs.netlink import NetlinkBackend  # the only pyroute2 user

    return NetlinkBackend()


def _print_ops(ops: list[Op], out: TextIO, as_json: bool) -> None:
    if as_json:
        json.dump({"operations": [op.to_json() for op in ops]}, out, indent=2)
        out.write("\n")
        return
    print(f"IPVS operations ({len(ops)}):" if ops else "the kernel table already agrees",
          file=out)
    for op in ops:
        print(f"  {op.describe()}", file=out)


def cmd_plan_kernel(config: Config, args: argparse.Namespace, out: TextIO,
                    err: TextIO) -> int:
    desired = desired_table(config)
    try:
        backend = kernel_backend()
        try:
            observed, info = backend.read(), backend.info()
        finally:
            backend.close()
    except FastcheckError as error:
        print(f"fastcheck: {error}", file=err)
        return EXIT_INVALID
    problems = fullnat_conflicts(desired, info)
    for problem in problems:
        print(f"{args.file}: {problem}", file=err)
    _print_ops(reconcile(desired, observed), out, args.json)
    return EXIT_INVALID if problems else EXIT_OK


def cmd_ipvs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        backend = kernel_backend()
        try:
            table = backend.read()
            stats = backend.statistics() if args.stats else None
        finally:
            backend.close()
    except FastcheckError as error:
        print(f"fastcheck: {error}", file=err)
        return EXIT_INVALID
    if args.json:
        json.dump({"services": table_json(table)}, out, indent=2)
        out.write("\n")
    else:
        for line in table_lines(table, stats):
            print(line, file=out)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.kernel and args.old_file:
        print("fastcheck: plan takes --from or --kernel, not both", file=err)
        return EXIT_USAGE
    new = _load(args.file, args, err)
    if new is not None and args.kernel:
        return cmd_plan_kernel(new, args, out, err)
    old = _load(args.old_file, args, err) if args.old_file else None
    if new is None or (args.old_file and old is None):
        return EXIT_INVALID
    if old is None:
        table = desired_table(new)
        if args.json:
            json.dump({"services": table_json(table)}, out, indent=2)
            out.write("\n")
        else:
            print(f"# {args.file}: {summary(new)}; {len(table)} IPVS services", file=out)
            for line in table_lines(table):
                print(line, file=out)
        return EXIT_OK
    with gcpolicy.paused():
        result = diff(old, new)
    if args.json:
        json.dump(diff_json(result), out, indent=2)
        out.write("\n")
    else:
        print(f"# reload {args.old_file} -> {args.file}", file=out)
        for line in diff_lines(result, verbose=args.verbose):
            print(line, file=out)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO,
            health: tuple[HealthFactory, HealthCarry] | None = None) -> int:
    """`fastcheck run`; tests pass a stand-in `health`, the daemon loads the real one."""
    try:
        setup_logging(target=args.log_target, level=args.log_level, detail=args.log_detail,
                      stream=err, syslog_facility=args.log_facility)
    except LogSetupError as error:
        print(f"fastcheck: {error}", file=err)
        return EXIT_USAGE
    args.strict = False
    config = _load(args.file, args, err)
    if config is None:
        return EXIT_INVALID
    if args.reload_attempts < 1:
        print("fastcheck: --reload-attempts must be at least 1", file=err)
        return EXIT_USAGE
    # net_namespace: before any socket or thread (netlink, listeners, probe workers).
    netns = None
    if config.global_defs.net_namespace is not None:
        from fastcheck.netns import enter_namespace

        try:
            netns = enter_namespace(config.global_defs.net_namespace)
        except FastcheckError as error:
            print(f"fastcheck: {error}; not starting", file=err)
            return EXIT_INVALID
        logging.getLogger("fastcheck").info("running in network namespace %s (%s)",
                                            netns.name, netns.path)
    try:
        return _run(args, config, err, health, netns.fd if netns is not None else None)
    finally:
        if netns is not None:
            netns.close()


def _run(args: argparse.Namespace, config: Config, err: TextIO,
         health: tuple[HealthFactory, HealthCarry] | None, netns_fd: int | None) -> int:
    from fastcheck.daemon.workers import engine_factory, worker_count

    try:
        worker_count(args.workers, 0)
    except ValueError as error:
        print(f"fastcheck: --workers: {error}", file=err)
        return EXIT_USAGE
    observers: list[Any] = []
    if args.status_listen is not None:
        from fastcheck.daemon.status import StatusServer, parse_listen

        try:
            host, port = parse_listen(args.status_listen,
                                      allow_remote=args.status_allow_remote)
        except ValueError as error:
            print(f"fastcheck: --status-listen {error}", file=err)
            return EXIT_USAGE
        observers.append(StatusServer(host, port))
    try:
        factory, carry = health or load_health(health_options(args))
        pid_file = PidFile(args.pid_file)
        pid_file.acquire()
    except FastcheckError as error:
        print(f"fastcheck: {error}", file=err)
        return EXIT_INVALID
    try:
        if args.dry_run:
            backend: IpvsBackend = MemoryBackend(fullnat=True)
        else:
            try:
                backend = kernel_backend()
            except (FastcheckError, OSError, ImportError) as error:
                if not args.dry_run_without_ipvs:
                    print(f"fastcheck: IPVS is not available: {error} "
                          f"(use --dry-run to run without the kernel)", file=err)
                    return EXIT_INVALID
                print(f"fastcheck: IPVS is not available ({error}); running as --dry-run: "
                      "the IPVS operations are logged, not applied", file=err)
                args.dry_run = True
                backend = MemoryBackend(fullnat=True)
        options = Options(
            config_path=args.file, config_id=args.config_id, dry_run=args.dry_run,
            release_on_stop=not args.dont_release_ipvs,
            repair_interval_s=args.repair_interval, reload_attempts=args.reload_attempts,
            reload_timeout_s=args.reload_timeout, reload_memory_bytes=args.reload_memory_limit,
            data_path=args.dump_file, json_path=args.dump_json)
        try:
            return run_daemon(options, backend, config, factory, carry,
                              observers=observers,
                              engine_factory=engine_factory(args.workers, netns_fd))
        except FastcheckError as error:
            print(f"fastcheck: {error}", file=err)
            return EXIT_INVALID
        finally:
            backend.close()
    finally:
        pid_file.release()


def cmd_reload(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        pid = running_pid(args.pid_file)
        os.kill(pid, signal.SIGHUP)
    except FastcheckError as error:
        print(f"fastcheck: {error}", file=err)
        return EXIT_INVALID
    except OSError as error:
        print(f"fastcheck: cannot signal the daemon: {error.strerror}", file=err)
        return EXIT_INVALID
    print(f"fastcheck: asked pid {pid} to reload", file=out)
    return EXIT_OK


COMMANDS = {"check-config": cmd_check_config, "plan": cmd_plan, "ipvs": cmd_ipvs,
            "run": cmd_run, "reload": cmd_reload}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    if out is None:
        # Configuration text may hold undecodable bytes (kept as surrogates): show them
        # escaped rather than dying on output.
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        handler = getattr(args, "handler", None) or COMMANDS[args.command]
        return handler(args, out, err)
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
