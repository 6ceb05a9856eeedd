"""`fastcheck check-config` and `fastcheck plan` as an operator runs them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastcheck.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "conf" / "sample.conf"

GOOD = """
virtual_server 10.0.0.1 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 172.16.0.1 80 { weight 3
        TCP_CHECK { connect_timeout 2 }
    }
}
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.conf"
    path.write_text(GOOD)
    return path


def test_check_config_accepts_a_valid_file(good):
    code, out, err = run("check-config", "-f", str(good))
    assert code == 0
    assert out.strip() == f"{good}: configuration OK: 1 virtual servers, 1 real servers, 1 checks"
    assert err == ""


def test_check_config_json_shows_inherited_values(good):
    code, out, _ = run("check-config", "-f", str(good), "--json")
    assert code == 0
    model = json.loads(out)
    check = model["virtual_servers"][0]["real_servers"][0]["checks"][0]
    assert check["kind"] == "TCP_CHECK"
    assert check["delay_loop_s"] == 60.0 and check["connect_timeout_s"] == 2.0
    assert check["target"] == {"address": "172.16.0.1", "port": 80, "bind_address": None,
                               "bind_interface": None, "bind_port": None, "fwmark": None}
    assert check["position"].endswith("good.conf:7")


def test_check_config_lists_every_error_and_exits_1(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("virtual_server 10.0.0.1 80 {\n  lb_algo nope\n  real_server 1.2.3 80 {\n"
                   "  }\n  delay_loop -1\n")
    code, out, err = run("check-config", "-f", str(bad))
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{bad}:1: block 'virtual_server' is never closed")
    assert any(line.startswith(f"{bad}:2: lb_algo: invalid scheduler 'nope'") for line in lines)
    assert any(line.startswith(f"{bad}:3: real_server: '1.2.3' is not an IP address")
               for line in lines)
    assert any(line.startswith(f"{bad}:5: delay_loop:") for line in lines)
    assert any("not closed" in line or "unclosed" in line or "missing '}'" in line
               for line in lines)
    assert lines[-1].endswith("configuration not usable")


def test_missing_file_is_a_clear_error(tmp_path):
    code, _, err = run("check-config", "-f", str(tmp_path / "nope.conf"))
    assert code == 1
    assert "nope.conf" in err and "Traceback" not in err


def test_warnings_do_not_fail_unless_strict(tmp_path):
    path = tmp_path / "w.conf"
    path.write_text(GOOD.replace("lb_kind NAT", "lb_kind DR").replace("172.16.0.1 80",
                                                                       "172.16.0.1 8080"))
    code, _, err = run("check-config", "-f", str(path))
    assert code == 0
    assert f"{path}:6: warning: real server 172.16.0.1: port 8080 differs" in err
    code, _, err = run("check-config", "-f", str(path), "--strict")
    assert code == 1


def test_plan_prints_the_table(good):
    code, out, _ = run("plan", "-f", str(good))
    assert code == 0
    lines = out.splitlines()
    assert "TCP  10.0.0.1:80 rr" in lines
    assert any(line.split() == ["->", "172.16.0.1:80", "Masq", "3", "0", "0"] for line in lines)


def test_plan_json_is_machine_readable(good):
    _code, out, _ = run("plan", "-f", str(good), "--json")
    services = json.loads(out)["services"]
    assert services[0]["address"] == "10.0.0.1" and services[0]["port"] == 80
    assert services[0]["destinations"][0]["weight"] == 3


def test_plan_from_shows_reload_operations(good, tmp_path):
    new = tmp_path / "new.conf"
    new.write_text(GOOD.replace("172.16.0.1 80", "172.16.0.2 80"))
    code, out, _ = run("plan", "-f", str(new), "--from", str(good))
    assert code == 0
    assert "  add destination 172.16.0.2:80 in TCP  10.0.0.1:80 (Masq weight 3)" in out
    assert "  delete destination 172.16.0.1:80 in TCP  10.0.0.1:80" in out
    assert "real servers: 1 added (start fresh), 1 removed, 0 keep their health state" in out
    code, out, _ = run("plan", "-f", str(new), "--from", str(good), "--json")
    data = json.loads(out)
    assert [op["op"] for op in data["operations"]] == ["add_destination", "delete_destination"]


def test_plan_from_refuses_an_invalid_new_file(good, tmp_path):
    new = tmp_path / "new.conf"
    new.write_text("virtual_server 10.0.0.1 80 {\n")
    code, out, _err = run("plan", "-f", str(new), "--from", str(good))
    assert code == 1 and out == ""


def test_installed_command_runs_the_sample_without_traceback():
    env = {k: v for k, v in os.environ.items() if k != "FASTCHECK_NO_EXTENSIONS"}
    result = subprocess.run([sys.executable, "-m", "fastcheck.cli", "plan", "-f", str(SAMPLE)],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "TCP  127.0.0.100:80 wlc" in result.stdout
    assert "UDP  127.0.1.3:53 rr ops" in result.stdout


def test_bad_usage_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["plan", "--bogus"], io.StringIO(), io.StringIO())
    assert info.value.code == 2


def test_readme_starts_with_the_two_setup_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text().split("\n")
    blocks = [i for i, line in enumerate(readme[:12]) if line.startswith("```")]
    assert len(blocks) >= 4
    install = readme[blocks[0] + 1]
    test = readme[blocks[2] + 1]
    assert "fastcheck plan -f conf/sample.conf" in install or "fastcheck run" in install
    assert "pytest" in test
    assert test in (ROOT / ".ci" / "run").read_text()


@pytest.fixture
def fake_kernel(monkeypatch):
    """`plan --kernel` and `ipvs show` against a memory table standing in for the kernel."""
    from fastcheck import cli
    from fastcheck.ipvs.memory import MemoryBackend

    backend = MemoryBackend()
    monkeypatch.setattr(cli, "kernel_backend", lambda: backend)
    return backend


def test_plan_kernel_shows_what_applying_would_send(good, fake_kernel):
    code, out, _ = run("plan", "-f", str(good), "--kernel")
    assert code == 0
    assert out.splitlines() == [
        "IPVS operations (2):",
        "  add service TCP  10.0.0.1:80 (rr)",
        "  add destination 172.16.0.1:80 in TCP  10.0.0.1:80 (Masq weight 3)"]
    from fastcheck.config.loader import load_file
    from fastcheck.ipvs.reconcile import reconcile
    from fastcheck.ipvs.table import desired_table

    fake_kernel.apply(reconcile(desired_table(load_file(str(good))[0]), {}))
    code, out, _ = run("plan", "-f", str(good), "--kernel")
    assert (code, out.strip()) == (0, "the kernel table already agrees")


def test_plan_kernel_refuses_fullnat_on_a_stock_kernel(fake_kernel):
    code, _, err = run("plan", "-f", str(ROOT / "conf" / "fullnat.conf"), "--kernel")
    assert code == 1
    assert "virtual server group web_vips TCP uses FULLNAT" in err


def test_ipvs_show_lists_the_live_table(good, fake_kernel):
    from fastcheck.config.loader import load_file
    from fastcheck.ipvs.reconcile import reconcile
    from fastcheck.ipvs.table import desired_table

    fake_kernel.apply(reconcile(desired_table(load_file(str(good))[0]), {}))
    code, out, _ = run("ipvs", "show", "--stats")
    assert code == 0
    assert out.splitlines()[2:] == ["TCP  10.0.0.1:80 rr",
                                    "  -> 172.16.0.1:80                Masq    3      0       0"
                                    "       0          0"]
    code, out, _ = run("ipvs", "show", "--json")
    assert json.loads(out)["services"][0]["destinations"][0]["address"] == "172.16.0.1"


def test_kernel_without_ipvs_is_a_clear_error(monkeypatch):
    from fastcheck import cli
    from fastcheck.errors import IpvsError

    def missing():
        raise IpvsError("IPVS is not available in this kernel (modprobe ip_vs)")

    monkeypatch.setattr(cli, "kernel_backend", missing)
    code, out, err = run("ipvs", "show")
    assert (code, out) == (1, "")
    assert err.strip() == "fastcheck: IPVS is not available in this kernel (modprobe ip_vs)"
