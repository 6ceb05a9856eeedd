"""Starts planned probes by id and hands back their results: the probe engine's front door.

Owns: one prepared prober per probe of a `ProbePlan` — the batched engines for TCP, ICMP
and plain-HTTP HTTP_GET (`TcpProber`, `PingProber`, `HttpBatchProber`: one socket set for
all targets), a prepared probe object run as one task per start for the other conversation
checks (SSL_GET, SMTP, DNS, UDP, MISC, FILE, and HTTP_GET to an IPv6 link-local target) —
and the rule that a probe never runs twice at once. Results go to one callback
as `(probe_id, ProbeResult)`.
Must not: schedule (scheduler.py decides when), decide health (health/), or read the
clock except through the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from fastcheck.errors import ProbeError
from fastcheck.model import Check, CheckKind, Config
from fastcheck.probeplan import ProbePlan
from fastcheck.probes.result import Failure, ProbeResult

OnResult = Callable[[int, ProbeResult], None]
log = logging.getLogger("fastcheck")


class Runnable(Protocol):
    def run(self) -> Coroutine[Any, Any, ProbeResult]: ...


def checks_by_probe(plan: ProbePlan, config: Config) -> dict[int, Check]:
    """The Check each probe stands for (its owners' checks share one probe key)."""
    by_key = {probe.key: probe_id for probe_id, probe in plan.probes.items()}
    found: dict[int, Check] = {}
    for vs in config.virtual_servers:
        for rs in vs.real_servers:
            for check in rs.checks:
                probe_id = by_key.get(check.probe_key)
                if probe_id is not None and probe_id not in found:
                    found[probe_id] = check
    return found


def _conversation(check: Check, config: Config, tls_context: Callable[[], Any]) -> Runnable:
    """The prepared probe object of a conversation check (imported on first use)."""
    kind = check.kind
    if kind in (CheckKind.HTTP, CheckKind.HTTPS):
        from fastcheck.probes.http import HttpProbe

        context = tls_context() if kind is CheckKind.HTTPS else None
        return HttpProbe(check, ssl=config.ssl, tls_context=context)
    if kind is CheckKind.SMTP:
        from fastcheck.probes.smtp import SmtpProbe

        return SmtpProbe(check)
    if kind is CheckKind.DNS:
        from fastcheck.probes.dns import DnsProbe

        return DnsProbe(check)
    if kind is CheckKind.UDP:
        from fastcheck.probes.udp import UdpProbe

        return UdpProbe(check)
    if kind is CheckKind.MISC:
        from fastcheck.probes.misc import MiscProbe

        return MiscProbe(check, config.global_defs)
    if kind is CheckKind.FILE:
        from fastcheck.probes.file import FileProbe

        return FileProbe(check, {t.name: t for t in config.track_files})
    raise ProbeError(f"no conversation probe for {kind.value}")


class ProbeRunner:
    """Runs the probes of one plan on one event loop. One owner: the daemon's runtime."""

    def __init__(self, loop: asyncio.AbstractEventLoop, plan: ProbePlan, config: Config,
                 on_result: OnResult) -> None:
        self._loop = loop
        self._on_result = on_result
        self._checks: dict[int, Check] = {}
        self._prepared: dict[int, Runnable] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._batched: set[int] = set()
        self._tcp: Any = None
        self._ping: Any = None
        self._http: Any = None
        self._tls: Any = None  # one TLS client context per configuration, for every SSL_GET
        self.update(plan, config)

    def update(self, plan: ProbePlan, config: Config) -> None:
        """A reload: prepare new probes, forget removed ones (running ones may finish)."""
        checks = checks_by_probe(plan, config)
        self._prepared = {pid: p for pid, p in self._prepared.items() if pid in checks
                          and checks[pid] is self._checks.get(pid)}
        self._checks = checks
        self._config = config
        self._tls = None

    @property
    def running(self) -> int:
        return len(self._tasks) + len(self._batched)

    def start(self, probe_id: int) -> None:
        """Starts one probe; its result reaches `on_result` once, later (never inline)."""
        check = self._checks.get(probe_id)
        if check is None:
            raise KeyError(f"probe {probe_id} is not in the plan")
        if probe_id in self._tasks or probe_id in self._batched:
            raise RuntimeError(f"probe {probe_id} is already running")
        if check.kind is CheckKind.TCP:
            self._tcp_prober().start(probe_id, check.target, check.connect_timeout_s)
            self._batched.add(probe_id)
        elif check.kind is CheckKind.PING:
            self._ping_prober().start(probe_id, check.target, check.connect_timeout_s)
            self._batched.add(probe_id)
        elif check.kind is CheckKind.HTTP and self._start_http(probe_id, check):
            self._batched.add(probe_id)
        else:
            self._tasks[probe_id] = self._loop.create_task(self._converse(probe_id, check))

    def _start_http(self, probe_id: int, check: Check) -> bool:
        """Start a plain HTTP_GET on the batched prober; False when it must run as a task
        (a probe that cannot be prepared reports its LOCAL failure from there)."""
        from fastcheck.probes.httpbatch import batchable

        probe = self._prepared.get(probe_id)
        if probe is None:
            try:
                probe = self._prepared[probe_id] = _conversation(check, self._config,
                                                                 self._tls_context)
            except ProbeError:
                return False
        if not batchable(probe):  # type: ignore[arg-type]
            return False
        self._http_prober().start(probe_id, probe)
        return True

    def _tls_context(self) -> Any:
        """The SSL block's client context, built once per configuration (files read once)."""
        if self._tls is None:
            from fastcheck.probes.http import client_context

            self._tls = client_context(self._config.ssl)
        return self._tls

    def _tcp_prober(self) -> Any:
        if self._tcp is None:
            from fastcheck.probes.tcp import TcpProber

            self._tcp = TcpProber(self._loop, self._batched_result)
        return self._tcp

    def _http_prober(self) -> Any:
        if self._http is None:
            from fastcheck.probes.httpbatch import HttpBatchProber

            self._http = HttpBatchProber(self._loop, self._batched_result)
        return self._http

    def _ping_prober(self) -> Any:
        if self._ping is None:
            from fastcheck.probes.ping import PingProber

            self._ping = PingProber(self._loop, self._batched_result)
        return self._ping

    def _batched_result(self, probe_id: int, result: ProbeResult) -> None:
        self._batched.discard(probe_id)
        self._on_result(probe_id, result)

    async def _converse(self, probe_id: int, check: Check) -> None:
        try:
            probe = self._prepared.get(probe_id)
            if probe is None:
                probe = self._prepared[probe_id] = _conversation(check, self._config,
                                                                 self._tls_context)
            result = await probe.run()
        except ProbeError as error:
            result = ProbeResult.down(Failure.LOCAL, detail=str(error))
        except Exception as error:  # a probe bug must not stop the engine
            log.exception("probe %d (%s) crashed", probe_id, check.kind.value)
            result = ProbeResult.down(Failure.LOCAL, detail=f"internal error: {error!r}")
        finally:
            self._tasks.pop(probe_id, None)
        self._on_result(probe_id, result)

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        for prober in (self._tcp, self._ping, self._http):
            if prober is not None:
                prober.close()
        self._batched.clear()
