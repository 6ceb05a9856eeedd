"""Loader: keywords, keepalived defaults and inheritance, cross references, repairs."""

from __future__ import annotations

import pytest

from fastcheck.config.loader import load_text
from fastcheck.errors import ConfigError, Severity
from fastcheck.model import (
    CheckKind,
    Family,
    Method,
    Protocol,
    SchedulerFlag,
    TunnelChecksum,
    TunnelType,
    VsKind,
)


def load(text: str, **kwargs):
    config, diags = load_text(text, filename="t.conf", config_id="node1", **kwargs)
    return config, diags


def errors_of(text: str, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, **kwargs)
    return [str(d) for d in info.value.diagnostics]


def warnings_of(diags) -> list[str]:
    return [str(d) for d in diags.items if d.severity is Severity.WARNING]


EXPLICIT = {"protocol": "protocol TCP", "lb_algo": "lb_algo wlc", "lb_kind": "lb_kind NAT"}


def one_vs(body: str, header: str = "10.0.0.1 80"):
    """One virtual server; protocol/lb_algo/lb_kind are added (last) unless the body sets
    them, so keepalived's "not set" warnings don't drown the ones a test looks for."""
    extra = [line for key, line in EXPLICIT.items()
             if key not in body and key.replace("lb_algo", "lvs_sched") not in body
             and key.replace("lb_kind", "lvs_method") not in body]
    text = "\n".join([f"virtual_server {header} {{", body, *extra, "}", ""])
    config, diags = load(text)
    assert len(config.virtual_servers) == 1
    return config.virtual_servers[0], diags


# ----------------------------------------------------------------- defaults


def test_virtual_server_defaults_match_keepalived():
    config, diags = load("virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n"
                         " TCP_CHECK {\n }\n }\n}")
    vs = config.virtual_servers[0]
    assert vs.kind is VsKind.ADDRESS and vs.family is Family.INET
    # keepalived 2.2 defaults protocol to UDP (and says so), scheduler to wlc, method NAT.
    assert (vs.address, vs.port, vs.protocol) == ("10.0.0.1", 80, Protocol.UDP)
    assert warnings_of(diags) == [
        "t.conf:1: warning: virtual server 10.0.0.1:80: no lb_kind/lvs_method set, using NAT",
        "t.conf:1: warning: virtual server 10.0.0.1:80: no protocol set; keepalived defaults "
        "to UDP, and so does fastcheck",
        "t.conf:1: warning: virtual server 10.0.0.1:80: no lb_algo/lvs_sched set, using 'wlc'",
    ]
    assert vs.scheduler == "wlc"
    assert vs.forwarding.method is Method.NAT
    assert vs.persistence_timeout_s is None
    assert vs.delay_loop_s == 60.0
    assert (vs.quorum, vs.hysteresis) == (1, 0)
    assert not (vs.alpha or vs.omega or vs.ha_suspend or vs.inhibit_on_failure)
    rs = vs.real_servers[0]
    assert (rs.address, rs.port, rs.weight) == ("10.1.0.1", 80, 1)
    check = rs.checks[0]
    assert check.kind is CheckKind.TCP
    assert (check.target.address, check.target.port) == ("10.1.0.1", 80)
    assert check.delay_loop_s == 60.0
    assert check.connect_timeout_s == 5.0
    assert check.retry == 1
    assert check.delay_before_retry_s == 1.0
    assert check.warmup_s == 60.0  # random start spread up to delay_loop
    assert check.alpha is False


@pytest.mark.parametrize(("block", "retry", "before_retry"), [
    ("TCP_CHECK {\n}", 1, 1.0),
    ("HTTP_GET {\n url {\n path /\n }\n}", 1, 3.0),
    ("SSL_GET {\n url {\n path /\n }\n}", 1, 3.0),
    ("DNS_CHECK {\n}", 3, 7.0),  # delay_before_retry defaults to delay_loop
    ("MISC_CHECK {\n misc_path /bin/true\n}", 0, 1.0),
    ("SMTP_CHECK {\n}", 1, 1.0),
    ("UDP_CHECK {\n}", 1, 1.0),
    ("PING_CHECK {\n}", 1, 1.0),
])
def test_per_check_type_retry_defaults(block, retry, before_retry):
    vs, _ = one_vs(f"delay_loop 7\nreal_server 10.1.0.1 80 {{\n{block}\n}}")
    check = vs.real_servers[0].checks[0]
    assert (check.retry, check.delay_before_retry_s) == (retry, before_retry)


