"""What `fastcheck bench` prints: the table, the JSON document and the sizing sentence.

Owns: turning `RunResult`s into text and JSON, and the sizing estimate — how many real
servers this host can check at an interval with a given headroom.
Must not: measure, start targets or decide exit statuses.

Sizing. Capacity is the measured rate of an as-fast-as-possible run (the engine was the
limit), or, for a paced run, the CPU cost per check spread over the cores the engine may
use (`min(workers, cpus)`). Real servers ≈ capacity × interval × (1 − headroom). Loopback
targets make the host pay for the servers' side of every check too, so the figure is on
the safe side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fastcheck.bench.measure import RunResult
from fastcheck.scheduler import LagHistogram


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What was asked for (for the report)."""

    check: str
    targets: int
    failing: int  # targets set up to fail
    interval_s: float | None  # None = as fast as possible
    servers: int
    max_in_flight: int | None = None
    space: str = "loopback"


@dataclass(frozen=True, slots=True)
class Sizing:
    interval_s: float
    headroom: float
    capacity_per_s: float
    basis: str
    real_servers: int
    used_share: float | None  # a paced run's demand over capacity

    def sentence(self) -> str:
        text = (f"at a {self.interval_s:g} s interval this host can check about "
                f"{self.real_servers:,} real servers with {self.headroom:.0%} headroom "
                f"(capacity ≈ {self.capacity_per_s:,.0f} checks/s, {self.basis})")
        if self.used_share is not None:
            text += f"; this run used {self.used_share:.0%} of it"
        return text


def _round2(value: float) -> int:
    """Two significant figures: a sizing estimate is not more precise than that."""
    if value < 100:
        return int(value)
    digits = len(str(int(value))) - 2
    return int(round(value, -digits))


def sizing(spec: RunSpec, result: RunResult, interval_s: float, headroom: float) -> Sizing:
    cores = max(1, min(result.workers, os.cpu_count() or 1))
    cpu = result.cpu_user_s + result.cpu_system_s
    if spec.interval_s is None:
        capacity = result.checks_per_s
        basis = f"measured as fast as possible with {result.workers} worker(s)"
    else:
        capacity = cores * result.checks / cpu if cpu > 0 else 0.0
        basis = f"estimated from {cpu / max(result.checks, 1) * 1e6:,.0f} µs CPU per " \
                f"check on {cores} core(s)"
    used = None
    if spec.interval_s is not None and capacity > 0:
        used = spec.targets / spec.interval_s / capacity
    real_servers = _round2(capacity * interval_s * (1.0 - headroom))
    return Sizing(interval_s, headroom, capacity, basis, real_servers, used)


def _quantiles(hist: LagHistogram, qs: tuple[float, ...]) -> dict[str, float]:
    out = {f"p{round(q * 100)}": hist.quantile(q) for q in qs}
    out["max"] = hist.max
    return out


