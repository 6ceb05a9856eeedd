"""The removal budget: stop pulling real servers when too many fail at once.

Owns: the sliding window of recent health removals, the set of real servers held in the
IPVS table because the budget was exhausted, and the trip/recover decision.
Must not: touch the table or real-server state (HealthState asks and applies), or read
a clock (`now` comes in).

Rule (a fastcheck extension; off unless `share` is set). The scope is every real server
the configuration has (`total`); `limit = max(1, floor(share × total))`.
- A real server going down is *removed* while fewer than `limit` removals happened in
  the last `window_s` seconds; otherwise it is *held* (kept in the table at its weight)
  and the budget trips — `RemovalBudgetTripped` once per trip, `trips` counts them.
- While tripped every further down server is held too.
- It recovers when `held + removals in the window` drops below `limit` (servers came
  back, or old removals left the window): the held servers are released (removed) and
  count as removals now. A farm that stays mostly failed stays tripped: a mass failure
  is more likely the checker's view than the farm's.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable


class RemovalBudget:
    __slots__ = ("held", "limit", "recent", "share", "tripped", "trips", "window_s")

    def __init__(self, share: float | None, window_s: float, total: int) -> None:
        self.share = share
        self.window_s = window_s
        self.limit = max(1, math.floor(share * total)) if share is not None else 0
        self.recent: deque[float] = deque()
        self.held: dict[Hashable, None] = {}
        self.tripped = False
        self.trips = 0

    @property
    def enabled(self) -> bool:
        return self.share is not None

    def _prune(self, now: float) -> None:
        recent, horizon = self.recent, now - self.window_s
        while recent and recent[0] <= horizon:
            recent.popleft()

    def request_removal(self, now: float, key: Hashable) -> tuple[bool, bool]:
        """(removed?, just tripped?) for a real server that went down."""
        if self.share is None:
            return True, False
        self._prune(now)
        if not self.tripped and len(self.recent) < self.limit:
            self.recent.append(now)
            return True, False
        self.held[key] = None
        if self.tripped:
            return False, False
        self.tripped = True
        self.trips += 1
        return False, True

    def came_back(self, key: Hashable) -> bool:
        """A real server came up; True if it was held (it never left the table)."""
        return self.held.pop(key, 0) is None

    def forget(self, key: Hashable) -> None:
        self.held.pop(key, None)

    def try_recover(self, now: float) -> list[Hashable] | None:
        """The held keys to remove now if the budget recovers, else None."""
        if not self.tripped:
            return None
        self._prune(now)
        if len(self.held) + len(self.recent) >= self.limit:
            return None
        released = list(self.held)
        self.held.clear()
        self.recent.extend(now for _ in released)
        self.tripped = False
        return released

    def next_deadline(self) -> float | None:
        """When the oldest removal leaves the window (only matters while tripped)."""
        if self.tripped and self.recent:
            return self.recent[0] + self.window_s
        return None

    def snapshot(self) -> dict[str, object]:
        return {"enabled": self.enabled, "share": self.share, "window_s": self.window_s,
                "limit": self.limit, "tripped": self.tripped, "trips": self.trips,
                "held": len(self.held), "removals_in_window": len(self.recent)}
