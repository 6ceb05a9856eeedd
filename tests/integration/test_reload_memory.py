"""Memory stays flat across reloads: a running Runtime reloaded 50 times between two
configurations keeps its resident set and the collector's permanent generation in bounds.

In process: the real health layer (`load_health`), the memory backend, and the synthetic
farm with its checks stripped (as in bench/test_bench_reload.py: nothing is probed, every
real server is up). The file is read in the loop instead of in the reader process, so that
50 reloads take seconds; what is measured is what the daemon keeps after each switch.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
from pathlib import Path

from fastcheck.config.loader import load_file
from fastcheck.daemon.app import Options, Runtime
from fastcheck.daemon.reader import ReadLimits, ReadResult
from fastcheck.daemon.signals import load_health
from fastcheck.ipvs.memory import MemoryBackend
from fastcheck.ipvs.table import desired_table
from fastcheck.synthetic import farm

VIRTUAL_SERVERS, REAL_SERVERS = 100, 10  # 1,000 real servers (1,050 after revision 1)
RELOADS = 50
RSS_TOLERANCE = 8 << 20  # resident growth allowed between reload 10 and reload 50
FREEZE_TOLERANCE = 2_000  # objects in the permanent generation, same comparison
_CHECK = re.compile(r"        (?:TCP_CHECK|HTTP_GET|MISC_CHECK) \{.*?\n        \}\n", re.S)


def unchecked_farm(revision: int) -> str:
    text = _CHECK.sub("", farm(VIRTUAL_SERVERS, REAL_SERVERS, revision=revision))
    assert "_CHECK" not in text and "HTTP_GET" not in text
    return text


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def read_in_process(path: str, config_id: str | None, limits: ReadLimits) -> ReadResult:
    config, diagnostics = load_file(path, config_id=config_id)
    return ReadResult(config, tuple(str(item) for item in diagnostics.items))


def test_fifty_reloads_keep_rss_and_the_frozen_generation_flat(tmp_path: Path) -> None:
    texts = unchecked_farm(0), unchecked_farm(1)
    path = tmp_path / "fastcheck.conf"
    path.write_text(texts[0])
    config = load_file(str(path))[0]
    tables = desired_table(config), desired_table(load_file(str(path))[0])
    factory, carry = load_health()
    backend = MemoryBackend()
    loop = asyncio.new_event_loop()
    try:
        runtime = Runtime(config, backend, factory, carry,
                          Options(config_path=str(path), dry_run=True, repair_interval_s=0),
                          loop=loop, config_reader=read_in_process)
        runtime.start()
        assert backend.read() == tables[0]
        seen: dict[int, tuple[int, int]] = {}
        for reload in range(1, RELOADS + 1):
            path.write_text(texts[reload % 2])
            assert loop.run_until_complete(runtime.reload()) is True
            backend.applied.clear()  # the memory backend's own record of every op sent
            loop.run_until_complete(asyncio.sleep(0.01))  # the post-reload collection runs
            if reload in (10, RELOADS):
                seen[reload] = rss_bytes(), gc.get_freeze_count()
        assert runtime.counters.reloads == RELOADS and runtime.counters.op_failures == 0
        assert backend.read() == desired_table(load_file(str(path))[0])
        loop.run_until_complete(runtime.stop())
    finally:
        loop.close()
    (rss_10, frozen_10), (rss_50, frozen_50) = seen[10], seen[RELOADS]
    assert rss_50 - rss_10 < RSS_TOLERANCE, \
        f"RSS grew {(rss_50 - rss_10) / 2**20:.1f} MiB from reload 10 to {RELOADS}"
    assert frozen_50 - frozen_10 < FREEZE_TOLERANCE, \
        f"permanent generation grew {frozen_10} -> {frozen_50} objects"
