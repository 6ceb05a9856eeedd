"""What a probe reports: up or down, why, and how long it took.

Owns: `ProbeResult` and the failure classes every probe speaks (`Failure`).
Must not: decide health (retry, rise/fall, quorum belong to health/) or hold state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Failure(enum.Enum):
    """Why a probe failed; `None` on a result means it succeeded."""

    REFUSED = "refused"  # connection refused / ICMP port unreachable
    TIMEOUT = "timeout"  # no (complete) answer within connect_timeout
    RESET = "reset"  # connection reset mid-conversation
    UNREACHABLE = "unreachable"  # host/network unreachable
    TLS = "tls"  # handshake or certificate failure
    HTTP_STATUS = "http_status"  # status code not in the configured list
    DIGEST = "digest"  # MD5 of the body differs
    REGEX = "regex"  # regex did not match (or matched, with regex_no_match)
    PROTOCOL = "protocol"  # garbage status line, bad banner, malformed DNS/UDP reply
    TOO_LARGE = "too_large"  # response body above the bound
    SCRIPT_EXIT = "script_exit"  # MISC_CHECK exit status said down
    SCRIPT_TIMEOUT = "script_timeout"  # MISC_CHECK killed after misc_timeout
    FILE = "file"  # FILE_CHECK value says down, or the file is unreadable
    LOCAL = "local"  # could not even try: bind failed, no buffer space, too many files


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome.

    Dynamic weights: `weight` is an absolute weight (MISC_CHECK misc_dynamic: exit status
    − 2); `weight_offset` is added to the real server's configured weight (FILE_CHECK:
    value × weight). A shared probe cannot know each owner's configured weight, so the
    health layer applies them. `weight` None means the real server's configured weight
    (keepalived: a misc_dynamic script that exits 0); `weight_offset` None means none.

    `failed_url`: HTTP_GET/SSL_GET, the index of the url that failed (a run stops there,
    so the urls before it passed); health/ follows keepalived's url pass with it.
    """

    ok: bool
    failure: Failure | None = None
    latency_s: float = 0.0
    detail: str = ""
    weight: int | None = None
    weight_offset: int | None = None
    failed_url: int | None = None

    @classmethod
    def up(cls, latency_s: float = 0.0, *, weight: int | None = None,
           weight_offset: int | None = None, detail: str = "") -> ProbeResult:
        return cls(True, None, latency_s, detail, weight, weight_offset)

    @classmethod
    def down(cls, failure: Failure, latency_s: float = 0.0, detail: str = "", *,
             failed_url: int | None = None) -> ProbeResult:
        return cls(False, failure, latency_s, detail, failed_url=failed_url)
