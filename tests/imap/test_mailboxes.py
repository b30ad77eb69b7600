"""Mailbox management over IMAP: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LSUB, and LIST
with RFC 5258 LIST-EXTENDED (selection and return options, several patterns), RFC 6154
SPECIAL-USE, RFC 5819 LIST-STATUS and RFC 3348 CHILDREN; STATUS items.  Raw transcripts."""

from __future__ import annotations

import re

from tests.conftest import ANNA, CASEWORKER, LAWYER, RunningBridge
from tests.helpers.imap import Transcript
from tests.helpers.smtp import wait_for
from tests.imap.conftest import Opener

STANDARD = [
    b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
    b'* LIST (\\HasNoChildren \\Archive \\Subscribed) "/" "Archive"',
    b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" "Drafts"',
    b'* LIST (\\HasNoChildren \\Subscribed) "/" "Receipts"',
    b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"',
    b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" "Trash"',
]


def untagged(t: Transcript, command: str | bytes) -> list[bytes]:
    """The untagged lines of a command that must succeed."""
    return t.transact("OK", command)[:-1]


def refused(t: Transcript, command: str | bytes, status: str = "NO") -> bytes:
    """The tagged reply of a refused command without its tag and `(ref ...)`, e.g.
    b"NO [NONEXISTENT] no such mailbox"; asserts the reference is there."""
    line = t.transact(status, command)[-1]
    text, ref = line.split(b" ", 1)[1].rsplit(b" (ref ", 1)
    assert re.fullmatch(rb"[0-9a-f]{12}\)", ref), line
    return text


def uidvalidity(t: Transcript, name: str) -> int:
    line = untagged(t, f'STATUS "{name}" (UIDVALIDITY)')[0]
    return int(line.rsplit(b" ", 1)[1].rstrip(b")"))


