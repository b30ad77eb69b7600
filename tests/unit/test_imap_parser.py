"""The IMAP command grammar (bridge/imapserver/parser.py): tokens, literals, sequence sets, limits."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from bridge.imapserver.parser import (
    CLOSE, NIL, OPEN, Atom, ParseError, Reader, literal_marker, parse_sequence_set, strip_literal_marker, tokenize,
)


def toks(line: bytes, *literals: bytes) -> list:
    segments: list[bytes] = []
    parts = line.split(b"\x01")
    for i, part in enumerate(parts):
        segments.append(part)
        if i < len(literals):
            segments.append(literals[i])
    return tokenize(segments)


def test_atoms_quoted_nil_and_parentheses() -> None:
    assert toks(b'a1 LOGIN "an\\"na" nil (\\Seen \\*) ()') == [
        Atom("a1"), Atom("LOGIN"), b'an"na', NIL, OPEN, Atom("\\Seen"), Atom("\\*"), CLOSE, OPEN, CLOSE]


def test_quoted_escapes() -> None:
    assert toks(b'"a\\\\b" "" "\\""') == [b"a\\b", b"", b'"']
    for bad in (b'"a\\b"', b'"abc', b'"a\rb"', b'"a\\'):
        with pytest.raises(ParseError):
            toks(bad)


def test_literals_are_bytes_as_sent() -> None:
    assert toks(b"a1 LOGIN \x01 \x01", b"u\r\n\x00", b"\xff") == [Atom("a1"), Atom("LOGIN"), b"u\r\n\x00", b"\xff"]


def test_fetch_sections_are_one_atom() -> None:
    assert toks(b"BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100> BODY[] x]y") == [
        Atom("BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>"), Atom("BODY[]"), Atom("x]y")]
    with pytest.raises(ParseError):
        toks(b"BODY[HEADER")
    with pytest.raises(ParseError):
        toks(b"BODY[]<0.1")


@pytest.mark.parametrize("line", [b"a1 {", b"a1 \x00", b"a1 \x7f", b"a1 \xff\xfe", b")", b"(", b"(()", b"())"])
def test_syntax_errors(line: bytes) -> None:
    with pytest.raises(ParseError):
        toks(line)


def test_nesting_is_bounded_and_fails_fast() -> None:
    assert len(toks(b"(" * 32 + b")" * 32)) == 64
    with pytest.raises(ParseError, match="nested too deeply"):
        toks(b"(" * 33 + b")" * 33)
    line = b"(" * 1_000_000
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ParseError, match="nested too deeply"):
        tokenize([line])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - start < 0.05 and peak < 64 * 1024


def test_token_count_is_bounded() -> None:
    with pytest.raises(ParseError, match="too many parts"):
        toks(b"x " * 100_001)


@pytest.mark.parametrize("line, marker", [
    (b"a1 LOGIN {5}\r\n", (5, False)), (b"a1 LOGIN {5+}\r\n", (5, True)), (b"a APPEND x ~{7}\r\n", (7, False)),
    (b"a APPEND x {4294967296}\r\n", (4294967296, False)), (b"a1 LOGIN {5-}", (5, True)),
    (b"a1 LOGIN {x}\r\n", None), (b"a1 {5} NOOP\r\n", None), (b"a1 {123456789012345678901}\r\n", None),
])
def test_literal_markers(line: bytes, marker: tuple[int, bool] | None) -> None:
    assert literal_marker(line) == marker
    if marker:
        assert b"{" not in strip_literal_marker(line)


def test_sequence_sets() -> None:
    assert parse_sequence_set("3:1,*,5").resolve(9) == [(1, 3), (5, 5), (9, 9)]
    assert parse_sequence_set("*:4").resolve(2) == [(2, 4)]
    assert parse_sequence_set("$").last_result
    assert parse_sequence_set("2:4").contains(3, 9) and not parse_sequence_set("2:4").contains(5, 9)
    for bad in ("0", "1:0", "", "1,", "a", "1:2:3", "-1", " 1"):
        with pytest.raises(ParseError):
            parse_sequence_set(bad)


def test_reader() -> None:
    r = Reader(toks(b'x "q" NIL 12 (a (b) c) (d e)'))
    assert r.astring() == b"x" and r.text() == "q" and r.nstring() is None and r.number() == 12
    assert r.list_tokens() == [Atom("a"), OPEN, Atom("b"), CLOSE, Atom("c")]
    assert r.atoms_list() == ["d", "e"]
    r.end()
    with pytest.raises(ParseError):
        r.next()
    with pytest.raises(ParseError):
        Reader(toks(b"x")).number()
    with pytest.raises(ParseError):
        Reader([b"\xff"]).text()