def test_inheritance_virtual_server_to_real_server_to_checker():
    vs, _ = one_vs("""
        delay_loop 10
        connect_timeout 4
        retry 5
        delay_before_retry 2.5
        warmup 0
        alpha
        inhibit_on_failure
        virtualhost vs.example
        real_server 10.1.0.1 80 {
            connect_timeout 3
            retry 2
            HTTP_GET {
                url { path / }
                delay_loop 0.25
            }
            TCP_CHECK {
                retry 9
            }
        }
    """)
    rs = vs.real_servers[0]
    assert rs.inhibit_on_failure and rs.alpha
    http, tcp = rs.checks
    assert http.delay_loop_s == 0.25  # fractional timers
    assert http.connect_timeout_s == 3.0  # from the real server
    assert http.retry == 2
    assert http.delay_before_retry_s == 2.5  # from the virtual server
    assert http.warmup_s == 0.0
    assert http.alpha
    assert http.params.virtualhost == "vs.example"
    assert tcp.retry == 9 and tcp.delay_loop_s == 10.0


def test_nb_get_retry_is_retry():
    vs, _ = one_vs("real_server 10.1.0.1 80 {\n HTTP_GET {\n url {\n path /\n }\n"
                   " nb_get_retry 4\n }\n}")
    assert vs.real_servers[0].checks[0].retry == 4


def test_http_url_details():
    vs, _ = one_vs("""
        real_server 10.1.0.1 80 {
            SSL_GET {
                http_protocol 1.1
                enable_sni
                fast_recovery
                url {
                    path /a
                    digest 640205B7B0FC66C1EA91C463FAC6334D
                }
                url {
                    path /b
                    status_code 200 300-302 503
                    virtualhost b.example
                    regex "ok|fine"
                    regex_no_match
                    regex_options caseless multiline
                    regex_stack 1024 65536
                    regex_min_offset 2
                    regex_max_offset 200
                }
                url {
                    path /c
                }
            }
        }
    """)
    check = vs.real_servers[0].checks[0]
    assert check.kind is CheckKind.HTTPS
    p = check.params
    assert (p.http_protocol, p.enable_sni, p.fast_recovery) == ("1.1", True, True)
    a, b, c = p.urls
    assert a.digest == "640205b7b0fc66c1ea91c463fac6334d"
    assert a.status_codes == ((200, 299),)  # keepalived checks both status and digest
    assert b.status_codes == ((200, 200), (300, 302), (503, 503))
    assert (b.virtualhost, b.regex, b.regex_no_match) == ("b.example", "ok|fine", True)
    assert b.regex_options == ("caseless", "multiline")
    assert (b.regex_stack, b.regex_min_offset, b.regex_max_offset) == ((1024, 65536), 2, 200)
    assert c.status_codes == ((200, 299),)


