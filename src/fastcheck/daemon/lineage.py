"""Child processes of the daemon that must not outlive it.

Owns: `die_with_parent(parent)`, which a child process (probe worker, configuration
reader) calls first: the kernel sends it SIGKILL when the daemon dies, and it exits at
once if the daemon is already gone.
Must not: import anything heavier than the standard library (children call it before
their own imports finish).
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the thread that forked it exits (Linux); and if the
    parent is already gone, exit now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux: EOF still ends us
        pass
    if os.getppid() != parent:
        raise SystemExit(0)
