"""Checker blocks (TCP_CHECK, HTTP_GET, … FILE_CHECK) → resolved `model.Check` values.

Owns: per-check-type keyword collection, the checker end of inheritance (checker →
real server → virtual server → type default) and per-type defaults and validation.
Must not: decide health or touch sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from fastcheck.config import keywords as k
from fastcheck.config.collect import collect
from fastcheck.config.parser import Statement
from fastcheck.errors import Diagnostics
from fastcheck.model import (
    Check,
    CheckKind,
    CheckParams,
    DnsParams,
    FileParams,
    GlobalDefs,
    HttpParams,
    MiscParams,
    PingParams,
    Script,
    SmtpParams,
    Target,
    TcpParams,
    TrackFile,
    UdpParams,
    UrlSpec,
)

ParamsBuilder = Callable[["CheckBuilder", Statement, Any], CheckParams | None]
PORTLESS = frozenset({CheckKind.PING, CheckKind.MISC, CheckKind.FILE})


def build_checks(statements: list[Statement], inherited: dict[str, Any], rs_address: str,
                 rs_port: int, vs_delay_loop_s: float, global_defs: GlobalDefs,
                 track_files: dict[str, TrackFile], diags: Diagnostics) -> tuple[Check, ...]:
    """`inherited` holds the real server's keywords over the virtual server's."""
    builder = CheckBuilder(inherited, rs_address, rs_port, vs_delay_loop_s, global_defs,
                           track_files, diags)
    checks: list[Check] = []
    for st in statements:
        checks.extend(builder.build(st))
    return tuple(checks)


class CheckBuilder:
    def __init__(self, inherited: dict[str, Any], rs_address: str, rs_port: int,
                 vs_delay_loop_s: float, global_defs: GlobalDefs,
                 track_files: dict[str, TrackFile], diags: Diagnostics) -> None:
        self.inherited = inherited
        self.rs_address = rs_address
        self.rs_port = rs_port
        self.vs_delay_loop_s = vs_delay_loop_s
        self.global_defs = global_defs
        self.track_files = track_files
        self.diags = diags

    def build(self, st: Statement) -> list[Check]:
        kind = k.CHECK_BLOCKS[st.keyword]
        if st.args:
            self.diags.error(st.position, f"{st.keyword} takes no arguments before its block")
        fields = collect(st.children or (), k.CHECKS[kind], st.keyword, self.diags)
        params = self.PARAMS[kind](self, st, fields)
        if params is None:
            return []
        targets: list[dict[str, Any]] = [{}]
        if kind is CheckKind.SMTP and "hosts" in fields.blocks:
            hosts = [collect(host.children or (), k.SMTP_HOST, "host", self.diags).values
                     for host in fields.blocks["hosts"]]
            self.diags.warning(fields.blocks["hosts"][0].position,
                               "SMTP_CHECK 'host' blocks are deprecated; each becomes its own "
                               "SMTP check")
            # As keepalived: without connection options of its own, the first host block
            # replaces the main connection instead of adding to it.
            own = any(name in fields.values for name in (kw.field for kw in
                                                         k.SMTP_HOST.values()))
            targets = ([{}] if own else []) + hosts
        checks = []
        for connection in targets:
            values = {**fields.values, **connection}
            target = self.target(st, kind, values)
            if target is None:
                continue
            checks.append(self.timing(st, kind, values, target, params))
        return checks

    def _value(self, values: dict[str, Any], name: str) -> Any:
        return values[name] if name in values else self.inherited.get(name)

    def timing(self, st: Statement, kind: CheckKind, values: dict[str, Any], target: Target,
               params: CheckParams) -> Check:
        delay_loop = self._value(values, "delay_loop_s")
        delay_loop = k.DEFAULT_DELAY_LOOP_S if delay_loop is None else delay_loop
        retry = self._value(values, "retry")
        if retry is None:
            retry = k.DEFAULT_RETRY.get(kind, k.DEFAULT_RETRY_OTHERS)
        before_retry = self._value(values, "delay_before_retry_s")
        if before_retry is None:
            before_retry = delay_loop if kind is CheckKind.DNS else \
                k.DEFAULT_DELAY_BEFORE_RETRY_S.get(kind, k.DEFAULT_DELAY_BEFORE_RETRY_OTHERS_S)
        warmup = self._value(values, "warmup_s")
        timeout = self._value(values, "connect_timeout_s")
        if kind is CheckKind.MISC:
            timeout = params.timeout_s  # type: ignore[union-attr]
        log_all = values.get("log_all_failures", self.global_defs.checker_log_all_failures)
        alpha = bool(self._value(values, "alpha"))
        if kind is CheckKind.FILE:  # keepalived check_file.c: a file's word acts at once
            retry, alpha = 0, False  # (no retry), its state is known at start (no alpha)
        return Check(
            kind=kind, target=target, params=params, delay_loop_s=delay_loop,
            connect_timeout_s=k.DEFAULT_CONNECT_TIMEOUT_S if timeout is None else timeout,
            retry=retry, delay_before_retry_s=before_retry,
            warmup_s=delay_loop if warmup is None else warmup,
            alpha=alpha, log_all_failures=log_all,
            position=st.position)

    def target(self, st: Statement, kind: CheckKind, values: dict[str, Any]) -> Target | None:
        port = values.get("connect_port", self.rs_port)
        if kind in PORTLESS:
            port = 0
        elif not port:
            self.diags.error(st.position, f"{st.keyword} needs a port: the real server has "
                                          "none, so set connect_port")
            return None
        return Target(values.get("connect_ip", self.rs_address), port,
                      values.get("bind_address"), values.get("bind_interface"),
                      values.get("bind_port"), values.get("fwmark"))

    # ------------------------------------------------------------------ per type

    def tcp(self, st: Statement, fields: Any) -> CheckParams:
        return TcpParams()

    def ping(self, st: Statement, fields: Any) -> CheckParams:
        return PingParams()

    def http(self, st: Statement, fields: Any) -> CheckParams | None:
        urls = []
        for url_st in fields.blocks.get("urls", []):
            url = collect(url_st.children or (), k.URL, "url", self.diags).values
            if "path" not in url:
                self.diags.error(url_st.position, "url block has no 'path'")
                continue
            if url.get("regex_no_match") and "regex" not in url:
                self.diags.error(url_st.position, "regex_no_match without regex")
            urls.append(UrlSpec(**url))
        if not urls:
            if "urls" not in fields.blocks:
                self.diags.error(st.position, f"{st.keyword} needs at least one url block")
            return None
        return HttpParams(
            urls=tuple(urls), http_protocol=fields.get("http_protocol", "1.0"),
            virtualhost=self._value(fields.values, "virtualhost"),
            fast_recovery=fields.get("fast_recovery", False),
            enable_sni=fields.get("enable_sni", False))

    def smtp(self, st: Statement, fields: Any) -> CheckParams:
        helo = fields.get("helo_name", k.DEFAULT_SMTP_HELO)
        return SmtpParams(helo)  # keepalived: smtpchecker.keepalived.org unless set

    def dns(self, st: Statement, fields: Any) -> CheckParams:
        return DnsParams(fields.get("query_type", "SOA"), fields.get("name", "."))

    def udp(self, st: Statement, fields: Any) -> CheckParams | None:
        payload = fields.get("payload")
        low, high = fields.get("min_reply_length", 0), fields.get("max_reply_length", 255)
        if low > high:
            self.diags.error(st.position, f"min_reply_length {low} > max_reply_length {high}")
            return None
        return UdpParams(
            payload=bytes.fromhex(payload) if payload else None,
            require_reply="require_reply" in fields.values,
            reply_pattern=fields.get("require_reply"), min_reply_length=low,
            max_reply_length=high)

    def misc(self, st: Statement, fields: Any) -> CheckParams | None:
        path: Script | None = fields.get("misc_path")
        if path is None:
            self.diags.error(st.position, "MISC_CHECK needs misc_path")
            return None
        user, group = fields.get("user", (path.user, path.group))
        if user is None and self.global_defs.script_user is not None:
            user, group = self.global_defs.script_user, self.global_defs.script_group
        # keepalived: misc_timeout 0 (the default) means the virtual server's delay_loop.
        timeout = float(fields.get("misc_timeout_s") or self.vs_delay_loop_s)
        return MiscParams(Script(path.command, user, group), timeout,
                          fields.get("misc_dynamic", False))

    def file(self, st: Statement, fields: Any) -> CheckParams | None:
        name = fields.get("track_file")
        if name is None:
            self.diags.error(st.position, "FILE_CHECK needs track_file NAME")
            return None
        if name not in self.track_files:
            self.diags.error(fields.positions["track_file"],
                             f"track_file '{name}' is not defined")
            return None
        weight, reverse = fields.get("weight", (self.track_files[name].weight,
                                                self.track_files[name].reverse))
        return FileParams(name, weight, reverse, fields.get("dynamic", False))

    PARAMS: ClassVar[dict[CheckKind, ParamsBuilder]] = {
        CheckKind.TCP: tcp, CheckKind.HTTP: http, CheckKind.HTTPS: http,
        CheckKind.SMTP: smtp, CheckKind.DNS: dns, CheckKind.UDP: udp, CheckKind.PING: ping,
        CheckKind.MISC: misc, CheckKind.FILE: file,
    }
