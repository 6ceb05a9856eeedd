"""Tests for config/parser.py: the block tree, brace errors with their positions, includes
spliced into blocks, the shipped keepalived samples, speed, and fuzzing (never raises)."""

from __future__ import annotations

import glob
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcheck.config.parser import Statement, parse_file, parse_text
from fastcheck.errors import Diagnostics, Position, Severity

S = Statement


def parse(text: str, *, filename: str = "p.conf", base_dir: str | None = "",
          config_id: str = "main") -> tuple[tuple[Statement, ...], Diagnostics]:
    diagnostics = Diagnostics()
    tree = parse_text(text, filename=filename, config_id=config_id,
                      diagnostics=diagnostics, base_dir=base_dir)
    return tree, diagnostics


def shape(statements: tuple[Statement, ...] | None) -> object:
    """The tree without positions: (keyword, args…, [children]) nested."""
    if statements is None:
        return None
    return [(s.keyword, *s.args) if s.children is None else (s.keyword, *s.args, shape(s.children))
            for s in statements]


def clean(text: str, **kwargs: object) -> object:
    tree, diagnostics = parse(text, **kwargs)  # type: ignore[arg-type]
    assert [str(d) for d in diagnostics.items] == []
    return shape(tree)


def errors(diagnostics: Diagnostics) -> list[str]:
    return [str(d) for d in diagnostics.errors]


def walk(statements: tuple[Statement, ...]) -> Iterator[Statement]:
    for s in statements:
        yield s
        if s.children is not None:
            yield from walk(s.children)


# -- structure -------------------------------------------------------------------------

def test_statements_blocks_and_positions() -> None:
    text = "global_defs {\n  router_id lb1\n  enable_traps\n}\nempty {\n}\nleaf a b\n"
    tree, diagnostics = parse(text)
    assert not diagnostics.items
    assert tree == (
        S("global_defs", (), Position("p.conf", 1), (
            S("router_id", ("lb1",), Position("p.conf", 2)),
            S("enable_traps", (), Position("p.conf", 3)))),
        S("empty", (), Position("p.conf", 5), ()),
        S("leaf", ("a", "b"), Position("p.conf", 7)))
    assert tree[2].children is None and tree[1].children == ()


def test_open_brace_on_the_next_line() -> None:
    assert clean("virtual_server 1.2.3.4 80\n\n# comment\n{\n  delay_loop 6\n}\n") == [
        ("virtual_server", "1.2.3.4", "80", [("delay_loop", "6")])]


def test_everything_on_one_line() -> None:
    assert clean("a { b 1 } c { d { e } f } g\n") == [
        ("a", [("b", "1")]), ("c", [("d", [("e",)]), ("f",)]), ("g",)]


def test_tokens_after_open_brace_start_statements_and_glued_braces() -> None:
    assert clean("url{ path /x\n digest abc }\n") == [
        ("url", [("path", "/x"), ("digest", "abc")])]
    assert clean("a{b{c}}\n") == [("a", [("b", [("c",)])])]


def test_quoted_brace_is_an_argument() -> None:
    assert clean('regex "{" \'}\'\nx \\{\n') == [("regex", "{", "}"), ("x", "{")]


def test_nested_blocks_like_keepalived() -> None:
    text = """
virtual_server 10.0.0.1 80 {
    delay_loop 6
    real_server 192.168.1.2 80 {
        weight 1
        HTTP_GET {
            url {
              path /
              status_code 200
            }
            connect_timeout 3
        }
    }
}
"""
    assert clean(text) == [("virtual_server", "10.0.0.1", "80", [
        ("delay_loop", "6"),
        ("real_server", "192.168.1.2", "80", [
            ("weight", "1"),
            ("HTTP_GET", [("url", [("path", "/"), ("status_code", "200")]),
                          ("connect_timeout", "3")])])])]


def test_value_blocks_keep_their_lines() -> None:
    text = "notification_email {\n  a@b.c\n  d@e.f\n}\nvirtual_ipaddress { 1.1.1.1/24 dev eth0 }\n"
    assert clean(text) == [("notification_email", [("a@b.c",), ("d@e.f",)]),
                           ("virtual_ipaddress", [("1.1.1.1/24", "dev", "eth0")])]


def test_parameters_and_sequences_build_blocks() -> None:
    text = ("$RS= \\\nreal_server 10.0.0.${N} 80 { \\\n  weight ${N} \\\n}\n"
            "vs {\n  ~SEQ(N, 1, 2) $RS\n}\n")
    assert clean(text) == [("vs", [("real_server", "10.0.0.1", "80", [("weight", "1")]),
                                   ("real_server", "10.0.0.2", "80", [("weight", "2")])])]


