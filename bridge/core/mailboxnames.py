"""Mailbox names: validation and canonical form (DESIGN.md section 6).  Pure: imports nothing
from the project and touches no store or socket.

A name is a "/"-separated path of components.  It is refused when it is empty, longer
than MAX_NAME_BYTES, has an empty component (leading, trailing or doubled "/"), a "." or
".." component, a leading "~", a wildcard ("*", "%"), or a control or invisible
formatting character (Unicode categories Cc, Cf, Cs, Co: no bidi overrides either).
Names here are UTF-8 (IMAP4rev2, RFC 9051 section 5.1).  The IMAP edge converts the
modified UTF-7 of IMAP4rev1 clients (RFC 3501 section 5.1.3, imapserver/mutf7.py) before a
name reaches this module, strictly: text that is not valid modified UTF-7 stays literal,
so "&AC4-&AC4-" is a folder of that literal name, never "..".  The first component "INBOX" is
case-insensitive (RFC 9051 section 5.1) and canonically upper case.  The first component
"Shared" (any case) is the shared namespace: no account may create names in it.
"""

from __future__ import annotations

import unicodedata

DELIMITER = "/"
SHARED_PREFIX = "Shared"
MAX_NAME_BYTES = 255
MAX_COMPONENT_BYTES = 100
MAX_DEPTH = 16
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co"})


class InvalidName(ValueError):
    """The name can never exist; the text is safe to show a client."""


def canonical(name: str) -> str:
    """`name` with a case-insensitive INBOX first component written "INBOX"; no validation."""
    head, sep, rest = name.partition(DELIMITER)
    return "INBOX" + sep + rest if head.upper() == "INBOX" else name


def validate(name: str) -> str:
    """The canonical form of a valid name; raises InvalidName otherwise."""
    if not name:
        raise InvalidName("empty mailbox name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidName("mailbox name too long")
    if name.startswith("~"):
        raise InvalidName("mailbox name may not start with ~")
    if "*" in name or "%" in name:
        raise InvalidName("mailbox name may not contain * or %")
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        raise InvalidName("mailbox name contains a control character")
    parts = name.split(DELIMITER)
    if len(parts) > MAX_DEPTH:
        raise InvalidName("mailbox name nested too deeply")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidName("mailbox name has an empty, . or .. component")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidName("mailbox name component too long")
    return canonical(name)


def is_valid(name: str) -> bool:
    try:
        validate(name)
    except InvalidName:
        return False
    return True


def in_shared_namespace(name: str) -> bool:
    """Is `name` in the shared namespace ("Shared" or below it, any case)?"""
    return name.split(DELIMITER, 1)[0].upper() == SHARED_PREFIX.upper()


def parents(name: str) -> list[str]:
    """The superior names of `name`, outermost first: "a/b/c" -> ["a", "a/b"]."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def is_inferior(name: str, parent: str) -> bool:
    """Is `name` strictly below `parent` in the hierarchy?"""
    return name.startswith(parent + DELIMITER)


def glob_match(pattern: str, name: str) -> bool:
    """RFC 9051 section 6.3.9 LIST matching: "*" matches any characters, "%" any but the
    delimiter.  Linear in pattern x name (no regular expression, so no backtracking blow-up
    on hostile patterns such as "*a*a*a...b")."""
    pattern = _collapse(pattern)
    if len(pattern) > 2 * MAX_NAME_BYTES + 1:
        return False                            # more literal characters than any name has
    states = [0]                                # positions in `name` reachable so far, ascending
    for c in pattern:
        if c == "*":
            states = list(range(states[0], len(name) + 1))
        elif c == "%":
            states = _through_component(states, name)
        else:
            states = [j + 1 for j in states if j < len(name) and name[j] == c]
        if not states:
            return False
    return states[-1] == len(name)


def _collapse(pattern: str) -> str:
    """Equivalent pattern without runs of wildcards ("**", "%*", "*%" -> "*"; "%%" -> "%")."""
    out: list[str] = []
    for c in pattern:
        if c in "*%" and out and out[-1] in "*%":
            out[-1] = "*" if "*" in (c, out[-1]) else "%"
        else:
            out.append(c)
    return "".join(out)


def _through_component(states: list[int], name: str) -> list[int]:
    """Positions reachable from the ascending `states` by "%": up to the next delimiter."""
    out: list[int] = []
    stop = -1
    for j in states:
        if j > stop:                            # a new stretch; else the same one as before
            stop = name.find(DELIMITER, j)
            stop = len(name) if stop < 0 else stop
        start = max(j, out[-1] + 1) if out else j
        out.extend(range(start, stop + 1))
    return out


__all__ = ["InvalidName", "glob_match", "validate", "is_valid", "canonical", "in_shared_namespace", "parents",
           "is_inferior", "DELIMITER", "SHARED_PREFIX"]
