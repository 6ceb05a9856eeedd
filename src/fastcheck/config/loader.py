"""Turns the parsed block tree into the resolved, immutable `model.Config`.

Owns: block dispatch, keyword collection through config/keywords.py tables, default
resolution and inheritance (virtual server → real server → checker) exactly as
keepalived resolves them, cross references (groups, track files) and the repairs
keepalived applies with a warning. Every problem goes to `Diagnostics` and loading goes
on, so one run reports all of a file's problems.
Must not: do network I/O or keep state between loads.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, replace
from typing import Any

from fastcheck.config import keywords as k
from fastcheck.config import values as v
from fastcheck.config.checks import build_checks
from fastcheck.config.collect import Fields, collect
from fastcheck.config.groups import local_addresses, vs_group_entry
from fastcheck.config.parser import Statement, parse_file, parse_text
from fastcheck.errors import ConfigError, Diagnostics, Position, clip, echo
from fastcheck.model import (
    Config,
    Family,
    Forwarding,
    GlobalDefs,
    GroupEntry,
    LocalAddressGroup,
    LvsTimeouts,
    Method,
    Protocol,
    RealServer,
    SchedulerFlag,
    SorryServer,
    SslConfig,
    TrackFile,
    VirtualServer,
    VirtualServerGroup,
    VsKind,
    family_of,
    format_endpoint,
)


def _describe(kind: VsKind, address: str | None, port: int | None, fwmark: int | None,
              group: str | None) -> str:
    if kind is VsKind.FWMARK:
        return f"fwmark {fwmark}"
    if kind is VsKind.GROUP:
        return f"group {group}"
    return format_endpoint(address or "", port)


# What no input should provoke, since every cause found was fixed where it arose (numbers
# too long for int(), runaway includes and expansions: see the budgets in lexer.py and
# params.py). Should one still escape, the user gets a ConfigError saying so, not a
# traceback; its wording (BUG_MESSAGE) lets the tests tell it from a diagnosis.
# MemoryError is not among them: running out of memory is the limit of the process that
# reads (the reload reader's ceiling, check-config's machine), reported by that process.
_LAST_RESORT = (RecursionError, ValueError, OverflowError)
BUG_MESSAGE = "fastcheck could not read this configuration (a bug; please report it)"


def load_file(path: str, *, config_id: str | None = None, strict: bool = False,
              diagnostics: Diagnostics | None = None) -> tuple[Config, Diagnostics]:
    """Loads a configuration file; raises ConfigError carrying every error found."""
    diags = diagnostics if diagnostics is not None else Diagnostics(strict=strict)
    try:
        statements = parse_file(path, config_id=_config_id(config_id), diagnostics=diags)
        return _finish(statements, diags)
    except _LAST_RESORT as exc:
        raise _bug(exc, diags) from exc


def load_text(text: str, *, filename: str = "<string>", config_id: str | None = None,
              strict: bool = False, base_dir: str | None = None) -> tuple[Config, Diagnostics]:
    diags = Diagnostics(strict=strict)
    try:
        statements = parse_text(text, filename=filename, config_id=_config_id(config_id),
                                diagnostics=diags, base_dir=base_dir)
        return _finish(statements, diags)
    except _LAST_RESORT as exc:
        raise _bug(exc, diags) from exc


def _bug(exc: BaseException, diags: Diagnostics) -> ConfigError:
    """The ConfigError for an exception that escaped a stage (see _LAST_RESORT)."""
    diags.error(None, f"{BUG_MESSAGE}: {type(exc).__name__}: {clip(str(exc))}")
    return ConfigError(diags.errors)


def _config_id(config_id: str | None) -> str:
    return config_id if config_id is not None else socket.gethostname().split(".")[0]


def _finish(statements: tuple[Statement, ...], diags: Diagnostics) -> tuple[Config, Diagnostics]:
    if diags.stopped:        # a budget cut reading short: the statements are not the config
        raise ConfigError(diags.errors)
    config = Loader(diags).load(statements)
    if diags.has_errors:
        raise ConfigError(diags.errors)
    return config, diags


class Loader:
    """One load of one configuration; lives only for the duration of `load`."""

    def __init__(self, diags: Diagnostics) -> None:
        self.diags = diags

    def load(self, statements: tuple[Statement, ...]) -> Config:
        global_defs = GlobalDefs()
        ssl: SslConfig | None = None
        track_files: dict[str, TrackFile] = {}
        vs_groups: dict[str, VirtualServerGroup] = {}
        laddr_groups: dict[str, LocalAddressGroup] = {}
        vs_statements: list[Statement] = []
        net_namespace: str | None = None
        for st in statements:
            name = st.keyword
            if name == "global_defs":
                global_defs = self.global_defs(st)
            elif name == "SSL":
                ssl = SslConfig(**collect(self._block(st), k.SSL, "SSL", self.diags).values)
            elif name in k.TRACK_FILE_BLOCKS:
                self._unique(track_files, self.track_file(st), st)
            elif name == "virtual_server_group":
                self._unique(vs_groups, self.vs_group(st), st)
            elif name == "local_address_group":
                self._unique(laddr_groups, self.laddr_group(st), st)
            elif name == "virtual_server":
                vs_statements.append(st)
            elif name == k.NET_NAMESPACE:
                net_namespace = self.net_namespace(st, net_namespace)
            elif name.startswith(k.TOP_LEVEL_NOT_OURS_PREFIXES) or name in k.TOP_LEVEL_NOT_OURS:
                what = "block" if st.children is not None else "line"
                self.diags.info(st.position, f"skipping {what} '{name}': not a checker "
                                             "setting (fastcheck runs no VRRP/BFD)")
            else:
                self.diags.error(st.position, f"unknown keyword '{name}' at top level")
        if net_namespace is not None:
            global_defs = replace(global_defs, net_namespace=net_namespace)
        context = Context(global_defs, track_files, vs_groups, laddr_groups)
        servers: dict[Any, VirtualServer] = {}
        for st in vs_statements:
            vs = VirtualServerBuilder(self.diags, context).build(st)
            if vs is None:
                continue
            if vs.key in servers:
                first = servers[vs.key].position
                self.diags.error(st.position, f"virtual server {vs.key} is already defined "
                                              f"at {first}")
                continue
            servers[vs.key] = vs
        return Config(global_defs, ssl, tuple(track_files.values()), tuple(vs_groups.values()),
                      tuple(laddr_groups.values()), tuple(servers.values()))

    def net_namespace(self, st: Statement, current: str | None) -> str | None:
        """keepalived core/global_parser.c net_namespace_handler: the first one counts."""
        if not st.args:
            self.diags.warning(st.position, "net_namespace name missing - ignoring")
            return current
        if current is not None:
            self.diags.warning(st.position, f"Duplicate net_namespace definition "
                                            f"{st.args[0]} - ignoring")
            return current
        return st.args[0]

    def _block(self, st: Statement) -> tuple[Statement, ...]:
        if st.children is None:
            self.diags.error(st.position, f"'{st.keyword}' needs a {{ }} block")
            return ()
        return st.children

    def _unique(self, registry: dict[str, Any], item: Any, st: Statement) -> None:
        if item is None:
            return
        if item.name in registry:
            self.diags.error(st.position, f"{st.keyword} '{item.name}' is already defined "
                                          f"at {registry[item.name].position}")
            return
        registry[item.name] = item

    def _name(self, st: Statement) -> str | None:
        if len(st.args) != 1:
            self.diags.error(st.position, f"'{st.keyword}' expects one name, "
                                          f"got {len(st.args)} arguments")
            return None
        return st.args[0]

    def global_defs(self, st: Statement) -> GlobalDefs:
        fields = Fields()
        known = {kw: spec for kw, spec in k.GLOBAL_DEFS.items()}
        ours = []
        for child in self._block(st):
            if child.keyword in k.GLOBAL_DEFS_NOT_OURS or (
                    child.keyword not in known and child.keyword.startswith(("vrrp_", "bfd_"))):
                continue
            ours.append(child)
        fields = collect(tuple(ours), k.GLOBAL_DEFS, "global_defs", self.diags)
        values = dict(fields.values)
        emails: list[str] = []
        for block in fields.blocks.get("notification_email", []):
            emails.extend(block.args)
            for item in block.children or ():
                emails.extend((item.keyword, *item.args))
        values["notification_email"] = tuple(emails)
        if "smtp_server" in values:
            values["smtp_server"], port = values["smtp_server"]
            if port is not None:
                values["smtp_port"] = port
        if "script_user" in values:
            values["script_user"], values["script_group"] = values["script_user"]
        if "lvs_timeouts" in values:
            t = values["lvs_timeouts"]
            values["lvs_timeouts"] = LvsTimeouts(t.get("tcp"), t.get("tcpfin"), t.get("udp"))
        return GlobalDefs(**values)

    def track_file(self, st: Statement) -> TrackFile | None:
        name = self._name(st)
        fields = collect(self._block(st), k.TRACK_FILE, st.keyword, self.diags)
        if name is None:
            return None
        if "path" not in fields.values:
            self.diags.error(st.position, f"track_file '{name}' has no 'file'")
            return None
        weight, reverse = fields.get("weight", (1, False))
        init = fields.get("init_file")
        return TrackFile(name, fields.values["path"], weight, reverse,
                         init[0] if init else None, init[1] if init else False, st.position)

    def vs_group(self, st: Statement) -> VirtualServerGroup | None:
        name = self._name(st)
        entries = []
        for child in self._block(st):
            if child.children is not None:
                self.diags.error(child.position, "a virtual_server_group entry takes no block")
                continue
            try:
                entry = vs_group_entry(child.keyword, child.args)
            except v.ValueProblem as problem:
                self.diags.error(child.position, f"virtual_server_group entry: {problem}")
                continue
            entries.append(_with_position(entry, child.position))
        if name is None:
            return None
        if not entries:
            self.diags.warning(st.position, f"virtual_server_group '{name}' is empty")
        return VirtualServerGroup(name, tuple(entries), st.position)

    def laddr_group(self, st: Statement) -> LocalAddressGroup | None:
        name = self._name(st)
        addresses: list[str] = []
        for child in self._block(st):
            try:
                addresses.extend(local_addresses(child.keyword, child.args))
            except v.ValueProblem as problem:
                self.diags.error(child.position, f"local_address_group entry: {problem}")
        if name is None:
            return None
        if not addresses:
            self.diags.error(st.position, f"local_address_group '{name}' has no address")
        return LocalAddressGroup(name, tuple(dict.fromkeys(addresses)), st.position)


def _entries(entries: list[GroupEntry]) -> str:
    """Group entries for a message: the first three, then how many more."""
    shown = []
    for entry in entries[:3]:
        if entry.fwmark is not None:
            shown.append(f"fwmark {entry.fwmark}")
            continue
        span = entry.first if entry.first == entry.last else f"{entry.first}-{entry.last}"
        shown.append(format_endpoint(span or "", entry.port or 0))
    more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
    noun = "group entry" if len(entries) == 1 else "group entries"
    return f"{noun} {', '.join(shown)}{more}"


def _with_position(entry: Any, position: Position) -> Any:
    return type(entry)(entry.first, entry.last, entry.port, entry.fwmark, entry.family,
                       position)


@dataclass(frozen=True, slots=True)
class Context:
    """Top-level definitions a virtual server may refer to."""

    global_defs: GlobalDefs
    track_files: dict[str, TrackFile]
    vs_groups: dict[str, VirtualServerGroup]
    laddr_groups: dict[str, LocalAddressGroup]


class VirtualServerBuilder:
    """Builds one VirtualServer (with its real servers and checks) from its block."""

    def __init__(self, diags: Diagnostics, context: Context) -> None:
        self.diags = diags
        self.context = context

    def build(self, st: Statement) -> VirtualServer | None:
        header = self.header(st)
        children = st.children
        if children is None:
            self.diags.error(st.position, "'virtual_server' needs a { } block")
            children = ()
        fields = collect(children, k.VIRTUAL_SERVER, "virtual_server", self.diags)
        if header is None:
            return None
        kind, address, port, fwmark, group = header
        vsf = fields.values
        where = f"virtual server {_describe(kind, address, port, fwmark, group)}"
        forwarding: Forwarding = vsf.get("forwarding", Forwarding())
        if "forwarding" not in vsf:
            self.diags.warning(st.position, f"{where}: no lb_kind/lvs_method set, "
                                            "using NAT")
        protocol = self.protocol(st, where, kind, fields)
        if "scheduler" not in vsf:
            self.diags.warning(st.position, f"{where}: no lb_algo/lvs_sched set, using "
                                            f"'{k.DEFAULT_SCHEDULER}'")
        scheduler = vsf.get("scheduler", k.DEFAULT_SCHEDULER)
        persistence = vsf.get("persistence_timeout_s")
        if persistence == 0:  # keepalived check_parser.c pto_handler: invalid, left unset
            self.diags.warning(fields.positions["persistence_timeout_s"],
                               f"{where}: persistence_timeout 0 is invalid (keepalived "
                               f"takes 1..{k.LVS_MAX_TIMEOUT_S}); persistence stays off, as "
                               "keepalived leaves it")
            persistence = None
        if persistence is None and "persistence_granularity" in vsf:
            persistence = 360
        if self.zero_port(kind, port, group) and persistence is None:
            self.diags.warning(st.position, f"{where}: a zero port is only valid for a "
                                            "persistent service; using persistence_timeout "
                                            "360")
            persistence = 360
        if vsf.get("one_packet") and protocol is not Protocol.UDP:
            self.diags.warning(fields.positions["one_packet"],
                               "one packet scheduling ('ops') requires UDP; ignored")
            vsf["one_packet"] = False
        if vsf.get("ha_suspend") and self.has_fwmark(kind, group):
            self.diags.warning(fields.positions["ha_suspend"],
                               "ha_suspend cannot be used with fwmarks; ignored")
            vsf["ha_suspend"] = False
        flags = self.scheduler_flags(fields, scheduler)
        real_servers = self.real_servers(fields, kind, port, forwarding)
        if not real_servers:
            self.diags.warning(st.position, f"{where} has no real servers; ignoring it")
            return None
        family = self.family(st, kind, address, group, vsf.get("ip_family"), real_servers)
        quorum, hysteresis = self.quorum(fields, real_servers)
        granularity = self.granularity(fields, family)
        sorry = self.sorry_server(st, fields, kind, port, forwarding)
        if group is not None:
            self.group_ports(where, group, real_servers, sorry, fields)
        laddr = vsf.get("local_address_group")
        if laddr is not None and laddr not in self.context.laddr_groups:
            self.diags.error(fields.positions["local_address_group"],
                             f"local_address_group '{laddr}' is not defined")
        if forwarding.method is Method.FNAT and laddr is None:
            self.diags.warning(st.position, f"{where}: lb_kind FNAT without "
                                            "laddr_group_name; FULLNAT needs local addresses")
        return VirtualServer(
            kind=kind, family=family, protocol=protocol, address=address, port=port,
            fwmark=fwmark, group=group,
            scheduler=scheduler, scheduler_flags=flags,
            one_packet=vsf.get("one_packet", False), forwarding=forwarding,
            persistence_timeout_s=persistence,
            persistence_granularity=granularity,
            persistence_engine=vsf.get("persistence_engine"),
            delay_loop_s=vsf.get("delay_loop_s", k.DEFAULT_DELAY_LOOP_S),
            ha_suspend=vsf.get("ha_suspend", False), alpha=vsf.get("alpha", False),
            omega=vsf.get("omega", False), quorum=quorum, hysteresis=hysteresis,
            quorum_up=vsf.get("quorum_up"), quorum_down=vsf.get("quorum_down"),
            inhibit_on_failure=vsf.get("inhibit_on_failure", False),
            smtp_alert=self.smtp_alert(vsf.get("smtp_alert"), default=False),
            virtualhost=vsf.get("virtualhost"),
            sorry_server=sorry,
            real_servers=real_servers, local_address_group=laddr,
            syn_proxy=vsf.get("syn_proxy", False), vip_bind_dev=vsf.get("vip_bind_dev"),
            established_timeout_s=vsf.get("established_timeout_s"),
            snmp_name=vsf.get("snmp_name"), position=st.position)

    def header(self, st: Statement) -> tuple[VsKind, str | None, int | None, int | None,
                                             str | None] | None:
        args = st.args
        try:
            if len(args) > 2:
                self.ignored_header_words(st)
                args = args[:2]
            if args[:1] == ("fwmark",):
                v.expect_count(args, 2)
                return VsKind.FWMARK, None, None, v.parse_int(args[1], 1, 2**32 - 1,
                                                              "fwmark"), None
            if args[:1] == ("group",):
                v.expect_count(args, 2)
                if args[1] not in self.context.vs_groups:
                    raise v.ValueProblem(f"virtual_server_group '{args[1]}' is not defined")
                return VsKind.GROUP, None, None, None, args[1]
            address, port = v.address_and_optional_port(args)
            return VsKind.ADDRESS, address, port or None, None, None
        except v.ValueProblem as problem:
            self.diags.error(st.position, f"virtual_server: {problem}")
            return None

    def ignored_header_words(self, st: Statement) -> None:
        """keepalived check_parser.c vs_handler passes only the two words after
        `virtual_server` to alloc_vs (check_data.c); the rest are dropped without a word.
        fastcheck names them: `virtual_server 10.0.0.1 80 dev eth0` serves 10.0.0.1:80 on
        every interface, which is not what its author meant."""
        kept, extra = " ".join(st.args[:2]), " ".join(st.args[2:])
        self.diags.warning(st.position, f"virtual_server: ignoring {echo(extra)} after "
                                        f"'{clip(kept)}', as keepalived does: it reads only "
                                        "ADDRESS [PORT], 'fwmark N' or 'group NAME' there "
                                        "(an IPVS service has no interface)")

    def protocol(self, st: Statement, where: str, kind: VsKind, fields: Fields) -> Protocol:
        entries = self._group_entries(self._group_of(st))
        if kind is VsKind.FWMARK or (entries and all(e.fwmark is not None for e in entries)):
            if "protocol" in fields.values:
                self.diags.warning(fields.positions["protocol"],
                                   f"{where}: protocol is ignored for a fwmark service")
            return Protocol.TCP
        if "protocol" not in fields.values:
            self.diags.warning(st.position, f"{where}: no protocol set; keepalived defaults "
                                            "to UDP, and so does fastcheck")
            return Protocol.UDP
        protocol: Protocol = fields.values["protocol"]
        return protocol


    @staticmethod
    def _group_of(st: Statement) -> str | None:
        return st.args[1] if st.args[:1] == ("group",) and len(st.args) >= 2 else None

    def _group_entries(self, group: str | None) -> tuple[GroupEntry, ...]:
        found = self.context.vs_groups.get(group or "")
        return found.entries if found else ()

    def zero_port(self, kind: VsKind, port: int | None, group: str | None) -> bool:
        if kind is VsKind.ADDRESS:
            return not port
        return any(e.fwmark is None and not e.port for e in self._group_entries(group))

    def has_fwmark(self, kind: VsKind, group: str | None) -> bool:
        return kind is VsKind.FWMARK or any(e.fwmark is not None
                                            for e in self._group_entries(group))

    def scheduler_flags(self, fields: Fields, scheduler: str) -> SchedulerFlag:
        flags = SchedulerFlag(0)
        for name, bit in k.SCHEDULER_FLAG_KEYWORDS.items():
            if not fields.get(f"flag:{name}"):
                continue
            owner = name.partition("-")[0]
            if owner in ("sh", "mh") and scheduler != owner:
                self.diags.warning(fields.positions[f"flag:{name}"],
                                   f"{name} only applies to the {owner} scheduler; ignored")
                continue
            flags |= bit
        return flags

    def family(self, st: Statement, kind: VsKind, address: str | None, group: str | None,
               ip_family: str | None, real_servers: tuple[RealServer, ...]) -> Family:
        if address is not None:
            family = family_of(address)
        elif ip_family is not None:
            family = Family(ip_family)
        elif kind is VsKind.GROUP and self.context.vs_groups[group or ""].entries:
            family = self.context.vs_groups[group or ""].entries[0].family
        else:
            families = {family_of(rs.address) for rs in real_servers}
            family = families.pop() if len(families) == 1 else Family.INET
        for rs in real_servers:
            if family_of(rs.address) is not family and rs.forwarding.method is not Method.TUN:
                self.diags.error(rs.position, f"real server {rs.address} is not in the "
                                              f"virtual server's address family "
                                              f"({family.value}); only tunnelled real "
                                              "servers may differ")
        return family

    def granularity(self, fields: Fields, family: Family) -> str | None:
        """IPv4 takes a dotted mask (a prefix length is converted), IPv6 a prefix length."""
        mask: str | None = fields.get("persistence_granularity")
        if mask is None:
            return None
        position = fields.positions["persistence_granularity"]
        if family is Family.INET6:
            if not mask.isdigit():
                self.diags.error(position, f"persistence_granularity {mask}: an IPv6 service "
                                           "takes a prefix length (1..128)")
                return None
            return mask
        if mask.isdigit():
            if int(mask) > 32:
                self.diags.error(position, f"persistence_granularity {mask}: an IPv4 prefix "
                                           "length is at most 32")
                return None
            return str(ipaddress.IPv4Network(f"0.0.0.0/{mask}").netmask)
        return mask

    def quorum(self, fields: Fields, real_servers: tuple[RealServer, ...]) -> tuple[int, int]:
        """keepalived's order: quorum 0 becomes 1 (check_parser.c quorum_handler), then
        quorum is capped at the total weight, then hysteresis is kept below it."""
        quorum = fields.get("quorum", 1)
        hysteresis = fields.get("hysteresis", 0)
        total = sum(rs.weight for rs in real_servers)
        where = fields.positions.get("quorum")
        if quorum == 0:
            self.diags.warning(where, "quorum 0 must be at least 1; setting quorum to 1, as "
                                      "keepalived does")
            quorum = 1
        if quorum > total:
            self.diags.warning(where, f"quorum {quorum} exceeds the total weight {total} of "
                                      f"the real servers; reducing quorum to {total}")
            quorum = total
        if hysteresis and hysteresis >= quorum:
            repaired = max(quorum - 1, 0)
            self.diags.warning(fields.positions.get("hysteresis"),
                               f"hysteresis {hysteresis} >= quorum {quorum}; "
                               f"setting hysteresis to {repaired}")
            hysteresis = repaired
        return quorum, hysteresis

    def smtp_alert(self, explicit: bool | None, *, default: bool) -> bool:
        if explicit is not None:
            return explicit
        g = self.context.global_defs
        if g.smtp_alert_checker is not None:
            return g.smtp_alert_checker
        if g.smtp_alert is not None:
            return g.smtp_alert
        return default

    def sorry_server(self, st: Statement, fields: Fields, kind: VsKind, vs_port: int | None,
                     forwarding: Forwarding) -> SorryServer | None:
        sorry = fields.get("sorry_server")
        if sorry is None:
            for name in ("sorry_server_inhibit", "sorry_server_forwarding"):
                if name in fields.values:
                    self.diags.warning(fields.positions[name],
                                       "sorry server option without sorry_server; ignored")
            return None
        address, port = sorry
        method = fields.get("sorry_server_forwarding", forwarding)
        port = self._port(fields.positions["sorry_server"], "sorry server", kind, port,
                          vs_port, method)
        return SorryServer(address, port, method, fields.get("sorry_server_inhibit", False))

    def group_ports(self, where: str, group: str, real_servers: tuple[RealServer, ...],
                    sorry: SorryServer | None, fields: Fields) -> None:
        """keepalived check_data.c validate_check_config, for a virtual_server_group: with
        DR or TUN forwarding a port that differs from a group entry's is only warned about
        (the kernel delivers such traffic on the entry's port), and nothing is changed."""
        entries = self._group_entries(group)
        servers: list[tuple[Position | None, str, int, Method]] = [
            (rs.position, f"real server {format_endpoint(rs.address, rs.port)}", rs.port,
             rs.forwarding.method) for rs in real_servers]
        if sorry is not None:
            servers.append((fields.positions["sorry_server"],
                            f"sorry server {format_endpoint(sorry.address, sorry.port)}",
                            sorry.port, sorry.forwarding.method))
        for position, what, port, method in servers:
            if method not in (Method.DR, Method.TUN) or not port:
                continue
            marks = [e for e in entries if e.fwmark is not None]
            if marks:
                self.diags.warning(position, f"{where}: {what} has a port specified with "
                                             f"{method.value} forwarding to {_entries(marks)}"
                                             " - port will be ignored")
            differ = [e for e in entries if e.fwmark is None and (e.port or 0) != port]
            if differ:
                self.diags.warning(position, f"{where}: {what} and {_entries(differ)} ports "
                                             f"don't match - with {method.value} forwarding "
                                             "the port will be ignored")

    def real_servers(self, vs_fields: Fields, kind: VsKind, vs_port: int | None,
                     vs_forwarding: Forwarding) -> tuple[RealServer, ...]:
        servers: dict[tuple[str, int], RealServer] = {}
        for st in vs_fields.blocks.get("real_servers", []):
            rs = self.real_server(st, vs_fields, kind, vs_port, vs_forwarding)
            if rs is None:
                continue
            endpoint = (rs.address, rs.port)
            if endpoint in servers:
                self.diags.warning(st.position, f"real server {rs.address} port {rs.port} is "
                                                f"already defined at "
                                                f"{servers[endpoint].position}; ignoring this "
                                                "one")
                continue
            servers[endpoint] = rs
        return tuple(servers.values())

    def real_server(self, st: Statement, vs_fields: Fields, kind: VsKind, vs_port: int | None,
                    vs_forwarding: Forwarding) -> RealServer | None:
        fields = collect(st.children or (), k.REAL_SERVER, "real_server", self.diags)
        try:
            address, port = v.address_and_optional_port(st.args)
        except v.ValueProblem as problem:
            self.diags.error(st.position, f"real_server: {problem}")
            return None
        forwarding: Forwarding = fields.get("forwarding", vs_forwarding)
        port = self._port(st.position, f"real server {address}", kind, port, vs_port,
                          forwarding)
        for skipped in fields.blocks.get("unsupported_checks", []):
            self.diags.warning(skipped.position, f"{skipped.keyword} is not supported by "
                                                 "fastcheck; this checker is ignored")
        inherited = {**vs_fields.values, **fields.values}
        checks = build_checks(fields.blocks.get("checks", []), inherited, address, port,
                              vs_fields.get("delay_loop_s", k.DEFAULT_DELAY_LOOP_S),
                              self.context.global_defs, self.context.track_files, self.diags)
        return RealServer(
            address=address, port=port, weight=fields.get("weight", vs_fields.get("weight", 1)),
            forwarding=forwarding,
            inhibit_on_failure=inherited.get("inhibit_on_failure", False),
            alpha=inherited.get("alpha", False),
            smtp_alert=self.smtp_alert(fields.get("smtp_alert"), default=True),
            checks=checks, notify_up=fields.get("notify_up"),
            notify_down=fields.get("notify_down"),
            upper_threshold=fields.get("upper_threshold", 0),
            lower_threshold=fields.get("lower_threshold", 0),
            virtualhost=inherited.get("virtualhost"), position=st.position)

    def _port(self, position: Position, what: str, kind: VsKind, port: int | None,
              vs_port: int | None, forwarding: Forwarding) -> int:
        """keepalived's port repairs for real and sorry servers."""
        routed = forwarding.method in (Method.DR, Method.TUN)
        if kind is VsKind.FWMARK:
            if port and routed:
                self.diags.warning(position, f"{what}: port {port} given for a fwmark virtual "
                                             "server with DR/TUN forwarding; ignored")
                return 0
            return port or 0
        if not port:
            return vs_port or 0
        if routed and vs_port and port != vs_port:
            self.diags.warning(position, f"{what}: port {port} differs from the virtual "
                                         f"server port {vs_port} with "
                                         f"{forwarding.method.value} forwarding; using "
                                         f"{vs_port}")
            return vs_port
        return port
