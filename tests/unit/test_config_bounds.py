"""Hostile configurations end as a ConfigError with file:line, in bounded time and memory.

Numbers too long for int(), include trees that fan out, generators and parameters that
multiply: each must become a diagnostic, never another exception, a hang or a runaway
allocation. The cases that would hang or exhaust memory if a guard regressed run in a
child process with a timeout and an address-space limit, so a regression fails the test
instead of the suite; none of them asserts on time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcheck.config import lexer, params
from fastcheck.config.loader import BUG_MESSAGE, load_file, load_text
from fastcheck.errors import ConfigError, Diagnostic, Diagnostics, Position

HUGE = "9" * 5000                # past int()'s 4,300-digit limit
CHILD_TIMEOUT_S = 60             # generous: the cases below take seconds at most
CHILD_MEMORY = 1 << 30           # RLIMIT_AS of the child: 1 GiB

# Loads the file argv[2] (with load_file, or its text with load_text) under RLIMIT_AS and
# prints the outcome as JSON: the error diagnostics, or the exception that escaped.
_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
from fastcheck.config.loader import load_file, load_text
from fastcheck.errors import ConfigError
mode, path = sys.argv[1], sys.argv[2]
try:
    if mode == "file":
        load_file(path, config_id="h")
    else:
        with open(path, encoding="utf-8") as fh:
            load_text(fh.read(), filename="h.conf", config_id="h")
except ConfigError as error:
    out = {"outcome": "ConfigError", "diagnostics": [
        [d.position.file if d.position else None, d.position.line if d.position else None,
         d.message] for d in error.diagnostics]}
except BaseException as exc:
    out = {"outcome": type(exc).__name__, "message": str(exc)[:500]}
else:
    out = {"outcome": "loaded"}
print(json.dumps(out))
"""


def _in_child(mode: str, path: Path) -> list[tuple[str | None, int | None, str]]:
    """Load ``path`` in a bounded child process; returns the ConfigError's diagnostics."""
    done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(path), str(CHILD_MEMORY)],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["outcome"] == "ConfigError", out
    return [(file, line, message) for file, line, message in out["diagnostics"]]


def _hostile_text(tmp_path: Path, text: str) -> list[tuple[str | None, int | None, str]]:
    path = tmp_path / "h.conf"
    path.write_text(text)
    return _in_child("text", path)


def _errors(text: str) -> list[Diagnostic]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, filename="n.conf", config_id="h")
    return caught.value.diagnostics


def _at(diagnostics: list[Diagnostic], line: int, fragment: str) -> Diagnostic:
    """The diagnostic at n.conf:``line`` containing ``fragment`` (there must be one)."""
    found = [d for d in diagnostics
             if d.position == Position("n.conf", line) and fragment in d.message]
    assert found, [str(d) for d in diagnostics]
    return found[0]


# -- numbers too long for int() ---------------------------------------------------------

def _vs(body: str, header: str = "10.0.0.1 80") -> str:
    return (f"virtual_server {header} {{\n    lb_algo rr\n    protocol TCP\n"
            f"    real_server 10.0.0.2 80 {{\n{body}\n    }}\n}}\n")