def test_connection_options_and_other_check_types():
    config, _ = load("""
        track_file weightfile {
            file /run/weight
            weight 5 reverse
            init_file 3 overwrite
        }
        global_defs { smtp_helo_name director.example }
        virtual_server 10.0.0.1 25 {
            real_server 10.1.0.1 25 {
                SMTP_CHECK {
                    connect_ip 10.9.9.9
                    connect_port 2525
                    bindto 10.0.0.2
                    bind_if eth0
                    bind_port 4000
                    fwmark 7
                    log_all_failures on
                }
                DNS_CHECK { type AAAA
                    name www.example. }
                UDP_CHECK {
                    payload Ab12f 3 456
                    require_reply 0x 12
                    min_reply_length 2
                    max_reply_length 64
                }
                MISC_CHECK {
                    misc_path "/usr/bin/check --fast"
                    misc_timeout 3
                    misc_dynamic
                    user nobody nogroup
                }
                FILE_CHECK {
                    track_file weightfile
                    dynamic
                }
                PING_CHECK { }
            }
        }
    """)
    smtp, dns, udp, misc, file_check, ping = config.virtual_servers[0].real_servers[0].checks
    t = smtp.target
    assert (t.address, t.port, t.bind_address, t.bind_interface, t.bind_port, t.fwmark) == (
        "10.9.9.9", 2525, "10.0.0.2", "eth0", 4000, 7)
    # keepalived's SMTP_CHECK ignores smtp_helo_name; its own default is fixed.
    assert smtp.params.helo_name == "smtpchecker.keepalived.org" and smtp.log_all_failures
    assert (dns.params.query_type, dns.params.name) == ("AAAA", "www.example.")
    assert udp.params.payload == bytes.fromhex("ab120f03450 6".replace(" ", ""))
    assert udp.params.require_reply and udp.params.reply_pattern == "0x12"
    assert (udp.params.min_reply_length, udp.params.max_reply_length) == (2, 64)
    assert misc.params.script.command == "/usr/bin/check --fast"
    assert (misc.params.script.user, misc.params.script.group) == ("nobody", "nogroup")
    assert misc.params.timeout_s == 3.0 and misc.params.dynamic
    assert misc.connect_timeout_s == 3.0
    assert file_check.params == type(file_check.params)("weightfile", 5, True, True)
    assert ping.target.port == 0
    track = config.track_files[0]
    assert (track.path, track.weight, track.reverse, track.init_value, track.init_overwrite) \
        == ("/run/weight", 5, True, 3, True)


def test_virtual_server_keywords():
    vs, _ = one_vs("""
        lvs_sched sh
        sh-port
        sh-fallback
        flag-3
        lvs_method TUN type gue port 6080 csum
        persistence_timeout
        persistence_granularity 255.255.255.0
        persistence_engine sip
        protocol UDP
        ops
        ha_suspend
        omega
        quorum 3
        hysteresis 1
        quorum_up "/bin/echo up" root
        quorum_down /bin/down
        smtp_alert off
        sorry_server 10.2.0.1 8080
        sorry_server_inhibit
        sorry_server_lvs_method DR
        real_server 10.1.0.1 80 { weight 2 }
        real_server 10.1.0.2 80 { weight 2
            uthreshold 100
            lthreshold 10
            notify_up "/bin/up 1"
            notify_down /bin/down nobody
            lvs_method NAT
        }
    """)
    assert vs.scheduler == "sh"
    assert vs.scheduler_flags == SchedulerFlag.FLAG_1 | SchedulerFlag.FLAG_2 | SchedulerFlag.FLAG_3
    assert vs.forwarding.method is Method.TUN
    assert vs.forwarding.tunnel_type is TunnelType.GUE and vs.forwarding.tunnel_port == 6080
    assert vs.forwarding.tunnel_checksum is TunnelChecksum.CSUM
    assert vs.persistence_timeout_s == 360  # bare keyword: keepalived's 6 minutes
    assert vs.persistence_granularity == "255.255.255.0"
    assert vs.persistence_engine == "sip"
    assert vs.protocol is Protocol.UDP and vs.one_packet
    assert vs.ha_suspend and vs.omega and not vs.smtp_alert
    assert (vs.quorum, vs.hysteresis) == (3, 1)
    assert vs.quorum_up.command == "/bin/echo up" and vs.quorum_up.user == "root"
    sorry = vs.sorry_server
    # A DR sorry server's port is reset to the virtual server's, as keepalived does.
    assert (sorry.address, sorry.port, sorry.inhibit, sorry.forwarding.method) == (
        "10.2.0.1", 80, True, Method.DR)
    rs1, rs2 = vs.real_servers
    assert rs1.forwarding.method is Method.TUN  # inherited
    assert rs2.forwarding.method is Method.NAT
    assert (rs2.upper_threshold, rs2.lower_threshold) == (100, 10)
    assert rs2.notify_up.command == "/bin/up 1" and rs2.notify_down.user == "nobody"


