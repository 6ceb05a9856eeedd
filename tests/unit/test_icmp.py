"""Tests for the ICMP echo twins (fastcheck._ext.icmp_c / icmp_py): parsing, API, selector.

Real traffic lives in tests/integration/test_ping_probe.py; the engine tests here only
open a raw socket (skipped without CAP_NET_RAW) and send to 127.0.0.1.
"""

from __future__ import annotations

import errno
import inspect
import math
import os
import socket
import struct
import subprocess
import sys
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastcheck._ext._select import NO_EXTENSIONS_ENV, REQUIRE_EXTENSIONS_ENV, implementations

API = {"IcmpEngine", "open_raw_socket", "parse_icmp"}
ENGINE_API = {
    "close", "fileno", "ident", "in_flight", "ipv6", "max_in_flight", "next_deadline", "poll",
    "submit",
}  # fmt: skip
u16 = st.integers(min_value=0, max_value=0xFFFF)
v4_address = st.binary(min_size=4, max_size=4)
v6_address = st.binary(min_size=16, max_size=16)
LOCAL_V4 = bytes([192, 0, 2, 7])
PEER_V4 = bytes([198, 51, 100, 9])
PEER_V6 = socket.inet_pton(socket.AF_INET6, "2001:db8::9")
LOCAL_V6 = socket.inet_pton(socket.AF_INET6, "2001:db8::7")
PAYLOAD = b"fastcheck-ping\0\0"


# --- packets, built the slow obvious way ----------------------------------------------------


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(word for (word,) in struct.iter_unpack("!H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp(kind: int, code: int, rest: bytes, *, with_checksum: bool = True) -> bytes:
    message = struct.pack("!BBH", kind, code, 0) + rest
    if not with_checksum:
        return message
    return message[:2] + struct.pack("!H", checksum(message)) + message[4:]


def echo(kind: int, ident: int, seq: int, payload: bytes = PAYLOAD) -> bytes:
    return icmp(kind, 0, struct.pack("!HH", ident, seq) + payload)


def ipv4(source: bytes, destination: bytes, body: bytes, *, protocol: int = 1,
         options: bytes = b"", total: int | None = None) -> bytes:  # fmt: skip
    header_len = 20 + len(options)
    length = header_len + len(body) if total is None else total
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | header_len // 4, 0, length, 7, 0, 64,
                         protocol, 0, source, destination)  # fmt: skip
    return header + options + body


def ipv6_header(source: bytes, destination: bytes, body_len: int, next_header: int = 58) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, body_len, next_header, 64, source, destination)


def v4_reply(ident: int, seq: int, source: bytes = PEER_V4) -> bytes:
    return ipv4(source, LOCAL_V4, echo(0, ident, seq))


def v4_unreachable(code: int, ident: int, seq: int, quoted_to: bytes = PEER_V4,
                   router: bytes = bytes([203, 0, 113, 1])) -> bytes:  # fmt: skip
    quoted = ipv4(LOCAL_V4, quoted_to, echo(8, ident, seq))
    return ipv4(router, LOCAL_V4, icmp(3, code, b"\0\0\0\0" + quoted))


def v6_reply(ident: int, seq: int) -> bytes:
    return echo(129, ident, seq)  # the kernel checks ICMPv6 checksums; zero is fine here


def v6_unreachable(code: int, ident: int, seq: int, quoted_to: bytes = PEER_V6) -> bytes:
    request = echo(128, ident, seq)
    quoted = ipv6_header(LOCAL_V6, quoted_to, len(request)) + request
    return icmp(1, code, b"\0\0\0\0" + quoted, with_checksum=False)


# --- the twins expose the same API ------------------------------------------------------------


def test_twins_export_the_same_api(icmp_twins: tuple[ModuleType, ModuleType]) -> None:
    c, py = icmp_twins
    assert set(c.__all__) == set(py.__all__) == API
    for twin in icmp_twins:
        public = {name for name in dir(twin.IcmpEngine) if not name.startswith("_")}
        assert public == ENGINE_API, twin.__name__


def test_c_twin_shares_socket_setup_with_pure_twin(icmp_twins: tuple[ModuleType, ...]) -> None:
    c, py = icmp_twins
    assert c.open_raw_socket is py.open_raw_socket


def _parameters(function: object) -> list[tuple[str, object, object]]:
    parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in parameters]