@pytest.mark.parametrize(("text", "line", "fragment"), [
    (f"~SEQ(i,{HUGE},1) x\n", 1, "is out of range -9223372036854775808..9223372036854775807"),
    (f"~SEQ(i,1,{HUGE}) x\n", 1, "is out of range"),
    (f"~SEQ(i,0,1,-{HUGE}) x\n", 1, "is out of range"),
    (f"~SEQ(i,0x{'f' * 5000}) x\n", 1, "is out of range"),
    (f"~SEQx(i,0{'7' * 5000}) x\n", 1, "is out of range"),
    ("~SEQ(i,0,9223372036854775808) x\n", 1, "is out of range"),
    (f"x\n~SEQ(i,${{_RANDOM 1 {HUGE}}}) x\n", 2, "a number of more than 18 digits"),
    (f"x ${{_RANDOM {HUGE}}}\n", 1, "a number of more than 18 digits"),
    (_vs(f"        weight {HUGE}"), 5, "weight: value '9999"),
    (_vs(f"        weight -{HUGE}"), 5, "is out of range"),
    (_vs("        weight 1_000"), 5, "is not an integer"),
    (_vs("        weight \u0663"), 5, "is not an integer"),       # ARABIC-INDIC DIGIT THREE
    (_vs(f"        connect_timeout {HUGE}"), 5, "connect_timeout: timer '9999"),
    (_vs(f"        TCP_CHECK {{\n            connect_port {HUGE}\n        }}"), 6,
     "connect_port: port '9999"),
    (_vs("        weight 1", header=f"10.0.0.1 {HUGE}"), 1, "port '9999"),
    (_vs("        weight 1", header=f"fwmark {HUGE}"), 1, "fwmark '9999"),
    (f"global_defs {{\n    lvs_timeouts tcp {HUGE}\n}}\n", 2, "tcp timeout '9999"),
    (_vs(f"        HTTP_GET {{\n            url {{\n                path /\n"
         f"                status_code {HUGE}-{HUGE}\n            }}\n        }}"), 8,
     "status code '9999"),
    (f"virtual_server_group g {{\n    10.0.0.1-{HUGE} 80\n}}\n", 2,
     "is out of range 0..255"),
    (f"virtual_server_group g {{\n    fe80::1-{'f' * 5000} 80\n}}\n", 2,
     "is out of range 0..65535"),
    (f"virtual_server_group g {{\n    10.0.0.0/{HUGE} 80\n}}\n", 2, "is not an address block"),
    (f"virtual_server_group g {{\n    fwmark {HUGE}\n}}\n", 2, "fwmark '9999"),
    (f"local_address_group l {{\n    10.0.0.1-{HUGE}\n}}\n", 2, "is out of range 0..255"),
    (_vs("        weight 1").replace("protocol TCP", f"protocol TCP\n    "
                                     f"persistence_granularity {HUGE}"), 4,
     "prefix length '9999"),
])
def test_long_and_malformed_numbers_are_diagnosed(text: str, line: int, fragment: str) -> None:
    diagnostic = _at(_errors(text), line, fragment)
    assert len(diagnostic.message) < 400          # the number is quoted cut short


def test_numbers_at_the_ends_of_the_ranges_are_accepted() -> None:
    text = "".join(f"~SEQ(i,{low},{high}) ${{i}}\n" for low, high in [
        ("9223372036854775806", "9223372036854775807"),
        ("-9223372036854775808", "-9223372036854775807"),
        ("0x7ffffffffffffffe", "0x7fffffffffffffff"),
        ("00000000000000000000000000000000001", "2")])
    diagnostics = Diagnostics()
    lines = list(lexer.lex_text(text, filename="n.conf", config_id="h",
                                diagnostics=diagnostics))
    assert diagnostics.items == []
    assert [ln.tokens for ln in lines] == [
        ("9223372036854775806",), ("9223372036854775807",), ("-9223372036854775808",),
        ("-9223372036854775807",), ("9223372036854775806",), ("9223372036854775807",),
        ("1",), ("2",)]
    # leading zeros count towards int()'s 4,300-digit limit, but not towards ours
    zeros = "0" * 5000
    config, _ = load_text(_vs(f"        weight {zeros}1"), config_id="h")
    assert config.virtual_servers[0].real_servers[0].weight == 1
    lines = list(lexer.lex_text(f"x ${{_RANDOM {zeros}3 {zeros}3}}\n~SEQ(i,{zeros}1,0x{zeros}2)"
                                " $i\n", config_id="h", diagnostics=diagnostics))
    assert diagnostics.items == []
    assert [ln.tokens for ln in lines] == [("x", "3"), ("1",), ("2",)]


# -- include fan-out --------------------------------------------------------------------