def test_fwmark_and_ipv6_virtual_servers():
    config, _diags = load("""
        virtual_server fwmark 12 {
            persistence_timeout 30
            real_server 2001:db8::1 { TCP_CHECK { connect_port 443 } }
        }
        virtual_server 2001:db8::100 443 {
            real_server 2001:db8:0:0::2 443 { }
        }
    """)
    fw, v6 = config.virtual_servers
    assert fw.kind is VsKind.FWMARK and fw.fwmark == 12 and fw.family is Family.INET6
    assert fw.real_servers[0].port == 0
    assert fw.real_servers[0].checks[0].target.port == 443
    assert v6.real_servers[0].address == "2001:db8::2"
    assert v6.family is Family.INET6


def test_virtual_server_group_forms():
    config, _ = load("""
        virtual_server_group G {
            10.0.0.1 80
            10.0.0.10-12 80
            10.0.1.250-10.0.2.1 80
            10.0.3.0/30 443
            fwmark 5
            fwmark 6 inet6
            2001:db8::1-3 80
        }
        virtual_server group G {
            persistence_timeout 10
            real_server 10.1.0.1 80 { }
        }
    """)
    group = config.vs_groups[0]
    expanded = [list(e.addresses()) for e in group.entries]
    assert expanded[0] == ["10.0.0.1"]
    assert expanded[1] == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    assert expanded[2] == ["10.0.1.250", "10.0.1.251", "10.0.1.252", "10.0.1.253",
                           "10.0.1.254", "10.0.1.255", "10.0.2.0", "10.0.2.1"]
    assert expanded[3] == ["10.0.3.0", "10.0.3.1", "10.0.3.2", "10.0.3.3"]
    assert (group.entries[4].fwmark, group.entries[5].family) == (5, Family.INET6)
    assert expanded[6] == ["2001:db8::1", "2001:db8::2", "2001:db8::3"]
    assert config.virtual_servers[0].group == "G"


def test_fullnat_keywords():
    config, _ = load("""
        local_address_group laddr_g1 {
            192.168.10.1-3
            192.168.20.1
        }
        virtual_server 10.0.0.1 80 {
            lb_kind FNAT
            laddr_group_name laddr_g1
            syn_proxy
            vip_bind_dev bond0
            est_timeout 60
            real_server 10.1.0.1 80 { }
        }
    """)
    vs = config.virtual_servers[0]
    assert vs.forwarding.method is Method.FNAT
    assert vs.real_servers[0].forwarding.method is Method.FNAT
    assert (vs.local_address_group, vs.syn_proxy, vs.vip_bind_dev,
            vs.established_timeout_s) == ("laddr_g1", True, "bond0", 60)
    assert config.local_address_groups[0].addresses == (
        "192.168.10.1", "192.168.10.2", "192.168.10.3", "192.168.20.1")


def test_global_defs_and_ssl():
    config, diags = load("""
        global_defs {
            lvs_id LVS_1
            notification_email {
                ops@example.com
                noc@example.com
            }
            notification_email_from lvs@example.com
            smtp_server 192.0.2.1 2525
            smtp_connect_timeout 20
            smtp_alert_checker on
            script_user nobody nogroup
            enable_script_security
            lvs_timeouts tcp 900 tcpfin 120 udp 300
            lvs_flush
            lvs_flush_on_stop VS
            checker_log_all_failures
            rs_init_notifies
            lvs_notify_fifo /run/fastcheck.fifo nobody
            vrrp_garp_master_delay 5
            vrrp_strict
        }
        SSL {
            password secret
            ca /etc/ssl/ca.pem
            certificate /etc/ssl/c.pem
            key /etc/ssl/k.pem
        }
        virtual_server 10.0.0.1 80 { protocol TCP
            lb_algo rr
            lb_kind DR
            real_server 10.1.0.1 80 { TCP_CHECK { } } }
    """)
    g = config.global_defs
    assert g.router_id == "LVS_1"
    assert g.notification_email == ("ops@example.com", "noc@example.com")
    assert (g.smtp_server, g.smtp_port, g.smtp_connect_timeout_s) == ("192.0.2.1", 2525, 20.0)
    assert (g.script_user, g.script_group, g.enable_script_security) == (
        "nobody", "nogroup", True)
    assert (g.lvs_timeouts.tcp_s, g.lvs_timeouts.tcpfin_s, g.lvs_timeouts.udp_s) == (
        900, 120, 300)
    assert g.lvs_flush and g.lvs_flush_on_stop == "vs"
    assert g.checker_log_all_failures and g.rs_init_notifies
    assert (g.lvs_notify_fifo.command, g.lvs_notify_fifo.user) == ("/run/fastcheck.fifo", "nobody")
    assert config.ssl.ca == "/etc/ssl/ca.pem"
    check = config.virtual_servers[0].real_servers[0].checks[0]
    assert check.log_all_failures  # global default reaches the checker
    assert config.virtual_servers[0].smtp_alert  # smtp_alert_checker on
    assert not warnings_of(diags)