def to_json(spec: RunSpec, result: RunResult, size: Sizing) -> dict[str, Any]:
    per_1000 = 1000.0 / result.checks if result.checks else 0.0
    return {
        "check": spec.check,
        "targets": spec.targets,
        "failing_targets": spec.failing,
        "interval_s": spec.interval_s,
        "as_fast_as_possible": spec.interval_s is None,
        "duration_s": round(result.duration_s, 3),
        "workers": result.workers,
        "engine": result.engine,
        "space": spec.space,
        "target_servers": spec.servers,
        "max_in_flight": spec.max_in_flight,
        "implementation": result.implementations,
        "event_loop": "uvloop",
        "checks": result.checks,
        "ok": result.checks - result.failed,
        "failed": result.failed,
        "by_kind": {kind.value: {"checks": c.checks, "ok": c.ok, "failed": c.failed}
                    for kind, c in sorted(result.counts.items(), key=lambda i: i[0].value)},
        "down_targets": result.down_targets,
        "never_answered": result.never_answered,
        "checks_per_s": round(result.checks_per_s, 1),
        "cpu_s_per_1000_checks": {"user": round(result.cpu_user_s * per_1000, 5),
                                  "system": round(result.cpu_system_s * per_1000, 5)},
        "cpu_s": {"user": round(result.cpu_user_s, 3), "system": round(result.cpu_system_s, 3),
                  "target_servers": round(result.targets_cpu_s, 3)},
        "scheduler_lag_s": _quantiles(result.start_lag, (0.5, 0.99)),
        "wake_lag_s": _quantiles(result.wake_lag, (0.5, 0.99)),
        "probe_latency_s": _quantiles(result.latency, (0.5, 0.9, 0.99)),
        "missed_runs": None if spec.interval_s is None else result.missed_runs,
        "memory_bytes": {"rss": result.rss_bytes, "peak_rss": result.peak_rss_bytes},
        "load_average": list(result.load_average),
        "interrupted": result.interrupted,
        "sizing": {"interval_s": size.interval_s, "headroom": size.headroom,
                   "capacity_checks_per_s": round(size.capacity_per_s, 1),
                   "real_servers": size.real_servers, "used_share": size.used_share,
                   "text": size.sentence()},
    }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table_lines(spec: RunSpec, result: RunResult, size: Sizing) -> list[str]:
    pace = "as fast as possible" if spec.interval_s is None else \
        f"every {spec.interval_s:g} s"
    per_1000 = 1000.0 / result.checks if result.checks else 0.0
    lag, wake, lat = result.start_lag, result.wake_lag, result.latency
    impl = " ".join(f"{name}={how}" for name, how in sorted(result.implementations.items()))
    lines = [
        f"fastcheck bench: {spec.check}, {spec.targets:,} {spec.space} targets "
        f"({spec.failing:,} failing), "
        f"{pace}, {result.duration_s:.1f} s, {result.workers} worker(s) ({result.engine})"
        + ("" if spec.max_in_flight is None else f", at most {spec.max_in_flight:,} in flight")
        + (" — INTERRUPTED" if result.interrupted else ""),
        f"  checks/s           {result.checks_per_s:,.0f}   ({result.checks:,} checks, "
        f"{result.failed:,} failed; {result.down_targets:,} targets down at the end, "
        f"{result.never_answered:,} never answered)",
    ]
    if len(result.counts) > 1:
        lines.append("  by kind            " + "   ".join(
            f"{kind.value} {c.checks:,} ({c.failed:,} failed)"
            for kind, c in sorted(result.counts.items(), key=lambda i: i[0].value)))
    lines += [
        f"  CPU per 1,000      user {result.cpu_user_s * per_1000:.4f} s   system "
        f"{result.cpu_system_s * per_1000:.4f} s   (target servers used "
        f"{result.targets_cpu_s:.1f} CPU s)",
        f"  scheduler lag      p50 {_ms(lag.quantile(0.5))}   p99 {_ms(lag.quantile(0.99))}   "
        f"max {_ms(lag.max)}   (loop wake-up p99 {_ms(wake.quantile(0.99))}"
        + ("" if spec.interval_s is None else f"; {result.missed_runs:,} missed runs") + ")",
        f"  probe latency      p50 {_ms(lat.quantile(0.5))}   p90 {_ms(lat.quantile(0.9))}   "
        f"p99 {_ms(lat.quantile(0.99))}   max {_ms(lat.max)}",
        f"  memory             RSS {result.rss_bytes / 2**20:,.1f} MiB   peak "
        f"{result.peak_rss_bytes / 2**20:,.1f} MiB (engine processes)",
        f"  implementation     {impl or 'unknown'}",
        "  load average       " + " ".join(f"{x:.2f}" for x in result.load_average),
        f"  sizing             {size.sentence()}",
    ]
    if spec.interval_s is None:
        lines.append("  (as fast as possible: every probe reruns as soon as it ends, so "
                     "scheduler lag measures the backlog, not lateness)")
    return lines


def sweep_lines(runs: list[tuple[RunSpec, RunResult, Sizing]]) -> list[str]:
    """One row per run of a sweep, in target order."""
    lines = ["sweep:   targets     checks/s   CPU s/1000   lag p50     lag p99     "
             "lag max     real servers"]
    for spec, result, size in sorted(runs, key=lambda run: run[0].targets):
        cpu = (result.cpu_user_s + result.cpu_system_s) * 1000 / max(result.checks, 1)
        lag = result.start_lag
        lines.append(f"       {spec.targets:>9,}  {result.checks_per_s:>11,.0f}   {cpu:>10.4f}"
                     f"   {_ms(lag.quantile(0.5)):>10}  {_ms(lag.quantile(0.99)):>10}  "
                     f"{_ms(lag.max):>10}  {size.real_servers:>13,}")
    return lines