def test_doubling_include_tree_stops_at_the_budget(tmp_path: Path) -> None:
    # d0 includes d1 twice, d1 includes d2 twice, … 30 levels: 2^30 files opened unbounded.
    for level in range(30):
        (tmp_path / f"d{level}.conf").write_text(f"include d{level + 1}.conf\n" * 2)
    (tmp_path / "d30.conf").write_text("global_defs {\n    router_id leaf\n}\n")
    diagnostics = _in_child("file", tmp_path / "d0.conf")
    assert len(diagnostics) == 1, diagnostics
    file, line, message = diagnostics[0]
    assert message.endswith(f"more than {lexer.MAX_INCLUDED_FILES} files included in this "
                            "configuration; stopped")
    assert file is not None and line is not None
    assert Path(file).read_text().splitlines()[line - 1].startswith("include ")


def test_include_budget_counts_every_opening(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexer, "MAX_INCLUDED_FILES", 5)
    (tmp_path / "leaf.conf").write_text("global_defs {\n    router_id leaf\n}\n")
    main = tmp_path / "main.conf"
    main.write_text("include leaf.conf\n" * 5 + "include leaf.conf\ninclude leaf.conf\n")
    with pytest.raises(ConfigError) as caught:
        load_file(str(main), config_id="h")
    assert [str(d) for d in caught.value.diagnostics] == [
        f"{main}:6: include 'leaf.conf': more than 5 files included in this configuration; "
        "stopped"]


@pytest.mark.parametrize(("limit", "value", "message"), [
    ("MAX_LINES_READ", 20, "more than 20 lines read in this configuration; stopped"),
    ("MAX_BYTES_READ", 300, "more than 300 bytes read in this configuration; stopped"),
])
def test_read_budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str,
                      value: int, message: str) -> None:
    monkeypatch.setattr(lexer, limit, value)
    (tmp_path / "part.conf").write_text("global_defs {\n    router_id a\n}\n" * 2)  # 7 lines
    main = tmp_path / "main.conf"
    main.write_text("include part.conf\n" * 10)
    with pytest.raises(ConfigError) as caught:
        load_file(str(main), config_id="h")
    [error] = caught.value.diagnostics
    assert error.message == f"include 'part.conf': {message}"
    assert error.position is not None and error.position.file == str(main)


def test_main_file_over_the_read_budget(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexer, "MAX_BYTES_READ", 10)
    main = tmp_path / "main.conf"
    main.write_text("global_defs {\n    router_id a\n}\n")
    with pytest.raises(ConfigError) as caught:
        load_file(str(main), config_id="h")
    assert [str(d) for d in caught.value.diagnostics] == [
        f"configuration file '{main}': more than 10 bytes read in this configuration; "
        "stopped"]


def test_include_depth_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexer, "MAX_INCLUDE_DEPTH", 3)
    for level in range(6):
        (tmp_path / f"c{level}.conf").write_text(f"include c{level + 1}.conf\n")
    (tmp_path / "c6.conf").write_text("")
    with pytest.raises(ConfigError) as caught:
        load_file(str(tmp_path / "c0.conf"), config_id="h")
    assert [str(d) for d in caught.value.diagnostics] == [
        f"{tmp_path}/c3.conf:1: include 'c4.conf': includes nest more than 3 deep; stopped"]


def test_overlong_include_pattern_and_brace_explosion() -> None:
    diagnostics = _errors(f"include {'a' * 5000}\ninclude {'{a,b}' * 12}{'{x}' * 50}"
                          f"{'y' * 3000}\n")
    _at(diagnostics, 1, "longer than 4096 characters")
    _at(diagnostics, 2, "brace expansion is too large")


# -- generators and parameters that multiply --------------------------------------------

def _doubling_definitions(levels: int, braced: bool = False) -> list[str]:
    ref = "${{A{}}}" if braced else "$A{}"
    return ["$A0=x"] + [f"$A{i}={ref.format(i - 1)} {ref.format(i - 1)}"
                        for i in range(1, levels + 1)]