def test_vrrp_blocks_are_skipped_with_one_notice_each():
    config, diags = load("""
        vrrp_instance VI_1 {
            interface eth0
            virtual_ipaddress { 10.0.0.1 }
        }
        vrrp_script chk { script /bin/true }
        static_ipaddress { 10.0.0.2/24 dev eth0 }
        bfd_instance b1 { neighbor_ip 10.0.0.3 }
        virtual_server 10.0.0.1 80 { real_server 10.1.0.1 80 { } }
    """)
    notices = [d for d in diags.items if d.severity is Severity.INFO]
    assert len(notices) == 4
    assert str(notices[0]).startswith("t.conf:2: info: skipping block 'vrrp_instance'")
    assert len(config.virtual_servers) == 1


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(("text", "expected"), [
    ("virtual_server 10.0.0.1 80 {\n bogus_keyword 1\n}",
     "t.conf:2: unknown keyword 'bogus_keyword' in virtual_server"),
    ("virtual_server 10.0.0.1 80 {\n delay_loop\n}",
     "t.conf:2: delay_loop: expects 1 argument, got 0"),
    ("virtual_server 10.0.0.1 80 {\n delay_loop -3\n}",
     "t.conf:2: delay_loop: timer '-3' must be a non-negative number of seconds"),
    ("virtual_server 10.0.0.1 80 {\n lb_algo fastest\n}",
     "t.conf:2: lb_algo: invalid scheduler 'fastest'"),
    ("virtual_server 10.0.0.300 80 {\n}",
     "t.conf:1: virtual_server: '10.0.0.300' is not an IP address"),
    ("virtual_server 10.0.0.1 70000 {\n}",
     "t.conf:1: virtual_server: port 70000 is out of range 0..65535"),
    ("virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n weight -1\n }\n}",
     "t.conf:3: weight: value -1 is out of range 0..2147483647"),
    ("virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n HTTP_GET {\n url {\n"
     " path /\n status_code 999\n }\n }\n }\n}",
     "t.conf:6: status_code: status code 999 is out of range 100..599"),
    ("virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n HTTP_GET {\n url {\n"
     " path /\n digest xyz\n }\n }\n }\n}",
     "t.conf:6: digest: digest 'xyz' is not 32 hexadecimal digits"),
    ("virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n HTTP_GET {\n }\n }\n}",
     "t.conf:3: HTTP_GET needs at least one url block"),
    ("virtual_server group NOPE {\n}",
     "t.conf:1: virtual_server: virtual_server_group 'NOPE' is not defined"),
    ("virtual_server 10.0.0.1 80 {\n quorum -1\n}",
     "t.conf:2: quorum: value -1 is out of range"),
    ("virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n FILE_CHECK {\n"
     " track_file nope\n }\n }\n}",
     "t.conf:4: track_file 'nope' is not defined"),
    ("virtual_server 10.0.0.1 80 {\n laddr_group_name nope\n real_server 10.1.0.1 80 {\n"
     " }\n}",
     "t.conf:2: local_address_group 'nope' is not defined"),
    ("virtual_server fwmark 1 {\n real_server 10.1.0.1 {\n TCP_CHECK {\n }\n }\n}",
     "t.conf:3: TCP_CHECK needs a port"),
    ("virtual_server 10.0.0.1 80 {\n real_server 2001:db8::1 80 {\n }\n}",
     "t.conf:2: real server 2001:db8::1 is not in the virtual server's address family"),
    ("virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.1.0.1 80 {\n }\n}\n"
     "virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.1.0.2 80 {\n }\n}",
     "t.conf:6: virtual server TCP 10.0.0.1:80 is already defined at t.conf:1"),
    ("virtual_server 10.0.0.1 80 {\n lb_kind TUN type vxlan\n}",
     "t.conf:2: lb_kind: invalid tunnel type 'vxlan'"),
    ("virtual_server 10.0.0.1 80 {\n protocol ICMP\n}",
     "t.conf:2: protocol: invalid protocol 'ICMP'"),
    ("virtual_server_group G {\n 10.0.0.5-2 80\n}",
     "t.conf:2: virtual_server_group entry: range '10.0.0.5-2' ends before it starts"),
    ("what_is_this 1\n", "t.conf:1: unknown keyword 'what_is_this' at top level"),
    ("global_defs {\n notification_email_from\n}",
     "t.conf:2: notification_email_from: expects 1 argument, got 0"),
])
def test_errors_are_reported_with_position(text, expected):
    messages = errors_of(text)
    assert any(m.startswith(expected) for m in messages), messages


