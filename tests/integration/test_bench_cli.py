"""`fastcheck bench` end to end: small runs of every check type against the targets it
starts, bad input, and interruption leaving nothing behind.

Runs are small (at most a few hundred loopback targets, 2 s) and nothing here asserts a
speed: only that checks happened, that the failing share shows up as failing targets,
that the implementation is reported, and that everything started is removed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastcheck.bench.targets import icmp_permitted
from fastcheck.cli import main

BENCH = [sys.executable, "-m", "fastcheck.cli", "bench"]
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def bench_json(*options: str) -> dict[str, Any]:
    done = subprocess.run([*BENCH, "--json", "-q", *options], capture_output=True,
                          text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def listening_ports() -> set[int]:
    """Ports with a listening TCP socket, any owner (from /proc/net/tcp and tcp6)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def bench_ports() -> set[int]:
    return {port for port in listening_ports() if 30_000 <= port < 32_700}


def needs_icmp(check: str) -> None:
    if check in ("ping", "mixed") and not icmp_permitted():
        pytest.skip("ping targets need CAP_NET_RAW, which this test process lacks")


@pytest.mark.parametrize("check", ["tcp", "http", "ping", "mixed"])
def test_small_run_reports_checks_and_the_failing_share(check: str) -> None:
    needs_icmp(check)
    failing = "0" if check == "ping" else "0.1"
    doc = bench_json("--check", check, "--targets", "200", "--duration", "1",
                     "--failing", failing)
    expected_failing = 0 if check == "ping" else 20
    assert doc["check"] == check and doc["targets"] == 200
    assert doc["failing_targets"] == expected_failing
    assert doc["never_answered"] == 0
    assert doc["down_targets"] == expected_failing  # exactly the closed-port targets
    assert (doc["failed"] > 0) == bool(expected_failing)
    assert doc["checks"] == doc["ok"] + doc["failed"]
    assert doc["checks"] > 200  # as fast as possible: every target more than once
    assert doc["checks_per_s"] > 0
    assert doc["engine"] == "LocalEngine" and doc["workers"] == 1
    assert doc["implementation"] and set(doc["implementation"].values()) <= {"c", "py"}
    kinds = {"mixed": {"tcp", "http", "ping"}}.get(check, {check})
    assert set(doc["by_kind"]) == kinds
    assert all(counts["checks"] > 0 for counts in doc["by_kind"].values())
    assert doc["scheduler_lag_s"]["max"] >= doc["scheduler_lag_s"]["p50"] >= 0
    assert doc["probe_latency_s"]["p99"] > 0
    assert doc["cpu_s_per_1000_checks"]["user"] + doc["cpu_s_per_1000_checks"]["system"] > 0
    assert doc["memory_bytes"]["rss"] > 0
    assert doc["sizing"]["real_servers"] > 0 and "real servers" in doc["sizing"]["text"]
    assert not doc["interrupted"]


def test_paced_run_reports_lag_and_missed_runs() -> None:
    doc = bench_json("--check", "tcp", "--targets", "100", "--duration", "2",
                     "--interval", "0.5")
    assert doc["interval_s"] == 0.5 and not doc["as_fast_as_possible"]
    # 100 targets every 0.5 s for 2 s: each checked about 4 times (first runs spread
    # over one interval), never as often as an unpaced run would
    assert 100 <= doc["checks"] <= 600
    assert doc["missed_runs"] is not None
    assert doc["sizing"]["used_share"] is not None


def test_workers_run_the_sharded_engine() -> None:
    try:
        from fastcheck.daemon.workers import make_engine  # noqa: F401
    except ImportError:
        pytest.skip("fastcheck.daemon.workers is not in this tree yet")
    doc = bench_json("--check", "tcp", "--targets", "200", "--duration", "1",
                     "--workers", "2", "--failing", "0.05")
    assert doc["workers"] == 2 and doc["engine"] == "ShardedEngine"
    assert doc["down_targets"] == 10 and doc["never_answered"] == 0


def test_table_output_names_every_figure() -> None:
    out, err = io.StringIO(), io.StringIO()
    status = main(["bench", "--targets", "50", "--duration", "1", "-q"], out, err)
    assert status == 0, err.getvalue()
    text = out.getvalue()
    for label in ("checks/s", "CPU per 1,000", "scheduler lag", "probe latency", "memory",
                  "implementation", "sizing", "real servers"):
        assert label in text


