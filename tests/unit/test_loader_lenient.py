"""Lines keepalived logs a problem for and runs with load with a warning, as keepalived.

Each case below was an error before (or, for nb_get_retry outside HTTP_GET/SSL_GET, was
silently read as `retry`); keepalived 2.2.7 (and 1.2, the FULLNAT fork) runs with it.
"""

from __future__ import annotations

import pytest

from fastcheck.config.loader import load_text
from fastcheck.errors import ConfigError, Severity
from fastcheck.model import CheckKind, Method, VsKind


def load(text: str):
    return load_text(text, filename="t.conf", config_id="node1")


def warnings_of(diags) -> list[str]:
    return [str(d) for d in diags.items if d.severity is Severity.WARNING]


def notices_of(diags) -> list[str]:
    return [str(d) for d in diags.items if d.severity is Severity.INFO]


HEAD = "protocol TCP\nlb_algo rr\n"  # lines 2 and 3 of every virtual server below


def vs_text(body: str, header: str = "10.0.0.1 80", kind: str = "NAT") -> str:
    """A virtual server whose body starts at line 5 (line 4 is lb_kind)."""
    return f"virtual_server {header} {{\n{HEAD}lb_kind {kind}\n{body}\n}}\n"


def one_vs(body: str, **kwargs):
    config, diags = load(vs_text(body, **kwargs))
    assert len(config.virtual_servers) == 1
    return config.virtual_servers[0], diags


# ----------------------------------------------------------------- nat_mask


@pytest.mark.parametrize("line", ["nat_mask 255.255.255.0", "nat_mask", "nat_mask 24 x"])
def test_nat_mask_is_ignored_with_a_warning(line):
    vs, diags = one_vs(f"{line}\nreal_server 10.1.0.1 80 {{ }}")
    assert warnings_of(diags) == [
        "t.conf:5: warning: 'nat_mask' is ignored in virtual_server: keepalived 1.2 stores "
        "it without using it (it was for Linux 2.2 masquerading) and 2.2.7 does not know it"]
    assert vs.forwarding.method is Method.NAT and len(vs.real_servers) == 1


def test_nat_mask_outside_a_virtual_server_is_still_an_error():
    with pytest.raises(ConfigError) as info:
        load(vs_text("real_server 10.1.0.1 80 {\n nat_mask 255.255.255.0\n}"))
    assert [str(d) for d in info.value.diagnostics] == [
        "t.conf:6: unknown keyword 'nat_mask' in real_server"]


# ----------------------------------------------------------------- persistence_timeout 0


def test_persistence_timeout_zero_leaves_persistence_off_with_a_warning():
    vs, diags = one_vs("persistence_timeout 0\nreal_server 10.1.0.1 80 { }")
    assert vs.persistence_timeout_s is None
    assert warnings_of(diags) == [
        "t.conf:5: warning: virtual server 10.0.0.1:80: persistence_timeout 0 is invalid "
        "(keepalived takes 1..2678400); persistence stays off, as keepalived leaves it"]


def test_persistence_timeout_zero_with_granularity_is_keepalived_s_six_minutes():
    # check_parser.c pgr_handler turns persistence on (360 s) when nothing valid set it.
    vs, diags = one_vs("persistence_timeout 0\npersistence_granularity 255.255.255.0\n"
                       "real_server 10.1.0.1 80 { }")
    assert vs.persistence_timeout_s == 360
    assert len(warnings_of(diags)) == 1


def test_persistence_timeout_zero_on_a_zero_port_service_is_made_persistent():
    vs, diags = one_vs("persistence_timeout 0\nreal_server 10.1.0.1 80 { }",
                       header="10.0.0.1 0")
    assert vs.persistence_timeout_s == 360
    assert "persistence_timeout 0 is invalid" in warnings_of(diags)[0]
    assert "zero port is only valid for a persistent service" in warnings_of(diags)[1]


# ----------------------------------------------------------------- quorum 0


def test_quorum_zero_is_repaired_to_one_with_a_warning():
    vs, diags = one_vs("quorum 0\nreal_server 10.1.0.1 80 { weight 3 }")
    assert vs.quorum == 1 and vs.hysteresis == 0
    assert warnings_of(diags) == [
        "t.conf:5: warning: quorum 0 must be at least 1; setting quorum to 1, as keepalived "
        "does"]


def test_quorum_zero_repair_comes_before_the_hysteresis_repair():
    vs, diags = one_vs("quorum 0\nhysteresis 1\nreal_server 10.1.0.1 80 { weight 3 }")
    assert (vs.quorum, vs.hysteresis) == (1, 0)
    assert warnings_of(diags)[1] == ("t.conf:6: warning: hysteresis 1 >= quorum 1; setting "
                                     "hysteresis to 0")


def test_negative_quorum_is_still_an_error():
    with pytest.raises(ConfigError) as info:
        load(vs_text("quorum -1\nreal_server 10.1.0.1 80 { }"))
    assert str(info.value.diagnostics[0]).startswith("t.conf:5: quorum: value -1 is out of "
                                                      "range")