@pytest.mark.parametrize(("lines", "line", "message"), [
    (["~SEQ(i,0,100000000) global_defs { router_id $i }"], 1,
     f"~SEQ/~LST and parameters expand to more than {lexer.MAX_EXPANDED_TOKENS} words in "
     "this configuration; stopped"),
    (["~SEQ(a,0,99999) ~SEQ(b,0,99999) x"], 1,
     f"~SEQ/~LST and multi-line parameters expand to more than {lexer.MAX_EXPANDED_LINES} "
     "lines in this configuration; stopped"),
    (["x", "~SEQ(i,0,100000000) $X=$i"], 2,
     f"~SEQ/~LST and multi-line parameters expand to more than {lexer.MAX_EXPANDED_LINES} "
     "lines in this configuration; stopped"),
    (["~LST(i,a,b) ~SEQ(j,0,9223372036854775807) ~SEQ(k,-9223372036854775808,0) x"], 1,
     f"~SEQ/~LST and multi-line parameters expand to more than {lexer.MAX_EXPANDED_LINES} "
     "lines in this configuration; stopped"),
    (["$W=" + "w" * 60_000, "~SEQ(i,0,100000000) x $W"], 2,
     f"~SEQ/~LST and parameters expand to more than {lexer.MAX_EXPANDED_CHARS} characters "
     "in this configuration; stopped"),
    # one use of a definition that doubles at each of 40 levels
    ([*_doubling_definitions(40), "global_defs {", "    router_id $A40", "}"], 43,
     "parameter substitution does not terminate (a definition refers to itself?)"),
    ([*_doubling_definitions(40, braced=True), "router_id ${A40}"], 42,
     "parameter substitution does not terminate (a definition refers to itself?)"),
    # a chain of 9,990 definitions used again and again: cheap lines, costly in all
    (["$A0=x", *(f"$A{i}=$A{i - 1}" for i in range(1, 9990)), *["router_id $A9989"] * 500],
     None, f"parameter substitution in this configuration exceeds "
     f"{params.MAX_TOTAL_SUBSTITUTIONS} replacements or {params.MAX_TOTAL_COPIED} "
     "characters; stopped"),
], ids=["seq-global-defs", "seq-product", "seq-definitions", "seq-lst-product",
        "seq-long-line", "doubling-var", "doubling-braced-var", "definition-chain"])
def test_runaway_expansion_stops(tmp_path: Path, lines: list[str], line: int | None,
                                 message: str) -> None:
    diagnostics = _hostile_text(tmp_path, "\n".join(lines) + "\n")
    found = [(file, at) for file, at, text in diagnostics if text == message]
    assert found, diagnostics[:5]
    file, at = found[-1]
    assert file == "h.conf"
    if line is not None:
        assert at == line
    assert len(diagnostics) < 100


def test_doubling_multiline_definitions_stop(tmp_path: Path) -> None:
    # $M1 is two uses of $M0, $M2 two of $M1, … so $M40 is 2^40 real_server lines
    lines = ["$M0=\\", "real_server 10.0.0.2 80 {", ""]
    for i in range(1, 41):
        lines += [f"$M{i}=\\", f"$M{i - 1} \\", f"$M{i - 1}", ""]
    lines += ["virtual_server 10.0.0.1 80 {", "$M40", "}"]
    use = lines.index("$M40") + 1
    diagnostics = _hostile_text(tmp_path, "\n".join(lines) + "\n")
    assert diagnostics == [("h.conf", use, "~SEQ/~LST and parameters expand to more than "
                            f"{lexer.MAX_EXPANDED_TOKENS} words in this configuration; "
                            "stopped")]


def test_large_farm_is_inside_every_budget() -> None:
    farm = Path(__file__).parents[2] / "conf" / "large-farm.conf"
    config, _ = load_file(str(farm), config_id="h")
    assert sum(len(vs.real_servers) for vs in config.virtual_servers) == 10_000


# -- anything at all --------------------------------------------------------------------

_WORDS = ["~SEQ(", "~SEQx(", "~LST(", ")", ",", "(", "$X=", "$Y=", "$M=\\", "$X", "${X}",
          "$M", "${_RANDOM", "${_RANDOM 1 2}", "{", "}", "include", "includea", "a.conf",
          "b.conf", "*.conf", "{a,b}.conf", "\\", "i", "X", "-", "+", "0x", "_", ".", "/",
          "\u0663", '"', "#", "@h", "@^h", "global_defs", "router_id", "virtual_server",
          "real_server", "weight", "10.0.0.1", "fe80::1", "virtual_server_group",
          "local_address_group", "fwmark", "delay_loop", "TCP_CHECK", "connect_port",
          "persistence_granularity", "lvs_timeouts", "tcp", "HTTP_GET", "url", "path",
          "status_code", "protocol", "TCP", "lb_algo", "rr", "quorum"]