def test_every_error_of_a_file_is_reported_in_one_run():
    messages = errors_of("""virtual_server 10.0.0.1 80 {
        lb_algo nope
        delay_loop x
        real_server 10.1.0.999 80 { }
        real_server 10.1.0.1 80 {
            weight many
        }
    }
    """)
    assert [m.split(":")[1] for m in messages] == ["2", "3", "4", "6"]


# ----------------------------------------------------------------- repairs (warnings)


def test_hysteresis_at_or_above_quorum_is_repaired_with_a_warning():
    vs, diags = one_vs("quorum 2\nhysteresis 2\nreal_server 10.1.0.1 80 { weight 5 }")
    assert (vs.quorum, vs.hysteresis) == (2, 1)
    assert warnings_of(diags) == ["t.conf:3: warning: hysteresis 2 >= quorum 2; "
                                  "setting hysteresis to 1"]


def test_quorum_above_total_weight_is_repaired_with_a_warning():
    vs, diags = one_vs("quorum 10\nreal_server 10.1.0.1 80 { weight 3 }\n"
                       "real_server 10.1.0.2 80 { weight 4 }")
    assert vs.quorum == 7
    assert warnings_of(diags) == ["t.conf:2: warning: quorum 10 exceeds the total weight 7 "
                                  "of the real servers; reducing quorum to 7"]


def test_quorum_is_reduced_before_hysteresis_is_checked():
    vs, diags = one_vs("quorum 10\nhysteresis 4\nreal_server 10.1.0.1 80 { weight 3 }")
    assert (vs.quorum, vs.hysteresis) == (3, 2)
    assert len(warnings_of(diags)) == 2


def test_zero_port_service_is_made_persistent_with_a_warning():
    vs, diags = one_vs("real_server 10.1.0.1 80 { }", header="10.0.0.1")
    assert vs.port is None and vs.persistence_timeout_s == 360
    assert "zero port is only valid for a persistent service" in warnings_of(diags)[0]


def test_virtual_server_without_real_servers_is_dropped_with_a_warning():
    config, diags = load("virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n"
                         " lb_kind NAT\n}\n")
    assert config.virtual_servers == ()
    assert warnings_of(diags) == ["t.conf:1: warning: virtual server 10.0.0.1:80 has no real "
                                  "servers; ignoring it"]


def test_duplicated_real_server_is_dropped_with_a_warning():
    vs, diags = one_vs("real_server 10.1.0.1 80 { weight 3 }\n"
                       "real_server 10.1.0.1 80 { weight 9 }")
    assert [rs.weight for rs in vs.real_servers] == [3]
    assert warnings_of(diags) == ["t.conf:3: warning: real server 10.1.0.1 port 80 is already "
                                  "defined at t.conf:2; ignoring this one"]


def test_dr_real_server_port_is_forced_to_the_virtual_server_port():
    vs, diags = one_vs("lb_kind DR\nreal_server 10.1.0.1 8080 { }")
    assert vs.real_servers[0].port == 80
    assert warnings_of(diags) == ["t.conf:3: warning: real server 10.1.0.1: port 8080 differs "
                                  "from the virtual server port 80 with DR forwarding; "
                                  "using 80"]


def test_nat_real_server_may_use_another_port():
    vs, diags = one_vs("real_server 10.1.0.1 8080 { }\nreal_server 10.1.0.2 { }")
    assert [rs.port for rs in vs.real_servers] == [8080, 80]
    assert warnings_of(diags) == []


