"""Argument converters: addresses, timers, booleans, hex strings, netmasks."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastcheck.config import values as v

OCTET_TEXT = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "-1", "", "a"]))


@given(st.lists(OCTET_TEXT, min_size=3, max_size=5).map(".".join))
def test_ipv4_fast_path_agrees_with_ipaddress(text):
    try:
        expected = ipaddress.ip_address(text).compressed
    except ValueError:
        expected = None
    try:
        got = v.parse_address(text)
    except v.ValueProblem:
        got = None
    assert got == expected


@given(st.ip_addresses())
def test_any_address_round_trips_to_its_canonical_text(address):
    assert v.parse_address(str(address)) == address.compressed
    assert v.parse_address(address.exploded) == address.compressed


def test_hex_payload_follows_keepalived_grouping():
    # The man page's own example: "Ab12f 3 456 546443123" = AB 12 0F 03 45 06 54 64 43 12 03
    assert v.parse_hex_bytes("Ab12f 3 456 546443123") == "ab120f0345065464431203"
    assert v.parse_hex_bytes("1x 2X", allow_wildcard=True) == "1x2x"
    with pytest.raises(v.ValueProblem, match="not hexadecimal"):
        v.parse_hex_bytes("12x")


@pytest.mark.parametrize(("text", "seconds"), [("3", 3.0), ("2.71828", 2.71828),
                                                ("0.0000014", 0.000001), ("0", 0.0)])
def test_timers_take_fractional_seconds_at_microsecond_resolution(text, seconds):
    assert v.parse_timer(text) == seconds


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "1e9", "abc", ""])
def test_bad_timers_are_refused(text):
    with pytest.raises(v.ValueProblem):
        v.parse_timer(text)


def test_booleans_and_flags():
    assert [v.parse_bool(w) for w in ("on", "yes", "TRUE", "off", "no", "False")] == [
        True, True, True, False, False, False]
    assert v.flag(()) is True and v.flag(("off",)) is False
    with pytest.raises(v.ValueProblem, match="expects 0 to 1 arguments, got 2"):
        v.flag(("on", "off"))


def test_netmask_forms():
    assert v.netmask(("255.255.255.0",)) == "255.255.255.0"
    assert v.netmask(("24",)) == "24"
    with pytest.raises(v.ValueProblem):
        v.netmask(("255.0.255.0x",))
