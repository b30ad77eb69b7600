"""Mailbox name validation (bridge/core/mailboxnames.py): what can never be a mailbox name."""

from __future__ import annotations

import pytest

from bridge.core.mailboxnames import (InvalidName, canonical, glob_match, in_shared_namespace, is_inferior,
                                      parents, validate)


@pytest.mark.parametrize("name", [
    "", "..", "../x", "a/../b", "a/..", ".", "a/./b", "/abs", "a//b", "a/", "~", "~anna", "~/INBOX",
    "a*", "%", "Sent%2F", "x\x00y", "x\ry", "x\ny", "tab\there", "del\x7f", "c1\x85",
    "rtl\u202eoverride", "zero\u200bwidth", "a" * 256, "b" * 101, "/".join("x" * 17),
])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate(name)


@pytest.mark.parametrize("name, expected", [
    ("INBOX", "INBOX"), ("inbox", "INBOX"), ("InBoX/Sub", "INBOX/Sub"), ("Inboxes", "Inboxes"),
    ("Projekter/2026", "Projekter/2026"), ("Kære breve", "Kære breve"), ("æøå/ÆØÅ", "æøå/ÆØÅ"),
    ("&AOY-", "&AOY-"), ("&AC4-&AC4-", "&AC4-&AC4-"), ("a.b", "a.b"), ("...", "..."),
    ("a" * 100, "a" * 100), ("Shared", "Shared"),
])
def test_valid_names_keep_their_bytes_and_inbox_is_canonical(name: str, expected: str) -> None:
    assert validate(name) == expected


def test_modified_utf7_is_never_decoded() -> None:
    assert canonical("&AC4-&AC4-/x") == "&AC4-&AC4-/x"          # "&AC4-" is "." in modified UTF-7


def test_hierarchy_helpers() -> None:
    assert parents("a/b/c") == ["a", "a/b"] and parents("a") == []
    assert is_inferior("a/b", "a") and not is_inferior("ab", "a") and not is_inferior("a", "a")
    assert in_shared_namespace("Shared") and in_shared_namespace("shared/x") and in_shared_namespace("SHARED/y")
    assert not in_shared_namespace("Sharedx") and not in_shared_namespace("INBOX/Shared")


@pytest.mark.parametrize("pattern, name, expected", [
    ("*", "a/b/c", True), ("%", "a", True), ("%", "a/b", False), ("a/%", "a/b", True), ("a/%", "a/b/c", False),
    ("a/*", "a/b/c", True), ("a*", "a", True), ("a%c", "abc", True), ("a%c", "a/c", False), ("%/%", "a/b", True),
    ("%/%", "a/b/c", False), ("%%/%*", "a/b/c", True), ("*%", "a/b", True), ("%*", "x", True), ("", "", True),
    ("", "a", False), ("Sent*", "Sent", True), ("Sent*", "Sent/2026", True), ("Sent%", "Sent/2026", False),
    ("S%t", "Sent", True), ("%t", "Sent", True), ("*t", "Sent/Ut", True), ("a.b", "axb", False),
    ("[a]", "a", False), ("[a]", "[a]", True), ("%/", "a/", True), ("x%y%z", "xaaybbz", True),
])
def test_glob_match(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


def test_glob_match_has_no_backtracking_blowup() -> None:
    import time
    start = time.monotonic()
    assert not glob_match("*a" * 200 + "*b", "a" * 255)
    assert not glob_match("%a" * 200 + "%b", "a" * 255)
    assert not glob_match("*" * 60000 + "b", "a" * 255)
    assert time.monotonic() - start < 1.0