def test_port_of_a_fwmark_real_server_is_ignored_with_a_warning():
    vs, diags = one_vs("lb_kind TUN\nreal_server 10.1.0.1 8080 { }", header="fwmark 3")
    assert vs.real_servers[0].port == 0
    assert "port 8080 given for a fwmark virtual server with DR/TUN forwarding; ignored" in \
        warnings_of(diags)[1]
    nat, _ = one_vs("real_server 10.1.0.1 8080 { }", header="fwmark 3")
    assert nat.real_servers[0].port == 8080  # NAT may rewrite the port


def test_strict_turns_repairs_into_errors():
    messages = errors_of("virtual_server 10.0.0.1 80 {\n lb_kind DR\n protocol TCP\n"
                         " lb_algo rr\n real_server 10.1.0.1 8080 { }\n}", strict=True)
    assert messages == ["t.conf:5: real server 10.1.0.1: port 8080 differs from the virtual "
                        "server port 80 with DR forwarding; using 80"]


def test_conditional_lines_follow_the_config_id():
    text = """
        virtual_server 10.0.0.1 80 {
            @node1 lb_algo rr
            @node2 lb_algo sh
            @^node1 delay_loop 99
            real_server 10.1.0.1 80 { }
        }
    """
    config, _ = load(text)
    assert config.virtual_servers[0].scheduler == "rr"
    assert config.virtual_servers[0].delay_loop_s == 60.0
    config2, _ = load_text(text, filename="t.conf", config_id="node2")
    assert config2.virtual_servers[0].scheduler == "sh"
    assert config2.virtual_servers[0].delay_loop_s == 99.0


def test_remaining_keywords_and_their_effects():
    config, diags = load("""
        global_defs {
            no_checker_emails
            lvs_flush_onstop
        }
        vrrp_track_file tf { file /run/tf }
        virtual_server fwmark 9 {
            ip_family inet6
            lvs_sched mh
            mh-port
            mh-fallback
            flag-1
            flag-2
            hashed
            snmp_name web-v6
            lb_kind TUN
            real_server 2001:db8::5 {
                snmp_name rs5
                BFD_CHECK { name bfd1 }
                FILE_CHECK { track_file tf }
            }
        }
    """)
    g = config.global_defs
    assert g.no_checker_emails and g.lvs_flush_on_stop == "all"
    vs = config.virtual_servers[0]
    assert vs.family.value == "inet6" and vs.snmp_name == "web-v6"
    assert vs.scheduler_flags == SchedulerFlag.FLAG_1 | SchedulerFlag.FLAG_2
    rs = vs.real_servers[0]
    assert [c.kind for c in rs.checks] == [CheckKind.FILE]  # BFD_CHECK is not ours
    assert any("BFD_CHECK is not supported" in str(d) for d in diags.items)
    assert config.track_files[0].name == "tf"


def test_scheduler_specific_flags_need_their_scheduler():
    vs, diags = one_vs("lb_algo rr\nsh-port\nreal_server 10.1.0.1 80 { }")
    assert vs.scheduler_flags == SchedulerFlag(0)
    assert warnings_of(diags) == ["t.conf:3: warning: sh-port only applies to the sh "
                                  "scheduler; ignored"]


def test_persistence_granularity_per_family():
    vs, _ = one_vs("persistence_timeout 60\npersistence_granularity 24\n"
                   "real_server 10.1.0.1 80 { }")
    assert vs.persistence_granularity == "255.255.255.0"  # prefix length converted
    v6, _ = one_vs("persistence_granularity 64\nreal_server 2001:db8::2 80 { }",
                   header="2001:db8::1 80")
    assert (v6.persistence_granularity, v6.persistence_timeout_s) == ("64", 360)
    messages = errors_of("virtual_server 2001:db8::1 80 {\n protocol TCP\n lb_algo rr\n"
                         " lb_kind NAT\n persistence_granularity 255.255.0.0\n"
                         " real_server 2001:db8::2 80 { }\n}")
    assert messages == ["t.conf:5: persistence_granularity 255.255.0.0: an IPv6 service "
                        "takes a prefix length (1..128)"]
