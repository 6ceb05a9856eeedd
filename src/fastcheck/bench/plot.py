"""`fastcheck bench --plot`: checks/s and scheduler lag against the number of targets.

Owns: the one figure a sweep draws, and the message when matplotlib (the optional extra
`fastcheck[plot]`) is missing.
Must not: measure or print reports; matplotlib is imported only here, only when asked.
"""

from __future__ import annotations

from typing import Any


def plot_available() -> str | None:
    """None when plotting works, else what to do about it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ("--plot needs matplotlib, which is not installed: pip install "
                "'fastcheck[plot]' (or pip install matplotlib), or leave out --plot")
    return None


def draw(path: str, runs: list[tuple[Any, Any, Any]]) -> None:
    """Writes a PNG: checks/s (left axis) and lag p50/p99 (right axis) per target count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(runs, key=lambda run: run[0].targets)
    xs = [spec.targets for spec, _, _ in points]
    rate = [result.checks_per_s for _, result, _ in points]
    p50 = [result.start_lag.quantile(0.5) * 1000 for _, result, _ in points]
    p99 = [result.start_lag.quantile(0.99) * 1000 for _, result, _ in points]
    figure, left = plt.subplots(figsize=(8, 4.5))
    left.plot(xs, rate, "o-", color="tab:blue", label="checks/s")
    left.set_xlabel("targets")
    left.set_ylabel("checks/s", color="tab:blue")
    right = left.twinx()
    right.plot(xs, p50, "s--", color="tab:orange", label="lag p50")
    right.plot(xs, p99, "^--", color="tab:red", label="lag p99")
    right.set_ylabel("scheduler lag (ms)", color="tab:red")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    if xs[0] > 0 and xs[-1] >= 10 * xs[0]:
        left.set_xscale("log")
    first = points[0][0]
    pace = "as fast as possible" if first.interval_s is None else f"every {first.interval_s:g} s"
    left.set_title(f"fastcheck bench: {first.check}, {pace}, "
                   f"{points[0][1].workers} worker(s)")
    handles = left.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    left.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