# -- brace errors ----------------------------------------------------------------------

def test_open_brace_without_statement_is_an_error() -> None:
    tree, diagnostics = parse("a {\n}\n{\n  b\n}\nc\n")
    assert errors(diagnostics) == ["p.conf:3: '{' without a statement to open a block for"]
    assert shape(tree) == [("a", []), ("b",), ("c",)]


def test_open_brace_after_closed_block_is_an_error() -> None:
    _, diagnostics = parse("a { } { b }\n")
    assert errors(diagnostics) == ["p.conf:1: '{' without a statement to open a block for"]


def test_unmatched_close_brace_is_an_error_at_its_line() -> None:
    tree, diagnostics = parse("a {\n}\n}\nb\n  } }\n")
    assert errors(diagnostics) == ["p.conf:3: unmatched '}'", "p.conf:5: unmatched '}'",
                                   "p.conf:5: unmatched '}'"]
    assert shape(tree) == [("a", []), ("b",)]


def test_unclosed_blocks_are_errors_at_their_opening_lines() -> None:
    tree, diagnostics = parse("x\nouter 1 {\n  inner\n  {\n    leaf\n")
    assert errors(diagnostics) == [
        "p.conf:3: block 'inner' is never closed (missing '}' at end of input, p.conf:5)",
        "p.conf:2: block 'outer' is never closed (missing '}' at end of input, p.conf:5)"]
    assert shape(tree) == [("x",), ("outer", "1", [("inner", [("leaf",)])])]


def test_unclosed_stray_brace() -> None:
    _, diagnostics = parse("a\n}\n{\n")
    assert errors(diagnostics) == [
        "p.conf:2: unmatched '}'",
        "p.conf:3: '{' without a statement to open a block for",
        "p.conf:3: '{' is never closed (missing '}' at end of input, p.conf:3)"]


def test_brace_errors_point_into_included_files(tmp_path: Path) -> None:
    (tmp_path / "bad.conf").write_text("ok\n}\nopen {\n")
    main = tmp_path / "main.conf"
    main.write_text("include bad.conf\n")
    diagnostics = Diagnostics()
    parse_file(str(main), diagnostics=diagnostics)
    bad = tmp_path / "bad.conf"
    assert errors(diagnostics) == [
        f"{bad}:2: unmatched '}}'",
        f"{bad}:3: block 'open' is never closed (missing '}}' at end of input, {bad}:3)"]


# -- includes --------------------------------------------------------------------------

def test_include_inside_a_block_contributes_to_that_block(tmp_path: Path) -> None:
    (tmp_path / "rs").mkdir()
    (tmp_path / "rs" / "1.conf").write_text("real_server 1.1.1.1 80 {\n  weight 1\n}\n")
    (tmp_path / "rs" / "2.conf").write_text("real_server 1.1.1.2 80\n")
    main = tmp_path / "keepalived.conf"
    main.write_text("virtual_server 10.0.0.1 80 {\n  lb_algo rr\n  include rs/*.conf\n"
                    "  protocol TCP\n}\n")
    diagnostics = Diagnostics()
    tree = parse_file(str(main), config_id="x", diagnostics=diagnostics)
    assert not diagnostics.items
    assert shape(tree) == [("virtual_server", "10.0.0.1", "80", [
        ("lb_algo", "rr"), ("real_server", "1.1.1.1", "80", [("weight", "1")]),
        ("real_server", "1.1.1.2", "80"), ("protocol", "TCP")])]
    (vs,) = tree
    assert vs.children is not None
    assert [s.position for s in vs.children] == [
        Position(str(main), 2), Position(str(tmp_path / "rs" / "1.conf"), 1),
        Position(str(tmp_path / "rs" / "2.conf"), 1), Position(str(main), 4)]


def test_include_cycle_through_parse_file(tmp_path: Path) -> None:
    main, other = tmp_path / "main.conf", tmp_path / "other.conf"
    main.write_text("a {\n  include other.conf\n}\n")
    other.write_text("b\ninclude main.conf\n")
    diagnostics = Diagnostics()
    tree = parse_file(str(main), diagnostics=diagnostics)
    assert shape(tree) == [("a", [("b",)])]
    assert errors(diagnostics) == [f"{other}:2: include cycle: {main} -> {other} -> {main}"]


