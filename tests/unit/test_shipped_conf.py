"""The configurations shipped in conf/ load cleanly and say what their comments promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastcheck.config.loader import load_file
from fastcheck.ipvs.table import desired_table
from fastcheck.model import CheckKind

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("name", sorted(p.name for p in CONF.glob("*.conf")))
def test_shipped_configuration_loads_without_errors(name: str) -> None:
    config, diags = load_file(str(CONF / name))
    assert config.virtual_servers
    assert not [item for item in diags.items if "error" in str(item)]


def test_large_farm_example_is_ten_thousand_real_servers() -> None:
    config, _ = load_file(str(CONF / "large-farm.conf"))
    servers = [rs for vs in config.virtual_servers for rs in vs.real_servers]
    assert len(config.virtual_servers) == 200 and len(servers) == 10_000
    kinds = {check.kind for rs in servers for check in rs.checks}
    assert kinds == {CheckKind.HTTP, CheckKind.TCP}
    assert len(desired_table(config)) == 200


def test_quick_start_checks_only_this_machine() -> None:
    config, _ = load_file(str(CONF / "sample.conf"))
    for vs in config.virtual_servers:
        for rs in vs.real_servers:
            assert rs.address.startswith("127."), rs.address