@pytest.mark.parametrize("method", ["submit", "poll", "next_deadline", "fileno", "close"])
def test_method_signatures_match(icmp_twins: tuple[ModuleType, ModuleType], method: str) -> None:
    c, py = icmp_twins
    assert _parameters(getattr(c.IcmpEngine, method)) == _parameters(getattr(py.IcmpEngine, method))


def test_parse_signatures_match(icmp_twins: tuple[ModuleType, ModuleType]) -> None:
    c, py = icmp_twins
    assert _parameters(c.parse_icmp) == _parameters(py.parse_icmp)


# --- parse_icmp: known packets ------------------------------------------------------------------


def test_v4_echo_reply(icmp_impl: ModuleType) -> None:
    assert icmp_impl.parse_icmp(v4_reply(0x1234, 7)) == (0, 0x1234, 7, PEER_V4)


def test_v4_echo_reply_with_ip_options(icmp_impl: ModuleType) -> None:
    packet = ipv4(PEER_V4, LOCAL_V4, echo(0, 1, 2), options=b"\x01\x01\x01\x00")
    assert icmp_impl.parse_icmp(packet) == (0, 1, 2, PEER_V4)


def test_v4_echo_request_is_not_an_answer(icmp_impl: ModuleType) -> None:
    assert icmp_impl.parse_icmp(ipv4(PEER_V4, LOCAL_V4, echo(8, 1, 2))) is None


@pytest.mark.parametrize(
    ("code", "status"),
    [(0, errno.ENETUNREACH), (1, errno.EHOSTUNREACH), (6, errno.ENETUNREACH),
     (7, errno.EHOSTUNREACH), (10, errno.EHOSTUNREACH), (11, errno.ENETUNREACH),
     (13, errno.EHOSTUNREACH)],
)  # fmt: skip
def test_v4_unreachable(icmp_impl: ModuleType, code: int, status: int) -> None:
    packet = v4_unreachable(code, 0xBEEF, 65535)
    assert icmp_impl.parse_icmp(packet) == (status, 0xBEEF, 65535, PEER_V4)


def test_v4_fragmentation_needed_is_not_unreachable(icmp_impl: ModuleType) -> None:
    assert icmp_impl.parse_icmp(v4_unreachable(4, 1, 2)) is None


def test_v4_unreachable_with_bad_checksum_is_ignored(icmp_impl: ModuleType) -> None:
    packet = bytearray(v4_unreachable(1, 1, 2))
    packet[23] ^= 0xFF
    assert icmp_impl.parse_icmp(bytes(packet)) is None


def test_v4_unreachable_quoting_udp_is_ignored(icmp_impl: ModuleType) -> None:
    quoted = ipv4(LOCAL_V4, PEER_V4, bytes(16), protocol=17)
    packet = ipv4(PEER_V4, LOCAL_V4, icmp(3, 3, b"\0\0\0\0" + quoted))
    assert icmp_impl.parse_icmp(packet) is None


def test_v4_unreachable_quoting_a_reply_is_ignored(icmp_impl: ModuleType) -> None:
    quoted = ipv4(LOCAL_V4, PEER_V4, echo(0, 1, 2))
    packet = ipv4(PEER_V4, LOCAL_V4, icmp(3, 1, b"\0\0\0\0" + quoted))
    assert icmp_impl.parse_icmp(packet) is None


def test_v4_unreachable_quoting_only_eight_bytes_of_the_echo(icmp_impl: ModuleType) -> None:
    # RFC 792 routers quote the IP header plus 64 bits: exactly the echo header.
    quoted = ipv4(LOCAL_V4, PEER_V4, echo(8, 5, 6, payload=b""), total=44)
    packet = ipv4(PEER_V4, LOCAL_V4, icmp(3, 1, b"\0\0\0\0" + quoted))
    assert icmp_impl.parse_icmp(packet) == (errno.EHOSTUNREACH, 5, 6, PEER_V4)


@pytest.mark.parametrize("cut", [1, 8, 20, 30])
def test_v4_truncated_is_ignored(icmp_impl: ModuleType, cut: int) -> None:
    assert icmp_impl.parse_icmp(v4_reply(1, 2)[:-cut]) is None
    assert icmp_impl.parse_icmp(v4_unreachable(1, 1, 2)[:-cut]) is None


def test_v6_echo_reply_has_no_address(icmp_impl: ModuleType) -> None:
    assert icmp_impl.parse_icmp(v6_reply(0xFFFF, 0), ipv6=True) == (0, 0xFFFF, 0, None)


