"""Reading a reload's new configuration off the event loop, inside a deadline and a
memory ceiling.

Owns: `read_config(path, config_id, limits)` — the loader runs in a child process
(``python -m fastcheck.daemon.reader``) under a memory ceiling (RLIMIT_DATA: heap and
private mappings, not the shared libraries or locale files an address-space limit would
count, whose size varies from machine to machine); a
child that runs past its deadline, or whose read is cancelled (a stop), is killed and
reaped; the result comes back pickled and is unpickled in a worker thread. It answers
with a `ReadResult`: the new Config and its warnings, or a `ReadFailure` and a one-line
reason (plus the loader's diagnostics, and the child's traceback for debug logs).
Also `ReadLimits` and `default_limits(real_servers)`, the one policy for how long and
how much memory a read may take, and the child's side (`main`).
Must not: change the running daemon, log (the Runtime reports what went wrong), or
unpickle anything but what its own child wrote.

Why a process and not a thread: only a process can be abandoned (a thread that runs a
hostile file forever cannot be stopped) and given its own memory ceiling, and the loader
holds the GIL while it works.
"""

from __future__ import annotations

import argparse
import asyncio
import copyreg
import dataclasses
import enum
import io
import os
import pickle
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastcheck.model import Config

from . import gcpolicy

# A read may take this long: the child's interpreter start plus a small file, with room
# for a slow or loaded machine (a refused valid file costs an operator more than a hostile
# one holding the next reload back a little longer) ...
MIN_TIMEOUT_S = 30.0
TIMEOUT_S_PER_10K_RS = 5.0          # ... plus this much per 10,000 real servers in force
MIN_MEMORY_BYTES = 1 << 30          # 1 GiB of data at least
MEMORY_BYTES_PER_RS = 32 << 10      # then 32 KiB per real server in force (40k RS: 2.3 GiB)
_STDERR_KEEP = 4096                 # the last bytes of the child's stderr kept for a reason


class ReadFailure(enum.Enum):
    """Why a reload read gave no configuration (the value is the metrics label)."""

    INVALID = "invalid"              # the loader found errors (ConfigError)
    UNREADABLE = "unreadable"        # the file cannot be opened or read
    CRASHED = "crashed"              # the loader raised something unexpected
    TIMED_OUT = "timeout"            # past the deadline: abandoned
    OUT_OF_MEMORY = "memory"         # past the memory ceiling
    DIED = "died"                    # the child ended without an answer


@dataclass(frozen=True, slots=True)
class ReadLimits:
    timeout_s: float
    memory_bytes: int


def default_limits(real_servers: int, *, timeout_s: float | None = None,
                   memory_bytes: int | None = None) -> ReadLimits:
    """The limits of a reload's read, sized on the configuration in force (`real_servers`)
    unless given explicitly (--reload-timeout, --reload-memory-limit)."""
    if timeout_s is None:
        timeout_s = MIN_TIMEOUT_S + TIMEOUT_S_PER_10K_RS * real_servers / 10_000
    if memory_bytes is None:
        memory_bytes = MIN_MEMORY_BYTES + MEMORY_BYTES_PER_RS * real_servers
    return ReadLimits(timeout_s, memory_bytes)


@dataclass(frozen=True, slots=True)
class ReadResult:
    config: Config | None
    warnings: tuple[str, ...] = ()
    failure: ReadFailure | None = None
    reason: str = ""                 # one line, for the log and systemd's STATUS
    errors: tuple[str, ...] = ()     # the loader's error diagnostics (INVALID)
    detail: str = ""                 # a traceback, for debug logs only


def failed(failure: ReadFailure, reason: str, *, errors: tuple[str, ...] = (),
           detail: str = "") -> ReadResult:
    return ReadResult(None, (), failure, reason, errors, detail)


def out_of_memory(memory_bytes: int, detail: str = "") -> ReadResult:
    return failed(ReadFailure.OUT_OF_MEMORY, f"reading needs more than "
                  f"{format_size(memory_bytes)} (--reload-memory-limit)", detail=detail)


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def format_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


# ----------------------------------------------------------------------------- the daemon's side