def test_create_list_rename_delete_hierarchy(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    assert untagged(t, 'LIST "" "*"') == STANDARD
    assert untagged(t, 'CREATE "Sager/2026/Jobcenter"') == []       # superior names are created
    assert untagged(t, 'LIST "" "Sager*"') == [
        b'* LIST (\\HasChildren \\Subscribed) "/" "Sager"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Sager/2026"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Sager/2026/Jobcenter"']
    assert untagged(t, 'LIST "" "Sager/%"') == [b'* LIST (\\HasChildren \\Subscribed) "/" "Sager/2026"']
    assert untagged(t, 'LIST "Sager/" "%"') == [b'* LIST (\\HasChildren \\Subscribed) "/" "Sager/2026"']
    assert untagged(t, 'CREATE Noter/') == []                          # trailing delimiter: intent
    assert refused(t, 'CREATE "Sager"') == b"NO [ALREADYEXISTS] mailbox already exists"
    assert refused(t, 'CREATE inbox') == b"NO [ALREADYEXISTS] mailbox already exists"
    assert refused(t, 'DELETE Sager') == \
        b"NO [HASCHILDREN] mailbox has inferior mailboxes; delete them first"
    assert untagged(t, 'RENAME Sager "Arkiv 2026/Sager"') == []
    assert untagged(t, 'LIST "" "*"') == STANDARD[:2] + [
        b'* LIST (\\HasChildren \\Subscribed) "/" "Arkiv 2026"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Arkiv 2026/Sager"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Arkiv 2026/Sager/2026"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Arkiv 2026/Sager/2026/Jobcenter"',
    ] + STANDARD[2:3] + [b'* LIST (\\HasNoChildren \\Subscribed) "/" "Noter"'] + STANDARD[3:]
    assert refused(t, 'RENAME Noter "Arkiv 2026"') == b"NO [ALREADYEXISTS] mailbox already exists"
    assert refused(t, 'RENAME "Arkiv 2026" "Arkiv 2026/Under"') == \
        b"NO [CANNOT] this mailbox cannot be renamed"
    assert refused(t, 'RENAME Nowhere Elsewhere') == b"NO [NONEXISTENT] no such mailbox"
    for name in ("Arkiv 2026/Sager/2026/Jobcenter", "Arkiv 2026/Sager/2026", "Arkiv 2026/Sager",
                 "Arkiv 2026", "Noter"):
        assert untagged(t, f'DELETE "{name}"') == []
    assert untagged(t, 'LIST "" "*"') == STANDARD
    assert refused(t, 'DELETE Noter') == b"NO [NONEXISTENT] no such mailbox"


def test_utf8_and_modified_utf7_names(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    untagged(t, b'CREATE "Kl\xc3\xa6ger/\xc3\x86ndringer"')     # raw UTF-8 from a sloppy client: taken as is
    untagged(t, 'CREATE "&AOY-ndringer"')                    # an IMAP4rev1 client's name: "\u00e6ndringer"
    assert untagged(t, 'LIST "" "*ndringer"') == [           # told in modified UTF-7 (imapserver/mutf7.py)
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Kl&AOY-ger/&AMY-ndringer"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "&AOY-ndringer"']
    assert untagged(t, b'SELECT {18+}\r\nKl\xc3\xa6ger/\xc3\x86ndringer')[0] == b"* 0 EXISTS"
    assert refused(t, 'SELECT "&AMY-ndringer"') == b"NO [NONEXISTENT] no such mailbox"
    untagged(t, r'CREATE "Citat \"x\" a\\b"')
    assert untagged(t, 'LIST "" "Citat*"') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" {13}\r\nCitat "x" a\\b']
    untagged(t, r'STATUS "Citat \"x\" a\\b" (MESSAGES)')


def test_invalid_names_cannot_be_created(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    for name, why in [("../x", "has an empty, . or .. component"), ("a//b", "has an empty, . or .. component"),
                      ("/root", "has an empty, . or .. component"), ("~anna", "may not start with ~"),
                      ("a*b", "may not contain * or %"), ("100%", "may not contain * or %"),
                      ("x" * 300, "too long")]:
        assert refused(t, f'CREATE "{name}"') == b"NO [CANNOT] invalid mailbox name: mailbox name " + \
            why.encode(), name
    assert refused(t, b'CREATE {3+}\r\na\x01b') == \
        b"NO [CANNOT] invalid mailbox name: mailbox name contains a control character"
    for name in ("Shared/mine", "shared", "SHARED/jobcenter/INBOX", "Shared/jobcenter/Notes"):
        assert refused(t, f'CREATE "{name}"') == \
            b"NO [NOPERM] mailboxes cannot be created in the shared namespace", name
    assert refused(t, 'RENAME Noter "Shared/x"') == b"NO [NONEXISTENT] no such mailbox"
    untagged(t, "CREATE Noter")
    assert refused(t, 'RENAME Noter "Shared/x"') == \
        b"NO [NOPERM] mailboxes cannot be created in the shared namespace"
    assert refused(t, 'RENAME Noter "../Noter"') == \
        b"NO [CANNOT] invalid mailbox name: mailbox name has an empty, . or .. component"
    t.transact("BAD", "CREATE")
    t.transact("BAD", "RENAME Noter")
    t.transact("BAD", "DELETE a b")


def test_inbox_special_use_and_receipts_stay(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    for name in ("INBOX", "inbox", "Sent", "Drafts", "Trash", "Archive", "Receipts"):
        assert refused(t, f"DELETE {name}") == b"NO [CANNOT] this mailbox cannot be deleted", name
    for name in ("Sent", "Drafts", "Trash", "Archive", "Receipts"):
        assert refused(t, f"RENAME {name} Other") == b"NO [CANNOT] this mailbox cannot be renamed", name
    # RFC 9051 section 6.3.6 allows moving INBOX's messages by RENAME; we refuse it clearly.
    assert refused(t, "RENAME INBOX Old") == b"NO [CANNOT] INBOX cannot be renamed; move its messages instead"
    untagged(t, "CREATE Sent/2025")                 # inferiors of special-use mailboxes are ordinary
    untagged(t, "RENAME Sent/2025 Sent/2024")
    untagged(t, "DELETE Sent/2024")
    assert untagged(t, 'LIST "" "*"') == STANDARD


def test_recreated_mailbox_gets_a_new_uidvalidity(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    untagged(t, "CREATE Projekt")
    first = uidvalidity(t, "Projekt")
    untagged(t, "RENAME Projekt Projekt2")            # RENAME keeps UIDVALIDITY and the messages
    assert uidvalidity(t, "Projekt2") == first
    untagged(t, "DELETE Projekt2")
    untagged(t, "CREATE Projekt2")
    assert uidvalidity(t, "Projekt2") != first
    assert 0 < first < 2**32


def test_delete_removes_a_mailbox_with_its_messages(bridge: RunningBridge, transcript: Opener) -> None:
    from tests.imap.test_basics import deliver_letter
    deliver_letter(bridge)
    t = transcript(bridge, ANNA)
    untagged(t, "CREATE Gemt")
    untagged(t, "SELECT INBOX")
    untagged(t, "COPY 1 Gemt")
    untagged(t, "COPY 1 Gemt")
    assert untagged(t, "STATUS Gemt (MESSAGES)") == [b'* STATUS "Gemt" (MESSAGES 2)']
    untagged(t, "SELECT Gemt")
    untagged(t, "STORE 1 +FLAGS.SILENT (\\Deleted)")
    untagged(t, "EXPUNGE")                           # an expunged UID, remembered for QRESYNC
    untagged(t, "UNSELECT")
    untagged(t, "DELETE Gemt")                       # its entries and expunged UIDs go with it
    assert untagged(t, "STATUS INBOX (MESSAGES)") == [b'* STATUS "INBOX" (MESSAGES 1)']
    assert refused(t, "STATUS Gemt (MESSAGES)") == b"NO [NONEXISTENT] no such mailbox"


def test_subscriptions_persist_and_lsub(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    untagged(t, "CREATE Sager/2026")
    untagged(t, "UNSUBSCRIBE Sager")
    untagged(t, "UNSUBSCRIBE Trash")
    assert refused(t, "UNSUBSCRIBE Nowhere") == b"NO [NONEXISTENT] no such mailbox"
    assert refused(t, 'SUBSCRIBE "Shared/jobcenter/INBOX"') == b"NO [NONEXISTENT] no such mailbox"
    t = Transcript(bridge, ANNA)                                 # a new session: they persisted
    try:
        assert untagged(t, 'LSUB "" "*"') == [
            b'* LSUB () "/" "INBOX"', b'* LSUB () "/" "Archive"', b'* LSUB () "/" "Drafts"',
            b'* LSUB () "/" "Receipts"', b'* LSUB () "/" "Sager/2026"', b'* LSUB () "/" "Sent"']
        # RFC 3501 section 6.3.9: "%" hiding a subscribed inferior shows its parent \Noselect.
        assert untagged(t, 'LSUB "" "Sa%"') == [b'* LSUB (\\Noselect) "/" "Sager"']
        assert untagged(t, 'LIST "" "Sager*"') == [
            b'* LIST (\\HasChildren) "/" "Sager"',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" "Sager/2026"']
        untagged(t, "SUBSCRIBE Trash")
        assert untagged(t, 'LSUB "" "T*"') == [b'* LSUB () "/" "Trash"']
    finally:
        t.close()


def test_list_extended_selection_and_return_options(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, ANNA)
    untagged(t, "CREATE Sager/2026")
    untagged(t, "UNSUBSCRIBE Sager")
    untagged(t, "UNSUBSCRIBE Drafts")
    assert untagged(t, 'LIST (SUBSCRIBED) "" "*" RETURN (CHILDREN)') == [
        STANDARD[0], STANDARD[1], STANDARD[3],
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Sager/2026"', STANDARD[4], STANDARD[5]]
    assert untagged(t, 'LIST (SUBSCRIBED) "" "%"') == [STANDARD[0], STANDARD[1], STANDARD[3],
                                                      STANDARD[4], STANDARD[5]]
    # RFC 5258 section 3.5: RECURSIVEMATCH shows a parent whose inferiors match but are not listed.
    assert untagged(t, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "S%"') == [
        b'* LIST (\\HasChildren) "/" "Sager" ("CHILDINFO" ("SUBSCRIBED"))', STANDARD[4]]
    assert untagged(t, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "S*"') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Sager/2026"', STANDARD[4]]
    assert untagged(t, 'LIST (SPECIAL-USE) "" "*" RETURN (SPECIAL-USE)') == [
        STANDARD[1], b'* LIST (\\HasNoChildren \\Drafts) "/" "Drafts"', STANDARD[4], STANDARD[5]]
    assert untagged(t, 'LIST (REMOTE) "" ("INBOX" "Sent*" "Nowhere") RETURN (SUBSCRIBED CHILDREN)') == \
        [STANDARD[0], STANDARD[4]]
    assert untagged(t, 'LIST "" ("inbox" "T%")') == [STANDARD[0], STANDARD[5]]
    assert untagged(t, 'LIST "" ""') == [b'* LIST (\\Noselect) "/" ""']
    assert untagged(t, 'LIST "Sager/2026" ""') == [b'* LIST (\\Noselect) "/" "Sager/"']
    assert untagged(t, 'LIST "" "Nowhere*"') == []
    assert untagged(t, 'LIST "" "' + "*S" * 3000 + '*x"') == []         # no backtracking blow-up
    for bad in ('LIST (RECURSIVEMATCH) "" "*"', 'LIST (REMOTE RECURSIVEMATCH) "" "*"',
                'LIST (FROB) "" "*"', 'LIST "" "*" RETURN (FROB)', 'LIST "" "*" RETURNS (CHILDREN)',
                'LIST "" "*" RETURN (STATUS)', 'LIST "" "*" RETURN (STATUS (FROB))',
                'LIST "" ()', 'LIST ""'):
        t.transact("BAD", bad)


def test_list_status_follows_each_list_line(bridge: RunningBridge, transcript: Opener) -> None:
    from tests.imap.test_basics import deliver_letter
    entry = deliver_letter(bridge)
    size = len(bridge.app.blobs.get(entry["sha256"]))
    t = transcript(bridge, ANNA)
    lines = untagged(t, 'LIST "" ("INBOX" "Sent*") RETURN (STATUS (MESSAGES UNSEEN SIZE UIDNEXT))')
    assert lines == [
        STANDARD[0], b'* STATUS "INBOX" (MESSAGES 1 UNSEEN 1 SIZE %d UIDNEXT 2)' % size,
        STANDARD[4], b'* STATUS "Sent" (MESSAGES 0 UNSEEN 0 SIZE 0 UIDNEXT 1)']
    status = untagged(t, "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ)")
    assert re.fullmatch(rb'\* STATUS "INBOX" \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1 DELETED 0 '
                        rb'SIZE %d RECENT 0 HIGHESTMODSEQ (\d+)\)' % size, status[0]), status
    t.transact("BAD", "STATUS INBOX (FROB)")
    t.transact("BAD", "STATUS INBOX ()")
    t.transact("BAD", "STATUS INBOX")


def test_shared_namespace_for_the_caseworker_and_not_the_law_firm(bridge: RunningBridge, transcript: Opener) -> None:
    t = transcript(bridge, CASEWORKER)
    shared = [b'* LIST (\\Noselect \\HasChildren) "/" "Shared"',
              b'* LIST (\\Noselect \\HasChildren) "/" "Shared/jobcenter"',
              b'* LIST (\\HasNoChildren \\Subscribed) "/" "Shared/jobcenter/INBOX"']
    assert untagged(t, 'LIST "" "*"') == STANDARD + shared
    assert untagged(t, 'LIST "" "%"') == STANDARD + shared[:1]
    assert untagged(t, 'LIST "Shared/" "%"') == shared[1:2]
    assert untagged(t, 'LIST "" "Shared/%/%" RETURN (STATUS (MESSAGES))') == \
        shared[2:] + [b'* STATUS "Shared/jobcenter/INBOX" (MESSAGES 0)']
    assert untagged(t, 'LSUB "" "Shared/*"') == [b'* LSUB () "/" "Shared/jobcenter/INBOX"']
    assert untagged(t, "NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL (("Shared/" "/"))']
    assert refused(t, 'DELETE "Shared/jobcenter/INBOX"') == b"NO [NOPERM] shared mailboxes cannot be deleted"
    assert refused(t, 'RENAME "Shared/jobcenter/INBOX" Mine') == \
        b"NO [NOPERM] shared mailboxes cannot be renamed"
    assert refused(t, 'UNSUBSCRIBE "Shared/jobcenter/INBOX"') == b"NO [CANNOT] shared mailboxes stay subscribed"
    untagged(t, 'SUBSCRIBE "Shared/jobcenter/INBOX"')
    assert refused(t, 'DELETE "Shared/jobcenter"') == b"NO [NONEXISTENT] no such mailbox"
    t = transcript(bridge, LAWYER)
    assert untagged(t, 'LIST "" "*"') == STANDARD
    assert untagged(t, 'LIST "" "Shared*"') == []
    assert untagged(t, 'LSUB "" "*"') == [b'* LSUB () "/" "%s"' % n for n in (
        b"INBOX", b"Archive", b"Drafts", b"Receipts", b"Sent", b"Trash")]


def test_concurrent_sessions_see_created_mailboxes(bridge: RunningBridge) -> None:
    a, b = Transcript(bridge, ANNA), Transcript(bridge, ANNA)
    try:
        untagged(a, "CREATE Delt")
        assert refused(b, "CREATE Delt") == b"NO [ALREADYEXISTS] mailbox already exists"
        assert untagged(b, 'LIST "" "Delt"') == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "Delt"']
        untagged(b, "DELETE Delt")
        wait_for(lambda: untagged(a, 'LIST "" "Delt"') == [] or None)
    finally:
        a.close()
        b.close()