@pytest.mark.parametrize(("code", "status"), [(0, errno.ENETUNREACH), (1, errno.EHOSTUNREACH),
                                              (3, errno.EHOSTUNREACH)])  # fmt: skip
def test_v6_unreachable(icmp_impl: ModuleType, code: int, status: int) -> None:
    packet = v6_unreachable(code, 9, 10)
    assert icmp_impl.parse_icmp(packet, ipv6=True) == (status, 9, 10, PEER_V6)


def test_v6_unreachable_quoting_udp_is_ignored(icmp_impl: ModuleType) -> None:
    quoted = ipv6_header(LOCAL_V6, PEER_V6, 8, next_header=17) + bytes(8)
    assert icmp_impl.parse_icmp(icmp(1, 3, b"\0\0\0\0" + quoted), ipv6=True) is None


def test_family_matters(icmp_impl: ModuleType) -> None:
    assert icmp_impl.parse_icmp(v4_reply(1, 2), ipv6=True) is None
    assert icmp_impl.parse_icmp(v6_reply(1, 2)) is None


@pytest.mark.parametrize("packet", [b"", b"\x45", bytes(100), b"\xff" * 100])
def test_garbage_is_none(icmp_impl: ModuleType, packet: bytes) -> None:
    assert icmp_impl.parse_icmp(packet) is None
    assert icmp_impl.parse_icmp(packet, ipv6=True) is None


def test_any_bytes_like(icmp_impl: ModuleType) -> None:
    packet = v4_unreachable(1, 3, 4)
    expected = (errno.EHOSTUNREACH, 3, 4, PEER_V4)
    assert icmp_impl.parse_icmp(bytearray(packet)) == expected
    assert icmp_impl.parse_icmp(memoryview(packet)) == expected
    strided = memoryview(bytes(b for pair in zip(packet, packet, strict=True) for b in pair))[::2]
    assert icmp_impl.parse_icmp(strided) == expected


