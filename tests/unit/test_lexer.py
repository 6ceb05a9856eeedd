"""Tests for config/lexer.py: comments, quoting, braces, includes, @conditionals,
$parameters, ~SEQ/~LST, and the positions every line carries."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest

from fastcheck.config.lexer import (
    Line,
    brace_expand,
    default_config_id,
    lex_file,
    lex_text,
    tokenize,
)
from fastcheck.errors import Diagnostics, Position, Severity


def lex(text: str, *, config_id: str = "main", filename: str = "t.conf",
        base_dir: str | None = "", seed: int | None = None) -> tuple[list[Line], Diagnostics]:
    diagnostics = Diagnostics()
    rng = random.Random(seed) if seed is not None else None
    lines = list(lex_text(text, filename=filename, config_id=config_id,
                          diagnostics=diagnostics, base_dir=base_dir, rng=rng))
    return lines, diagnostics


def tokens(text: str, **kwargs: object) -> list[tuple[str, ...]]:
    """Token tuples of every line; the text must lex without any diagnostic."""
    lines, diagnostics = lex(text, **kwargs)  # type: ignore[arg-type]
    assert [str(d) for d in diagnostics.items] == []
    return [line.tokens for line in lines]


def words(text: str, **kwargs: object) -> list[str]:
    return [" ".join(t) for t in tokens(text, **kwargs)]


def messages(diagnostics: Diagnostics) -> list[str]:
    return [str(d) for d in diagnostics.items]


# -- comments, whitespace, braces ------------------------------------------------------

def test_comments_start_anywhere_outside_quotes() -> None:
    text = ("# full line\n! bang line\nrouter_id a # trailing\nb ! trailing\n"
            "  \t \n c d#glued\n")
    assert tokens(text) == [("router_id", "a"), ("b",), ("c", "d")]


def test_comment_characters_inside_quotes_and_escaped_are_text() -> None:
    text = "a \"x # y\" 'p ! q'\nb \\#hash \\!bang\n"
    assert tokens(text) == [("a", "x # y", "p ! q"), ("b", "#hash", "!bang")]


def test_whitespace_and_crlf() -> None:
    assert tokens("a\tb  c\r\n\r\nd\f e\x0b\r\n") == [("a", "b", "c"), ("d", "e")]


def test_braces_are_tokens_even_when_glued() -> None:
    assert tokens("url{\n}}\na{b}c\n{x\n") == [
        ("url", "{"), ("}", "}"), ("a", "{", "b", "}", "c"), ("{", "x")]


def test_positions_are_file_and_line() -> None:
    lines, _ = lex("a\n\n# c\n  b {\n}\n", filename="k.conf")
    assert [(ln.file, ln.line) for ln in lines] == [("k.conf", 1), ("k.conf", 4), ("k.conf", 5)]
    assert lines[1].position == Position("k.conf", 4)


# -- quoting and escapes ---------------------------------------------------------------

def test_quoted_string_is_one_token_without_quotes() -> None:
    assert tokens('misc_path "/bin/check arg1  arg2" x\n') == [
        ("misc_path", "/bin/check arg1  arg2", "x")]
    assert tokens("script 'a \"b\" c'\n") == [("script", 'a "b" c')]
    assert tokens('script "bash -c \'</dev/tcp/127.0.0.1/80\'"\n') == [
        ("script", "bash -c '</dev/tcp/127.0.0.1/80'")]


def test_quotes_concatenate_with_adjacent_text() -> None:
    # keepalived.conf(5): ´abcd" efg h jkl "mnop´ is the single string ´abcd efg h jkl mnop´
    assert tokens('abcd" efg h jkl "mnop\n') == [("abcd efg h jkl mnop",)]
    assert tokens('abcd "efg h jkl" mnop\n') == [("abcd", "efg h jkl", "mnop")]


def test_empty_quoted_string_is_an_empty_token() -> None:
    assert tokens('a "" b\n') == [("a", "", "b")]


def test_quoted_text_is_literal_as_in_keepalived_2_2_7() -> None:
    # The man page lists C escapes, but keepalived 2.2.7 passes quoted text through, and
    # regexes depend on it: only an escaped quote is special.
    text = r"""regex "^OK\s+\d{3}\\" "\n\x41" "say \"hi\"" 'it\'s\t'""" + "\n"
    assert tokens(text) == [("regex", "^OK\\s+\\d{3}\\\\", "\\n\\x41", 'say "hi"', "it's\\t")]


def test_escapes_outside_quotes() -> None:
    assert tokens('a\\"b \\\'c \\\\d \\{ e\\}\n') == [('a"b', "'c", "\\d", "{", "e}")]
    # any other backslash is kept, so unquoted regexes and the like survive
    assert tokens("regex ^a\\.b\\d+$\n") == [("regex", "^a\\.b\\d+$")]


def test_quoted_or_escaped_brace_is_never_structure() -> None:
    lines, _ = lex('path "{" \'}\' \\{ { "x}"\n')
    (line,) = lines
    assert line.tokens == ("path", "{", "}", "{", "{", "x}")
    assert line.literal == frozenset({1, 2, 3})


def test_tokenize_reports_literal_indices() -> None:
    assert tokenize('a "{" }') == (("a", "{", "}"), frozenset({1}))
    assert tokenize("plain words") == (("plain", "words"), frozenset())


def test_unterminated_quote_is_an_error_and_lexing_goes_on() -> None:
    lines, diagnostics = lex('a "open # not a comment\nb\n', filename="q.conf")
    assert [ln.tokens for ln in lines] == [("a", "open # not a comment"), ("b",)]
    assert messages(diagnostics) == ['q.conf:1: unterminated " quote']


# -- conditional lines -----------------------------------------------------------------

def test_conditional_lines() -> None:
    text = ("@main router_id main_router\n@backup router_id backup_router\n"
            "@^main peer 1.2.3.4\n@^backup peer 1.2.3.5\n@main\n@main\tx {\n")
    assert words(text, config_id="main") == ["router_id main_router", "peer 1.2.3.5", "x {"]
    assert words(text, config_id="backup") == ["router_id backup_router", "peer 1.2.3.4"]
    assert words(text, config_id="other") == ["peer 1.2.3.4", "peer 1.2.3.5"]


def test_default_config_id_is_the_short_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_config_id() == socket.gethostname().split(".")[0]
    monkeypatch.setattr("fastcheck.config.lexer.default_config_id", lambda: "nodeA")
    diagnostics = Diagnostics()
    lines = lex_text("@nodeA yes\n@nodeB no\n", diagnostics=diagnostics)
    assert [ln.tokens for ln in lines] == [("yes",)]


# -- parameters ------------------------------------------------------------------------

def test_parameter_definition_and_use() -> None:
    text = "$A=1\n$B =two words\nx $A ${A}0 $A, ($A) $B\n$E=\ny $E z\n"
    assert words(text) == ["x 1 10 1, (1) two words", "y z"]


def test_definition_lines_vanish_and_do_not_need_braces() -> None:
    assert tokens("  $PRIORITY=240\npriority $PRIORITY\n") == [("priority", "240")]


def test_undefined_parameters_stay_as_written() -> None:
    text = "script ${UNDEF} $UNDEF x$NOPE.y ${UNDEF}tail\n"
    assert tokens(text) == [("script", "${UNDEF}", "$UNDEF", "x$NOPE.y", "${UNDEF}tail")]


def test_bare_reference_needs_a_terminator() -> None:
    assert tokens("$A=1\n$A.b $Ab ${A}.b\n") == [("$A.b", "$Ab", "1.b")]


def test_substitution_is_recursive_and_at_use_time() -> None:
    text = ("$ADDRESS_BASE=10.2.${ADDRESS_BASE_SUB}\n$ADDRESS_BASE_SUB=0\n"
            "${ADDRESS_BASE}.100/32\n$ADDRESS_BASE_SUB=10\n${ADDRESS_BASE}.100/32\n")
    assert words(text) == ["10.2.0.100/32", "10.2.10.100/32"]


def test_substitution_inside_quotes_and_with_quotes() -> None:
    assert tokens('$D=/opt\n$S="a b"\nx "${D}/run ${D}" $S "$D/x"\n') == [
        ("x", "/opt/run /opt", "a b", "$D/x")]


def test_parameter_with_conditional_value() -> None:
    text = "@main $PRIORITY=240\n@backup $PRIORITY=200\n$IF_MAIN=@main\n" \
           "priority $PRIORITY\n$IF_MAIN state MASTER\n"
    assert words(text, config_id="main") == ["priority 240", "state MASTER"]
    assert words(text, config_id="backup") == ["priority 200"]


def test_multiline_definition() -> None:
    text = ("$INSTANCE= \\\nvrrp_instance VI_${NUM} { \\\n    interface eth0.${NUM} \\\n"
            "    @high priority 130 \\\n    @low priority 120 \\\n}\n"
            "$NUM=0\n$INSTANCE\n$NUM=1\n${INSTANCE}\n")
    assert words(text, config_id="low") == [
        "vrrp_instance VI_0 {", "interface eth0.0", "priority 120", "}",
        "vrrp_instance VI_1 {", "interface eth0.1", "priority 120", "}"]


def test_multiline_expansion_positions_are_the_use_line() -> None:
    lines, _ = lex("$M=a \\\nb\nx\n$M\n", filename="m.conf")
    assert [(ln.tokens, ln.line) for ln in lines] == [(("x",), 3), (("a",), 4), (("b",), 4)]


def test_nested_multiline_definitions() -> None:
    text = ("$RS= \\\nreal_server 192.168.${VS_NUM}.${RS_NUM} 80 { \\\n    weight 1 \\\n}\n"
            "$VS= \\\nvirtual_server 10.0.${VS_NUM}.4 80 { \\\n    $RS_NUM=1 \\\n    $RS \\\n"
            "    $RS_NUM=2 \\\n    $RS \\\n}\n$VS_NUM=0\n$VS\n")
    assert words(text) == [
        "virtual_server 10.0.0.4 80 {",
        "real_server 192.168.0.1 80 {", "weight 1", "}",
        "real_server 192.168.0.2 80 {", "weight 1", "}",
        "}"]


def test_multiline_definition_rules_for_blank_and_comment_lines() -> None:
    # whitespace-only and comment-only lines are skipped; an empty line ends it (keepalived)
    text = "$M=a \\\n   \n# note\nb \\\n\nafter\nuse $M\n"
    assert words(text) == ["after", "use a", "b"]


def test_multiline_parameter_only_at_end_of_line() -> None:
    lines, diagnostics = lex("$M=a \\\nb\nx $M y\n", filename="m.conf")
    assert [ln.tokens for ln in lines] == [("x", "$M", "y")]
    assert messages(diagnostics) == ["m.conf:3: warning: multi-line parameter $M can only "
                                     "be used at the end of a line; left as written"]


@pytest.mark.parametrize("definition", ["$A=${A}", "$A=${A}${A}", "$A=x $A"])
def test_self_referencing_parameter_is_an_error_not_a_hang(definition: str) -> None:
    lines, diagnostics = lex(f"{definition}\nuse ${{A}}\nnext\n", filename="r.conf")
    assert lines[-1].tokens == ("next",)
    assert messages(diagnostics) == ["r.conf:2: parameter substitution does not terminate "
                                     "(a definition refers to itself?)"]


def test_self_referencing_multiline_parameter_is_an_error_not_a_hang() -> None:
    lines, diagnostics = lex("$M=a \\\n$M\n$M\n", filename="r.conf")
    assert {ln.tokens for ln in lines} == {("a",), ("$M",)}
    assert messages(diagnostics) == ["r.conf:3: parameter $M nests too deeply"]


def test_predefined_parameters(tmp_path: Path) -> None:
    text = "${_INSTANCE} $_INSTANCE\n${_PWD}/x\n${_HASH}not_a_comment ${_BANG}x\n"
    assert tokens(text, config_id="lb1", base_dir=str(tmp_path)) == [
        ("lb1", "lb1"), (f"{tmp_path}/x",), ("#not_a_comment", "!x")]


def test_pwd_of_a_relative_base_is_absolute() -> None:
    assert tokens("${_PWD}\n", base_dir="") == [(os.getcwd(),)]


def test_predefined_parameters_can_be_overridden() -> None:
    assert tokens("$_HASH=h\n${_HASH}\n") == [("h",)]


def test_random_parameter() -> None:
    text = "".join("${_RANDOM 5 9} ${_RANDOM 32760} ${_RANDOM}\n" for _ in range(50))
    for a, b, c in tokens(text, seed=7):
        assert 5 <= int(a) <= 9 and 32760 <= int(b) <= 32767 and 0 <= int(c) <= 32767
    assert tokens(text, seed=7) == tokens(text, seed=7)
    # parameters are only for definitions that take them
    assert tokens("$A=1\n${A 2}\n") == [("${A 2}",)]


def test_random_with_min_above_max_is_an_error() -> None:
    lines, diagnostics = lex("x ${_RANDOM 9 5}\n")
    assert lines[0].tokens == ("x", "9")
    assert [d.severity for d in diagnostics.items] == [Severity.ERROR]


# -- ~SEQ and ~LST ---------------------------------------------------------------------

def test_seq() -> None:
    assert words("~SEQ(SUBNET, 0, 3) ip_address 10.0.${SUBNET}.1\n") == [
        f"ip_address 10.0.{i}.1" for i in range(4)]
    assert words("~SEQ(I, 3, 1) i${I}\n~SEQ(J,0,2,5) j$J\n~SEQ(K, 2) k$K\n~SEQ(L,-2) l$L\n") == [
        "i3", "i2", "i1", "j0", "j2", "j4", "k1", "k2", "l-1", "l-2"]


def test_seqx_is_hexadecimal() -> None:
    expected = [f"ip_address fe80::20:{h}:1" for h in ("90", "a0", "b0", "c0")]
    assert words("~SEQx(SUBNET, 144, 16, 192) ip_address fe80::20:${SUBNET}:1\n") == expected
    assert words("~SEQx(SUBNET, 0x90, 0x10, 0xc0) ip_address fe80::20:${SUBNET}:1\n") == expected


def test_several_seqs_on_a_line_nest_in_order() -> None:
    assert words("~SEQ(A, 1, 2) ~SEQ(B, 1, 3) ${A}.${B}\n") == [
        "1.1", "1.2", "1.3", "2.1", "2.2", "2.3"]


def test_seq_with_multiline_parameter_and_positions() -> None:
    text = "$BLOCK= \\\nvs 10.0.${N}.1 { \\\n}\n~SEQ(N, 1, 2) $BLOCK\n"
    lines, diagnostics = lex(text, filename="s.conf")
    assert not diagnostics.items
    assert [(" ".join(ln.tokens), ln.line) for ln in lines] == [
        ("vs 10.0.1.1 {", 4), ("}", 4), ("vs 10.0.2.1 {", 4), ("}", 4)]


def test_seq_parameters_are_substituted() -> None:
    assert words("$MAX=3\n~SEQ(I, 2, ${MAX}) i$I\n") == ["i2", "i3"]


@pytest.mark.parametrize("line", ["~SEQ(I, 1, 0, 3) x", "~SEQ(I, 5, 1, 3) x", "~SEQ(I) x",
                                  "~SEQ(1I, 3) x", "~SEQ(I, a) x", "~SEQ(I, 1, 3 x",
                                  "~SEQx(I, -1, 3) x", "~LST(V) x", "~LST({A,B}, 1, 2) x"])
def test_invalid_generators_are_errors(line: str) -> None:
    lines, diagnostics = lex(f"{line}\nnext\n", filename="g.conf")
    assert [ln.tokens for ln in lines] == [("next",)]
    assert [(d.position, d.severity) for d in diagnostics.items] == [
        (Position("g.conf", 1), Severity.ERROR)]


def test_lst() -> None:
    assert words("~LST(V, p1, p2, p3) x${V}\n") == ["xp1", "xp2", "xp3"]
    assert words("~LST({IP, IP1}, {10,1},{20,4},{5,6},{12,8}) 192.168.${IP}.${IP1}\n") == [
        "192.168.10.1", "192.168.20.4", "192.168.5.6", "192.168.12.8"]


def test_nested_lst_and_lst_with_seq() -> None:
    assert words("~LST(IP, 1, 2) ~LST(IP1, 5,6) 192.169.${IP}.${IP1}\n") == [
        "192.169.1.5", "192.169.1.6", "192.169.2.5", "192.169.2.6"]
    assert words("~LST({IP, IP1}, {10,1},{20,4}) ~SEQ(IP2,168,2,170) "
                 "192.${IP2}.${IP}.${IP1}\n") == [
        "192.168.10.1", "192.170.10.1", "192.168.20.4", "192.170.20.4"]


# -- includes --------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def lex_path(path: Path, config_id: str = "main") -> tuple[list[Line], Diagnostics]:
    diagnostics = Diagnostics()
    return list(lex_file(str(path), config_id=config_id, diagnostics=diagnostics)), diagnostics


def test_include_glob_sorted_relative_to_including_file(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", "first\ninclude conf.d/*.conf\nlast\n")
    write(tmp_path / "conf.d" / "b.conf", "b1\n")
    write(tmp_path / "conf.d" / "a.conf", "a1\n\na3\n")
    write(tmp_path / "conf.d" / "skip.txt", "no\n")
    (tmp_path / "conf.d" / "dir.conf").mkdir()
    lines, diagnostics = lex_path(main)
    assert not diagnostics.items
    assert [(ln.tokens[0], ln.file, ln.line) for ln in lines] == [
        ("first", str(main), 1),
        ("a1", str(tmp_path / "conf.d" / "a.conf"), 1),
        ("a3", str(tmp_path / "conf.d" / "a.conf"), 3),
        ("b1", str(tmp_path / "conf.d" / "b.conf"), 1),
        ("last", str(main), 3)]


def test_nested_includes_resolve_against_their_own_directory(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", "include sub/one.conf\n")
    write(tmp_path / "sub" / "one.conf", "one\ninclude deeper/two.conf\n")
    write(tmp_path / "sub" / "deeper" / "two.conf", "two\n")
    write(tmp_path / "deeper" / "two.conf", "wrong\n")
    lines, diagnostics = lex_path(main)
    assert not diagnostics.items
    assert [(ln.tokens, ln.file) for ln in lines] == [
        (("one",), str(tmp_path / "sub" / "one.conf")),
        (("two",), str(tmp_path / "sub" / "deeper" / "two.conf"))]


def test_include_relative_to_base_dir_for_text(tmp_path: Path) -> None:
    write(tmp_path / "x.conf", "x\n")
    assert tokens("include x.conf\n", base_dir=str(tmp_path)) == [("x",)]
    assert tokens(f"include {tmp_path}/x.conf\n", base_dir="/") == [("x",)]


def test_include_brace_expansion_keeps_alternative_order(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / f"{name}.conf", f"{name}\n")
    assert tokens("include {c,a}.conf\ninclude {b,{a,c}}.c*f\n", base_dir=str(tmp_path)) == [
        ("c",), ("a",), ("b",), ("a",), ("c",)]


def test_brace_expand() -> None:
    assert brace_expand("{foo/{,cat,dog},bar}") == ["foo/", "foo/cat", "foo/dog", "bar"]
    assert brace_expand("a{}b{x") == ["a{}b{x"]
    assert brace_expand("{a}") == ["a"]


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", "m\ninclude a.conf\nm2\n")
    a = write(tmp_path / "a.conf", "a\n\ninclude main.conf\n")
    lines, diagnostics = lex_path(main)
    assert [ln.tokens for ln in lines] == [("m",), ("a",), ("m2",)]
    assert messages(diagnostics) == [f"{a}:3: include cycle: {main} -> {a} -> {main}"]


def test_self_include_is_a_cycle(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", "include *.conf\nx\n")
    lines, diagnostics = lex_path(main)
    assert [ln.tokens for ln in lines] == [("x",)]
    assert messages(diagnostics) == [f"{main}:1: include cycle: {main} -> {main}"]


def test_same_file_twice_is_not_a_cycle(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", "include common\ninclude common\n")
    write(tmp_path / "common", "c\n")
    assert [ln.tokens for ln in lex_path(main)[0]] == [("c",), ("c",)]


@pytest.mark.parametrize(("keyword", "literal", "wildcard"), [
    ("include", "warning", None), ("includer", "warning", None),
    ("includem", "error", None), ("includew", "warning", "error"),
    ("includeb", "warning", None), ("includea", "error", "error")])
def test_include_checks_when_nothing_matches(tmp_path: Path, keyword: str,
                                             literal: str | None, wildcard: str | None) -> None:
    text = f"{keyword} missing.conf\n{keyword} nomatch/*.conf\n"
    lines, diagnostics = lex(text, filename="i.conf", base_dir=str(tmp_path))
    assert lines == []
    severity = {"error": Severity.ERROR, "warning": Severity.WARNING}
    assert [(d.position, d.severity) for d in diagnostics.items] == (
        [(Position("i.conf", 1), severity[literal])]
        + ([(Position("i.conf", 2), severity[wildcard])] if wildcard else []))


def test_include_messages(tmp_path: Path) -> None:
    write(tmp_path / "a.conf", "a\n")
    text = "includem gone.conf\nincludea none*.conf\nincludeb {a,b}.conf\ninclude\n"
    lines, diagnostics = lex(text, filename="i.conf", base_dir=str(tmp_path))
    assert [ln.tokens for ln in lines] == [("a",)]
    assert messages(diagnostics) == [
        "i.conf:1: includem 'gone.conf': file not found",
        "i.conf:2: includea 'none*.conf' matched no files",
        "i.conf:3: includeb '{a,b}.conf': 'b.conf' matched no files",
        "i.conf:4: include needs exactly one file name or pattern"]


def test_unreadable_include_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dangling.conf").symlink_to(tmp_path / "nowhere")
    (tmp_path / "adir").mkdir()
    os.mkfifo(tmp_path / "fifo.conf")
    text = "include dangling.conf\ninclude adir\ninclude fifo.conf\nok\n"
    lines, diagnostics = lex(text, filename="i.conf", base_dir=str(tmp_path))
    assert [ln.tokens for ln in lines] == [("ok",)]
    assert messages(diagnostics) == [
        f"i.conf:1: cannot read included file '{tmp_path}/dangling.conf': "
        "No such file or directory",
        f"i.conf:2: cannot read included file '{tmp_path}/adir': is a directory",
        f"i.conf:3: cannot read included file '{tmp_path}/fifo.conf': not a regular file"]


def test_include_pattern_braces_are_not_structure(tmp_path: Path) -> None:
    write(tmp_path / "a b.conf", "ab\n")
    lines, diagnostics = lex('include "a b.conf"\nvs {\ninclude "{a b,c}.conf"\n}\n',
                             base_dir=str(tmp_path))
    assert [ln.tokens for ln in lines] == [("ab",), ("vs", "{"), ("ab",), ("}",)]
    assert not diagnostics.errors


def test_include_must_start_the_line() -> None:
    # as in keepalived, an include is a line of its own; here it is just a statement
    assert tokens("vs { include rs.conf }\n") == [("vs", "{", "include", "rs.conf", "}")]


def test_include_word_as_an_argument_is_not_an_include() -> None:
    assert tokens("notification_email include\n") == [("notification_email", "include")]


def test_definitions_cross_file_boundaries(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", "include defs.conf\nport $PORT\n")
    write(tmp_path / "defs.conf", "$PORT=8080\n")
    assert [ln.tokens for ln in lex_path(main)[0]] == [("port", "8080")]


def test_pwd_follows_the_current_file(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", "include sub/s.conf\n${_PWD}\n")
    write(tmp_path / "sub" / "s.conf", "${_PWD}\n")
    assert [ln.tokens for ln in lex_path(main)[0]] == [(str(tmp_path / "sub"),),
                                                      (str(tmp_path),)]


def test_unreadable_top_file_is_one_error(tmp_path: Path) -> None:
    lines, diagnostics = lex_path(tmp_path / "missing.conf")
    assert lines == []
    assert messages(diagnostics) == [
        f"cannot read configuration file '{tmp_path}/missing.conf': No such file or directory"]


def test_invalid_utf8_is_kept_as_surrogate_escapes(tmp_path: Path) -> None:
    path = tmp_path / "bin.conf"
    path.write_bytes(b"name caf\xe9\n")
    ((line,), diagnostics) = lex_path(path)
    assert not diagnostics.items
    assert line.tokens[1].encode("utf-8", "surrogateescape") == b"caf\xe9"
