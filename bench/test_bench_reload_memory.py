"""Memory across reloads at farm scale: RSS after 1, 10 and 100 reloads, 2,000 VS × 20 RS.

`python -m pytest bench/test_bench_reload_memory.py -s` prints the figures (it is no
pytest-benchmark case: what matters is the resident set after many reloads, not a time).
The farm alternates between revision 0 and 1 with its check blocks stripped (as in
bench/test_bench_reload.py), on the memory backend, each reload read by the real reader
process. Also printed: the permanent generation's size (`gc.get_freeze_count()`), how long
each post-switch collection (`gcpolicy.after_reload`) held the loop, and the load average.
`FASTCHECK_BENCH_RELOADS` lowers the count of reloads (default 100). In the normal suite
(no `--benchmark-enable`) it makes 2 reloads, to show it still works.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import statistics
from pathlib import Path

import pytest

from fastcheck.config.loader import load_file
from fastcheck.daemon import gcpolicy
from fastcheck.daemon.app import Options, Runtime
from fastcheck.daemon.signals import load_health
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.table import desired_table
from fastcheck.synthetic import farm

RELOADS = int(os.environ.get("FASTCHECK_BENCH_RELOADS", "100"))
REPORT_AT = (1, 10, 100)
VIRTUAL_SERVERS, REAL_SERVERS = 2000, 20
_CHECK = re.compile(r"        (?:TCP_CHECK|HTTP_GET|MISC_CHECK) \{.*?\n        \}\n", re.S)


def unchecked_farm(revision: int) -> str:
    """The synthetic farm without its checks (as in bench/test_bench_reload.py)."""
    return _CHECK.sub("", farm(VIRTUAL_SERVERS, REAL_SERVERS, revision=revision))


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_rss_after_1_10_100_reloads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch,
                                    request: pytest.FixtureRequest) -> None:
    reloads = RELOADS if request.config.getoption("benchmark_enable", False) \
        else min(RELOADS, 2)
    texts = unchecked_farm(0), unchecked_farm(1)
    path = tmp_path / "fastcheck.conf"
    path.write_text(texts[0])
    collections: list[gcpolicy.Collected] = []

    def after_reload() -> gcpolicy.Collected:
        done = real_after_reload()
        collections.append(done)
        return done

    real_after_reload = gcpolicy.after_reload
    monkeypatch.setattr(gcpolicy, "after_reload", after_reload)
    loads = [os.getloadavg()]
    backend = MemoryBackend()
    factory, carry = load_health()
    loop = asyncio.new_event_loop()
    figures: list[tuple[int, float, int]] = []
    try:
        runtime = Runtime(load_file(str(path))[0], backend, factory, carry,
                          Options(config_path=str(path), dry_run=True, repair_interval_s=0),
                          loop=loop)
        runtime.start()
        figures.append((0, rss_mib(), gc.get_freeze_count()))
        for reload in range(1, reloads + 1):
            path.write_text(texts[reload % 2])
            assert loop.run_until_complete(runtime.reload()) is True
            backend.applied.clear()  # the memory backend's own record of every op sent
            loop.run_until_complete(asyncio.sleep(0.01))  # the post-reload collection runs
            if reload in REPORT_AT or reload == reloads:
                figures.append((reload, rss_mib(), gc.get_freeze_count()))
        assert backend.read() == desired_table(load_file(str(path))[0])
        loop.run_until_complete(runtime.stop())
    finally:
        loop.close()
    loads.append(os.getloadavg())
    took = [item.took_s * 1000 for item in collections]
    with capsys.disabled():
        print(f"\nRSS across reloads, {VIRTUAL_SERVERS} x {REAL_SERVERS}, memory backend; "
              f"load average before {' '.join(f'{x:.2f}' for x in loads[0])}, "
              f"after {' '.join(f'{x:.2f}' for x in loads[1])}")
        for reload, rss, frozen in figures:
            print(f"  after {reload:3d} reloads: RSS {rss:7.1f} MiB, permanent generation "
                  f"{frozen:,} objects")
        if took:
            print(f"  post-switch collection (loop held) min/median/max "
                  f"{min(took):.0f}/{statistics.median(took):.0f}/{max(took):.0f} ms, "
                  f"freed median {statistics.median(c.freed for c in collections):,.0f} "
                  "objects")
