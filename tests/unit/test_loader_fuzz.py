"""Any input yields either a model or a ConfigError: never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcheck.config import keywords as k
from fastcheck.config.loader import load_text
from fastcheck.errors import ConfigError
from fastcheck.model import Config

VOCABULARY = sorted(
    set(k.GLOBAL_DEFS) | set(k.VIRTUAL_SERVER) | set(k.REAL_SERVER) | set(k.URL)
    | {name for table in k.CHECKS.values() for name in table} | set(k.CHECK_BLOCKS)
    | set(k.TRACK_FILE) | {"virtual_server", "virtual_server_group", "global_defs", "SSL",
                          "track_file", "local_address_group", "vrrp_instance", "url",
                          "real_server", "group", "fwmark", "include", "$X=1", "${X}", "@h"})
VALUES = ["0", "1", "-1", "80", "65536", "1.5", "10.0.0.1", "10.0.0.1-3", "2001:db8::1",
          "10.0.0.0/30", "TCP", "UDP", "NAT", "DR", "TUN", "FNAT", "rr", "wlc", "on", "off",
          "200-299", "a" * 32, '"quoted string"', "type", "gue", "port", "inet6", "/x"]
TOKEN = st.one_of(st.sampled_from(VOCABULARY), st.sampled_from(VALUES),
                  st.sampled_from(["{", "}", "\n", "\n", "\n", "#", "!"]))


def _load(text: str) -> None:
    try:
        config, _ = load_text(text, filename="fuzz.conf", config_id="h", base_dir="/nonexistent")
    except ConfigError as error:
        assert error.diagnostics
        assert all(str(d) for d in error.diagnostics)
    else:
        assert isinstance(config, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes(data: bytes) -> None:
    _load(data.decode("utf-8", errors="surrogateescape"))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKEN, max_size=120))
def test_keyword_soup(tokens: list[str]) -> None:
    _load(" ".join(tokens))
