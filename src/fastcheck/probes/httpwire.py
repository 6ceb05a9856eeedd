"""HTTP_GET / SSL_GET on the wire, as keepalived speaks it — sans-IO.

Owns: the request bytes (keepalived's request template), the incremental response reader
(header split, status code, Content-Length, MD5 of the body, the body kept for a regex, size
bounds), the translation of a url's PCRE2 regex and options to Python's `re`, and the
per-url verdict (status → digest → regex, keepalived's order).
Must not: do I/O, read a clock, import asyncio/socket/ssl, or decide health.

Behaviour reference: keepalived 2.2.7 `keepalived/check/check_http.c` (request_template,
http_request_thread, http_process_response, http_handle_response, check_regex, url_check)
and `lib/html.c` (extract_html, extract_status_code, extract_content_length).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from fastcheck.model import HttpParams, UrlSpec, format_endpoint
from fastcheck.probes.result import Failure

USER_AGENT = "KeepAliveClient"  # check_http.c request_template
DEFAULT_MAX_BODY_BYTES = 1 << 20  # body bytes read at most when a digest or regex needs them
MAX_HEADER_BYTES = 64 * 1024  # status line + headers; keepalived's whole buffer is 4 KiB
HEADER_END = b"\r\n\r\n"  # html.c extract_html: only CRLF CRLF ends the header

Verdict = tuple[Failure | None, str]  # (None, "") when the url passed


# --------------------------------------------------------------------------- request


def request_host(url: UrlSpec, params: HttpParams, address: str, port: int) -> str:
    """The Host header value: url virtualhost > check virtualhost > ``address:port``.

    keepalived (http_request_thread) sends a virtualhost as written, without a port, and
    otherwise the target address *always* followed by ``:port`` (even 80 and 443), with
    an IPv6 literal in brackets.
    """
    vhost = url.virtualhost or params.virtualhost
    return vhost if vhost else format_endpoint(address, port)


def sni_name(url: UrlSpec, params: HttpParams) -> str | None:
    """The TLS server name for SSL_GET with enable_sni: the virtualhost, else none."""
    if not params.enable_sni:
        return None
    return url.virtualhost or params.virtualhost or None


def build_request(path: str, host: str, http_protocol: str) -> bytes:
    """keepalived's GET: HTTP/1.1 and "1.0C" both add ``Connection: close``."""
    version = "1.1" if http_protocol == "1.1" else "1.0"
    close = "Connection: close\r\n" if http_protocol in ("1.1", "1.0C", "1.0c") else ""
    text = (f"GET {path} HTTP/{version}\r\nUser-Agent: {USER_AGENT}\r\n{close}"
            f"Host: {host}\r\n\r\n")
    return text.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- parsing


def parse_status_code(head: bytes) -> int | None:
    """Status code of the first line, or None when the line is garbage.

    Like html.c extract_status_code: skip the first token (up to a space; a CR first means
    garbage), then exactly three digits. keepalived also insists on a space after the
    digits; we accept CR there too (a status line without a reason phrase) — see
    divergences in the module docstring of probes/http.py.
    """
    line_end = head.find(b"\r")
    line = head if line_end < 0 else head[:line_end]
    space = line.find(b" ")
    if space < 0:
        return None
    code = line[space + 1:space + 4]
    rest = line[space + 4:space + 5]
    if len(code) != 3 or not code.isdigit() or rest not in (b" ", b""):
        return None
    return int(code)


def parse_content_length(head: bytes) -> int | None:
    """The Content-Length header's value, or None when absent or unreadable.

    keepalived (extract_content_length) takes the first "Content-Length:" anywhere in the
    buffer, case-sensitively; we take the first header line named content-length in any
    case. As there, the digits may be preceded by blanks and must be followed by the end of
    the line, or the value is ignored.
    """
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.lower() == b"content-length":
            value = value.lstrip(b" \t")
            return int(value) if value.isdigit() else None
    return None


# --------------------------------------------------------------------------- regex


RegexMode = Literal["bytes", "utf8", "latin1"]

# PCRE2 options that change nothing about whether a valid pattern matches: optimisation
# switches, callout/debug aids, and bans on pattern features Python's re lacks anyway.
_NEUTRAL_OPTIONS = frozenset({
    "auto_callout", "no_auto_possess", "no_dotstar_anchor", "no_start_optimize",
    "no_auto_capture", "dupnames", "never_ucp", "never_utf", "never_backslash_c",
    "use_offset_limit",  # keepalived never sets an offset limit, so it has no effect
})
_FLAG_OPTIONS = {
    "caseless": re.IGNORECASE,
    "multiline": re.MULTILINE,
    "dotall": re.DOTALL,
    "extended": re.VERBOSE,
}
_UNSUPPORTED_OPTIONS = {
    "ungreedy": "Python's re has no global ungreedy switch; write lazy quantifiers "
                "(*?, +?, ??) in the pattern instead",
    "dollar_endonly": "Python's re has no such switch; end the pattern with \\Z instead of $",
    "firstline": "Python's re has no such switch",
    "allow_empty_class": "Python's re has no empty character class",
    "alt_bsux": "Python's re has no such switch",
    "alt_circumflex": "Python's re has no such switch",
    "alt_verbnames": "Python's re has no backtracking verbs",
    "match_unset_backref": "Python's re has no such switch",
}


