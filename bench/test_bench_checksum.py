"""Benchmarks for the checksum twins, compiled (``c``) and pure (``py``) side by side.

Figures: ``pytest bench --benchmark-enable``. In the normal suite (``--benchmark-disable``)
each benchmark runs once as a plain test. The compiled cases are skipped, with the reason
shown, when ``fastcheck._ext.checksum_c`` is not built.
"""

from types import ModuleType

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fastcheck._ext import checksum_py

PACKET_64 = bytes(range(64))
PING_PAYLOAD = bytes(range(56))  # the size `ping` sends by default


def ipv4_echo_reply(ident: int, seq: int) -> bytes:
    """A 20-byte IPv4 header plus an ICMP echo reply with a valid checksum."""
    icmp = bytearray(checksum_py.build_echo_request(ident, seq, PING_PAYLOAD))
    icmp[0] = 0  # echo reply
    icmp[2:4] = b"\0\0"
    icmp[2:4] = checksum_py.internet_checksum(icmp).to_bytes(2, "big")
    total = (20 + len(icmp)).to_bytes(2, "big")
    header = b"\x45\x00" + total + b"\x00\x00\x40\x00\x40\x01\x00\x00" + bytes(8)
    return header + bytes(icmp)


REPLIES = [ipv4_echo_reply(0x4242, seq) for seq in range(1000)]


@pytest.fixture(scope="module", params=["c", "py"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return pytest.importorskip(f"fastcheck._ext.checksum_{request.param}")


@pytest.mark.benchmark(group="internet_checksum(64 B)")
def test_checksum_64_bytes(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    assert benchmark(impl.internet_checksum, PACKET_64) == 0x1BFC


@pytest.mark.benchmark(group="build_echo_request(56 B payload)")
def test_build_echo_request(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    packet = benchmark(impl.build_echo_request, 0x4242, 7, PING_PAYLOAD)
    assert len(packet) == 64


@pytest.mark.benchmark(group="parse_echo_replies(1000 x 84 B)")
def test_parse_1000_replies(benchmark: BenchmarkFixture, impl: ModuleType) -> None:
    results = benchmark(impl.parse_echo_replies, REPLIES)
    assert results == [(0x4242, seq) for seq in range(1000)]
