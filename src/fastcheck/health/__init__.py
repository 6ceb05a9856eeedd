"""Health decisions: results in, up/down, weights, quorum, events and the live IPVS table out.

Owns: the sans-IO health layer (checker.py: one check's retry/rise machine; quorum.py:
quorum arithmetic; budget.py: the removal budget; state.py: HealthState, the whole
configuration's health and live table; reload.py: carry_over; events.py: what it emits).
Must not: import asyncio, socket or pyroute2, read a clock, or run anything.
"""

from fastcheck.health.checker import CheckState, HealthOptions
from fastcheck.health.reload import carry_over
from fastcheck.health.state import HealthState

__all__ = ["CheckState", "HealthOptions", "HealthState", "carry_over"]
