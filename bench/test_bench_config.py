"""Configuration speed at farm scale: 2,000 virtual servers × 20 real servers.

Figures: `python -m pytest bench/test_bench_config.py --benchmark-enable`. In the normal
suite (benchmarks disabled) each case runs once, which still proves it works at scale.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fastcheck.cli import main
from fastcheck.config.loader import load_file
from fastcheck.diff import diff
from fastcheck.synthetic import farm

VIRTUAL_SERVERS, REAL_SERVERS = 2000, 20


@pytest.fixture(scope="module")
def farm_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("farm")
    old = directory / "old.conf"
    new = directory / "new.conf"
    old.write_text(farm(VIRTUAL_SERVERS, REAL_SERVERS))
    new.write_text(farm(VIRTUAL_SERVERS, REAL_SERVERS, revision=1))
    return old, new


@pytest.mark.benchmark(group="config-2000x20")
def test_load_farm(benchmark, farm_files):
    old, _ = farm_files
    config, _ = benchmark.pedantic(load_file, args=(str(old),), rounds=3, iterations=1)
    assert len(config.virtual_servers) == VIRTUAL_SERVERS
    assert sum(len(vs.real_servers) for vs in config.virtual_servers) == 40_000


@pytest.mark.benchmark(group="config-2000x20")
def test_diff_farms(benchmark, farm_files):
    old, new = (load_file(str(path))[0] for path in farm_files)
    result = benchmark.pedantic(diff, args=(old, new), rounds=3, iterations=1)
    assert len(result.vs_removed) == VIRTUAL_SERVERS // 10
    assert len(result.vs_added) == 50


@pytest.mark.benchmark(group="config-2000x20")
def test_plan_from_command(benchmark, farm_files, capsys):
    """The whole `fastcheck plan -f NEW --from OLD` as an operator runs it."""
    old, new = farm_files

    def run() -> int:
        code = main(["plan", "-f", str(new), "--from", str(old)])
        capsys.readouterr()
        return code

    assert benchmark.pedantic(run, rounds=3, iterations=1) == 0
