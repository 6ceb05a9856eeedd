"""`fastcheck doctor` as an operator runs it: a subprocess, its exit status and output.

On the real machine (whatever it has) and on fake /proc trees given with --root: the
exit status follows the findings (1 only when one fails; warnings alone give 0), --json
parses, forcing pure Python shows every hot path as "py" with a warning, and nothing
ever ends in a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastcheck.synthetic import farm

HEALTHY = {
    "proc/sys/net/ipv4/ping_group_range": "1\t0\n",
    "proc/sys/net/core/somaxconn": "4096\n",
    "proc/sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
    "proc/sys/net/ipv4/tcp_max_tw_buckets": "262144\n",
    "proc/sys/net/ipv4/tcp_tw_reuse": "2\n",
    "proc/sys/fs/file-max": "9223372036854775807\n",
    "proc/sys/fs/nr_open": "1048576\n",
    "proc/sys/kernel/osrelease": "6.1.0-test\n",
    "proc/self/status": "Gid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t000001ffffffffff\n",
    "proc/self/limits": "Limit Soft Hard Units\nMax open files  1048576  1048576  files\n",
    "proc/net/ip_vs": "IP Virtual Server version 1.2.1 (size=1048576)\n",
}


def tree(root: Path, **changes: str | None) -> Path:
    files = dict(HEALTHY)
    files.update({key.replace("__", "/"): text for key, text in changes.items()})
    for path, text in files.items():
        if text is not None:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
    return root


def doctor(*argv: str, pure: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCHECK_")}
    if pure:
        env["FASTCHECK_NO_EXTENSIONS"] = "1"
    result = subprocess.run([sys.executable, "-m", "fastcheck.cli", "doctor", *argv],
                            capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def findings_of(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {item["name"]: item for item in json.loads(result.stdout)["findings"]}


def test_real_machine_json_and_exit_status_agree():
    result = doctor("--json")
    report = json.loads(result.stdout)
    statuses = {item["status"] for item in report["findings"]}
    assert report["status"] == ("fail" if "fail" in statuses else
                                "warn" if "warn" in statuses else "ok")
    assert result.returncode == (1 if report["status"] == "fail" else 0), result.stderr
    assert set(report["hot_paths"].values()) <= {"c", "py"} and report["hot_paths"]
    ipvs = findings_of(result)["ipvs"]
    if Path("/proc/net/ip_vs").exists():
        assert "1." in ipvs["found"]  # a version, whether netlink answered or refused
    else:
        print("this host has no IPVS: checking that doctor says so")
        assert ipvs["status"] == "fail"
        assert ipvs["fix"].startswith("modprobe ip_vs")
        assert result.returncode == 1


def test_real_machine_table():
    result = doctor()
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "FOUND"]
    assert any(line.split()[:2] in (["ok", "ipvs"], ["FAIL", "ipvs"]) for line in lines)
    assert lines[-1].endswith(f"(exit {result.returncode})")


def test_pure_python_forced_is_reported_as_py_with_a_warning_and_does_not_fail(tmp_path):
    result = doctor("--json", "--root", str(tree(tmp_path)), pure=True)
    report = json.loads(result.stdout)
    assert report["hot_paths"] and set(report["hot_paths"].values()) == {"py"}
    hot = [item for item in report["findings"] if item["name"].startswith("hot-path:")]
    assert len(hot) == len(report["hot_paths"])
    assert all(item["status"] == "warn" and "FASTCHECK_NO_EXTENSIONS" in item["fix"]
               for item in hot)
    assert report["status"] == "warn"
    assert result.returncode == 0  # warnings do not fail


def test_compiled_hot_paths_are_the_default_when_built(tmp_path):
    report = json.loads(doctor("--json", "--root", str(tree(tmp_path))).stdout)
    import fastcheck._ext

    where = Path(fastcheck._ext.__file__).parent  # the checkout (editable) or site-packages
    if not list(where.glob("*_c.*.so")):
        pytest.skip(f"the compiled extensions are not built in {where}")
    assert set(report["hot_paths"].values()) == {"c"}


def test_missing_ipvs_and_capabilities_fail_with_fixes(tmp_path):
    root = tree(tmp_path, proc__net__ip_vs=None,
                proc__self__status="Gid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\n")
    result = doctor("--root", str(root))
    assert result.returncode == 1
    assert "modprobe ip_vs" in result.stdout
    assert "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW" in result.stdout
    fails = {line.split()[1] for line in result.stdout.splitlines()
             if line.startswith("FAIL")}
    assert fails == {"ipvs", "CAP_NET_ADMIN"}


def test_low_nofile_against_a_big_configuration_fails(tmp_path):
    conf = tmp_path / "farm.conf"
    conf.write_text(farm(100, 20))  # 2,000 checks
    root = tree(tmp_path / "root",
                proc__self__limits="Limit Soft Hard Units\nMax open files 1024 1048576 files\n")
    result = doctor("--json", "--root", str(root), "-f", str(conf))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["needs"]["checks"] == 2000
    nofile = findings_of(result)["RLIMIT_NOFILE"]
    assert nofile["status"] == "fail" and "LimitNOFILE=" in nofile["fix"]
    assert findings_of(result)["config"]["status"] == "ok"


def test_a_broken_configuration_is_a_failed_finding_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("virtual_server 10.0.0.1 80 {\n    lb_algo\n")
    result = doctor("--json", "--root", str(tree(tmp_path / "root")), "-f", str(bad))
    assert result.returncode == 1
    config = findings_of(result)["config"]
    assert config["status"] == "fail" and f"check-config -f {bad}" in config["fix"]
    missing = doctor("-f", str(tmp_path / "nope.conf"), "--root", str(tmp_path / "root"))
    assert missing.returncode == 1 and "nope.conf" in missing.stdout


def test_a_root_with_nothing_in_it_still_reports(tmp_path):
    result = doctor("--root", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert "no IPVS" in result.stdout and "could not read" in result.stdout
