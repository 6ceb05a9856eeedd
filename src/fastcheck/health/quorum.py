"""Virtual-server quorum arithmetic with hysteresis, and IPVS weight clamping.

Owns: the rule deciding whether a virtual server has quorum given the sum of its live
real servers' weights (keepalived 2.2.7 check/ipwrapper.c `update_quorum_state`,
`weigh_live_realservers`, include/check_data.h `real_weight`).
Must not: hold state or emit events.

- gained when down and `sum >= quorum + hysteresis`;
- lost when up and (`sum == 0` or `sum < quorum - hysteresis`);
- otherwise unchanged. Note the asymmetry: a zero sum always loses quorum, even with
  `quorum 0`, exactly as keepalived's `!weight_sum ||` test.
- at start (keepalived `set_quorum_states`): up iff `sum >= quorum + hysteresis`.
"""

from __future__ import annotations

IPVS_WEIGHT_LIMIT = 2**31 - 1


def real_weight(weight: int) -> int:
    """An effective weight as the kernel takes it: clamped to 0 … 2**31-1."""
    if weight < 0:
        return 0
    return IPVS_WEIGHT_LIMIT if weight > IPVS_WEIGHT_LIMIT else weight


def initial_quorum(weight_sum: int, quorum: int, hysteresis: int) -> bool:
    return weight_sum >= quorum + hysteresis


def threshold(up: bool, quorum: int, hysteresis: int) -> int:
    """The sum the current state is compared with (keepalived's `threshold`)."""
    return quorum - hysteresis if up else quorum + hysteresis


def next_quorum(up: bool, weight_sum: int, quorum: int, hysteresis: int) -> bool:
    """The quorum state after the live weight sum became `weight_sum`."""
    if up:
        return not (weight_sum == 0 or weight_sum < quorum - hysteresis)
    return weight_sum >= quorum + hysteresis
