"""Sans-IO tests of probes/httpwire: keepalived's request, response parsing, digest, regex."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastcheck.model import HttpParams, UrlSpec
from fastcheck.probes.httpwire import (
    MAX_HEADER_BYTES,
    RegexUnsupported,
    UrlCheck,
    build_request,
    compile_regex,
    parse_content_length,
    parse_status_code,
    request_host,
    sni_name,
)
from fastcheck.probes.result import Failure


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def prepare(url: UrlSpec, max_body_bytes: int = 1 << 20, **params: object) -> UrlCheck:
    return UrlCheck.prepare(url, HttpParams(urls=(url,), **params), "10.0.0.1", 8080,  # type: ignore[arg-type]
                            max_body_bytes=max_body_bytes)


def judge(check: UrlCheck, *pieces: bytes) -> tuple[Failure | None, str]:
    reader = check.reader()
    for piece in pieces:
        if reader.feed(piece):
            break
    return reader.verdict()


# --------------------------------------------------------------------------- request


@pytest.mark.parametrize(("protocol", "expected"), [
    ("1.0", b"GET /p?q=1 HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: h\r\n\r\n"),
    ("1.0C", b"GET /p?q=1 HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\n"
             b"Connection: close\r\nHost: h\r\n\r\n"),
    ("1.1", b"GET /p?q=1 HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\n"
            b"Connection: close\r\nHost: h\r\n\r\n"),
])
def test_build_request_is_keepalives_template(protocol: str, expected: bytes) -> None:
    assert build_request("/p?q=1", "h", protocol) == expected


def test_request_host_precedence_and_port() -> None:
    url, vurl = UrlSpec("/"), UrlSpec("/", virtualhost="url.example")
    plain, vhost = HttpParams(urls=(url,)), HttpParams(urls=(url,), virtualhost="chk.example")
    assert request_host(url, plain, "10.0.0.1", 80) == "10.0.0.1:80"  # port even for 80
    assert request_host(url, plain, "10.0.0.1", 443) == "10.0.0.1:443"
    assert request_host(url, plain, "2001:db8::1", 8080) == "[2001:db8::1]:8080"
    assert request_host(url, vhost, "2001:db8::1", 8080) == "chk.example"
    assert request_host(vurl, vhost, "10.0.0.1", 80) == "url.example"


def test_sni_name_only_with_enable_sni() -> None:
    url, vurl = UrlSpec("/"), UrlSpec("/", virtualhost="url.example")
    assert sni_name(url, HttpParams(urls=(url,), virtualhost="v")) is None
    assert sni_name(url, HttpParams(urls=(url,), virtualhost="v", enable_sni=True)) == "v"
    assert sni_name(vurl, HttpParams(urls=(url,), virtualhost="v", enable_sni=True)) == \
        "url.example"
    assert sni_name(url, HttpParams(urls=(url,), enable_sni=True)) is None


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(("head", "code"), [
    (b"HTTP/1.1 200 OK\r\n\r\n", 200),
    (b"HTTP/1.0 404 Not Found\r\nX: y\r\n\r\n", 404),
    (b"HTTP/1.1 200\r\n\r\n", 200),  # no reason phrase: accepted (keepalived refuses)
    (b"HTTP/1.1 200 \r\n\r\n", 200),
    (b"ICY 200 OK\r\n\r\n", 200),  # keepalived does not look at the protocol token
    (b"HTTP/1.1 2000 OK\r\n\r\n", None),
    (b"HTTP/1.1 20 OK\r\n\r\n", None),
    (b"HTTP/1.1  200 OK\r\n\r\n", None),
    (b"HTTP/1.1 +20 OK\r\n\r\n", None),
    (b"HTTP/1.1\r\n200 OK\r\n\r\n", None),
    (b"garbage\r\n\r\n", None),
    (b"\r\n\r\n", None),
])
def test_parse_status_code(head: bytes, code: int | None) -> None:
    assert parse_status_code(head) == code


@pytest.mark.parametrize(("head", "length"), [
    (b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n", 12),
    (b"HTTP/1.0 200 OK\r\ncontent-length:7\r\n\r\n", 7),
    (b"HTTP/1.0 200 OK\r\nContent-Length: \t0\r\n\r\n", 0),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 12 \r\n\r\n", None),  # junk after: ignored
    (b"HTTP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", None),
    (b"HTTP/1.0 200 OK\r\nX-Content-Length: 5\r\n\r\n", None),
    (b"HTTP/1.0 200 OK\r\n\r\n", None),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 3),
])
def test_parse_content_length(head: bytes, length: int | None) -> None:
    assert parse_content_length(head) == length


# --------------------------------------------------------------------------- reader


BODY = b"<html>\r\n\r\nbinary\x00\xff and more\n"
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


@given(st.lists(st.integers(min_value=0, max_value=len(RESPONSE)), max_size=8))
def test_reader_verdict_does_not_depend_on_how_bytes_arrive(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), len(RESPONSE)]
    pieces = [RESPONSE[a:b] for a, b in itertools.pairwise(edges)]
    check = prepare(UrlSpec("/", digest=md5(BODY), regex=r"binary\x00"))
    reader = check.reader()
    done = False
    for piece in pieces:
        done = reader.feed(piece)
    assert done  # Content-Length reached: no need to wait for EOF
    assert reader.verdict() == (None, "")
    assert reader.digest == md5(BODY)


def test_status_only_url_is_done_after_the_header() -> None:
    reader = prepare(UrlSpec("/")).reader()
    assert not reader.feed(b"HTTP/1.0 200 OK\r\n")
    assert reader.feed(b"\r\nbody that nobody needs")
    assert reader.verdict() == (None, "")


def test_bad_status_decides_at_the_header() -> None:
    reader = prepare(UrlSpec("/", digest=md5(b""), status_codes=((200, 204), (301, 301))))\
        .reader()
    assert reader.feed(b"HTTP/1.0 302 Found\r\n\r\n")
    failure, detail = reader.verdict()
    assert failure is Failure.HTTP_STATUS and detail == "status 302 not in 200-204,301"


def test_digest_until_eof_without_content_length() -> None:
    check = prepare(UrlSpec("/", digest=md5(b"abcdef")))
    reader = check.reader()
    assert not reader.feed(b"HTTP/1.0 200 OK\r\n\r\nabc")
    assert not reader.feed(b"def")
    assert reader.verdict() == (None, "")  # the server closed


def test_digest_ignores_bytes_past_content_length() -> None:
    check = prepare(UrlSpec("/", digest=md5(b"abc")))
    assert judge(check, b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabcdef") == (None, "")


def test_digest_of_empty_body() -> None:
    check = prepare(UrlSpec("/", digest=md5(b"")))
    assert judge(check, b"HTTP/1.0 200 OK\r\n\r\n") == (None, "")


def test_digest_mismatch() -> None:
    failure, detail = judge(prepare(UrlSpec("/", digest="0" * 32)),
                            b"HTTP/1.0 200 OK\r\n\r\nx")
    assert failure is Failure.DIGEST and md5(b"x") in detail


def test_chunked_body_is_hashed_raw() -> None:
    raw = b"5\r\nhello\r\n0\r\n\r\n"
    check = prepare(UrlSpec("/", digest=md5(raw)))
    assert judge(check, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + raw) == \
        (None, "")


def test_body_bound() -> None:
    check = prepare(UrlSpec("/", regex="x"), max_body_bytes=10)
    reader = check.reader()
    assert not reader.feed(b"HTTP/1.0 200 OK\r\n\r\n0123456789")
    assert reader.feed(b"!")
    assert reader.verdict()[0] is Failure.TOO_LARGE
    big = b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n"
    assert judge(check, big)[0] is Failure.TOO_LARGE
    fits = b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nxxxxxxxxxxMORE"
    assert judge(check, fits) == (None, "")


def test_header_bound_and_truncated_header() -> None:
    check = prepare(UrlSpec("/"))
    reader = check.reader()
    assert not reader.feed(b"HTTP/1.0 200 OK\r\n")
    assert reader.feed(b"X: " + b"y" * MAX_HEADER_BYTES)
    assert reader.verdict()[0] is Failure.TOO_LARGE
    assert judge(check, b"HTTP/1.0 200 OK\r\n")[0] is Failure.PROTOCOL
    assert judge(check)[0] is Failure.PROTOCOL
    assert judge(check, b"HTTP/1.0 200 OK\n\n")[0] is Failure.PROTOCOL  # LF LF ends nothing


def test_garbage_status_line_is_protocol() -> None:
    failure, detail = judge(prepare(UrlSpec("/")), b"SSH-2.0-OpenSSH\r\n\r\n")
    assert failure is Failure.PROTOCOL and "SSH-2.0" in detail


# --------------------------------------------------------------------------- regex


def matches(url: UrlSpec, body: bytes) -> bool:
    regex = compile_regex(url)
    assert regex is not None
    return regex.matches(body)


def test_regex_options_map_to_re_flags() -> None:
    assert matches(UrlSpec("/", regex="hello", regex_options=("caseless",)), b"HeLLo")
    assert not matches(UrlSpec("/", regex="hello"), b"HeLLo")
    assert matches(UrlSpec("/", regex="^b", regex_options=("multiline",)), b"a\nb")
    assert not matches(UrlSpec("/", regex="^b"), b"a\nb")
    assert matches(UrlSpec("/", regex="a.b", regex_options=("dotall",)), b"a\nb")
    assert not matches(UrlSpec("/", regex="a.b"), b"a\nb")
    assert matches(UrlSpec("/", regex="a b  # comment", regex_options=("extended",)), b"ab")
    neutral = ("no_auto_possess", "no_start_optimize", "auto_callout", "use_offset_limit")
    assert matches(UrlSpec("/", regex="a+b", regex_options=neutral), b"xaab")


@pytest.mark.parametrize("option", ["ungreedy", "dollar_endonly", "firstline",
                                    "allow_empty_class", "match_unset_backref"])
def test_unsupported_regex_options_say_so(option: str) -> None:
    with pytest.raises(RegexUnsupported, match=f"regex_options {option} is not supported"):
        compile_regex(UrlSpec("/", regex="a", regex_options=(option,)))


def test_pattern_python_cannot_compile() -> None:
    with pytest.raises(RegexUnsupported, match="does not compile"):
        compile_regex(UrlSpec("/", regex="(?<name>a)"))  # PCRE2 named group syntax


def test_regex_offsets_bound_where_a_match_starts() -> None:
    body = b"0123456789OK"
    assert matches(UrlSpec("/", regex="OK", regex_min_offset=10), body)
    assert not matches(UrlSpec("/", regex="OK", regex_min_offset=11), body)
    assert matches(UrlSpec("/", regex="OK", regex_max_offset=10), body)  # inclusive
    assert not matches(UrlSpec("/", regex="OK", regex_max_offset=9), body)
    # lookbehind may look before min_offset, as PCRE2 does with a start offset
    assert matches(UrlSpec("/", regex="(?<=9)OK", regex_min_offset=10), body)
    assert not matches(UrlSpec("/", regex="^OK", regex_min_offset=10), body)
    # min above max: keepalived's url_check drops both
    assert matches(UrlSpec("/", regex="0", regex_min_offset=5, regex_max_offset=2), body)


def test_regex_never_matches_an_empty_body() -> None:
    assert not matches(UrlSpec("/", regex="^$"), b"")
    assert not matches(UrlSpec("/", regex=".*"), b"")


def test_regex_utf_and_ucp_modes() -> None:
    body = "prix: 10 €, café\n".encode()
    assert matches(UrlSpec("/", regex="caf.$", regex_options=("utf", "multiline")), body)
    assert not matches(UrlSpec("/", regex="caf.$", regex_options=("multiline",)), body)
    assert not matches(UrlSpec("/", regex=r"caf\w", regex_options=("utf",)), body)  # ASCII \w
    assert matches(UrlSpec("/", regex=r"caf\w", regex_options=("utf", "ucp")), body)
    # offsets stay in bytes: "€" is three bytes long
    at = body.index("€".encode())
    assert matches(UrlSpec("/", regex="€", regex_options=("utf",), regex_max_offset=at), body)
    assert not matches(UrlSpec("/", regex="€", regex_options=("utf",),
                                regex_max_offset=at - 1), body)
    assert not matches(UrlSpec("/", regex="x", regex_options=("utf",)), b"x\xff")  # bad UTF-8
    latin = "café".encode("latin-1")
    assert matches(UrlSpec("/", regex=r"caf\w", regex_options=("ucp",)), latin)
    assert not matches(UrlSpec("/", regex=r"caf\w"), latin)


def test_regex_no_match_inverts() -> None:
    head = b"HTTP/1.0 200 OK\r\n\r\n"
    down = prepare(UrlSpec("/", regex="ERROR", regex_no_match=True))
    assert judge(down, head + b"all fine") == (None, "")
    failure, detail = judge(down, head + b"ERROR 42")
    assert failure is Failure.REGEX and "matched" in detail
    assert judge(prepare(UrlSpec("/", regex="fine")), head + b"nope")[0] is Failure.REGEX


def test_regex_runs_on_body_only() -> None:
    check = prepare(UrlSpec("/", regex="Server"))
    assert judge(check, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody")[0] is Failure.REGEX


@given(st.binary(max_size=200), st.integers(0, 50), st.integers(0, 250))
def test_regex_offsets_agree_with_a_plain_scan(body: bytes, low: int, high: int) -> None:
    url = UrlSpec("/", regex="a[bc]", regex_min_offset=low, regex_max_offset=high)
    if low > high:
        low, high = 0, len(body)
    starts = [m.start() for m in re.finditer(rb"(?=a[bc])", body)]
    expected = bool(body) and any(low <= s <= high for s in starts)
    assert matches(url, body) is expected