_KEYWORDS_WITH_NUMBERS = ["weight", "delay_loop", "connect_port", "connect_timeout", "fwmark",
                          "persistence_granularity", "lvs_timeouts tcp", "status_code",
                          "quorum", "hysteresis", "retry", "persistence_timeout",
                          "virtual_server 10.0.0.1", "virtual_server fwmark",
                          "real_server 10.0.0.2", "sorry_server 10.0.0.3"]
# Numbers of random length: short ones, and ones around and past int()'s 4,300 digits.
_DIGITS = st.builds(lambda first, rest: first + rest, st.sampled_from("0123456789"),
                    st.one_of(st.text("0123456789", max_size=25),
                              st.integers(4290, 6000).map(lambda n: "9" * n)))
_NUMBER = st.builds(lambda prefix, digits: prefix + digits,
                    st.sampled_from(["", "", "", "-", "+", "0x", "0", "00"]), _DIGITS)
# Phrases that put a number where one is read: generators, parameters, keyword values,
# address ranges (an unstructured soup reaches those too rarely).
_PHRASE = st.one_of(
    st.builds("~SEQ(i,{}) ".format, _NUMBER),
    st.builds("~SEQx(i,{},{}) ".format, _NUMBER, _NUMBER),
    st.builds("~SEQ(i,{},{},{}) ".format, _NUMBER, _NUMBER, _NUMBER),
    st.builds("${{_RANDOM {}}}".format, _DIGITS),
    st.builds("${{_RANDOM {} {}}}".format, _DIGITS, _DIGITS),
    st.builds("\n{} {}\n".format, st.sampled_from(_KEYWORDS_WITH_NUMBERS), _NUMBER),
    st.builds("\n10.0.0.1-{} 80\n".format, _NUMBER),
    st.builds("\nfe80::1-{}\n".format, _NUMBER),
    st.builds("\n10.0.0.0/{}\n".format, _NUMBER),
)
_PIECE = st.one_of(_PHRASE, st.sampled_from(_WORDS), _PHRASE, _NUMBER, _PHRASE,
                   st.sampled_from([" ", " ", "\n"]))
_OPENINGS = ["", "virtual_server 10.0.0.1 80 {\nreal_server 10.0.0.2 80 {\n",
             "virtual_server_group g {\n", "local_address_group l {\n", "global_defs {\n",
             "virtual_server 10.0.0.1 80 {\nreal_server 10.0.0.2 80 {\nHTTP_GET {\nurl {\n"]
_TEXT = st.builds(lambda opening, pieces: opening + "".join(pieces) + "\n}" *
                  opening.count("{"), st.sampled_from(_OPENINGS),
                  st.lists(_PIECE, max_size=60))


@pytest.fixture(scope="module")
def include_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("includes")
    (directory / "a.conf").write_text("include a.conf\ninclude b.conf\n$X=1\n")
    (directory / "b.conf").write_text("global_defs {\n    router_id b\n}\n"
                                      "~SEQ(i,0,3) include b.conf\n")
    return directory


@pytest.fixture
def small_budgets() -> Iterator[None]:
    """Budgets small enough that a random input reaching one costs milliseconds."""
    with mock.patch.multiple(lexer, MAX_EXPANDED_LINES=2000, MAX_EXPANDED_TOKENS=5000,
                             MAX_EXPANDED_CHARS=100_000, MAX_INCLUDED_FILES=40), \
            mock.patch.multiple(params, MAX_TOTAL_SUBSTITUTIONS=20_000,
                                MAX_TOTAL_COPIED=2_000_000):
        yield


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=_TEXT)
def test_any_configish_text_is_loaded_or_a_config_error(text: str, include_dir: Path,
                                                         small_budgets: None) -> None:
    try:
        load_text(text, filename="f.conf", config_id="h", base_dir=str(include_dir))
    except ConfigError as error:
        assert error.diagnostics
        assert not any(BUG_MESSAGE in d.message for d in error.diagnostics)
