"""Prometheus metrics of a running daemon, exposed through `prometheus_client`.

Owns: `Metrics`, a private `CollectorRegistry` holding (a) counters and histograms fed
from observer hooks — probe results by kind, failures by class, probe latency, health
events and real-server transitions, removal-budget trips, reloads and their duration —
and (b) a collector over a `Scrape`, copied from the runtime at scrape time — per
virtual/real server state and weight, the scheduler's lag histograms, IPVS operations
and errors, drift repairs, the implementation (c/py) of each hot path — and the text
format: `capture()` on the daemon's loop, then `render()`, which may run in a worker
thread (at 20 000 real servers formatting takes ≈0.4 s; off the loop, probes are not
held up meanwhile).
Must not: change the runtime, serve HTTP (daemon/status.py does), read clocks, or touch
the library's global default registry. Every metric name starts with `fastcheck_`.

Cardinality: hook-fed metrics carry only bounded labels (check kind, failure class,
event type); the per-server gauges carry `vs`/`rs` labels, one series per configured
server, produced afresh at each scrape (a removed server disappears with the reload).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from fastcheck.health.events import Cause, RealServerDown, RealServerUp, RemovalBudgetTripped
from fastcheck.probes.result import ProbeResult
from fastcheck.scheduler import LagHistogram

from .app import Counters
from .engine import EngineStats
from .pace import Pace

if TYPE_CHECKING:
    from .app import Runtime

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0, 30.0)
RELOAD_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def lag_family(name: str, documentation: str, histogram: LagHistogram) -> Metric:
    """A `LagHistogram` (per-bucket counts) as a Prometheus histogram (cumulative)."""
    buckets: list[tuple[str, float]] = []
    seen = 0
    for bound, n in zip(histogram.bounds, histogram.counts, strict=False):
        seen += n
        buckets.append((floatToGoString(bound), seen))
    buckets.append(("+Inf", histogram.count))
    return HistogramMetricFamily(name, documentation, buckets=buckets,
                                 sum_value=histogram.total)


def rs_name(rs: dict[str, Any], vs_name: str) -> str:
    """A real server's address without the " of <vs>" its key's text ends with."""
    name = str(rs.get("rs"))
    return name.removesuffix(f" of {vs_name}")


def _copy_lag(histogram: LagHistogram) -> LagHistogram:
    copy = LagHistogram(histogram.bounds)
    copy.counts, copy.count = list(histogram.counts), histogram.count
    copy.total, copy.max = histogram.total, histogram.max
    return copy


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one scrape reports, copied from the runtime on its loop; formatting it may then
    run in another thread, as nothing here is shared with the runtime."""

    started_at: float
    stats: EngineStats
    counters: Counters
    snapshot: dict[str, Any]
    pace: Pace | None

    @classmethod
    def of(cls, runtime: Runtime, pace: Pace | None,
           snapshot: dict[str, Any] | None = None) -> Scrape:
        stats = dataclasses.replace(runtime.engine.stats())
        stats.start_lag = _copy_lag(stats.start_lag)
        stats.wake_lag = _copy_lag(stats.wake_lag)
        stats.implementations = dict(stats.implementations)
        return cls(runtime.started_at, stats, dataclasses.replace(runtime.counters),
                   runtime.health.snapshot() if snapshot is None else snapshot, pace)


