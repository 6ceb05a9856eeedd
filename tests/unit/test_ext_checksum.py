"""Tests for the checksum twins (fastcheck._ext.checksum_c / checksum_py) and their selector."""

import logging
import os
import struct
import subprocess
import sys
import types
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastcheck._ext._select import (
    NO_EXTENSIONS_ENV,
    REQUIRE_EXTENSIONS_ENV,
    implementation_of,
    implementations,
    load_twin,
)

API = {"build_echo_request", "internet_checksum", "parse_echo_replies", "parse_echo_reply"}
u16 = st.integers(min_value=0, max_value=0xFFFF)


def reference_checksum(data: bytes) -> int:
    """RFC 1071 written out the slow, obvious way: the oracle both twins must match."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def with_checksum(message: bytes | bytearray, offset: int) -> bytes:
    """``message`` with the RFC 1071 checksum of itself stored at ``offset``."""
    out = bytearray(message)
    out[offset : offset + 2] = b"\0\0"
    out[offset : offset + 2] = struct.pack("!H", reference_checksum(bytes(out)))
    return bytes(out)


def ipv4_reply(ident: int, seq: int, payload: bytes = b"", options: bytes = b"") -> bytes:
    """An IPv4 packet carrying an ICMP echo reply, as a raw socket would deliver it."""
    icmp = with_checksum(struct.pack("!BBHHH", 0, 0, 0, ident, seq) + payload, 2)
    header_len = 20 + len(options)
    assert header_len % 4 == 0
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | header_len // 4, 0, header_len + len(icmp), 0x1234, 0,
        64, 1, 0, bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]),
    )  # fmt: skip
    return with_checksum(header + options, 10) + icmp


def request_to_ipv4_reply(request: bytes, options: bytes = b"") -> bytes:
    """Turn a built echo request into the reply a host would send back (type 0)."""
    kind, code, _, ident, seq = struct.unpack_from("!BBHHH", request)
    assert (kind, code) == (8, 0)
    return ipv4_reply(ident, seq, request[8:], options)


# --- the twins expose the same API --------------------------------------------------------


def test_twins_export_the_same_api(checksum_twins: tuple[ModuleType, ModuleType]) -> None:
    c, py = checksum_twins
    assert set(c.__all__) == set(py.__all__) == API
    assert implementation_of(c) == "c"
    assert implementation_of(py) == "py"


# --- internet_checksum --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (bytes.fromhex("0001f203f4f5f6f7"), 0x220D),  # RFC 1071 section 3 example
        (bytes.fromhex("450000730000400040110000c0a80001c0a800c7"), 0xB861),  # IPv4 header
        (b"", 0xFFFF),
        (b"\0" * 8, 0xFFFF),
        (b"\x01", 0xFEFF),  # odd length: padded with a zero byte, not prefixed
        (b"\xff\xff", 0x0000),
        (b"\xff" * 1001, 0x00FF),
    ],
    ids=["rfc1071", "ipv4-header", "empty", "zeros", "odd", "ones", "odd-long"],
)
def test_checksum_known_vectors(checksum_impl: ModuleType, data: bytes, expected: int) -> None:
    assert checksum_impl.internet_checksum(data) == expected
    assert reference_checksum(data) == expected


def test_checksum_accepts_any_bytes_like(checksum_impl: ModuleType) -> None:
    data = bytes(range(1, 40))
    expected = reference_checksum(data)
    assert checksum_impl.internet_checksum(bytearray(data)) == expected
    assert checksum_impl.internet_checksum(memoryview(data)) == expected
    strided = memoryview(data + data)[::2]  # non-contiguous: read in logical order
    assert checksum_impl.internet_checksum(strided) == reference_checksum(strided.tobytes())


@pytest.mark.parametrize("bad", ["text", [1, 2], 7, None])
def test_checksum_rejects_non_buffers(checksum_impl: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        checksum_impl.internet_checksum(bad)


@given(data=st.binary(max_size=300), offset=st.integers(min_value=0, max_value=150))
def test_inserted_checksum_makes_the_message_sum_to_zero(
    checksum_twins: tuple[ModuleType, ModuleType], data: bytes, offset: int
) -> None:
    data = b"\0\0" + data
    offset = min(offset, len(data) - 2) & ~1  # checksum fields sit on a 16-bit boundary
    for impl in checksum_twins:
        message = bytearray(data)
        message[offset : offset + 2] = b"\0\0"
        message[offset : offset + 2] = impl.internet_checksum(message).to_bytes(2, "big")
        assert impl.internet_checksum(message) == 0


# --- build_echo_request -------------------------------------------------------------------


def test_build_v4_known_packet(checksum_impl: ModuleType) -> None:
    # The classic Windows `ping` request: id 1, seq 1, checksum 0x4d5a.
    packet = checksum_impl.build_echo_request(1, 1, b"abcdefghijklmnopqrstuvwabcdefghi")
    assert packet[:8] == bytes.fromhex("08004d5a00010001")
    assert packet[8:] == b"abcdefghijklmnopqrstuvwabcdefghi"
    assert checksum_impl.internet_checksum(packet) == 0


def test_build_v6_leaves_checksum_to_the_kernel(checksum_impl: ModuleType) -> None:
    packet = checksum_impl.build_echo_request(0xBEEF, 0xFFFF, b"xyz", ipv6=True)
    assert packet == bytes.fromhex("80000000beefffff") + b"xyz"


def test_build_accepts_any_bytes_like_payload(checksum_impl: ModuleType) -> None:
    expected = checksum_impl.build_echo_request(7, 9, b"payload")
    assert checksum_impl.build_echo_request(7, 9, bytearray(b"payload")) == expected
    assert checksum_impl.build_echo_request(7, 9, memoryview(b"payload")) == expected
    assert checksum_impl.build_echo_request(7, 9) == checksum_impl.build_echo_request(7, 9, b"")
    with pytest.raises(TypeError):
        checksum_impl.build_echo_request(7, 9, "payload")


@pytest.mark.parametrize(
    ("ident", "seq", "field"),
    [(-1, 0, "ident"), (0x10000, 0, "ident"), (0, -1, "seq"), (0, 0x10000, "seq"),
     (2**70, 0, "ident")],
)  # fmt: skip
@pytest.mark.parametrize("ipv6", [False, True])
def test_build_rejects_out_of_range_fields(
    checksum_impl: ModuleType, ident: int, seq: int, field: str, ipv6: bool
) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must be in 0\.\.65535"):
        checksum_impl.build_echo_request(ident, seq, ipv6=ipv6)


def test_build_rejects_non_integers(checksum_impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        checksum_impl.build_echo_request(1.0, 0)
    with pytest.raises(TypeError):
        checksum_impl.build_echo_request(0, "1")


# --- parse_echo_reply ---------------------------------------------------------------------

ROUTER_ALERT = bytes.fromhex("94040000")  # a 4-byte IPv4 option: the header becomes 24 bytes


@pytest.mark.parametrize("options", [b"", ROUTER_ALERT], ids=["ihl5", "ihl6"])
@pytest.mark.parametrize("payload", [b"", b"x", b"0123456789abcdef" * 4], ids=len)
def test_build_then_parse_round_trip_v4(
    checksum_impl: ModuleType, options: bytes, payload: bytes
) -> None:
    request = checksum_impl.build_echo_request(0x1234, 0xFEDC, payload)
    reply = request_to_ipv4_reply(request, options)
    assert len(reply) == 20 + len(options) + 8 + len(payload)
    assert checksum_impl.parse_echo_reply(reply) == (0x1234, 0xFEDC)
    assert checksum_impl.parse_echo_reply(bytearray(reply)) == (0x1234, 0xFEDC)
    assert checksum_impl.parse_echo_reply(memoryview(reply)) == (0x1234, 0xFEDC)
    assert checksum_impl.parse_echo_replies([reply, reply[:-1]]) == [(0x1234, 0xFEDC), None]


def test_build_then_parse_round_trip_v6(checksum_impl: ModuleType) -> None:
    request = checksum_impl.build_echo_request(5, 6, b"data", ipv6=True)
    reply = bytes([129]) + request[1:]
    assert checksum_impl.parse_echo_reply(reply, ipv6=True) == (5, 6)
    assert checksum_impl.parse_echo_replies([reply, request], ipv6=True) == [(5, 6), None]
    assert checksum_impl.parse_echo_reply(reply) is None  # not an IPv4 packet


def test_parse_ignores_bytes_past_the_ip_total_length(checksum_impl: ModuleType) -> None:
    reply = ipv4_reply(1, 2, b"abc")
    assert checksum_impl.parse_echo_reply(reply + b"\xde\xad") == (1, 2)


def _patched(packet: bytes, offset: int, value: bytes) -> bytes:
    return packet[:offset] + value + packet[offset + len(value) :]


def _icmp_patched(packet: bytes, offset: int, value: bytes) -> bytes:
    """Patch the ICMP message of a 20-byte-header packet, keeping its checksum valid."""
    return packet[:20] + with_checksum(_patched(packet[20:], offset, value), 2)


GOOD = ipv4_reply(0x0102, 0x0304, b"payload!")
GARBAGE = {
    "empty": b"",
    "one-byte": b"\x45",
    "short-ip-header": GOOD[:19],
    "ip-header-only": GOOD[:20],
    "short-icmp-header": GOOD[:27],
    "truncated": GOOD[:-1],
    "ipv6-version": _patched(GOOD, 0, b"\x65"),
    "ihl-too-small": _patched(GOOD, 0, b"\x44"),
    "ihl-past-end": _patched(GOOD, 0, b"\x4f"),
    "total-length-past-end": _patched(GOOD, 2, struct.pack("!H", len(GOOD) + 1)),
    "total-length-too-small": _patched(GOOD, 2, struct.pack("!H", 27)),
    "not-icmp": _patched(GOOD, 9, b"\x11"),
    "echo-request": _icmp_patched(GOOD, 0, b"\x08"),
    "dest-unreachable": _icmp_patched(GOOD, 0, b"\x03"),
    "code-1": _icmp_patched(GOOD, 1, b"\x01"),
    "bad-checksum": _patched(GOOD, 22, b"\x00\x00"),
    "zeros": b"\0" * 64,
    "ones": b"\xff" * 64,
}


def test_good_packet_parses(checksum_impl: ModuleType) -> None:
    assert checksum_impl.parse_echo_reply(GOOD) == (0x0102, 0x0304)


@pytest.mark.parametrize("packet", GARBAGE.values(), ids=GARBAGE.keys())
@pytest.mark.parametrize("ipv6", [False, True])
def test_garbage_is_none(checksum_impl: ModuleType, packet: bytes, ipv6: bool) -> None:
    if ipv6:  # for ICMPv6 only the first 8 bytes matter; these never start with type 129
        assert checksum_impl.parse_echo_reply(packet, ipv6=True) is None
    else:
        assert checksum_impl.parse_echo_reply(packet) is None
    assert checksum_impl.parse_echo_replies([packet], ipv6=ipv6) == [None]


def test_icmp_echo_request_with_valid_checksum_is_not_a_reply(checksum_impl: ModuleType) -> None:
    request = checksum_impl.build_echo_request(1, 2, b"abc")
    packet = ipv4_reply(1, 2, b"abc")[:20] + request
    assert checksum_impl.internet_checksum(packet[20:]) == 0
    assert checksum_impl.parse_echo_reply(packet) is None


def test_parse_echo_replies_takes_any_iterable(checksum_impl: ModuleType) -> None:
    assert checksum_impl.parse_echo_replies(iter([GOOD, b""])) == [(0x0102, 0x0304), None]
    assert checksum_impl.parse_echo_replies([]) == []
    with pytest.raises(TypeError):
        checksum_impl.parse_echo_replies([GOOD, "not bytes"])


# --- the twins agree ----------------------------------------------------------------------


@st.composite
def near_ipv4_replies(draw: st.DrawFn) -> bytes:
    """IPv4 echo replies, mostly valid, with one field sometimes broken or cut short."""
    options = draw(st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4]))
    packet = bytearray(ipv4_reply(draw(u16), draw(u16), draw(st.binary(max_size=80)), options))
    if draw(st.booleans()):
        offset = draw(st.integers(min_value=0, max_value=len(packet) - 1))
        packet[offset] = draw(st.integers(min_value=0, max_value=255))
    if draw(st.booleans()):
        packet = packet[: draw(st.integers(min_value=0, max_value=len(packet)))]
    return bytes(packet)


@given(data=st.binary(max_size=200))
def test_twins_agree_on_checksum(
    checksum_twins: tuple[ModuleType, ModuleType], data: bytes
) -> None:
    c, py = checksum_twins
    assert c.internet_checksum(data) == py.internet_checksum(data) == reference_checksum(data)


@given(packet=st.one_of(st.binary(max_size=120), near_ipv4_replies()), ipv6=st.booleans())
def test_twins_agree_on_parse(
    checksum_twins: tuple[ModuleType, ModuleType], packet: bytes, ipv6: bool
) -> None:
    c, py = checksum_twins
    expected = py.parse_echo_reply(packet, ipv6=ipv6)
    assert c.parse_echo_reply(packet, ipv6=ipv6) == expected
    assert c.parse_echo_replies([packet], ipv6=ipv6) == [expected]


@given(ident=u16, seq=u16, payload=st.binary(max_size=100), ipv6=st.booleans())
def test_twins_agree_on_build(
    checksum_twins: tuple[ModuleType, ModuleType], ident: int, seq: int, payload: bytes,
    ipv6: bool,
) -> None:  # fmt: skip
    c, py = checksum_twins
    packet = py.build_echo_request(ident, seq, payload, ipv6=ipv6)
    assert c.build_echo_request(ident, seq, payload, ipv6=ipv6) == packet
    if not ipv6:
        assert py.parse_echo_reply(request_to_ipv4_reply(packet)) == (ident, seq)


# --- the selector -------------------------------------------------------------------------


SHOW_CHOICE = "from fastcheck._ext import checksum; print(checksum.IMPLEMENTATION)"


def _selected_in_subprocess(**env: str) -> subprocess.CompletedProcess[str]:
    """Run SHOW_CHOICE in a fresh interpreter with both flags cleared, then ``env`` set."""
    flags = (NO_EXTENSIONS_ENV, REQUIRE_EXTENSIONS_ENV)
    clean = {k: v for k, v in os.environ.items() if k not in flags}
    return subprocess.run(
        [sys.executable, "-c", SHOW_CHOICE],
        env=clean | env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_compiled_twin_is_the_default(checksum_twins: tuple[ModuleType, ModuleType]) -> None:
    # Requesting checksum_twins skips this test (or fails it under REQUIRE) when not built.
    result = _selected_in_subprocess()
    assert result.stdout.strip() == "c", result.stderr
    assert result.stderr == ""


def test_no_extensions_forces_pure_python() -> None:
    result = _selected_in_subprocess(**{NO_EXTENSIONS_ENV: "1", REQUIRE_EXTENSIONS_ENV: "1"})
    assert result.stdout.strip() == "py", result.stderr
    assert result.stderr == ""  # an explicit choice, not a failure: no warning


@pytest.fixture
def pure_only_twin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A test-only twin ``fastcheck._ext.puretest_py`` with no ``_c`` twin, via sys.modules."""
    twin = types.ModuleType("fastcheck._ext.puretest_py")
    monkeypatch.setitem(sys.modules, twin.__name__, twin)
    monkeypatch.delenv(NO_EXTENSIONS_ENV, raising=False)
    monkeypatch.delenv(REQUIRE_EXTENSIONS_ENV, raising=False)
    return twin