async def read_config(path: str, config_id: str | None, limits: ReadLimits, *,
                      python: str = sys.executable) -> ReadResult:
    """Loads `path` in a child process within `limits`. Cancelling it kills the child."""
    argv = [python, "-m", "fastcheck.daemon.reader", "--parent", str(os.getpid()),
            "--memory", str(limits.memory_bytes)]
    if config_id is not None:
        argv += ["--config-id", config_id]
    argv += ["--", path]
    try:
        child = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
    except OSError as error:
        return failed(ReadFailure.DIED, f"cannot start the reader process: {one_line(error)}")
    try:
        async with asyncio.timeout(limits.timeout_s):
            answer, errput = await child.communicate()
    except TimeoutError:
        return failed(ReadFailure.TIMED_OUT,
                      f"reading took longer than {limits.timeout_s:g} s (--reload-timeout); "
                      "abandoned")
    finally:
        if child.returncode is None:
            child.kill()
            await asyncio.shield(child.wait())
    if not answer:
        return _died(child.returncode, errput, limits)
    loop = asyncio.get_running_loop()
    try:  # in a thread: a large configuration takes a while to unpickle
        result = await loop.run_in_executor(None, _unpickle, answer)
    except Exception as error:
        return failed(ReadFailure.DIED, f"the reader's answer is unreadable: {one_line(error)}")
    if not isinstance(result, ReadResult):
        return failed(ReadFailure.DIED, "the reader's answer is not a ReadResult")
    return result


def _by_constructor(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    names = tuple(item.name for item in dataclasses.fields(cls))

    def reduce(obj: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, tuple([getattr(obj, name) for name in names])
    return reduce


def _dispatch_table() -> dict[type, Any]:
    """Model dataclasses pickled as constructor calls: a slotted frozen dataclass's own
    `__getstate__`/`__setstate__` pickle at half the speed, both ways. Only classes whose
    every field is an `__init__` argument and that have no `__post_init__` qualify."""
    import fastcheck.errors
    import fastcheck.model

    table: dict[type, Any] = dict(copyreg.dispatch_table)
    for module in (fastcheck.model, fastcheck.errors):
        for cls in vars(module).values():
            if (isinstance(cls, type) and dataclasses.is_dataclass(cls)
                    and cls.__module__ == module.__name__
                    and not hasattr(cls, "__post_init__")
                    and all(item.init for item in dataclasses.fields(cls))):
                table[cls] = _by_constructor(cls)
    return table


def _pickle(result: ReadResult) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _dispatch_table()
    pickler.dump(result)
    return buffer.getvalue()


def _unpickle(answer: bytes) -> object:
    # The collector paused: rescanning a configuration's hundreds of thousands of new
    # objects while they are built would hold the GIL (hence the loop) for tenths of a
    # second each time, and double the time taken. The Runtime collects after the switch.
    with gcpolicy.paused(freeze=True):
        return pickle.loads(answer)


def _died(status: int | None, errput: bytes, limits: ReadLimits) -> ReadResult:
    lines = errput[-_STDERR_KEEP:].decode("utf-8", "replace").strip().splitlines()
    last = lines[-1].strip() if lines else ""
    if status is not None and status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        how = f"the reader process was killed by {name}"
    else:
        how = f"the reader process exited with status {status} and no answer"
    if "MemoryError" in last:
        return out_of_memory(limits.memory_bytes, "\n".join(lines))
    return failed(ReadFailure.DIED, f"{how}{': ' + last if last else ''}",
                  detail="\n".join(lines))


# ----------------------------------------------------------------------------- the child's side


def _read(path: str, config_id: str | None, memory_bytes: int) -> ReadResult:
    from fastcheck.config.loader import load_file
    from fastcheck.errors import ConfigError

    try:
        config, diagnostics = load_file(path, config_id=config_id)
    except ConfigError as error:
        errors = tuple(str(item) for item in error.diagnostics)
        return failed(ReadFailure.INVALID, f"{len(errors)} error(s)", errors=errors)
    except MemoryError:
        pass  # the partial state is gone once out of the handler: report below
    except OSError as error:
        return failed(ReadFailure.UNREADABLE, error.strerror or one_line(error))
    except Exception as error:  # RecursionError included: a bug, but never a dead daemon
        return failed(ReadFailure.CRASHED, f"the loader failed: {one_line(error)}",
                      detail="".join(traceback.format_exception(error)))
    else:
        return ReadResult(config, tuple(str(item) for item in diagnostics.items))
    return out_of_memory(memory_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastcheck.daemon.reader",
                                     description="fastcheck's reload reader; run by the "
                                                 "daemon, never by hand")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--memory", type=int, required=True)
    parser.add_argument("--config-id", default=None)
    parser.add_argument("path")
    args = parser.parse_args(argv)
    from fastcheck.daemon.lineage import die_with_parent

    die_with_parent(args.parent)
    answer = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but the answer goes to the daemon's pipe
    resource.setrlimit(resource.RLIMIT_DATA, (args.memory, args.memory))
    with gcpolicy.paused():  # a short-lived process that builds one large structure
        result = _read(args.path, args.config_id, args.memory)
        try:
            data = _pickle(result)
        except MemoryError:
            del result
            data = pickle.dumps(out_of_memory(args.memory))
    answer.write(data)
    answer.flush()
    return 0


if __name__ == "__main__":
    # Run as the module of its real name, so that what it pickles names that module.
    from fastcheck.daemon.reader import main as _main

    sys.exit(_main())