class _ScrapeCollector:
    """Turns the `Scrape` being rendered into metric families (reads nothing else)."""

    def __init__(self) -> None:
        self.scrape: Scrape | None = None  # set by `Metrics.render` under its lock

    def collect(self) -> Iterator[Metric]:
        scrape = self.scrape
        if scrape is None:
            return
        stats = scrape.stats
        counters = scrape.counters
        yield GaugeMetricFamily("fastcheck_start_time_seconds",
                                "Unix time the daemon started", value=scrape.started_at)
        yield CounterMetricFamily("fastcheck_probe_runs_started",
                                  "Probe runs the scheduler started", value=stats.started)
        yield CounterMetricFamily("fastcheck_scheduler_missed_runs",
                                  "Probe slots skipped because a run overran them",
                                  value=stats.missed_runs)
        yield GaugeMetricFamily("fastcheck_probes", "Unique probes in the plan",
                                value=stats.probes)
        yield GaugeMetricFamily("fastcheck_probes_running", "Probe runs in flight",
                                value=stats.running)
        yield GaugeMetricFamily("fastcheck_engine_workers", "Probe engine workers",
                                value=stats.workers)
        yield lag_family("fastcheck_scheduler_start_lag_seconds",
                         "How late probe runs started against their slots", stats.start_lag)
        yield lag_family("fastcheck_scheduler_wake_lag_seconds",
                         "How late the event loop woke the scheduler", stats.wake_lag)
        pace = scrape.pace
        if pace is not None:
            yield GaugeMetricFamily("fastcheck_scheduler_keeping_up",
                                    "1 when probes start on time (the /healthz judgement)",
                                    value=1.0 if pace.keeping_up else 0.0)
        info = GaugeMetricFamily("fastcheck_implementation_info",
                                 "Implementation of each hot path (c = compiled, py = pure)",
                                 labels=["hot_path", "implementation"])
        for path, kind in sorted(stats.implementations.items()):
            info.add_metric([path, kind], 1.0)
        yield info
        yield CounterMetricFamily("fastcheck_ipvs_operations",
                                  "IPVS operations the kernel (or dry-run table) accepted",
                                  value=counters.ops_applied)
        yield CounterMetricFamily("fastcheck_ipvs_operation_errors",
                                  "IPVS operations refused", value=counters.op_failures)
        yield CounterMetricFamily("fastcheck_drift_repairs",
                                  "Drift-repair passes that found the kernel table different",
                                  value=counters.repairs)
        yield CounterMetricFamily("fastcheck_drift_repair_operations",
                                  "IPVS operations sent by drift repair",
                                  value=counters.repaired_ops)
        yield from self._servers(scrape.snapshot)

    def _servers(self, snapshot: dict[str, Any]) -> Iterator[Metric]:
        rs_labels = ["vs", "rs"]
        up = GaugeMetricFamily("fastcheck_real_server_up",
                               "1 when the real server is healthy", labels=rs_labels)
        weight = GaugeMetricFamily("fastcheck_real_server_weight",
                                   "Effective weight (configured, dynamic and slow start)",
                                   labels=rs_labels)
        table = GaugeMetricFamily("fastcheck_real_server_table_weight",
                                  "Weight in the IPVS table; absent when not in the table",
                                  labels=rs_labels)
        held = GaugeMetricFamily("fastcheck_real_server_held_by_budget",
                                 "1 when down but kept in the table by the removal budget",
                                 labels=rs_labels)
        quorum = GaugeMetricFamily("fastcheck_virtual_server_quorum_up",
                                   "1 when the virtual server has its quorum", labels=["vs"])
        weight_sum = GaugeMetricFamily("fastcheck_virtual_server_weight_sum",
                                       "Sum of the live real servers' weights", labels=["vs"])
        for vs in snapshot.get("virtual_servers", ()):
            vs_name = str(vs.get("vs"))
            quorum.add_metric([vs_name], 1.0 if vs.get("quorum_up") else 0.0)
            weight_sum.add_metric([vs_name], float(vs.get("weight_sum") or 0))
            for rs in vs.get("real_servers", ()):
                labels = [vs_name, rs_name(rs, vs_name)]
                up.add_metric(labels, 1.0 if rs.get("up") else 0.0)
                weight.add_metric(labels, float(rs.get("effective_weight") or 0))
                held.add_metric(labels, 1.0 if rs.get("held_by_budget") else 0.0)
                put = rs.get("table_weight")
                if isinstance(put, int) and put >= 0:
                    table.add_metric(labels, float(put))
        yield from (up, weight, table, held, quorum, weight_sum)
        budget = snapshot.get("removal_budget")
        if isinstance(budget, dict) and budget.get("enabled"):
            yield GaugeMetricFamily("fastcheck_removal_budget_tripped",
                                    "Removal budgets tripped now",
                                    value=float(budget.get("tripped") or 0))
            yield GaugeMetricFamily("fastcheck_removal_budget_held",
                                    "Down real servers the removal budget keeps in the table",
                                    value=float(budget.get("held") or 0))


