"""RFC 5322 address lists as IMAP ENVELOPE address structures, for `core.mimeinfo`.

Owns the lenient parsing of From/Sender/Reply-To/To/Cc/Bcc values into
`[name, adl, mailbox, host]` lists (RFC 9051 §7.5.2), group markers included,
and the addr-specs derived from them.  It never raises on any input: what
cannot be parsed is skipped.  Pure standard library; imports nothing from the
project and not `email._header_value_parser` (whose groups and raw
display-names do not fit ENVELOPE).
"""

from __future__ import annotations

import re

# RFC 5322 §3.2: quoted-string, domain-literal, comment start, specials, atoms.
_TOKENS = re.compile(
    r"""(?P<ws>[ \t\r\n]+)
      | (?P<qs>"(?:[^"\\]|\\.)*(?:"|\\?\Z))
      | (?P<lit>\[(?:[^\[\]\\]|\\.)*(?:\]|\\?\Z))
      | (?P<comment>\()
      | (?P<special>[<>@,;:.])
      | (?P<atom>[^\s"\[\]()<>@,;:.\\]+)
      | (?P<other>.)""",
    re.X | re.S,
)
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)

GROUP_END = [None, None, None, None]  # RFC 9051 §7.5.2: end of group syntax


class _Token:
    __slots__ = ("kind", "text", "space")

    def __init__(self, kind: str, text: str, space: bool) -> None:
        self.kind, self.text, self.space = kind, text, space  # space: CFWS before it


def envelope_addresses(value: str | None) -> list[list] | None:
    """ENVELOPE address list of a header value; None if absent or empty (NIL)."""
    return (_parse(_tokenize(value)) or None) if value is not None else None


def addr_specs(addresses: list[list] | None) -> list[str]:
    """Lowercased "local@host" of every address, group markers skipped."""
    return [
        (f"{mailbox}@{host}" if host else mailbox).lower()
        for _name, _adl, mailbox, host in addresses or ()
        if host is not None
    ]


def _tokenize(value: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, space = 0, False
    while pos < len(value):
        match = _TOKENS.match(value, pos)
        kind, pos = match.lastgroup, match.end()
        if kind == "comment":
            pos = _skip_comment(value, pos)
        if kind in ("ws", "comment"):
            space = True
            continue
        token = match.group()
        if kind == "qs":  # RFC 5322 §3.2.4: the quotes are not part of the content
            closed = len(token) > 1 and token[-1] == '"'
            token = _QUOTED_PAIR.sub(r"\1", token[1:-1] if closed else token[1:])
        tokens.append(_Token(token if kind == "special" else kind, token, space))
        space = False
    return tokens


def _skip_comment(value: str, pos: int) -> int:
    """Offset just past the comment whose "(" ends before `pos` (RFC 5322 §3.2.2: nesting)."""
    depth = 1
    while pos < len(value) and depth:
        char = value[pos]
        pos += 2 if char == "\\" else 1
        depth += (char == "(") - (char == ")")
    return min(pos, len(value))


def _parse(tokens: list[_Token]) -> list[list]:
    out: list[list] = []
    in_group, i = False, 0
    while i < len(tokens):
        kind = tokens[i].kind
        if kind in (",", ";"):
            if kind == ";" and in_group:
                out.append(list(GROUP_END))
                in_group = False
            i += 1
            continue
        j = _chunk_end(tokens, i, in_group)
        if j < len(tokens) and tokens[j].kind == ":":  # RFC 5322 §3.4: group
            out.append([None, None, _phrase(tokens[i:j]) or "", None])
            in_group, i = True, j + 1
            continue
        address = _mailbox(tokens[i:j])
        if address:
            out.append(address)
        i = j
    return out + [list(GROUP_END)] if in_group else out


def _chunk_end(tokens: list[_Token], i: int, in_group: bool) -> int:
    """Index of the "," / ";" (or group ":") that ends the address starting at i."""
    angle = False
    while i < len(tokens):
        kind = tokens[i].kind
        if kind in (",", ";") or (kind == ":" and not in_group and not angle):
            return i
        if kind == "<":
            angle = True
            i = next((k for k in range(i, len(tokens)) if tokens[k].kind == ">"), len(tokens))
        i += 1
    return len(tokens)


def _mailbox(tokens: list[_Token]) -> list | None:
    """[name, None, mailbox, host] of a name-addr or addr-spec (RFC 5322 §3.4)."""
    name, spec = None, tokens
    lt = next((k for k, token in enumerate(tokens) if token.kind == "<"), None)
    if lt is not None:
        name = _phrase(tokens[:lt]) or None
        gt = next((k for k in range(lt, len(tokens)) if tokens[k].kind == ">"), len(tokens))
        spec = tokens[lt + 1:gt]
        colon = max((k for k, token in enumerate(spec) if token.kind == ":"), default=-1)
        spec = spec[colon + 1:]  # RFC 5322 §4.4: obs-route is dropped (adl is NIL)
    if not spec:
        return None
    at = max((k for k, token in enumerate(spec) if token.kind == "@"), default=None)
    if at is None:
        return [name, None, _phrase(spec), ""]  # todo: no domain; host "" (NIL means a group)
    return [name, None, _local_part(spec[:at]), "".join(t.text for t in spec[at + 1:])]


def _phrase(tokens: list[_Token]) -> str:
    """The words as written, one space where white space or a comment was."""
    return "".join((" " if t.space and k else "") + t.text for k, t in enumerate(tokens))


def _local_part(tokens: list[_Token]) -> str:
    """RFC 5321 §4.1.2: a quoted local part that is a dot-atom equals the bare one."""
    words = []
    for token in tokens:
        if token.kind == "qs" and not _DOT_ATOM.fullmatch(token.text):
            words.append('"' + token.text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            words.append(token.text)
    return "".join(words)
