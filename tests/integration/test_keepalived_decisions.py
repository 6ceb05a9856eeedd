"""keepalived 2.2.7's health decisions and notifier runs, end to end: `fastcheck run
--dry-run` against loopback listeners, read back through its log and SIGUSR1 dumps.

A dry run never runs notify scripts; it logs "[dry-run] would run <notifier> of <server>"
for each one, which is what these tests look for, next to keepalived's own lines.
"""

from __future__ import annotations

from pathlib import Path

from daemonproc import DryRun, free_port, listener


def real(port: int, extra: str = "", check: str = "TCP_CHECK { connect_timeout 1 }") -> str:
    return (f"    real_server 127.0.0.1 {port} {{\n"
            f'        notify_up "/bin/true up {port}"\n'
            f'        notify_down "/bin/true down {port}"\n{extra}        {check}\n    }}\n')


def virtual(vip: str, servers: str, extra: str = "") -> str:
    return (f"virtual_server {vip} 80 {{\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n"
            f"    delay_loop 0.3\n"
            f'    quorum_up "/bin/true qu {vip}"\n    quorum_down "/bin/true qd {vip}"\n'
            f"{extra}{servers}}}\n")


def start(tmp: Path, text: str) -> DryRun:
    conf = tmp / "fc.conf"
    conf.write_text(text)
    return DryRun(tmp, conf, dump_timeout_s=5)


def weights(daemon: DryRun, vip: str) -> dict[int, int]:
    for service in daemon.dump()["ipvs"]:
        if service["address"] == vip:
            return {d["port"]: d["weight"] for d in service["destinations"]}
    return {}


def stop(daemon: DryRun) -> str:
    """SIGTERM, exit status 0; the whole log."""
    assert daemon.stop(timeout=15) == 0, daemon.text()
    return daemon.text()


def test_quorum_up_at_start_and_for_a_vs_a_reload_adds(tmp_path):
    """Item 1: keepalived starts each VS with quorum down and gains it once its real
    servers are in ("Gained quorum", quorum_up, FIFO line); so does a reload-added VS."""
    sock, port = listener()
    one = virtual("10.0.0.1", real(port))
    daemon = start(tmp_path, one)
    try:
        daemon.wait_log("Gained quorum 1+0=1 <= 1 for VS [10.0.0.1]:tcp:80",
                        "[dry-run] would run quorum_up of VS [10.0.0.1]:tcp:80")
        daemon.reload(one + virtual("10.0.0.2", real(port, "        weight 3\n"),
                                    "    quorum 2\n    hysteresis 1\n"))
        daemon.wait_log("Gained quorum 2+1=3 <= 3 for VS [10.0.0.2]:tcp:80",
                        "[dry-run] would run quorum_up of VS [10.0.0.2]:tcp:80")
        text = stop(daemon)
    finally:
        daemon.kill()
        sock.close()
    assert text.count("would run quorum_up of VS [10.0.0.1]:tcp:80") == 1


def test_first_failure_after_start_removes_at_once_and_inhibit_under_sorry_server(tmp_path):
    """Item 4: a dead server goes on its first failed check after a fresh start, with no
    retries (retry 3, delay_before_retry 30 would take a minute and a half otherwise).
    Item 7 and the log lines: an inhibited server is "Disabled", and when the sorry server
    comes in the healthy inhibited one goes to weight 0 instead of being deleted."""
    sock, port = listener()
    dead = free_port()
    tcp = "TCP_CHECK { connect_timeout 1\n retry 3\n delay_before_retry 30 }"
    inhibit = "        inhibit_on_failure\n"
    text = virtual("10.0.0.1", real(port, inhibit, tcp) + real(dead, inhibit, tcp),
                   "    quorum 2\n    sorry_server 127.0.0.9 80\n")
    daemon = start(tmp_path, text)
    try:
        daemon.wait_log(f"TCP_CHECK on service [127.0.0.1]:tcp:{dead} failed.",
                        f"Disabling service [127.0.0.1]:tcp:{dead} of VS [10.0.0.1]:tcp:80",
                        f"[dry-run] would run notify_down of [127.0.0.1]:tcp:{dead}",
                        "Lost quorum 2-0=2 > 1 for VS [10.0.0.1]:tcp:80",
                        "Adding sorry server [127.0.0.9]:tcp:80 to VS [10.0.0.1]:tcp:80",
                        "[dry-run] would run quorum_down of VS [10.0.0.1]:tcp:80",
                        timeout=10.0)
        assert weights(daemon, "10.0.0.1") == {port: 0, dead: 0, 80: 1}
        log = stop(daemon)
    finally:
        daemon.kill()
        sock.close()
    assert "failed after 3 retries" not in log


def test_reload_and_stop_notifiers(tmp_path):
    """Item 9: a reload removing a VS with a live server runs its notify_down and the VS's
    quorum_down. Item 11: an alpha check's first failure runs notify_down; with omega a
    stop runs quorum_down even for a VS without quorum."""
    sock, port = listener()
    dead = free_port()
    alpha = "TCP_CHECK { connect_timeout 1\n alpha }"
    keep = virtual("10.0.0.1", real(dead, "", alpha), "    omega\n")
    gone = virtual("10.0.0.2", real(port))
    daemon = start(tmp_path, keep + gone)
    try:
        daemon.wait_log(f"[dry-run] would run notify_down of [127.0.0.1]:tcp:{dead}",
                        "[dry-run] would run quorum_up of VS [10.0.0.2]:tcp:80")
        assert "would run quorum_up of VS [10.0.0.1]" not in daemon.text()
        daemon.reload(keep)
        daemon.wait_log(f"[dry-run] would run notify_down of [127.0.0.1]:tcp:{port} of VS "
                        "[10.0.0.2]:tcp:80",
                        "[dry-run] would run quorum_down of VS [10.0.0.2]:tcp:80")
        log = stop(daemon)
    finally:
        daemon.kill()
        sock.close()
    assert "[dry-run] would run quorum_down of VS [10.0.0.1]:tcp:80" in log