@pytest.mark.parametrize("bad", [None, 42, "text"])
def test_non_buffers_raise_type_error(icmp_impl: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        icmp_impl.parse_icmp(bad)


# --- both twins parse the same --------------------------------------------------------------


def valid_packets() -> st.SearchStrategy[tuple[bytes, bool]]:
    codes = st.integers(min_value=0, max_value=15)
    return st.one_of(
        st.builds(lambda i, s, a: (v4_reply(i, s, a), False), u16, u16, v4_address),
        st.builds(lambda c, i, s, a: (v4_unreachable(c, i, s, a), False), codes, u16, u16,
                  v4_address),
        st.builds(lambda i, s: (v6_reply(i, s), True), u16, u16),
        st.builds(lambda c, i, s, a: (v6_unreachable(c, i, s, a), True), codes, u16, u16,
                  v6_address),
    )  # fmt: skip


@given(packet=st.binary(max_size=200), ipv6=st.booleans())
def test_twins_agree_on_arbitrary_bytes(
    icmp_twins: tuple[ModuleType, ModuleType], packet: bytes, ipv6: bool
) -> None:
    c, py = icmp_twins
    assert c.parse_icmp(packet, ipv6=ipv6) == py.parse_icmp(packet, ipv6=ipv6)


@given(
    case=valid_packets(),
    edits=st.lists(st.tuples(st.integers(min_value=0, max_value=120), st.integers(0, 255)),
                   max_size=3),
    cut=st.integers(min_value=0, max_value=130),
)  # fmt: skip
def test_twins_agree_on_mutated_answers(
    icmp_twins: tuple[ModuleType, ModuleType],
    case: tuple[bytes, bool],
    edits: list[tuple[int, int]],
    cut: int,
) -> None:
    c, py = icmp_twins
    packet, ipv6 = case
    assert c.parse_icmp(packet, ipv6=ipv6) == py.parse_icmp(packet, ipv6=ipv6)
    mutated = bytearray(packet)
    for offset, value in edits:
        if offset < len(mutated):
            mutated[offset] = value
    mutated = mutated[: len(mutated) - cut] if cut else mutated
    assert c.parse_icmp(mutated, ipv6=ipv6) == py.parse_icmp(mutated, ipv6=ipv6)


# --- the selector ---------------------------------------------------------------------------

SHOW_CHOICE = "from fastcheck._ext import icmp; print(icmp.IMPLEMENTATION, icmp.IcmpEngine)"


def _selected_in_subprocess(**env: str) -> subprocess.CompletedProcess[str]:
    flags = (NO_EXTENSIONS_ENV, REQUIRE_EXTENSIONS_ENV)
    clean = {k: v for k, v in os.environ.items() if k not in flags}
    return subprocess.run(
        [sys.executable, "-c", SHOW_CHOICE],
        env=clean | env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_compiled_twin_is_the_default(icmp_twins: tuple[ModuleType, ModuleType]) -> None:
    # Requesting icmp_twins skips this test (or fails it under REQUIRE) when not built.
    result = _selected_in_subprocess()
    assert result.stdout.split()[0] == "c", result.stderr
    assert "icmp_c.IcmpEngine" in result.stdout
    assert result.stderr == ""


def test_implementations_reports_icmp() -> None:
    from fastcheck._ext import icmp

    assert implementations()["icmp"] == icmp.IMPLEMENTATION


def test_no_extensions_forces_pure_python() -> None:
    result = _selected_in_subprocess(**{NO_EXTENSIONS_ENV: "1", REQUIRE_EXTENSIONS_ENV: "1"})
    assert result.stdout.split()[0] == "py", result.stderr
    assert "icmp_py.IcmpEngine" in result.stdout


# --- the engine's argument checks (opens a raw socket; sends only to 127.0.0.1) -------------


def _can_open_raw_socket() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except PermissionError:
        return False
    return True


needs_raw = pytest.mark.skipif(not _can_open_raw_socket(), reason="needs CAP_NET_RAW")


@needs_raw
@pytest.mark.parametrize("limit", [0, -1, 65537])
def test_max_in_flight_bounds(icmp_impl: ModuleType, limit: int) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        icmp_impl.IcmpEngine(max_in_flight=limit)


@needs_raw
@pytest.mark.parametrize(
    ("ipv6", "address"),
    [(False, "::1"), (False, "localhost"), (False, "127.1"), (False, "127.0.0.1\0"),
     (False, ""), (True, "127.0.0.1"), (True, "fe80::1%lo"), (True, "::g")],
)  # fmt: skip
def test_submit_refuses_non_literals(icmp_impl: ModuleType, ipv6: bool, address: str) -> None:
    with icmp_impl.IcmpEngine(ipv6=ipv6) as engine, pytest.raises(ValueError, match="not an"):
        engine.submit(1, address, 1.0, 0.0)


@needs_raw
@pytest.mark.parametrize("timeout", [-0.5, math.nan, math.inf])
def test_submit_refuses_bad_timeouts(icmp_impl: ModuleType, timeout: float) -> None:
    with icmp_impl.IcmpEngine() as engine, pytest.raises(ValueError, match="timeout_s"):
        engine.submit(1, "127.0.0.1", timeout, 0.0)
    assert engine.in_flight == 0


@needs_raw
def test_submit_refuses_non_str_address(icmp_impl: ModuleType) -> None:
    with icmp_impl.IcmpEngine() as engine, pytest.raises(TypeError):
        engine.submit(1, b"127.0.0.1", 1.0, 0.0)  # type: ignore[arg-type]


@needs_raw
def test_full_engine_raises_blocking_io_error(icmp_impl: ModuleType) -> None:
    with icmp_impl.IcmpEngine(max_in_flight=2) as engine:
        engine.submit(1, "127.0.0.1", 5.0, 0.0)
        engine.submit(2, "127.0.0.1", 5.0, 0.0)
        with pytest.raises(BlockingIOError):
            engine.submit(3, "127.0.0.1", 5.0, 0.0)
        assert engine.in_flight == 2
        assert engine.next_deadline() == 5.0


@needs_raw
def test_close(icmp_impl: ModuleType) -> None:
    engine = icmp_impl.IcmpEngine()
    assert engine.fileno() >= 0
    assert 0 <= engine.ident <= 0xFFFF
    assert engine.ipv6 is False
    assert engine.max_in_flight == 65536
    engine.submit(1, "127.0.0.1", 5.0, 0.0)
    engine.close()
    engine.close()  # idempotent
    assert engine.fileno() == -1
    assert engine.in_flight == 0
    assert engine.next_deadline() is None
    with pytest.raises(ValueError, match="closed"):
        engine.submit(2, "127.0.0.1", 5.0, 0.0)
    with pytest.raises(ValueError, match="closed"):
        engine.poll(1.0)
    assert "closed" in repr(engine)


@needs_raw
def test_nothing_in_flight(icmp_impl: ModuleType) -> None:
    with icmp_impl.IcmpEngine(ipv6=True) as engine:
        assert engine.ipv6 is True
        assert engine.next_deadline() is None
        assert engine.poll(0.0) == []
