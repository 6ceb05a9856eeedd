"""Deadlines of the pure connect engines (``tcpconnect_py``, ``exchange_py``), grouped by
timeout; the pure counterpart of ``deadlines_c.pxd``'s heap.

Owns: ``timeout -> {fd: deadline}`` in start order. Each group's first entry is its
earliest deadline (dicts keep insertion order, deletion is O(1)), and while ``now`` never
goes back a group's expired entries are a prefix. Expired entries come out in deadline
order, ties in start order, as the compiled twins' heap gives them.
Must not: read a clock, or know what an fd's socket is doing.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["DeadlineGroups"]


class DeadlineGroups:
    """The deadlines of the sockets in flight, one insertion-ordered dict per timeout."""

    __slots__ = ("_groups",)

    def __init__(self) -> None:
        self._groups: dict[float, dict[int, float]] = {}

    def add(self, fd: int, timeout: float, deadline: float) -> None:
        """Track ``fd`` (started after every fd already tracked) until ``deadline``."""
        group = self._groups.get(timeout)
        if group is None:
            group = self._groups[timeout] = {}
        group[fd] = deadline

    def remove(self, fd: int, timeout: float) -> None:
        """Stop tracking ``fd`` (added with this ``timeout``)."""
        group = self._groups[timeout]
        del group[fd]
        if not group:
            del self._groups[timeout]

    def clear(self) -> None:
        self._groups.clear()

    def earliest(self) -> float | None:
        """The earliest deadline tracked, or None when there is none."""
        earliest = None
        for group in self._groups.values():
            for deadline in group.values():
                if earliest is None or deadline < earliest:
                    earliest = deadline
                break
        return earliest

    def expired(self, now: float, seq: Callable[[int], int]) -> list[int]:
        """The fds whose deadline is at or before ``now``, earliest first (ties: lower
        ``seq(fd)``, the start order). They stay tracked until ``remove``."""
        expired: list[tuple[float, int]] = []
        groups = 0
        for group in self._groups.values():
            first = len(expired)
            for fd, deadline in group.items():
                if deadline > now:
                    break
                expired.append((deadline, fd))
            groups += len(expired) > first
        if groups > 1:
            expired.sort(key=lambda item: (item[0], seq(item[1])))
        return [fd for _, fd in expired]
