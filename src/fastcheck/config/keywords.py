"""keepalived keyword spellings and what each one means to fastcheck.

Owns: every keepalived keyword fastcheck reads, the block it may appear in, the
converter for its arguments and the model-facing field name it fills; the keepalived
names of schedulers, forwarding methods and check types; the blocks that belong to
other keepalived daemons and are skipped whole.
Must not: resolve defaults or inheritance (config/loader.py does) or do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastcheck.config import values as v
from fastcheck.model import (
    CheckKind,
    Forwarding,
    Method,
    Protocol,
    SchedulerFlag,
    TunnelChecksum,
    TunnelType,
)


@dataclass(frozen=True, slots=True)
class Kw:
    """One keyword: the field it fills, its converter, and whether it opens a block."""

    field: str
    convert: v.Converter | None = None
    block: str | None = None  # name of the child table when the keyword opens a block
    repeat: bool = False  # may appear several times (values collected in order)
    # Read and thrown away, as keepalived does, with a warning giving this reason (the
    # arguments are not looked at).
    ignored: str | None = None
    # Read as `field`, with a notice giving this advice (a spelling keepalived deprecates).
    notice: str | None = None


INCLUDE_KEYWORDS = frozenset({"include", "includer", "includem", "includew", "includeb",
                              "includea"})

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "mh", "sed", "nq", "fo",
              "ovf", "twos")
DEFAULT_SCHEDULER = "wlc"

SCHEDULER_FLAG_KEYWORDS: dict[str, SchedulerFlag] = {
    "flag-1": SchedulerFlag.FLAG_1,
    "flag-2": SchedulerFlag.FLAG_2,
    "flag-3": SchedulerFlag.FLAG_3,
    "sh-fallback": SchedulerFlag.FLAG_1,
    "sh-port": SchedulerFlag.FLAG_2,
    "mh-fallback": SchedulerFlag.FLAG_1,
    "mh-port": SchedulerFlag.FLAG_2,
}

METHODS = {"NAT": Method.NAT, "DR": Method.DR, "TUN": Method.TUN, "FNAT": Method.FNAT}
PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
FAMILIES = {"inet": "inet", "inet6": "inet6"}
HTTP_PROTOCOLS = {"1.0": "1.0", "1.0C": "1.0C", "1.0c": "1.0C", "1.1": "1.1"}
DNS_TYPES = ("A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA", "RRSIG", "DNSKEY")
FLUSH_ON_STOP = {"VS": "vs"}  # bare keyword: flush the whole table
DEFAULT_SMTP_HELO = "smtpchecker.keepalived.org"

CHECK_BLOCKS: dict[str, CheckKind] = {kind.value: kind for kind in CheckKind}
UNSUPPORTED_CHECKS = frozenset({"BFD_CHECK"})


def forwarding(args: tuple[str, ...]) -> Forwarding:
    """`lvs_method NAT|DR|FNAT` or `lvs_method TUN [type ipip|gue port N|gre] [csum...]`."""
    v.expect_count(args, 1, 6)
    method = v.choice(METHODS, "forwarding method")(args[:1])
    rest = list(args[1:])
    if method is not Method.TUN:
        if rest:
            raise v.ValueProblem(f"{args[0]} takes no further options")
        return Forwarding(method)
    tunnel_type = tunnel_port = checksum = None
    if rest and rest[0] == "type":
        if len(rest) < 2:
            raise v.ValueProblem("'type' needs ipip, gue or gre")
        tunnel_type = v.choice({t.value: t for t in TunnelType}, "tunnel type")((rest[1],))
        rest = rest[2:]
        if tunnel_type is TunnelType.GUE:
            if len(rest) < 2 or rest[0] != "port":
                raise v.ValueProblem("tunnel type gue needs 'port NUM'")
            tunnel_port = v.parse_port(rest[1])
            rest = rest[2:]
    if rest:
        checksum = v.choice({c.value: c for c in TunnelChecksum}, "tunnel checksum")(
            (rest[0],))
        if tunnel_type is not TunnelType.GUE and checksum is TunnelChecksum.REMCSUM:
            raise v.ValueProblem("remcsum is only valid with tunnel type gue")
        if tunnel_type in (None, TunnelType.IPIP):
            raise v.ValueProblem("a tunnel checksum option needs type gue or gre")
        rest = rest[1:]
    if rest:
        raise v.ValueProblem(f"unexpected {' '.join(rest)!r}")
    return Forwarding(method, tunnel_type, tunnel_port, checksum)


LVS_MAX_TIMEOUT_S = 2678400  # 31 days, keepalived's limit for IPVS timeouts


def persistence_timeout(args: tuple[str, ...]) -> int:
    """A bare keyword is keepalived's 6 minutes; 0 is returned for the loader to refuse
    with a warning (keepalived check_parser.c pto_handler leaves persistence off)."""
    v.expect_count(args, 0, 1)
    return 360 if not args else v.parse_int(args[0], 0, LVS_MAX_TIMEOUT_S, "timeout")


def positive_timer(limit_s: float) -> v.Converter:
    def convert(args: tuple[str, ...]) -> float:
        value = v.timer(args)
        if not 0 < value <= limit_s:
            raise v.ValueProblem(f"timer {args[0]!r} must be above 0 and at most {limit_s:g} "
                                 "seconds")
        return value

    return convert


def status_codes(args: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    v.expect_count(args, 1, 1000)
    ranges: list[tuple[int, int]] = []
    for word in args:
        low_text, _, high_text = word.partition("-")
        low = v.parse_int(low_text, 100, 599, "status code")
        high = v.parse_int(high_text, 100, 599, "status code") if high_text else low
        if high < low:
            raise v.ValueProblem(f"status code range {word!r} is reversed")
        ranges.append((low, high))
    return tuple(ranges)


def digest(args: tuple[str, ...]) -> str:
    text = v.string(args).lower()
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise v.ValueProblem(f"digest {args[0]!r} is not 32 hexadecimal digits (an MD5 sum)")
    return text


def regex_stack(args: tuple[str, ...]) -> tuple[int, int]:
    v.expect_count(args, 2)
    start = v.parse_int(args[0], 1, 2**31 - 1, "stack start")
    maximum = v.parse_int(args[1], start, 2**31 - 1, "stack max")
    return start, maximum


REGEX_OPTIONS = frozenset({
    "allow_empty_class", "alt_bsux", "auto_callout", "caseless", "dollar_endonly", "dotall",
    "dupnames", "extended", "firstline", "match_unset_backref", "multiline", "never_ucp",
    "never_utf", "no_auto_capture", "no_auto_possess", "no_dotstar_anchor",
    "no_start_optimize", "ucp", "ungreedy", "utf", "never_backslash_c", "alt_circumflex",
    "alt_verbnames", "use_offset_limit",
})


def regex_options(args: tuple[str, ...]) -> tuple[str, ...]:
    v.expect_count(args, 1, 1000)
    for word in args:
        if word not in REGEX_OPTIONS:
            raise v.ValueProblem(f"unknown regex option {word!r}")
    return tuple(args)


def hex_payload(args: tuple[str, ...]) -> str:
    v.expect_count(args, 1, 1000)
    return v.parse_hex_bytes(" ".join(args))


def optional_hex_pattern(args: tuple[str, ...]) -> str | None:
    return v.parse_hex_bytes(" ".join(args), allow_wildcard=True) if args else None


def user_group(args: tuple[str, ...]) -> tuple[str, str | None]:
    v.expect_count(args, 1, 2)
    return args[0], (args[1] if len(args) == 2 else None)


def weight_reverse(args: tuple[str, ...]) -> tuple[int, bool]:
    v.expect_count(args, 1, 2)
    weight = v.parse_int(args[0], -(2**31 - 1), 2**31 - 1, "weight")
    if len(args) == 2 and args[1] != "reverse":
        raise v.ValueProblem(f"expected 'reverse', got {args[1]!r}")
    return weight, len(args) == 2


def init_file(args: tuple[str, ...]) -> tuple[int, bool]:
    v.expect_count(args, 0, 2)
    value, overwrite = 0, False
    for word in args:
        if word == "overwrite":
            overwrite = True
        else:
            value = v.parse_int(word, -(2**31), 2**31 - 1, "initial value")
    return value, overwrite


def lvs_timeouts(args: tuple[str, ...]) -> dict[str, int]:
    """`lvs_timeouts tcp N tcpfin N udp N` (any subset, any order)."""
    v.expect_count(args, 2, 6)
    if len(args) % 2:
        raise v.ValueProblem("expects pairs: tcp N tcpfin N udp N")
    out: dict[str, int] = {}
    for name, value in zip(args[::2], args[1::2], strict=True):
        if name not in ("tcp", "tcpfin", "udp"):
            raise v.ValueProblem(f"unknown timeout {name!r}; expected tcp, tcpfin or udp")
        out[name] = v.parse_int(value, 0, LVS_MAX_TIMEOUT_S, f"{name} timeout")
    return out


def smtp_server(args: tuple[str, ...]) -> tuple[str, int | None]:
    v.expect_count(args, 1, 2)
    host = args[0]
    return host, v.parse_port(args[1]) if len(args) == 2 else None


def flush_on_stop(args: tuple[str, ...]) -> str:
    return v.choice(FLUSH_ON_STOP, "lvs_flush_on_stop value")(args) if args else "all"


def dns_type(args: tuple[str, ...]) -> str:
    name: str = v.choice({t: t for t in DNS_TYPES}, "DNS query type")((v.string(args).upper(),))
    return name


def protocol(args: tuple[str, ...]) -> Protocol:
    proto: Protocol = v.choice(PROTOCOLS, "protocol")((v.string(args).upper(),))
    return proto


WEIGHT = v.int_range(0, 2**31 - 1)
THRESHOLD = v.int_range(0, 2**32 - 1)
RETRY = v.int_range(1, 2**32 - 1)  # virtual and real servers: keepalived refuses 0
CHECK_RETRY = v.int_range(0, 2**32 - 1)  # a checker may say retry 0
DELAY_LOOP = positive_timer(v.TIMER_MAX_S)
CONNECT_TIMEOUT = positive_timer(4294.0)

# Options the virtual server hands down to real servers, and real servers to checkers.
INHERITED = {
    "delay_loop": Kw("delay_loop_s", DELAY_LOOP),
    "connect_timeout": Kw("connect_timeout_s", CONNECT_TIMEOUT),
    "retry": Kw("retry", RETRY),
    "delay_before_retry": Kw("delay_before_retry_s", v.timer),
    "warmup": Kw("warmup_s", v.timer),
    "alpha": Kw("alpha", v.flag),
    "inhibit_on_failure": Kw("inhibit_on_failure", v.flag),
    "virtualhost": Kw("virtualhost", v.string),
    "smtp_alert": Kw("smtp_alert", v.flag),
    "snmp_name": Kw("snmp_name", v.string),
}

GLOBAL_DEFS: dict[str, Kw] = {
    "router_id": Kw("router_id", v.string),
    "lvs_id": Kw("router_id", v.string),
    "notification_email": Kw("notification_email", block="list"),
    "notification_email_from": Kw("notification_email_from", v.string),
    "smtp_server": Kw("smtp_server", smtp_server),
    "smtp_connect_timeout": Kw("smtp_connect_timeout_s", v.timer),
    "smtp_helo_name": Kw("smtp_helo_name", v.string),
    "smtp_alert": Kw("smtp_alert", v.flag),
    "smtp_alert_checker": Kw("smtp_alert_checker", v.flag),
    "no_checker_emails": Kw("no_checker_emails", v.flag),
    "script_user": Kw("script_user", user_group),
    "enable_script_security": Kw("enable_script_security", v.flag),
    "lvs_timeouts": Kw("lvs_timeouts", lvs_timeouts),
    "lvs_flush": Kw("lvs_flush", v.flag),
    "lvs_flush_on_stop": Kw("lvs_flush_on_stop", flush_on_stop),
    "lvs_flush_onstop": Kw("lvs_flush_on_stop", flush_on_stop),
    "checker_log_all_failures": Kw("checker_log_all_failures", v.flag),
    "rs_init_notifies": Kw("rs_init_notifies", v.flag),
    "lvs_notify_fifo": Kw("lvs_notify_fifo", v.script),
}

# global_defs keywords that belong to VRRP, BFD, SNMP, process tuning and the like:
# accepted so a combined keepalived.conf loads, but they change nothing in fastcheck.
GLOBAL_DEFS_NOT_OURS = frozenset({
    "bfd_cpu_affinity", "bfd_no_swap", "bfd_priority", "bfd_process_name",
    "bfd_rlimit_rttime", "bfd_rt_priority", "checker_cpu_affinity", "checker_no_swap",
    "checker_priority", "checker_process_name", "checker_rlimit_rttime",
    "checker_rt_priority", "child_wait_time", "config_save_dir", "data_use_instance",
    "dbus_service_name", "default_interface", "disable_local_igmp", "dynamic_interfaces",
    "enable_dbus", "enable_snmp_checker", "enable_snmp_rfc", "enable_snmp_rfcv2",
    "enable_snmp_rfcv3", "enable_snmp_vrrp", "enable_snmp_keepalived", "enable_traps",
    "fifo_write_vrrp_states_on_reload", "include_check", "instance", "linkbeat_use_polling",
    "log_unknown_vrids", "lvs_netlink_cmd_rcv_bufs", "lvs_netlink_cmd_rcv_bufs_force",
    "lvs_netlink_monitor_rcv_bufs", "lvs_netlink_monitor_rcv_bufs_force",
    "lvs_notify_fifo_script", "lvs_sync_daemon", "lvs_sync_daemon_interface",
    "max_auto_priority", "min_auto_priority_delay", "namespace_with_ipsets", "net_namespace",
    "net_namespace_ipvs", "nftables", "nftables_counters", "nftables_ifindex",
    "nftables_ipvs", "nftables_ipvs_priority", "nftables_ipvs_start_fwmark",
    "nftables_priority", "no_email_faults", "notify_fifo", "notify_fifo_script",
    "process_monitor_rcv_bufs", "process_monitor_rcv_bufs_force", "process_name",
    "process_names", "random_seed", "reload_check_config", "reload_file", "reload_repeat",
    "reload_time_file", "shutdown_script", "shutdown_script_timeout", "smtp_alert_vrrp",
    "snmp_socket", "startup_script", "startup_script_timeout", "tmp_config_directory",
    "umask", "use_pid_dir", "vmac_addr_prefix", "vmac_prefix", "vrrp_check_unicast_src",
    "vrrp_cpu_affinity", "vrrp_down_timer_adverts", "vrrp_garp_extra_if",
    "vrrp_garp_interval", "vrrp_garp_lower_prio_delay", "vrrp_garp_lower_prio_repeat",
    "vrrp_garp_master_delay", "vrrp_garp_master_refresh", "vrrp_garp_master_refresh_repeat",
    "vrrp_garp_master_repeat", "vrrp_gna_interval", "vrrp_higher_prio_send_advert",
    "vrrp_ipsets", "vrrp_iptables", "vrrp_lower_prio_no_advert", "vrrp_mcast_group4",
    "vrrp_mcast_group6", "vrrp_min_garp", "vrrp_netlink_cmd_rcv_bufs",
    "vrrp_netlink_cmd_rcv_bufs_force", "vrrp_netlink_monitor_rcv_bufs",
    "vrrp_netlink_monitor_rcv_bufs_force", "vrrp_no_swap", "vrrp_notify_fifo",
    "vrrp_notify_fifo_script", "vrrp_notify_priority_changes", "vrrp_priority",
    "vrrp_process_name", "vrrp_rlimit_rttime", "vrrp_rt_priority",
    "vrrp_rx_bufs_multiplier", "vrrp_rx_bufs_policy", "vrrp_skip_check_adv_addr",
    "vrrp_startup_delay", "vrrp_strict", "vrrp_version", "vrrp_track_process",
    "script_security",
})

# Top-level `net_namespace NAME`: the namespace the daemon and its probes run in.
NET_NAMESPACE = "net_namespace"

# Top-level blocks owned by other keepalived daemons: skipped whole, one notice each.
TOP_LEVEL_NOT_OURS_PREFIXES = ("vrrp_", "bfd_", "static_", "garp_", "linkbeat_")
TOP_LEVEL_NOT_OURS = frozenset({"net_namespace_ipvs", "instance",
                                "namespace_with_ipsets", "use_pid_dir", "linkbeat_interfaces"})

SSL: dict[str, Kw] = {
    "password": Kw("password", v.string),
    "ca": Kw("ca", v.string),
    "certificate": Kw("certificate", v.string),
    "key": Kw("key", v.string),
}

TRACK_FILE: dict[str, Kw] = {
    "file": Kw("path", v.string),
    "weight": Kw("weight", weight_reverse),
    "init_file": Kw("init_file", init_file),
}
TRACK_FILE_BLOCKS = frozenset({"track_file", "vrrp_track_file"})

VIRTUAL_SERVER: dict[str, Kw] = {
    **INHERITED,
    "lb_algo": Kw("scheduler", v.choice({s: s for s in SCHEDULERS}, "scheduler")),
    "lvs_sched": Kw("scheduler", v.choice({s: s for s in SCHEDULERS}, "scheduler")),
    **{name: Kw(f"flag:{name}", v.flag) for name in SCHEDULER_FLAG_KEYWORDS},
    "hashed": Kw("hashed", v.flag),  # accepted by keepalived, sets nothing
    "ops": Kw("one_packet", v.flag),
    "weight": Kw("weight", v.int_range(1, 2**31 - 1)),  # default weight of real servers
    "lb_kind": Kw("forwarding", forwarding),
    "lvs_method": Kw("forwarding", forwarding),
    "persistence_timeout": Kw("persistence_timeout_s", persistence_timeout),
    "persistence_granularity": Kw("persistence_granularity", v.netmask),
    "persistence_engine": Kw("persistence_engine", v.choice({"sip": "sip"}, "engine")),
    "protocol": Kw("protocol", protocol),
    "ha_suspend": Kw("ha_suspend", v.flag),
    "omega": Kw("omega", v.flag),
    "quorum": Kw("quorum", v.int_range(0, 2**31 - 1)),  # 0: the loader repairs it to 1
    "hysteresis": Kw("hysteresis", v.int_range(0, 2**31 - 1)),
    "quorum_up": Kw("quorum_up", v.script),
    "quorum_down": Kw("quorum_down", v.script),
    "ip_family": Kw("ip_family", v.choice(FAMILIES, "address family")),
    "sorry_server": Kw("sorry_server", v.address_and_optional_port),
    "sorry_server_inhibit": Kw("sorry_server_inhibit", v.flag),
    "sorry_server_lvs_method": Kw("sorry_server_forwarding", forwarding),
    "real_server": Kw("real_servers", block="real_server", repeat=True),
    # keepalived 1.2 (and the FULLNAT fork) stored it and never used it; 2.2.7 does not
    # know it and runs on ("Unknown keyword 'nat_mask'").
    "nat_mask": Kw("nat_mask", ignored="keepalived 1.2 stores it without using it (it was "
                                       "for Linux 2.2 masquerading) and 2.2.7 does not know "
                                       "it"),
    # Alibaba FULLNAT (keepalived 1.2.2 fork) additions.
    "laddr_group_name": Kw("local_address_group", v.string),
    "syn_proxy": Kw("syn_proxy", v.flag),
    "vip_bind_dev": Kw("vip_bind_dev", v.string),
    "est_timeout": Kw("established_timeout_s", v.int_range(1, 2**31 - 1)),
}

REAL_SERVER: dict[str, Kw] = {
    **INHERITED,
    "weight": Kw("weight", WEIGHT),
    "lvs_method": Kw("forwarding", forwarding),
    "lb_kind": Kw("forwarding", forwarding),
    "notify_up": Kw("notify_up", v.script),
    "notify_down": Kw("notify_down", v.script),
    "uthreshold": Kw("upper_threshold", THRESHOLD),
    "lthreshold": Kw("lower_threshold", THRESHOLD),
    **{name: Kw("checks", block=name, repeat=True) for name in CHECK_BLOCKS},
    **{name: Kw("unsupported_checks", block="skip", repeat=True)
       for name in UNSUPPORTED_CHECKS},
}

CHECK_TIMING: dict[str, Kw] = {
    "delay_loop": INHERITED["delay_loop"],
    "retry": Kw("retry", CHECK_RETRY),
    "delay_before_retry": INHERITED["delay_before_retry"],
    "warmup": INHERITED["warmup"],
    "alpha": INHERITED["alpha"],
    "log_all_failures": Kw("log_all_failures", v.flag),
}

CHECK_CONNECTION: dict[str, Kw] = {
    "connect_ip": Kw("connect_ip", v.address),
    "connect_port": Kw("connect_port", v.port),
    "bindto": Kw("bind_address", v.address),
    "bind_if": Kw("bind_interface", v.string),
    "bind_port": Kw("bind_port", v.port),
    "fwmark": Kw("fwmark", v.int_range(1, 2**32 - 1)),
    "connect_timeout": INHERITED["connect_timeout"],
}

CHECK_COMMON = {**CHECK_TIMING, **CHECK_CONNECTION}

URL: dict[str, Kw] = {
    "path": Kw("path", v.string),
    "digest": Kw("digest", digest),
    "status_code": Kw("status_codes", status_codes),
    "virtualhost": Kw("virtualhost", v.string),
    "regex": Kw("regex", v.string),
    "regex_no_match": Kw("regex_no_match", v.flag),
    "regex_options": Kw("regex_options", regex_options),
    "regex_stack": Kw("regex_stack", regex_stack),
    "regex_min_offset": Kw("regex_min_offset", v.int_range(0, 2**31 - 1)),
    "regex_max_offset": Kw("regex_max_offset", v.int_range(0, 2**31 - 1)),
}

# Per check type defaults that keepalived applies when nothing is inherited.
DEFAULT_RETRY = {CheckKind.DNS: 3, CheckKind.MISC: 0}
DEFAULT_RETRY_OTHERS = 1
DEFAULT_DELAY_BEFORE_RETRY_S = {CheckKind.HTTP: 3.0, CheckKind.HTTPS: 3.0}
DEFAULT_DELAY_BEFORE_RETRY_OTHERS_S = 1.0
DEFAULT_DELAY_LOOP_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0

# `nb_get_retry` is HTTP_GET/SSL_GET's own keyword in keepalived 1.2 (check_http.c
# nb_get_retry_handler; the FULLNAT fork's TCP_CHECK has no retries at all, its
# SMTP_CHECK says `retry`) and a deprecated spelling of `retry` there in 2.2.7
# (check_http.c http_get_retry_handler). Every other checker ignores it: 2.2.7 logs
# "Unknown keyword 'nb_get_retry'" and keeps its retry.
NB_GET_RETRY = "nb_get_retry"


def nb_get_retry_ignored(kind: CheckKind) -> Kw:
    if kind is CheckKind.FILE:
        after = "FILE_CHECK acts at once, without retries"
    else:
        default = DEFAULT_RETRY.get(kind, DEFAULT_RETRY_OTHERS)
        after = (f"retry stays as set by 'retry' (here, on the real or virtual server) or "
                 f"{kind.value}'s default, {default}")
    return Kw("retry", ignored=f"keepalived reads it only in HTTP_GET and SSL_GET; {after}")


def with_nb_get_retry(tables: dict[CheckKind, dict[str, Kw]]) -> dict[CheckKind, dict[str, Kw]]:
    """Every checker that does not read `nb_get_retry` ignores it with a warning."""
    return {kind: table if NB_GET_RETRY in table else
            {**table, NB_GET_RETRY: nb_get_retry_ignored(kind)}
            for kind, table in tables.items()}


HTTP_GET: dict[str, Kw] = {
    **CHECK_COMMON,
    NB_GET_RETRY: Kw("retry", CHECK_RETRY, notice="nb_get_retry is deprecated - please "
                                                  "use 'retry'"),
    "http_protocol": Kw("http_protocol", v.choice(HTTP_PROTOCOLS, "HTTP protocol")),
    "virtualhost": INHERITED["virtualhost"],
    "fast_recovery": Kw("fast_recovery", v.flag),
    "url": Kw("urls", block="url", repeat=True),
}

SMTP_HOST = dict(CHECK_CONNECTION)  # legacy `host { connect_ip … }` sub-block

CHECKS: dict[CheckKind, dict[str, Kw]] = with_nb_get_retry({
    CheckKind.TCP: CHECK_COMMON,
    CheckKind.HTTP: HTTP_GET,
    CheckKind.HTTPS: {**HTTP_GET, "enable_sni": Kw("enable_sni", v.flag)},
    CheckKind.SMTP: {
        **CHECK_COMMON,
        "helo_name": Kw("helo_name", v.string),
        "host": Kw("hosts", block="smtp_host", repeat=True),
    },
    CheckKind.DNS: {
        **CHECK_COMMON,
        "type": Kw("query_type", dns_type),
        "name": Kw("name", v.string),
    },
    CheckKind.UDP: {
        **CHECK_COMMON,
        "payload": Kw("payload", hex_payload),
        "require_reply": Kw("require_reply", optional_hex_pattern),
        "min_reply_length": Kw("min_reply_length", v.int_range(0, 65535)),
        "max_reply_length": Kw("max_reply_length", v.int_range(0, 65535)),
    },
    CheckKind.PING: CHECK_COMMON,
    CheckKind.MISC: {
        **CHECK_TIMING,
        "misc_path": Kw("misc_path", v.script),
        "misc_timeout": Kw("misc_timeout_s", v.int_range(0, 4294)),
        "misc_dynamic": Kw("misc_dynamic", v.flag),
        "user": Kw("user", user_group),
    },
    CheckKind.FILE: {
        "track_file": Kw("track_file", v.string),
        "file": Kw("track_file", v.string),
        "weight": Kw("weight", weight_reverse),
        "dynamic": Kw("dynamic", v.flag),
    },
})

SUB_BLOCKS: dict[str, dict[str, Kw]] = {"url": URL, "smtp_host": SMTP_HOST}