# ----------------------------------------------------------------- nb_get_retry


def checker(block: str, body: str, rs_lines: str = "") -> str:
    return f"real_server 10.1.0.1 80 {{\n{rs_lines}{block} {{\n{body}\n}}\n}}"


@pytest.mark.parametrize(("block", "extra", "default"), [
    ("TCP_CHECK", "", 1),
    ("SMTP_CHECK", "", 1),
    ("DNS_CHECK", "", 3),
    ("UDP_CHECK", "", 1),
    ("PING_CHECK", "", 1),
    ("MISC_CHECK", "misc_path /bin/true\n", 0),
])
def test_nb_get_retry_outside_http_is_ignored_and_retry_keeps_its_default(block, extra,
                                                                           default):
    vs, diags = one_vs(checker(block, f"{extra}nb_get_retry 7"))
    line = 7 + extra.count("\n")
    assert vs.real_servers[0].checks[0].retry == default
    assert warnings_of(diags) == [
        f"t.conf:{line}: warning: 'nb_get_retry' is ignored in {block}: keepalived reads it "
        "only in HTTP_GET and SSL_GET; retry stays as set by 'retry' (here, on the real or "
        f"virtual server) or {block}'s default, {default}"]


def test_nb_get_retry_in_tcp_check_leaves_the_inherited_retry():
    vs, diags = one_vs("retry 4\n" + checker("TCP_CHECK", "nb_get_retry 9\nconnect_timeout 3",
                                             rs_lines="retry 5\n"))
    assert vs.real_servers[0].checks[0].retry == 5
    vs, _ = one_vs(checker("TCP_CHECK", "retry 2\nnb_get_retry 9"))
    assert vs.real_servers[0].checks[0].retry == 2
    assert len(warnings_of(diags)) == 1


def test_nb_get_retry_in_file_check_is_ignored():
    config, diags = load("track_file f {\n file /tmp/x\n}\n" + vs_text(
        checker("FILE_CHECK", "track_file f\nnb_get_retry 3")))
    assert config.virtual_servers[0].real_servers[0].checks[0].retry == 0
    assert warnings_of(diags) == [
        "t.conf:11: warning: 'nb_get_retry' is ignored in FILE_CHECK: keepalived reads it only "
        "in HTTP_GET and SSL_GET; FILE_CHECK acts at once, without retries"]


@pytest.mark.parametrize("block", ["HTTP_GET", "SSL_GET"])
def test_nb_get_retry_in_http_checks_is_retry_with_keepalived_s_deprecation_notice(block):
    vs, diags = one_vs(checker(block, "url {\n path /\n}\nnb_get_retry 4"))
    check = vs.real_servers[0].checks[0]
    assert check.kind in (CheckKind.HTTP, CheckKind.HTTPS) and check.retry == 4
    assert warnings_of(diags) == []
    assert notices_of(diags) == ["t.conf:10: info: nb_get_retry is deprecated - please use "
                                 "'retry'"]


# ----------------------------------------------------------------- virtual_server_group ports


GROUP = "virtual_server_group G {\n 10.0.0.1 80\n 10.0.0.2-4 8080\n}\n"  # lines 1-4


def group_vs(body: str, kind: str = "DR", group: str = GROUP):
    config, diags = load(group + vs_text(body, header="group G", kind=kind))
    return config.virtual_servers[0], diags


def test_dr_group_sorry_server_with_another_port_is_kept_with_keepalived_s_warning():
    # check_data.c validate_check_config: warned about per group entry, nothing changed.
    vs, diags = group_vs("sorry_server 10.9.0.1 80\nreal_server 10.1.0.1 { }")
    assert vs.kind is VsKind.GROUP
    assert (vs.sorry_server.address, vs.sorry_server.port) == ("10.9.0.1", 80)
    assert warnings_of(diags) == [
        "t.conf:9: warning: virtual server group G: sorry server 10.9.0.1:80 and group entry "
        "10.0.0.2-10.0.0.4:8080 ports don't match - with DR forwarding the port will be "
        "ignored"]


def test_group_real_server_ports_that_do_not_match_are_warned_about():
    vs, diags = group_vs("lb_kind TUN\nreal_server 10.1.0.1 8080 { }\n"
                         "real_server 10.1.0.2 { }")
    assert [rs.port for rs in vs.real_servers] == [8080, 0]
    assert warnings_of(diags)[-1] == (
        "t.conf:10: warning: virtual server group G: real server 10.1.0.1:8080 and group "
        "entry 10.0.0.1:80 ports don't match - with TUN forwarding the port will be ignored")
    assert len(warnings_of(diags)) == 2  # and 'lb_kind' set again


def test_group_with_fwmark_entry_warns_about_a_dr_port():
    group = "virtual_server_group G {\n fwmark 7\n}\n"
    vs, diags = group_vs("sorry_server 10.9.0.1 81\nreal_server 10.1.0.1 { }", group=group)
    assert vs.sorry_server.port == 81
    assert warnings_of(diags)[1:] == [
        "t.conf:8: warning: virtual server group G: sorry server 10.9.0.1:81 has a port "
        "specified with DR forwarding to group entry fwmark 7 - port will be ignored"]


