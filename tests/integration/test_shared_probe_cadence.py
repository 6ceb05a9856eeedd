"""A probe shared by two virtual servers keeps each owner's keepalived timing, end to end:
`fastcheck run --dry-run` against a loopback listener, read back through SIGUSR1 dumps.

The real server sits in a strict virtual server (delay_loop 0.3 s, retry 1) and a lenient
one (delay_loop 30 s, retry 3, delay_before_retry 5 s); identical TCP_CHECKs, so one probe.
When the listener goes, the strict one removes it within a second or so; the lenient one
must keep it until its own checker has failed 4 times, 45 s after its last good check (it
used to be removed with the strict one, its retries counted on the strict one's runs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemonproc import DryRun, listener, table

CHECK = "connect_timeout 1\n warmup 0\n"
STRICT = f"TCP_CHECK {{\n{CHECK} delay_loop 0.3\n retry 1\n delay_before_retry 0.1\n }}"
LENIENT = f"TCP_CHECK {{\n{CHECK} delay_loop 30\n retry 3\n delay_before_retry 5\n }}"


def checks(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The check of the real server in each virtual server, in configuration order."""
    return [rs["checks"][0] for vs in doc["health"]["virtual_servers"]
            for rs in vs["real_servers"]]


def wait_until(daemon: DryRun, done: Callable[[dict[str, Any]], bool],
               what: str) -> dict[str, Any]:
    return daemon.wait_dump(done, what, timeout=20,
                            show=lambda doc: f"{table(doc)}, {checks(doc)}")


def test_the_lenient_owner_of_a_shared_probe_keeps_its_own_retries(tmp_path: Path) -> None:
    sock, port = listener()
    conf = tmp_path / "fc.conf"
    conf.write_text("".join(
        f"virtual_server {vip} 80 {{\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
        f" real_server 127.0.0.1 {port} {{\n {check}\n }}\n}}\n"
        for vip, check in (("10.0.0.1", STRICT), ("10.0.0.2", LENIENT))))
    daemon = DryRun(tmp_path, conf)
    try:
        daemon.wait_log("starting:", timeout=20)
        both = {"10.0.0.1": {port}, "10.0.0.2": {port}}
        # both owners took the first (good) result; the lenient one's next is 30 s away
        doc = wait_until(daemon, lambda d: table(d) == both
                         and all(c["has_run"] for c in checks(d)), "started")
        assert len({c["probe_id"] for c in checks(doc)}) == 1  # one probe, two owners

        sock.close()
        gone = {"10.0.0.1": set(), "10.0.0.2": {port}}
        doc = wait_until(daemon, lambda d: table(d) == gone, "strict removal")
        # The strict owner goes on probing (0.3 s apart, 0.1 s after a failure): a dozen
        # failed runs the lenient owner must not take as its own retries.
        seen = doc["counters"]["results"]
        doc = wait_until(daemon, lambda d: d["counters"]["results"] >= seen + 12,
                         "a dozen more runs")
        assert table(doc) == gone
        lenient = checks(doc)[1]
        assert lenient["state"] == "up" and lenient["failures"] == 0

        assert daemon.stop(timeout=10) == 0
    finally:
        daemon.kill()
        sock.close()
