"""Helpers the kernel tests share, for what they do to the guest's kernel: `ip` commands,
and the IPVS table read back from `ipvsadm -Ln` text.

Test files import it by name (pytest puts this directory on sys.path). It holds no tests
and no fixtures (those are in conftest.py and the test files), and touches nothing itself.
"""

from __future__ import annotations

import subprocess

View = dict[str, set[str]]  # "VIP:PORT" → {"RIP:PORT"}
FullView = dict[str, tuple[str, frozenset[tuple[str, str, str]]]]  # + scheduler, fwd, weight


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def full_view(text: str) -> FullView:
    """`ipvsadm -Ln` → {"VIP:PORT": (scheduler, {(RIP:PORT, forward, weight)})}, TCP only."""
    table: dict[str, tuple[str, set[tuple[str, str, str]]]] = {}
    current: set[tuple[str, str, str]] | None = None
    for line in text.splitlines()[3:]:
        words = line.split()
        if words[0] == "TCP":
            current = set()
            table[words[1]] = (words[2], current)
        elif words[0] == "->" and current is not None:
            current.add((words[1], words[2], words[3]))
        else:
            current = None
    return {key: (scheduler, frozenset(dests)) for key, (scheduler, dests) in table.items()}


def view(text: str) -> View:
    """`ipvsadm -Ln` → {"VIP:PORT": {"RIP:PORT"}}, TCP services only."""
    return {key: {dest[0] for dest in dests} for key, (_, dests) in full_view(text).items()}
