"""Sequence sets against the selected mailbox: message numbers and UIDs to UIDs, and back to text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.imapserver.errors import Bad
from bridge.imapserver.parser import parse_sequence_set

if TYPE_CHECKING:
    from bridge.imapserver.session import Selected


def uids_for(sel: "Selected", text: str, uid: bool) -> list[int]:
    """The UIDs a sequence set names, ascending, without duplicates.  Message numbers beyond
    the mailbox are a BAD (RFC 9051 section 6.4.4: "invalid"); UIDs that do not exist are
    simply not included (RFC 9051 section 6.4.9)."""
    seqset = parse_sequence_set(text)
    uids = sel.uids
    if seqset.last_result:                        # RFC 5182 "$": the last SEARCH ... SAVE
        return sorted(u for u in sel.search_saved if u in uids)
    out: set[int] = set()
    if uid:
        for lo, hi in seqset.resolve(uids.last):
            out.update(uids.between(lo, hi))
        return sorted(out)
    count = len(uids)
    if count == 0 and all(hi is None for _, hi in seqset.ranges):
        return []                                 # "1:*" in an empty mailbox names nothing
    for lo, hi in seqset.resolve(count):
        if hi > count or lo < 1:
            raise Bad("message number out of range")
        out.update(uids.by_seq(lo, hi))
    return sorted(out)


def uid_set_text(uids: list[int]) -> str:
    """Compact "1:3,7,9:10" text for sorted or unsorted UIDs."""
    values = sorted(set(uids))
    if not values:
        return ""
    parts, start, prev = [], values[0], values[0]
    for v in values[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}:{prev}" if start != prev else f"{start}")
        start = prev = v
    parts.append(f"{start}:{prev}" if start != prev else f"{start}")
    return ",".join(parts)