class RegexUnsupported(ValueError):
    """A url's regex cannot be checked: an option without a Python equivalent, or a
    pattern Python's re cannot compile. The message names the option or the error."""


@dataclass(frozen=True, slots=True)
class UrlRegex:
    """A url's regex, compiled, with where a match may start (body byte offsets)."""

    pattern: re.Pattern[Any]
    mode: RegexMode
    min_offset: int = 0
    max_offset: int | None = None  # inclusive, as written in regex_max_offset

    def matches(self, body: bytes) -> bool:
        """Whether the pattern matches starting within [min_offset, max_offset] of ``body``.

        An empty body never matches: keepalived only runs the matcher on received bytes.
        Under ``utf`` a body that is not valid UTF-8 never matches (PCRE2 reports an error).
        """
        if not body:
            return False
        if self.mode == "bytes":
            found = self.pattern.search(body, self.min_offset)
            return found is not None and (
                self.max_offset is None or found.start() <= self.max_offset)
        if self.mode == "latin1":
            text = body.decode("latin-1")  # one code point per byte: offsets carry over
            found = self.pattern.search(text, self.min_offset)
            return found is not None and (
                self.max_offset is None or found.start() <= self.max_offset)
        try:
            text = body.decode("utf-8")
            start = len(body[:self.min_offset].decode("utf-8"))
        except UnicodeDecodeError:
            return False
        found = self.pattern.search(text, start)
        if found is None:
            return False
        return self.max_offset is None or (
            len(text[:found.start()].encode("utf-8")) <= self.max_offset)


def compile_regex(url: UrlSpec) -> UrlRegex | None:
    """Compile ``url.regex`` with its options, or raise `RegexUnsupported`.

    Python's re stands in for PCRE2. caseless/multiline/dotall/extended map to re flags;
    ``utf`` matches the body as UTF-8 text (ASCII classes unless ``ucp`` too); ``ucp`` alone
    matches bytes as Latin-1 code points with Unicode classes, as 8-bit PCRE2 does. The
    options in `_NEUTRAL_OPTIONS` do not change a match and are accepted; the ones in
    `_UNSUPPORTED_OPTIONS` raise. regex_stack (the PCRE2 JIT stack) has no meaning here.
    A min offset above the max offset drops both, as keepalived's url_check does.
    """
    if url.regex is None:
        return None
    options = set(url.regex_options)
    for option in sorted(options):
        if option in _UNSUPPORTED_OPTIONS:
            raise RegexUnsupported(
                f"regex_options {option} is not supported (fastcheck matches with "
                f"Python's re, not PCRE2): {_UNSUPPORTED_OPTIONS[option]}")
        if option not in _NEUTRAL_OPTIONS and option not in _FLAG_OPTIONS \
                and option not in ("utf", "ucp"):
            raise RegexUnsupported(f"unknown regex option {option!r}")
    flags = 0
    for option, flag in _FLAG_OPTIONS.items():
        if option in options:
            flags |= flag
    mode: RegexMode
    source: str | bytes
    if "utf" in options:
        mode, source = "utf8", url.regex
        if "ucp" not in options:
            flags |= re.ASCII
    elif "ucp" in options:
        mode = "latin1"
        source = url.regex.encode("utf-8", "surrogateescape").decode("latin-1")
    else:
        mode, source = "bytes", url.regex.encode("utf-8", "surrogateescape")
    try:
        pattern = re.compile(source, flags)
    except re.error as exc:
        raise RegexUnsupported(f"regex {url.regex!r} does not compile with Python's re: "
                               f"{exc}") from None
    low, high = url.regex_min_offset, url.regex_max_offset
    if high is not None and low > high:
        low, high = 0, None
    return UrlRegex(pattern, mode, low, high)


# --------------------------------------------------------------------------- one url


def status_text(ranges: tuple[tuple[int, int], ...]) -> str:
    return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