def test_group_ports_under_nat_are_not_warned_about():
    _, diags = group_vs("sorry_server 10.9.0.1 81\nreal_server 10.1.0.1 82 { }", kind="NAT")
    assert warnings_of(diags) == []


# ----------------------------------------------------------------- virtual_server ... dev IF


def test_words_after_the_virtual_server_port_are_ignored_and_named():
    vs, diags = one_vs("real_server 10.1.0.1 80 { }", header="10.0.0.1 80 dev eth0")
    assert (vs.address, vs.port) == ("10.0.0.1", 80)
    assert warnings_of(diags) == [
        "t.conf:1: warning: virtual_server: ignoring 'dev eth0' after '10.0.0.1 80', as "
        "keepalived does: it reads only ADDRESS [PORT], 'fwmark N' or 'group NAME' there "
        "(an IPVS service has no interface)"]


def test_words_after_a_group_name_are_ignored_and_the_group_still_read():
    group = "virtual_server_group G {\n fwmark 7\n}\n"
    config, diags = load(group + "virtual_server group G dev eth0 {\nlb_algo rr\n"
                         "lb_kind NAT\nreal_server 10.1.0.1 { }\n}\n")
    vs = config.virtual_servers[0]
    assert vs.kind is VsKind.GROUP and vs.group == "G"
    assert warnings_of(diags) == [
        "t.conf:4: warning: virtual_server: ignoring 'dev eth0' after 'group G', as "
        "keepalived does: it reads only ADDRESS [PORT], 'fwmark N' or 'group NAME' there "
        "(an IPVS service has no interface)"]


def test_a_bad_port_before_dev_is_still_an_error():
    with pytest.raises(ConfigError) as info:
        load(vs_text("real_server 10.1.0.1 80 { }", header="10.0.0.1 dev eth0"))
    assert "t.conf:1: virtual_server: " in str(info.value.diagnostics[-1])


# ----------------------------------------------------------------- a real-world-shaped file


FULLNAT_STYLE = """\
! Configuration File for keepalived (FULLNAT fork style)
global_defs {
   notification_email {
     ops@example.com
   }
   router_id LVS_DEVEL
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        10.20.0.10
    }
}
local_address_group laddr_g1 {
    192.168.100.10-11
}
virtual_server 10.20.0.10 80 {
    delay_loop 6
    lb_algo wrr
    lb_kind FNAT
    nat_mask 255.255.255.0
    persistence_timeout 0
    protocol TCP
    laddr_group_name laddr_g1
    quorum 0

    real_server 192.168.200.11 80 {
        weight 100
        TCP_CHECK {
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 3
            connect_port 80
        }
    }
    real_server 192.168.200.12 80 {
        weight 100
        HTTP_GET {
            url {
              path /status
              status_code 200
            }
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 3
        }
    }
}
virtual_server_group web {
    10.20.0.20 80
    10.20.0.21 8080
}
virtual_server group web {
    delay_loop 6
    lb_algo rr
    lb_kind DR
    protocol TCP
    sorry_server 192.168.200.99 80
    real_server 192.168.200.21 80 {
        TCP_CHECK {
            nb_get_retry 2
        }
    }
}
virtual_server 10.20.0.30 443 dev eth0 {
    lb_algo rr
    lb_kind NAT
    nat_mask 255.255.255.0
    protocol TCP
    real_server 192.168.200.31 443 {
        TCP_CHECK {
            connect_timeout 3
        }
    }
}
"""


def test_a_fullnat_fork_style_configuration_with_all_these_lines_loads():
    config, diags = load(FULLNAT_STYLE)
    assert not diags.has_errors
    fnat, group, dev = config.virtual_servers
    assert fnat.forwarding.method is Method.FNAT and fnat.persistence_timeout_s is None
    assert fnat.quorum == 1
    tcp, http = (rs.checks[0] for rs in fnat.real_servers)
    assert (tcp.kind, tcp.retry, tcp.target.port) == (CheckKind.TCP, 1, 80)
    assert (http.kind, http.retry) == (CheckKind.HTTP, 3)
    assert group.sorry_server.port == 80 and group.real_servers[0].checks[0].retry == 1
    assert (dev.address, dev.port) == ("10.20.0.30", 443)
    where = [str(d).split(": ")[0] for d in diags.items if d.severity is Severity.WARNING]
    assert sorted(where, key=lambda w: int(w.split(":")[1])) == [
        "t.conf:24", "t.conf:25", "t.conf:28", "t.conf:34", "t.conf:61", "t.conf:62",
        "t.conf:64", "t.conf:68", "t.conf:71"]
    assert notices_of(diags)[-1] == ("t.conf:47: info: nb_get_retry is deprecated - please "
                                     "use 'retry'")