def test_missing_compiled_twin_falls_back_with_warning(
    pure_only_twin: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fastcheck"):
        assert load_twin("puretest") is pure_only_twin
    [record] = [r for r in caplog.records if r.name == "fastcheck"]
    assert record.levelno == logging.WARNING
    assert "fastcheck._ext.puretest_c" in record.getMessage()
    assert REQUIRE_EXTENSIONS_ENV in record.getMessage()


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_require_extensions_reraises(
    pure_only_twin: ModuleType, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(REQUIRE_EXTENSIONS_ENV, value)
    with pytest.raises(ImportError, match=r"fastcheck\._ext\.puretest_c"):
        load_twin("puretest")


def test_no_extensions_wins_silently(
    pure_only_twin: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(NO_EXTENSIONS_ENV, "1")
    monkeypatch.setenv(REQUIRE_EXTENSIONS_ENV, "1")
    with caplog.at_level(logging.DEBUG, logger="fastcheck"):
        assert load_twin("puretest") is pure_only_twin
    assert caplog.records == []


def test_flag_zero_means_unset(pure_only_twin: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_EXTENSIONS_ENV, "0")
    assert load_twin("puretest") is pure_only_twin  # fell back (warning) instead of raising


def test_implementations_reports_the_selectors_choice() -> None:
    from fastcheck._ext import checksum

    report = implementations()
    assert report["checksum"] == checksum.IMPLEMENTATION
    assert set(report.values()) <= {"c", "py"}


def test_implementation_of_rejects_non_twins() -> None:
    with pytest.raises(ValueError, match="not a twin"):
        implementation_of(types.ModuleType("fastcheck._ext.checksum"))
