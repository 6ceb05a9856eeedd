"""`fastcheck bench`: the command line around targets, one measured run, and the report.

Owns: the bench's options and their validation (each impossible combination is a message
saying what to change, exit status 1), the open-files limit for the run, SIGINT/SIGTERM
(stop the run, remove everything, exit 130), the live progress line, sweeps over several
target counts, and choosing table, JSON and plot output.
Must not: run probes itself (the engine does, via measure.py) or hold layout rules
(layout.py). Top-level imports stay light: every `fastcheck` command line imports this.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any, TextIO

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FD_RESERVE = 1024  # descriptors beyond the probes' sockets: listeners, the loop, pipes
TCP_WINDOW = 4096  # the batched TCP engine's own in-flight window
DEFAULT_DURATION_S = 10.0


class BenchError(Exception):
    """Bad input or an unusable host; the message says what to change."""


class _Interrupted(Exception):
    pass


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupted(signum: int, frame: object) -> None:
    """Outside the event loop (setting up, reporting) a stop signal unwinds the stack,
    and every `with`/`finally` on the way removes what it made."""
    raise _Interrupted


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return convert


def _interval(text: str) -> float | None:
    if text.lower() in ("max", "fast", "0"):
        return None
    return _positive(float)(text)


def _target_counts(text: str) -> list[int]:
    counts = []
    for word in text.split(","):
        try:
            value = int(word.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{word!r} is not a whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"target counts must be at least 1, got {value}")
        counts.append(value)
    return counts


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share from 0 to 1, got {text}")
    return value


def _headroom(text: str) -> float:
    value = _share(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError("must be below 1")
    return value


def register(subparsers: Any) -> None:
    """Add the `bench` command to the `fastcheck` command line."""
    parser = subparsers.add_parser(
        "bench", help="measure the probe engine against targets it starts on loopback",
        description="Start loopback targets (TCP listeners, an HTTP page server, a closed "
                    "port for failing targets; the kernel answers ICMP), run the daemon's "
                    "probe engine against them, and report checks/s, CPU per 1,000 checks, "
                    "scheduler lag, probe latency, memory and how many real servers this "
                    "host can check. Everything it starts is removed at the end, also on "
                    "SIGINT/SIGTERM.")
    parser.add_argument("--check", choices=("tcp", "http", "ping", "mixed"), default="tcp",
                        help="check type; mixed splits the targets into thirds (default tcp)")
    parser.add_argument("--targets", type=_target_counts, default=[20_000], metavar="N[,N…]",
                        help="number of targets (default 20000); a comma list runs a sweep")
    parser.add_argument("--interval", type=_interval, default=None, metavar="S",
                        help="seconds between checks of a target (delay_loop); default, or "
                             "'max': as fast as possible (delay_loop 0.000001, the smallest "
                             "the loader takes: every probe reruns as soon as it ends, the "
                             "scheduler skipping the slots a run overran)")
    parser.add_argument("--duration", type=_positive(float), default=DEFAULT_DURATION_S,
                        metavar="S", help=f"seconds per run (default {DEFAULT_DURATION_S:g})")
    parser.add_argument("--failing", type=_share, default=0.0, metavar="SHARE",
                        help="share of targets that fail (a closed port), 0..1 (default 0)")
    parser.add_argument("--workers", type=_positive(int), default=1, metavar="N",
                        help="engine worker processes (default 1: the engine runs in the "
                             "bench process)")
    parser.add_argument("--timeout", type=_positive(float), default=2.0, metavar="S",
                        help="connect_timeout of every check (default 2)")
    parser.add_argument("--servers", type=_positive(int), default=None, metavar="N",
                        help="target server processes answering HTTP (default 2 on a "
                             "host with 2 CPUs or more, else 1)")
    parser.add_argument("--netns", action="store_true",
                        help="put the targets in a network namespace the bench makes (veth, "
                             "198.18.0.0/16 answering, 198.19.0.0/17 silent so ping targets "
                             "can fail by timeout) and removes; needs root")
    parser.add_argument("--headroom", type=_headroom, default=0.3, metavar="SHARE",
                        help="capacity kept free in the sizing answer (default 0.3)")
    parser.add_argument("--sizing-interval", type=_positive(float), default=None,
                        metavar="S", help="interval the sizing answer is for (default: "
                                          "--interval, or 1 s)")
    parser.add_argument("--max-in-flight", type=_positive(int), default=None, metavar="N",
                        help="the engine's limit on probes running at once (the daemon's "
                             "max_in_flight; default none, or what the open-files limit "
                             "allows)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="draw checks/s and lag against the number of targets (a sweep; "
                             "needs matplotlib: pip install 'fastcheck[plot]')")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`fastcheck bench`; bad input and unusable hosts are messages, never tracebacks."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in previous:
        signal.signal(signum, _interrupted)
    try:
        return _run(args, out, err)
    except BenchError as error:
        print(f"fastcheck bench: {error}", file=err)
        return EXIT_INVALID
    except (_Interrupted, KeyboardInterrupt):
        print("fastcheck bench: interrupted; everything it started was removed", file=err)
        return EXIT_INTERRUPTED
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _preflight(args: argparse.Namespace) -> None:
    """Checks that need no targets yet: plot support, worker engine, sweep shape."""
    if args.plot is not None:
        from fastcheck.bench.plot import plot_available

        problem = plot_available()
        if problem:
            raise BenchError(problem)
    if args.workers > 1:
        try:
            from fastcheck.daemon.workers import make_engine  # noqa: F401
        except ImportError:
            raise BenchError(f"--workers {args.workers} needs the worker engine "
                             "(fastcheck.daemon.workers), which this installation lacks: "
                             "use --workers 1") from None
        cpus = os.cpu_count() or 1
        if args.workers > cpus:
            raise BenchError(f"--workers {args.workers} is more than the {cpus} CPUs of "
                             f"this host: use --workers {cpus} or fewer")


def _open_files(needed: int, asked: int | None) -> int | None:
    """Raises the open-files limit towards `needed` (sockets the engine may hold at once);
    returns the in-flight limit for the engine: `asked`, or one that fits the limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return asked
        except (ValueError, OSError):
            pass
        room = hard - FD_RESERVE
        if room < 64:
            raise BenchError(f"the open-files limit ({hard:,}) is too low for a bench: "
                             f"raise it (ulimit -n {needed})")
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return room if asked is None else min(asked, room)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return asked