def run_main(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        status = main(["bench", *argv], out, err)
    except SystemExit as exit_:  # argparse usage errors
        status = int(exit_.code or 0)
    return status, err.getvalue()


def test_too_many_targets_for_the_address_space() -> None:
    status, message = run_main("--check", "ping", "--targets", "5000000", "-q")
    assert status == 1
    assert "loopback address space" in message and "lower --targets" in message
    status, message = run_main("--check", "ping", "--targets", "70000", "--netns", "-q")
    assert status == 1
    assert "198.18.0.0/16" in message and "lower --targets" in message
    assert not _bench_namespaces()  # refused before anything was made


def test_ping_targets_cannot_fail_on_loopback() -> None:
    status, message = run_main("--check", "ping", "--targets", "10", "--failing", "0.5")
    assert status == 1 and "lower --failing" in message and "--netns" in message


def test_layout_spreads_targets_without_sharing_an_address_and_port() -> None:
    from fastcheck.bench.layout import NETNS, Kind, Ports, place, split

    counts = split("mixed", 1000, 0.25, NETNS)
    assert sum(n for n, _ in counts.values()) == 1000
    assert sum(bad for _, bad in counts.values()) == 250
    ports = Ports(tuple(range(30000, 30064)), tuple(range(30064, 30128)),
                  tuple(range(30128, 30192)))
    targets = place(counts, ports, NETNS)
    assert len({(t.address, t.port) for t in targets}) == 1000
    pings = [t for t in targets if t.kind is Kind.PING]
    assert len({t.address for t in pings}) == len(pings)
    assert all(t.address.startswith("198.19.") for t in pings if t.failing)
    assert all(t.port in ports.closed for t in targets if t.failing and t.kind is not Kind.PING)


def test_negative_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = run_main("--duration", "-3")
    assert status == 2
    assert "--duration: must be above 0" in capsys.readouterr().err


def test_more_workers_than_cpus() -> None:
    try:
        from fastcheck.daemon.workers import make_engine  # noqa: F401
    except ImportError:
        pytest.skip("fastcheck.daemon.workers is not in this tree yet")
    status, message = run_main("--workers", str((os.cpu_count() or 1) + 1))
    assert status == 1 and "--workers" in message and "CPUs" in message


def test_plot_without_matplotlib_says_what_to_install() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        status, message = run_main("--targets", "10,20", "--plot", "/tmp/never.png")
        assert status == 1 and "fastcheck[plot]" in message
        assert not Path("/tmp/never.png").exists()
    else:
        pytest.skip("matplotlib is installed: the missing-library message cannot show")


def test_ping_without_cap_net_raw_says_what_to_change() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_NET_RAW")
    if not icmp_permitted():
        pytest.skip("this process already lacks CAP_NET_RAW")
    done = subprocess.run(
        [setpriv, "--inh-caps=-net_raw", "--bounding-set=-net_raw", *BENCH, "--check",
         "ping", "--targets", "10", "--duration", "1", "-q"],
        capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 1, done.stderr
    assert "CAP_NET_RAW" in done.stderr and "Traceback" not in done.stderr


def _bench_namespaces() -> list[str]:
    if shutil.which("ip") is None:
        return []
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             timeout=30).stdout
    return [line.split()[0] for line in listing.splitlines()
            if line.startswith("fcbench-")]


def needs_netns() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("--netns needs root and iproute2")


def test_netns_run_fails_ping_targets_by_timeout() -> None:
    needs_netns()
    needs_icmp("ping")
    doc = bench_json("--netns", "--check", "mixed", "--targets", "300", "--duration", "2",
                     "--failing", "0.2", "--timeout", "0.5")
    assert doc["space"] == "netns" and doc["failing_targets"] == 60
    assert doc["down_targets"] == 60 and doc["never_answered"] == 0
    assert doc["by_kind"]["ping"]["failed"] > 0  # the blackholed addresses time out
    assert not _bench_namespaces()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found.update(int(word) for word in handle.read().split())
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(("signum", "netns"), [(signal.SIGINT, False),
                                               (signal.SIGTERM, False),
                                               (signal.SIGINT, True)])
def test_interruption_removes_everything(signum: int, netns: bool) -> None:
    if netns:
        needs_netns()
    check = "mixed" if icmp_permitted() else "http"
    before = bench_ports()
    bench = subprocess.Popen([*BENCH, "--check", check, "--targets", "300", "--duration",
                              "60", "--servers", "2", "--failing", "0.1",
                              *(["--netns"] if netns else [])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env())
    try:
        assert bench.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the progress display: the run is under way
            line = bench.stderr.readline()
            if ("checks" in line and "/s" in line) or not line:
                break
        children = _children(bench.pid)
        during = bench_ports()
        assert len(children) >= 2  # the target servers
        if netns:
            assert _bench_namespaces() == [f"fcbench-{bench.pid}"]
        else:
            assert during - before  # its listeners
        bench.send_signal(signum)
        out, err = bench.communicate(timeout=30)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "INTERRUPTED" in out  # the partial report is still printed
    time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)]
    assert not (bench_ports() - before) & (during - before)
    assert not _bench_namespaces()


def test_sweep_plot(tmp_path: Path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib (the fastcheck[plot] extra) is not installed")
    picture = tmp_path / "sweep.png"
    status, message = run_main("--targets", "20,40", "--duration", "0.5", "-q",
                               "--plot", str(picture))
    assert status == 0, message
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_json_has_one_document_per_run() -> None:
    done = subprocess.run([*BENCH, "--json", "-q", "--targets", "20,40", "--duration", "0.5"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert [run["targets"] for run in runs] == [20, 40]