def test_parse_text_resolves_includes_against_filename_directory(tmp_path: Path) -> None:
    (tmp_path / "inc.conf").write_text("from_include\n")
    diagnostics = Diagnostics()
    tree = parse_text("include inc.conf\n", filename=str(tmp_path / "virtual.conf"),
                      config_id="x", diagnostics=diagnostics)
    assert shape(tree) == [("from_include",)] and not diagnostics.items


def test_missing_top_file(tmp_path: Path) -> None:
    diagnostics = Diagnostics()
    assert parse_file(str(tmp_path / "nope.conf"), diagnostics=diagnostics) == ()
    assert len(diagnostics.errors) == 1


# -- real configurations ---------------------------------------------------------------

SAMPLES = sorted(glob.glob("/usr/share/doc/keepalived/samples/keepalived.conf*"))


@pytest.mark.skipif(not SAMPLES, reason="keepalived samples are not installed")
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: Path(p).name)
@pytest.mark.parametrize("config_id", ["high", "low"])
def test_keepalived_samples_parse_cleanly(path: str, config_id: str) -> None:
    diagnostics = Diagnostics()
    tree = parse_file(path, config_id=config_id, diagnostics=diagnostics)
    assert [str(d) for d in diagnostics.items] == []
    assert tree and all(s.children is not None for s in tree if s.keyword.endswith("_defs"))


def generated_config(virtual_servers: int = 2000, real_servers: int = 20) -> str:
    out = ["global_defs {", "    router_id bench", "}"]
    for v in range(virtual_servers):
        a, b = divmod(v, 250)
        out += [f"# virtual server {v}", f"virtual_server 10.{a}.{b}.1 80 {{",
                "    delay_loop 6", "    lb_algo wrr", "    lb_kind NAT", "    protocol TCP"]
        for r in range(real_servers):
            out += [f"    real_server 192.168.{b}.{r + 1} 80 {{", "        weight 1",
                    "        TCP_CHECK {", "            connect_timeout 3", "        }", "    }"]
        out.append("}")
    return "\n".join(out) + "\n"


def test_large_configuration_is_fast() -> None:
    text = generated_config()
    assert text.count("\n") > 200_000
    diagnostics = Diagnostics()
    start = time.process_time()
    tree = parse_text(text, config_id="x", diagnostics=diagnostics)
    elapsed = time.process_time() - start
    assert not diagnostics.items
    assert len(tree) == 2001
    assert sum(1 for s in walk(tree) if s.keyword == "real_server") == 40_000
    assert elapsed < 2.0, f"parsing {text.count(chr(10))} lines took {elapsed:.2f}s"


# -- fuzzing ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fuzz"))


def check_never_raises(text: str, base_dir: str) -> None:
    diagnostics = Diagnostics()
    tree = parse_text(text, filename="fuzz.conf", config_id="main",
                      diagnostics=diagnostics, base_dir=base_dir)
    assert isinstance(tree, tuple)
    for s in walk(tree):
        assert isinstance(s, Statement) and isinstance(s.position, Position)
        assert isinstance(s.keyword, str) and all(isinstance(a, str) for a in s.args)
    for d in diagnostics.items:
        assert d.severity in Severity and isinstance(d.message, str)


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

PIECES = st.sampled_from([
    "{", "}", " ", "\t", "\n", "\n", "\"", "'", "\\", "#", "!", "@main ", "@^main ", "@x ",
    "$A=", "$B=", "$A", "${A}", "${B}", "$M=", "\\\n", "${_RANDOM 1 3}", "${_PWD}",
    "${_HASH}", "~SEQ(I, 1, 3) ", "~SEQx(J, 0, 2) ", "~LST({P,Q}, {1,2}) ", "~LST(", ")",
    "include ", "includea ", "includem ", "*.conf", "{a,b}", "x", "kw", "1", ",",
    "\\x41", "\\c", "\r", "\x00", "é", "\udcff"])


@FUZZ
@given(st.text())
def test_fuzz_any_text(empty_dir: str, text: str) -> None:
    check_never_raises(text, empty_dir)


@FUZZ
@given(st.binary())
def test_fuzz_bytes_surrogateescape(empty_dir: str, data: bytes) -> None:
    check_never_raises(data.decode("utf-8", errors="surrogateescape"), empty_dir)


@FUZZ
@given(st.binary())
def test_fuzz_bytes_replace(empty_dir: str, data: bytes) -> None:
    check_never_raises(data.decode("utf-8", errors="replace"), empty_dir)


@FUZZ
@given(st.lists(PIECES, max_size=60).map("".join))
def test_fuzz_keepalived_syntax(empty_dir: str, text: str) -> None:
    check_never_raises(text, empty_dir)
