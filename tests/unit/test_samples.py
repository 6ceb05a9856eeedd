"""keepalived's own sample configurations (Debian package `keepalived`) load unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastcheck.config.loader import load_file
from fastcheck.errors import Severity
from fastcheck.model import CheckKind

SAMPLES = Path("/usr/share/doc/keepalived/samples")
FILES = sorted(SAMPLES.glob("keepalived.conf.*")) if SAMPLES.is_dir() else []

needs_samples = pytest.mark.skipif(
    not FILES, reason=f"keepalived samples not installed at {SAMPLES} (apt-get install "
                      "keepalived; .ci/run does)")


@needs_samples
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_sample_loads(path):
    config, diags = load_file(str(path), config_id="high")
    assert not diags.has_errors
    text = path.read_text()
    if "virtual_server" not in text:
        # VRRP-only samples: nothing for the checker, every foreign block announced.
        assert config.virtual_servers == ()
        notices = [d for d in diags.items if d.severity is Severity.INFO]
        assert notices and all("skipping" in d.message for d in notices)
    else:
        assert config.virtual_servers


def _sample(name: str):
    return load_file(str(SAMPLES / name), config_id="x")[0]


@needs_samples
def test_smtp_sample_host_blocks_become_checks_as_in_keepalived():
    config = _sample("keepalived.conf.SMTP_CHECK")
    counts = [len(rs.checks) for rs in config.virtual_servers[0].real_servers]
    # The main block sets connect_timeout, so keepalived keeps it as a check of its own
    # beside one check per host block.
    assert counts == [1, 4, 4]
    third = config.virtual_servers[0].real_servers[2].checks
    assert [(c.target.address, c.target.port, c.target.bind_address) for c in third[1:]] == [
        ("172.16.1.12", 25, "172.16.1.2"), ("192.168.155.11", 25, "192.168.155.2"),
        ("64.233.167.100", 587, None)]
    assert all(c.kind is CheckKind.SMTP and c.params.helo_name == "foo.bar.com" for c in third)


@needs_samples
def test_virtual_server_group_sample_expands():
    config = _sample("keepalived.conf.virtual_server_group")
    group = config.vs_groups[0]
    assert sum(len(list(entry.addresses())) for entry in group.entries) >= 2


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "conf").glob("*.conf"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configurations_load_without_a_warning(path):
    config, diags = load_file(str(path), strict=True)
    assert config.virtual_servers
    assert [d for d in diags.items if d.severity is not Severity.INFO] == []
