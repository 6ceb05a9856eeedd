"""`fastcheck doctor`'s findings on a machine where something is missing.

Each test builds a fake /proc, /sys and /lib/modules tree in a tmp dir, reads it with
`read_facts(root)` and checks the findings — status, what was found and the exact fix —
that an operator would read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fastcheck.config.loader import load_text
from fastcheck.doctor import table_lines
from fastcheck.doctor.diagnose import (
    FD_HEADROOM,
    Finding,
    Needs,
    Status,
    diagnose,
    needs_of,
    worst,
)
from fastcheck.doctor.facts import Facts, IpvsNetlink, read_facts
from fastcheck.probeplan import plan_probes
from fastcheck.synthetic import farm

RELEASE = "6.1.0-test"
ALL_CAPS = "000001ffffffffff"
HEALTHY = {
    "proc/sys/net/ipv4/ping_group_range": "0\t2147483647\n",
    "proc/sys/net/core/somaxconn": "4096\n",
    "proc/sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
    "proc/sys/net/ipv4/tcp_max_tw_buckets": "262144\n",
    "proc/sys/net/ipv4/tcp_tw_reuse": "2\n",
    "proc/sys/fs/file-max": "9223372036854775807\n",
    "proc/sys/fs/nr_open": "1048576\n",
    "proc/sys/kernel/osrelease": f"{RELEASE}\n",
    "proc/self/status": f"Name:\tpython3\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t{ALL_CAPS}\n",
    "proc/self/limits": (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max processes             96365                96365                processes \n"
        "Max open files            1048576              1048576              files     \n"),
    "proc/net/ip_vs": ("IP Virtual Server version 1.2.1 (size=1048576)\n"
                       "Prot LocalAddress:Port Scheduler Flags\n"),
    f"lib/modules/{RELEASE}/modules.dep": "kernel/net/netfilter/ipvs/ip_vs.ko.xz:\n",
    f"lib/modules/{RELEASE}/modules.builtin": "kernel/net/ipv4/tcp_cubic.ko\n",
}


def fake_root(tmp_path: Path, **changes: str | None) -> Path:
    """A healthy host's tree; `changes` maps a path (with "/" as "__") to new text, or
    None to leave that file out."""
    files = dict(HEALTHY)
    for key, text in changes.items():
        path = key.replace("__", "/")
        assert path in files, f"unknown fake file {path}"
        files[path] = text
    for path, text in files.items():
        if text is not None:
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return tmp_path


def limits(soft: str, hard: str) -> str:
    return f"Limit  Soft Limit  Hard Limit  Units\nMax open files  {soft}  {hard}  files\n"


def status_with(cap_eff: str, gid: int = 0, groups: str = "") -> str:
    return f"Gid:\t{gid}\t{gid}\t{gid}\t{gid}\nGroups:\t{groups}\nCapEff:\t{cap_eff}\n"


def by_name(findings: list[Finding]) -> dict[str, Finding]:
    return {finding.name: finding for finding in findings}


def needs_for(text: str) -> Needs:
    config, _ = load_text(text)
    return needs_of(plan_probes(config))


FARM_NEEDS = needs_for(farm(200, 10))  # 2,000 checks: TCP_CHECK, HTTP_GET, MISC_CHECK

PING_AND_TCP = """
virtual_server 10.0.0.1 80 {
    delay_loop 1
    lb_kind NAT
    protocol TCP
    real_server 172.16.0.1 80 {
        TCP_CHECK { connect_timeout 2 }
        PING_CHECK { }
    }
    real_server 172.16.0.2 80 {
        MISC_CHECK { misc_path /bin/true }
    }
}
"""

TCP_ONLY = PING_AND_TCP.replace("PING_CHECK { }", "").replace(
    "MISC_CHECK { misc_path /bin/true }", "TCP_CHECK { }")


def host_findings(findings: list[Finding]) -> dict[str, Finding]:
    """Findings about the (fake) host, without the hot paths, which depend on the build."""
    return {f.name: f for f in findings if not f.name.startswith("hot-path")}


# --------------------------------------------------------------------------- a healthy host


def test_a_healthy_host_has_nothing_to_fix(tmp_path):
    facts = read_facts(fake_root(tmp_path))
    findings = host_findings(diagnose(facts, FARM_NEEDS))
    problems = [f for f in findings.values() if f.status is not Status.OK]
    assert problems == []
    assert "IPVS 1.2.1" in findings["ipvs"].found
    assert findings["ipvs.conn_tab_size"].found.startswith("1048576")
    assert all(f.fix == "" for f in findings.values())


def test_facts_are_read_from_the_tree(tmp_path):
    root = fake_root(tmp_path, proc__self__limits=limits("1024", "unlimited"),
                     proc__self__status=status_with("0000000000003000", gid=5, groups="7 9"))
    facts = read_facts(root)
    assert facts.nofile == (1024, None)
    assert facts.cap_eff == 0x3000
    assert facts.gids == {5, 7, 9}
    assert facts.sysctl["net.ipv4.ip_local_port_range"] == "32768 60999"
    assert facts.ipvs_proc == "IP Virtual Server version 1.2.1 (size=1048576)"
    assert facts.ipvs_netlink is None  # netlink is only asked about the real root
    assert facts.kernel_release == RELEASE
    assert facts.ip_vs_module == "module"


# --------------------------------------------------------------------------- IPVS


def test_no_ipvs_with_the_module_installed_says_modprobe(tmp_path):
    facts = read_facts(fake_root(tmp_path, proc__net__ip_vs=None))
    ipvs = by_name(diagnose(facts))["ipvs"]
    assert ipvs.status is Status.FAIL
    assert "no IPVS" in ipvs.found and "installed but not loaded" in ipvs.found
    assert ipvs.fix.startswith("modprobe ip_vs")
    assert "/etc/modules-load.d/ip_vs.conf" in ipvs.fix
    assert "ipvs.conn_tab_size" not in by_name(diagnose(facts))


def test_no_ipvs_and_no_module_directory_says_modprobe_will_fail(tmp_path):
    root = fake_root(tmp_path, proc__net__ip_vs=None,
                     **{f"lib__modules__{RELEASE}__modules.dep": None,
                        f"lib__modules__{RELEASE}__modules.builtin": None})
    ipvs = by_name(diagnose(read_facts(root)))["ipvs"]
    assert ipvs.status is Status.FAIL
    assert ipvs.fix.startswith("modprobe ip_vs")
    assert f"/lib/modules/{RELEASE} does not exist" in ipvs.fix
    assert "CONFIG_IP_VS" in ipvs.fix and "--dry-run" in ipvs.fix


def test_no_ipvs_in_a_kernel_without_the_module(tmp_path):
    root = fake_root(tmp_path, proc__net__ip_vs=None,
                     **{f"lib__modules__{RELEASE}__modules.dep": "kernel/fs/ext4.ko:\n"})
    ipvs = by_name(diagnose(read_facts(root)))["ipvs"]
    assert ipvs.status is Status.FAIL
    assert f"kernel {RELEASE} has no ip_vs module" in ipvs.found
    assert "CONFIG_IP_VS=m" in ipvs.fix


def test_loaded_module_is_seen_in_sys_module(tmp_path):
    root = fake_root(tmp_path)
    (root / "sys/module/ip_vs").mkdir(parents=True)
    assert read_facts(root).ip_vs_module == "loaded"


def test_netlink_refusal_with_ipvs_loaded_points_at_the_capability():
    facts = Facts(ipvs_proc="IP Virtual Server version 1.2.1 (size=4096)",
                  ipvs_netlink=IpvsNetlink(error="reading IPVS info failed: EPERM"))
    ipvs = by_name(diagnose(facts))["ipvs"]
    assert ipvs.status is Status.FAIL
    assert "1.2.1" in ipvs.found and "EPERM" in ipvs.found
    assert "CAP_NET_ADMIN" in ipvs.fix


def test_netlink_answer_is_preferred_and_reports_version_and_table():
    facts = Facts(ipvs_netlink=IpvsNetlink(version="1.2.1", connection_table_size=4096))
    found = by_name(diagnose(facts))
    assert found["ipvs"].status is Status.OK
    assert found["ipvs"].found == "IPVS 1.2.1 over generic netlink, connection table 4096"
    table = found["ipvs.conn_tab_size"]
    assert table.status is Status.WARN
    assert "conn_tab_bits=20" in table.fix


def test_default_connection_table_is_a_warning(tmp_path):
    root = fake_root(tmp_path, proc__net__ip_vs="IP Virtual Server version 1.2.1 (size=4096)\n")
    findings = by_name(diagnose(read_facts(root)))
    assert findings["ipvs"].status is Status.OK
    assert findings["ipvs.conn_tab_size"].status is Status.WARN
    assert "/etc/modprobe.d/ip_vs.conf" in findings["ipvs.conn_tab_size"].fix


# --------------------------------------------------------------------------- privileges


def test_no_capabilities(tmp_path):
    facts = read_facts(fake_root(tmp_path, proc__self__status=status_with("0" * 16)))
    found = by_name(diagnose(facts))
    assert found["CAP_NET_ADMIN"].status is Status.FAIL
    assert "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW" in found["CAP_NET_ADMIN"].fix
    assert found["CAP_NET_RAW"].status is Status.WARN  # no configuration: PING may be used
    assert worst(found.values()) is Status.FAIL


def test_missing_net_raw_fails_only_when_the_configuration_pings(tmp_path):
    facts = read_facts(fake_root(tmp_path, proc__self__status=status_with("0000000000001000")))
    with_ping = by_name(diagnose(facts, needs_for(PING_AND_TCP)))
    assert with_ping["CAP_NET_ADMIN"].status is Status.OK
    assert with_ping["CAP_NET_RAW"].status is Status.FAIL
    assert "1 PING_CHECK" in with_ping["CAP_NET_RAW"].found
    without_ping = by_name(diagnose(facts, needs_for(TCP_ONLY)))
    assert without_ping["CAP_NET_RAW"].status is Status.OK
    assert "no PING_CHECK" in without_ping["CAP_NET_RAW"].found


def test_ping_group_range_closed_without_net_raw(tmp_path):
    root = fake_root(tmp_path, proc__sys__net__ipv4__ping_group_range="1\t0\n",
                     proc__self__status=status_with("0000000000001000"))
    finding = by_name(diagnose(read_facts(root)))["net.ipv4.ping_group_range"]
    assert finding.status is Status.WARN
    assert "'1 0'" in finding.found and "off" in finding.found
    assert "CAP_NET_RAW" in finding.fix
    assert "sysctl -w net.ipv4.ping_group_range='0 2147483647'" in finding.fix


def test_ping_group_range_closed_is_fine_with_net_raw(tmp_path):
    root = fake_root(tmp_path, proc__sys__net__ipv4__ping_group_range="1\t0\n")
    finding = by_name(diagnose(read_facts(root)))["net.ipv4.ping_group_range"]
    assert finding.status is Status.OK
    assert "raw socket" in finding.found


def test_ping_group_range_open_for_a_supplementary_group(tmp_path):
    root = fake_root(tmp_path, proc__sys__net__ipv4__ping_group_range="100\t200\n",
                     proc__self__status=status_with("0000000000001000", gid=1000,
                                                    groups="150"))
    finding = by_name(diagnose(read_facts(root)))["net.ipv4.ping_group_range"]
    assert "allowed" in finding.found


# --------------------------------------------------------------------------- limits


def test_low_nofile_against_a_big_configuration(tmp_path):
    root = fake_root(tmp_path, proc__self__limits=limits("1024", "4096"))
    finding = by_name(diagnose(read_facts(root), FARM_NEEDS))["RLIMIT_NOFILE"]
    assert finding.status is Status.FAIL
    assert f"needs about {FARM_NEEDS.fds}" in finding.found
    want = int(finding.fix.split("LimitNOFILE=")[1].split()[0])
    assert want >= FARM_NEEDS.fds
    assert f"ulimit -n {want}" in finding.fix
    assert "hard limit 4096 must be raised" in finding.fix


def test_nofile_without_a_configuration_warns_only_when_very_low(tmp_path):
    assert by_name(diagnose(read_facts(fake_root(tmp_path))))["RLIMIT_NOFILE"].status \
        is Status.OK
    low = fake_root(tmp_path / "low", proc__self__limits=limits("256", "256"))
    finding = by_name(diagnose(read_facts(low)))["RLIMIT_NOFILE"]
    assert finding.status is Status.WARN and "LimitNOFILE=" in finding.fix


def test_nr_open_below_the_need_fails_with_a_sysctl(tmp_path):
    root = fake_root(tmp_path, proc__sys__fs__nr_open="1024\n", **{"proc__sys__fs__file-max": None})
    found = by_name(diagnose(read_facts(root), FARM_NEEDS))
    assert found["fs.nr_open"].status is Status.FAIL
    assert found["fs.nr_open"].fix.startswith("sysctl -w fs.nr_open=")
    assert found["fs.file-max"].status is Status.WARN
    assert "could not read /proc/sys/fs/file-max" in found["fs.file-max"].found


def test_needs_count_sockets_scripts_and_pings():
    needs = needs_for(PING_AND_TCP)
    assert (needs.checks, needs.probes) == (3, 3)
    assert needs.by_kind == {"TCP_CHECK": 1, "PING_CHECK": 1, "MISC_CHECK": 1}
    assert (needs.sockets, needs.scripts, needs.pings) == (1, 1, 1)
    assert needs.fds == 1 + 3 + 2 + FD_HEADROOM
    assert needs.connections_per_minute == pytest.approx(60.0)  # delay_loop 1


# --------------------------------------------------------------------------- ports, TIME_WAIT


def test_narrow_port_range_against_a_big_configuration(tmp_path):
    root = fake_root(tmp_path, proc__sys__net__ipv4__ip_local_port_range="60000\t60999\n")
    finding = by_name(diagnose(read_facts(root), FARM_NEEDS))["net.ipv4.ip_local_port_range"]
    assert finding.status is Status.WARN
    assert "1000 ephemeral ports" in finding.found and "EADDRNOTAVAIL" in finding.found
    low, high = finding.fix.split("'")[1].split()
    assert finding.fix.startswith("sysctl -w net.ipv4.ip_local_port_range='")
    assert int(high) - int(low) + 1 >= FARM_NEEDS.sockets


def test_narrow_port_range_without_a_configuration(tmp_path):
    root = fake_root(tmp_path, proc__sys__net__ipv4__ip_local_port_range="60000\t60100\n")
    finding = by_name(diagnose(read_facts(root)))["net.ipv4.ip_local_port_range"]
    assert finding.status is Status.WARN and "narrow" in finding.found
    empty = fake_root(tmp_path / "e", proc__sys__net__ipv4__ip_local_port_range="61000 60000")
    assert by_name(diagnose(read_facts(empty)))["net.ipv4.ip_local_port_range"].status \
        is Status.FAIL


def test_time_wait_limit_below_the_expected_time_wait_sockets(tmp_path):
    root = fake_root(tmp_path, proc__sys__net__ipv4__tcp_max_tw_buckets="1000\n")
    finding = by_name(diagnose(read_facts(root), FARM_NEEDS))["net.ipv4.tcp_max_tw_buckets"]
    assert finding.status is Status.WARN
    assert "time wait bucket table overflow" in finding.found
    assert int(finding.fix.split("=")[1].split()[0]) > FARM_NEEDS.connections_per_minute


def test_tw_reuse_when_one_destination_outruns_the_ports(tmp_path):
    root = fake_root(tmp_path, proc__sys__net__ipv4__ip_local_port_range="60000 60009",
                     proc__sys__net__ipv4__tcp_tw_reuse="0\n")
    needs = needs_for(TCP_ONLY)  # 172.16.0.1:80 and :2 every second: 60 a minute each
    finding = by_name(diagnose(read_facts(root), needs))["net.ipv4.tcp_tw_reuse"]
    assert finding.status is Status.WARN
    assert finding.fix.startswith("sysctl -w net.ipv4.tcp_tw_reuse=1")


def test_low_somaxconn(tmp_path):
    root = fake_root(tmp_path, proc__sys__net__core__somaxconn="128\n")
    finding = by_name(diagnose(read_facts(root)))["net.core.somaxconn"]
    assert finding.status is Status.WARN
    assert finding.fix.startswith("sysctl -w net.core.somaxconn=4096")


# --------------------------------------------------------------------------- hot paths, output


def test_hot_paths_forced_pure_are_warnings_naming_the_variable():
    facts = Facts(implementations={"icmp": "py", "checksum": "c"}, no_extensions=True)
    found = by_name(diagnose(facts))
    assert found["hot-path:checksum"].status is Status.OK
    assert found["hot-path:icmp"].status is Status.WARN
    assert "unset FASTCHECK_NO_EXTENSIONS" in found["hot-path:icmp"].fix


def test_hot_paths_pure_after_a_failed_build_say_reinstall():
    found = by_name(diagnose(Facts(implementations={"icmp": "py"})))
    assert "did not import" in found["hot-path:icmp"].found
    assert "C compiler" in found["hot-path:icmp"].fix


def test_hot_paths_that_cannot_load_fail():
    found = by_name(diagnose(Facts(implementations_error="ImportError: no icmp_c")))
    assert found["hot-paths"].status is Status.FAIL


def test_an_empty_tree_gives_findings_not_exceptions(tmp_path):
    findings = diagnose(read_facts(tmp_path), FARM_NEEDS)
    found = by_name(findings)
    assert found["ipvs"].status is Status.FAIL
    assert found["RLIMIT_NOFILE"].status is Status.WARN
    assert "could not read /proc/sys/net/core/somaxconn" in found["net.core.somaxconn"].found


def test_table_shows_status_found_and_fix():
    findings = [Finding("ipvs", Status.FAIL, "no IPVS", "modprobe ip_vs"),
                Finding("net.core.somaxconn", Status.OK, "4096")]
    lines = table_lines(findings)
    assert lines[0].split() == ["STATUS", "CHECK", "FOUND"]
    assert lines[1].split() == ["FAIL", "ipvs", "no", "IPVS"]
    assert lines[2].strip() == "fix: modprobe ip_vs"
    assert lines[3].split() == ["ok", "net.core.somaxconn", "4096"]
    assert lines[-1] == "1 fail, 0 warn, 1 ok: something fails (exit 1)"


def test_warnings_alone_do_not_fail():
    findings = [Finding("a", Status.WARN, "x", "y"), Finding("b", Status.OK, "z")]
    assert worst(findings) is Status.WARN
    assert table_lines(findings)[-1].endswith("nothing fails (exit 0)")


def test_finding_json_round_trip():
    finding = dataclasses.replace(Finding("ipvs", Status.FAIL, "no IPVS"), fix="modprobe ip_vs")
    assert finding.to_json() == {"name": "ipvs", "status": "fail", "found": "no IPVS",
                                 "fix": "modprobe ip_vs"}