@dataclass(frozen=True, slots=True)
class UrlCheck:
    """Everything needed to fetch and judge one url, prepared once per check."""

    url: UrlSpec
    request: bytes
    regex: UrlRegex | None
    sni: str | None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def prepare(cls, url: UrlSpec, params: HttpParams, address: str, port: int, *,
                max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> UrlCheck:
        """Raises `RegexUnsupported` for a regex that cannot be checked."""
        host = request_host(url, params, address, port)
        request = build_request(url.path, host, params.http_protocol)
        return cls(url, request, compile_regex(url), sni_name(url, params), max_body_bytes)

    @property
    def needs_body(self) -> bool:
        return self.url.digest is not None or self.regex is not None

    def status_ok(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.url.status_codes)

    def reader(self) -> ResponseReader:
        return ResponseReader(self)


class ResponseReader:
    """Consumes one response's bytes; says when it has seen enough and what it thinks.

    `feed` returns True once no more bytes are wanted: the header ended and the url needs
    no body, the header already decides the outcome, the body reached Content-Length, or
    a bound was crossed. Without a Content-Length the body ends at EOF (keepalived reads
    until the server closes; chunked bodies are hashed raw, chunk lines included, exactly
    as keepalived/genhash do). `verdict(eof=...)` judges what was received.
    """

    __slots__ = ("_body", "_check", "_head", "_md5", "_stop", "body_bytes",
                 "content_length", "status_code")

    def __init__(self, check: UrlCheck) -> None:
        self._check = check
        self._head: bytearray | None = bytearray()
        self._body = bytearray() if check.regex is not None else None
        self._md5 = hashlib.md5(usedforsecurity=False) if check.url.digest else None
        self._stop: Verdict | None = None
        self.status_code: int | None = None
        self.content_length: int | None = None
        self.body_bytes = 0  # body bytes taken (never past Content-Length)

    @property
    def header_done(self) -> bool:
        return self._head is None

    def feed(self, data: bytes) -> bool:
        if self._stop is not None:
            return True
        if self._head is not None:
            seen = len(self._head)
            self._head += data
            end = self._head.find(HEADER_END, max(0, seen - 3))
            if end < 0:
                if len(self._head) > MAX_HEADER_BYTES:
                    self._stop = (Failure.TOO_LARGE, f"response header above "
                                  f"{MAX_HEADER_BYTES} bytes without an end")
                    return True
                return False
            head, data = bytes(self._head[:end + 4]), bytes(self._head[end + 4:])
            self._head = None
            if self._on_header(head):
                return True
        return self._on_body(data)

    def _on_header(self, head: bytes) -> bool:
        check = self._check
        self.status_code = parse_status_code(head)
        if self.status_code is None:
            line = head.split(b"\r\n", 1)[0][:80]
            self._stop = (Failure.PROTOCOL, f"garbage status line {line!r}")
            return True
        if not check.status_ok(self.status_code):
            self._stop = self._status_failure()
            return True
        if not check.needs_body:
            self._stop = (None, "")
            return True
        self.content_length = parse_content_length(head)
        if self.content_length is not None and self.content_length > check.max_body_bytes:
            self._stop = self._too_large(f"Content-Length {self.content_length}")
            return True
        return False

    def _on_body(self, data: bytes) -> bool:
        if self.content_length is not None:
            data = data[:self.content_length - self.body_bytes]  # bytes past it are ignored
        if data:
            self.body_bytes += len(data)
            if self.body_bytes > self._check.max_body_bytes:
                self._stop = self._too_large(f"more than {self._check.max_body_bytes} bytes")
                return True
            if self._md5 is not None:
                self._md5.update(data)
            if self._body is not None:
                self._body += data
        return self._body_complete()

    def _body_complete(self) -> bool:
        return self.content_length is not None and self.body_bytes >= self.content_length

    def _status_failure(self) -> Verdict:
        ranges = status_text(self._check.url.status_codes)
        return (Failure.HTTP_STATUS, f"status {self.status_code} not in {ranges}")

    def _too_large(self, what: str) -> Verdict:
        return (Failure.TOO_LARGE, f"body of {what} is above the {self._check.max_body_bytes}"
                                   " byte bound")

    @property
    def digest(self) -> str | None:
        """Hex MD5 of the body so far (None when the url has no digest)."""
        return self._md5.hexdigest() if self._md5 is not None else None

    def verdict(self) -> Verdict:
        """Judge the response, once `feed` returned True or the server closed."""
        if self._stop is not None:
            return self._stop
        if self._head is not None:
            if not self._head:
                return (Failure.PROTOCOL, "connection closed without a response")
            return (Failure.PROTOCOL, "connection closed before the end of the header")
        url = self._check.url
        if url.digest is not None and self.digest != url.digest.lower():
            return (Failure.DIGEST, f"MD5 {self.digest} != {url.digest}")
        regex = self._check.regex
        if regex is not None and self._body is not None:
            matched = regex.matches(bytes(self._body))
            if matched == url.regex_no_match:
                said = "matched" if matched else "did not match"
                return (Failure.REGEX, f"regex {url.regex!r} {said}")
        return (None, "")