class Metrics:
    """The daemon's metrics; feed it from observer hooks, render with `exposition()`."""

    def __init__(self, source: Callable[[], Runtime | None],
                 pace: Callable[[], Pace | None] = lambda: None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.results = Counter("fastcheck_probe_results", "Probe results by check kind",
                               ["kind", "result"], registry=r)
        self.failures = Counter("fastcheck_probe_failures", "Failed probes by failure class",
                                ["kind", "failure"], registry=r)
        self.latency = Histogram("fastcheck_probe_latency_seconds",
                                 "Probe latency (start to result)", ["kind"],
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.events = Counter("fastcheck_health_events", "Health events by type", ["event"],
                              registry=r)
        self.transitions = Counter("fastcheck_real_server_transitions",
                                   "Real servers going up or down", ["to"], registry=r)
        self.budget_trips = Counter("fastcheck_removal_budget_trips",
                                    "Times a removal budget tripped", registry=r)
        self.reloads = Counter("fastcheck_reloads", "Reloads (SIGHUP) by outcome", ["result"],
                               registry=r)
        self.reload_failures = Counter("fastcheck_reload_failures",
                                       "Reloads that did not take effect, by reason (invalid, "
                                       "unreadable, crashed, timeout, memory, died, planning; "
                                       "engine or removal stop the daemon)", ["reason"],
                                       registry=r)
        self.reload_duration = Histogram("fastcheck_reload_duration_seconds",
                                         "Time a reload took", buckets=RELOAD_BUCKETS_S,
                                         registry=r)
        self._collector = _ScrapeCollector()
        r.register(self._collector)  # type: ignore[arg-type]
        self._render_lock = threading.Lock()
        self._source = source
        self._pace = pace
        # label children cached per kind: the result hook runs for every probe result
        self._ok: dict[str, Any] = {}
        self._failed: dict[str, Any] = {}
        self._observe: dict[str, Callable[[float], None]] = {}

    def on_results(self, kinds: Callable[[int], str], batch: Sequence[tuple[int, ProbeResult]]
                   ) -> None:
        """`kinds(probe_id)` → the probe's check kind (a label value)."""
        for probe_id, result in batch:
            kind = kinds(probe_id)
            observe = self._observe.get(kind)
            if observe is None:
                observe = self._observe[kind] = self.latency.labels(kind).observe
                self._ok[kind] = self.results.labels(kind, "ok")
                self._failed[kind] = self.results.labels(kind, "failed")
            observe(result.latency_s)
            if result.ok:
                self._ok[kind].inc()
            else:
                self._failed[kind].inc()
                failure = result.failure.value if result.failure is not None else "unknown"
                self.failures.labels(kind, failure).inc()

    def on_events(self, events: Sequence[Any]) -> None:
        for event in events:
            self.events.labels(type(event).__name__).inc()
            # transitions a check caused; not what start, reload or stop announce
            if isinstance(event, RealServerUp) and event.cause is Cause.CHECK:
                self.transitions.labels("up").inc()
            elif isinstance(event, RealServerDown) and event.cause is Cause.CHECK:
                self.transitions.labels("down").inc()
            elif isinstance(event, RemovalBudgetTripped):
                self.budget_trips.inc()

    def on_reload(self, ok: bool, duration_s: float, failure: str | None = None) -> None:
        """`failure`: the reason label of a reload that did not take effect."""
        self.reloads.labels("ok" if ok else "failed").inc()
        if not ok:
            self.reload_failures.labels(failure or "unknown").inc()
        self.reload_duration.observe(duration_s)

    def capture(self, snapshot: dict[str, Any] | None = None) -> Scrape | None:
        """Copies what a scrape reports from the runtime; call on the daemon's loop.
        `snapshot`: the health snapshot, when the caller made it already."""
        runtime = self._source()
        return None if runtime is None else Scrape.of(runtime, self._pace(), snapshot)

    def render(self, scrape: Scrape | None) -> bytes:
        """The Prometheus text format (version 0.0.4) of `scrape` plus the hook-fed
        metrics; safe in a worker thread (prometheus_client's metrics are locked)."""
        with self._render_lock:
            self._collector.scrape = scrape
            try:
                return generate_latest(self.registry)
            finally:
                self._collector.scrape = None

    def exposition(self) -> bytes:
        """`render(capture())`: all on the calling thread."""
        return self.render(self.capture())