def _progress_printer(err: TextIO, quiet: bool) -> Any:
    if quiet:
        return None
    tty = err.isatty()

    def show(progress: Any) -> None:
        line = (f"  {progress.elapsed_s:5.1f} s  {progress.checks:>12,} checks  "
                f"{progress.rate:>10,.0f}/s  {progress.failed:>10,} failed  "
                f"lag p99 {progress.lag_p99_s * 1000:8.2f} ms")
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=err, flush=True)

    return show


def _one_run(args: argparse.Namespace, count: int, err: TextIO) -> tuple[Any, Any, Any]:
    import asyncio

    import uvloop

    from fastcheck.bench import layout, measure, report
    from fastcheck.bench.targets import TargetError, TargetSet, icmp_permitted
    from fastcheck.config.loader import load_text
    from fastcheck.errors import ConfigError
    from fastcheck.model import CheckKind
    from fastcheck.probeplan import plan_probes

    space = layout.NETNS if args.netns else layout.LOOPBACK
    try:
        split = layout.split(args.check, count, args.failing, space)
    except layout.LayoutError as error:
        raise BenchError(str(error)) from None
    if layout.Kind.PING in split and not icmp_permitted():
        raise BenchError("ping checks need CAP_NET_RAW (a raw ICMP socket) and this process "
                         "lacks it: run as root, or grant it with `setcap cap_net_raw+ep "
                         f"{os.path.realpath(sys.executable)}`, or use --check tcp|http")
    conversations = split.get(layout.Kind.HTTP, (0, 0))[0]  # one socket per HTTP probe
    per_worker = -(-conversations // args.workers)
    max_in_flight = _open_files(per_worker + TCP_WINDOW + FD_RESERVE, args.max_in_flight)
    if max_in_flight is not None and args.workers > 1:
        max_in_flight *= args.workers  # the engine's limit is daemon-wide
    failing = sum(bad for _, bad in split.values())
    servers = args.servers or (2 if (os.cpu_count() or 1) >= 2 else 1)
    with TargetSet(space) as target_set:
        try:
            ports = target_set.open(layout.listener_ports_needed(split),
                                    layout.closed_ports_needed(split), servers)
        except TargetError as error:
            raise BenchError(str(error)) from None
        try:
            targets = layout.place(split, ports, space)
            config, _ = load_text(layout.config_text(targets, args.interval, args.timeout),
                                  filename="<bench>")
        except layout.LayoutError as error:
            raise BenchError(str(error)) from None
        except ConfigError as error:  # a bug of ours, but say it plainly
            raise BenchError(f"the bench's own configuration did not load: {error}") from None
        plan = plan_probes(config)
        kind_of = {CheckKind.TCP: layout.Kind.TCP, CheckKind.HTTP: layout.Kind.HTTP,
                   CheckKind.PING: layout.Kind.PING}
        kinds = {pid: kind_of[probe.key.kind] for pid, probe in plan.probes.items()}
        spec = report.RunSpec(args.check, count, failing, args.interval,
                              servers if ports.http else 0, max_in_flight, space.name)
        if not args.quiet:
            print(f"fastcheck bench: {args.check} x {count:,} targets, {args.duration:g} s, "
                  f"{args.workers} worker(s)…", file=err, flush=True)

        async def main() -> Any:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, stop.set)
            try:
                return await measure.run(
                    config, plan, kinds, duration_s=args.duration, workers=args.workers,
                    max_in_flight=max_in_flight,
                    server_pids=target_set.server_pids(), stop=stop,
                    progress=_progress_printer(err, args.quiet))
            finally:
                for signum in STOP_SIGNALS:
                    loop.remove_signal_handler(signum)
                    signal.signal(signum, _interrupted)  # not the defaults it restores

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(main())
        if not args.quiet and err.isatty():
            print(file=err)
    sizing_interval = args.sizing_interval or args.interval or 1.0
    return spec, result, report.sizing(spec, result, sizing_interval, args.headroom)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from fastcheck.bench import report

    _preflight(args)
    runs = []
    for count in args.targets:
        spec, result, size = _one_run(args, count, err)
        runs.append((spec, result, size))
        if result.interrupted:
            break
    interrupted = any(result.interrupted for _, result, _ in runs)
    if args.json:
        docs = [report.to_json(*run) for run in runs]
        json.dump(docs[0] if len(docs) == 1 and len(args.targets) == 1 else {"runs": docs},
                  out, indent=2)
        out.write("\n")
    else:
        for index, run_ in enumerate(runs):
            if index:
                print(file=out)
            for line in report.table_lines(*run_):
                print(line, file=out)
        if len(runs) > 1:
            print(file=out)
            for line in report.sweep_lines(runs):
                print(line, file=out)
    if args.plot is not None and not interrupted:
        from fastcheck.bench.plot import draw

        draw(args.plot, runs)
        print(f"fastcheck bench: plot written to {args.plot}", file=err)
    if interrupted:
        print("fastcheck bench: interrupted; everything it started was removed", file=err)
        return EXIT_INTERRUPTED
    return EXIT_OK
