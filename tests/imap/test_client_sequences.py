"""What real mail clients send, as raw transcripts against the real server (TLS, SQLite): the
connect and sync sequences of Thunderbird above all, and of Outlook, Apple Mail, K-9/FairEmail,
mutt and Evolution, with the answers RFC 9051/3501 and those clients expect.  Commands are
written the way the clients write them (Thunderbird's lower-case `select`, `UID fetch`, its
header-field list; Outlook's SELECT without a LIST first; Apple Mail's CHANGEDSINCE sync).
The imaplib, mbsync and offlineimap tests cover the rest."""

from __future__ import annotations

import base64
import re

from tests.conftest import ANNA, PASSWORDS, RunningBridge
from tests.helpers.imap import Transcript
from tests.imap.conftest import Opener

# Thunderbird's header fetch for new messages (nsImapProtocol, mail.imap header list).
TB_HEADERS = ("From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups "
              "In-Reply-To Content-Type Reply-To")

# A Thunderbird S/MIME signed message (multipart/signed, opaque signature part).
SIGNED = (
    b'From: Anna Borger <anna@borger.dp2.test>\r\nTo: "Jobcenter, Aarhus" <jobcenter@kommune.dp2.test>\r\n'
    b"Subject: =?UTF-8?Q?K=C3=A6re_sagsbehandler?=\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
    b"Message-ID: <tb-1@borger.dp2.test>\r\nMIME-Version: 1.0\r\nUser-Agent: Mozilla Thunderbird\r\n"
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;\r\n'
    b' boundary="------------ms010203"\r\n\r\n'
    b"This is a cryptographically signed message in MIME format.\r\n\r\n"
    b"--------------ms010203\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"K\xc3\xa6re sagsbehandler\r\n\r\n"
    b'--------------ms010203\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
    b'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="smime.p7s"\r\n'
    b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
    b"MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCC\r\n\r\n"
    b"--------------ms010203--\r\n")

SIGNED_STRUCTURE = (
    b'(("TEXT" "PLAIN" ("CHARSET" "UTF-8" "FORMAT" "flowed") NIL NIL "8BIT" 21 1 NIL NIL NIL NIL)'
    b'("APPLICATION" "PKCS7-SIGNATURE" ("NAME" "smime.p7s") NIL "S/MIME Cryptographic Signature" "BASE64" 74'
    b' NIL ("ATTACHMENT" ("FILENAME" "smime.p7s")) NIL NIL)'
    b' "SIGNED" ("PROTOCOL" "application/pkcs7-signature" "MICALG" "sha-256" "BOUNDARY" "------------ms010203")'
    b" NIL NIL NIL)")


def note(subject: str, body: str = "Hej\r\n") -> bytes:
    return (f"From: Anna Borger <anna@borger.dp2.test>\r\nTo: jobcenter@kommune.dp2.test\r\n"
            f"Subject: {subject}\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
            f"Message-ID: <{abs(hash(subject))}@borger.dp2.test>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
            ).encode()


def plain_login(bridge: RunningBridge, transcript: Opener) -> Transcript:
    """Logged in the way Thunderbird does when the server offers SASL-IR and AUTH=PLAIN."""
    t = transcript(bridge)
    assert b"SASL-IR" in t.greeting and b"AUTH=PLAIN" in t.greeting
    token = base64.b64encode(f"\0{ANNA}\0{PASSWORDS[ANNA]}".encode()).decode()
    assert re.fullmatch(rb"t1 OK \[CAPABILITY [^\]]+\] logged in", t.transact("OK", f"authenticate PLAIN {token}")[-1])
    return t


def body(lines: list[bytes]) -> list[bytes]:
    """The untagged responses, without the tagged completion."""
    return lines[:-1]


def tagged(lines: list[bytes]) -> bytes:
    """The tagged completion without its tag and `(ref ...)`."""
    return lines[-1].split(b" ", 1)[1].rsplit(b" (ref ", 1)[0]


def append_sync(t: Transcript, mailbox: bytes, raw: bytes, extra: bytes = b"") -> list[bytes]:
    """APPEND with a synchronizing literal: the line, the "+" continuation, then the bytes."""
    t.n += 1
    tag = f"t{t.n}".encode()
    t.send(tag + b" APPEND " + mailbox + b" " + extra + b"{%d}\r\n" % len(raw))
    assert t.readline().startswith(b"+ ")
    t.send(raw + b"\r\n")
    lines = []
    while not (lines and lines[-1].startswith(tag + b" ")):
        lines.append(t.readline())
    return lines


# --- modified UTF-7 mailbox names (RFC 3501 section 5.1.3) ---------------------------------


def test_thunderbird_folders_with_danish_names_in_modified_utf7(sqlite_bridge: RunningBridge,
                                                               transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    t.transact("OK", 'create "Projekter/K&AOY-re sager"')             # "Kære sager"
    assert tagged(t.transact("NO", 'create "Projekter/K&AOY-re sager"')) == \
        b"NO [ALREADYEXISTS] mailbox already exists"
    t.transact("OK", 'subscribe "Projekter/K&AOY-re sager"')
    assert body(t.transact("OK", 'list "" "Projekter/%"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Projekter/K&AOY-re sager"']
    assert body(t.transact("OK", 'lsub "" "Projekter/*"')) == [b'* LSUB () "/" "Projekter/K&AOY-re sager"']
    assert body(t.transact("OK", 'list "" "Projekter/K&AOY-*"')) == [      # a pattern in modified UTF-7
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Projekter/K&AOY-re sager"']
    assert re.fullmatch(rb"t\d+ OK \[APPENDUID \d+ 1\] APPEND completed",
                        append_sync(t, b'"Projekter/K&AOY-re sager"', note("Sagen"), b"(\\Seen) ")[-1])
    assert body(t.transact("OK", 'STATUS "Projekter/K&AOY-re sager" (MESSAGES UNSEEN)')) == [
        b'* STATUS "Projekter/K&AOY-re sager" (MESSAGES 1 UNSEEN 0)']
    t.transact("OK", 'rename "Projekter/K&AOY-re sager" "Projekter/&ANg-vrige sager"')   # "Øvrige sager"
    assert body(t.transact("OK", 'list "" "Projekter/*"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Projekter/&ANg-vrige sager"']
    assert tagged(t.transact("NO", 'select "Projekter/K&AOY-re sager"')) == b"NO [NONEXISTENT] no such mailbox"
    assert body(t.transact("OK", 'select "Projekter/&ANg-vrige sager"'))[0] == b"* 1 EXISTS"
    assert tagged(t.transact("NO", 'UID copy 1 "Projekter/K&AOY-re sager"')) == \
        b"NO [TRYCREATE] no such mailbox"                            # Thunderbird offers to create it
    t.transact("OK", 'create "Projekter/K&AOY-re sager/"')            # trailing delimiter: intent only
    assert re.fullmatch(rb"t\d+ OK \[COPYUID \d+ 1 1\] COPY completed",
                        t.transact("OK", 'UID copy 1 "Projekter/K&AOY-re sager"')[-1])
    t.transact("OK", "close")
    assert tagged(t.transact("NO", 'delete "Projekter"')) == \
        b"NO [HASCHILDREN] mailbox has inferior mailboxes; delete them first"
    for name in ("Projekter/K&AOY-re sager", "Projekter/&ANg-vrige sager", "Projekter"):
        t.transact("OK", f'delete "{name}"')
    assert body(t.transact("OK", 'list "" "Projekter*"')) == []


def test_names_reach_rev1_clients_in_modified_utf7_and_utf8_clients_in_utf8(sqlite_bridge: RunningBridge,
                                                                            transcript: Opener) -> None:
    rev2 = plain_login(sqlite_bridge, transcript)
    assert body(rev2.transact("OK", "ENABLE IMAP4rev2")) == [b"* ENABLED IMAP4REV2"]
    rev2.transact("OK", 'CREATE "K\u00e6re sager"'.encode())
    rev2.transact("OK", b'CREATE "Gamle &AOY- sager"')                  # "&" is literal in UTF-8 names
    assert body(rev2.transact("OK", 'LIST "" "*sager"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Gamle &AOY- sager"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" {11}\r\nK\xc3\xa6re sager']
    rev1 = plain_login(sqlite_bridge, transcript)                     # Thunderbird: no ENABLE IMAP4rev2
    assert body(rev1.transact("OK", 'LIST "" "*sager"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Gamle &-AOY- sager"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "K&AOY-re sager"']
    assert body(rev1.transact("OK", 'STATUS "Gamle &-AOY- sager" (MESSAGES)')) == [
        b'* STATUS "Gamle &-AOY- sager" (MESSAGES 0)']
    assert body(rev1.transact("OK", 'LIST "" "K&AOY-re sager" RETURN (STATUS (MESSAGES))')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "K&AOY-re sager"', b'* STATUS "K&AOY-re sager" (MESSAGES 0)']
    assert body(rev1.transact("OK", 'ENABLE UTF8=ACCEPT')) == [b"* ENABLED UTF8=ACCEPT"]
    assert body(rev1.transact("OK", 'LIST "" "K*"')) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" {11}\r\nK\xc3\xa6re sager']


def test_text_that_is_not_modified_utf7_is_taken_literally(sqlite_bridge: RunningBridge,
                                                           transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    # "&AC4-" spells "." in base64: invalid modified UTF-7, never decoded, so never "..".
    for sent, listed in ((b'"Test&Co"', b'"Test&-Co"'), (b'"&AC4-&AC4-"', b'"&-AC4-&-AC4-"'),
                         (b'"Sager/&AC8-x"', b'"Sager/&-AC8-x"'), (b'"K\xc3\xa6r"', b'"K&AOY-r"')):
        t.transact("OK", b"CREATE " + sent)
        name = listed.strip(b'"')
        assert body(t.transact("OK", b'LIST "" ' + listed)) == [
            b'* LIST (\\HasNoChildren \\Subscribed) "/" ' + listed], sent
        assert body(t.transact("OK", b"STATUS " + listed + b" (MESSAGES)")) == [
            b"* STATUS " + listed + b" (MESSAGES 0)"], name
    assert tagged(t.transact("NO", 'SELECT "&AC4-&AC4-/INBOX"')) == b"NO [NONEXISTENT] no such mailbox"
    assert tagged(t.transact("NO", 'CREATE "&AC4-&AC4-"')) == b"NO [ALREADYEXISTS] mailbox already exists"


def test_modified_utf7_codec_follows_rfc_3501() -> None:
    from bridge.imapserver import mutf7
    assert mutf7.encode("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert mutf7.decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e"
    assert mutf7.encode("Tr&sh \U0001f600") == "Tr&-sh &2D3eAA-"
    for bad in ("&AC4-", "&Jjo!", "&U,BTF2XlZyyKng-x&", "&AOZ-", "&2D0-", "\u00e6", "&A", "a\x01"):
        assert mutf7.name_in(bad, utf8=False) == bad, bad           # not valid: taken literally
    assert mutf7.name_in("&AOY-", utf8=True) == "&AOY-"


# --- SELECT and EXAMINE ----------------------------------------------------------------


def test_examine_offers_no_permanent_flags_and_select_offers_them(sqlite_bridge: RunningBridge,
                                                                  transcript: Opener) -> None:
    # Apple Mail and Thunderbird decide from PERMANENTFLAGS whether flags and keywords can be set.
    t = plain_login(sqlite_bridge, transcript)
    append_sync(t, b"INBOX", note("Brev"), b"($label1) ")
    lines = t.transact("OK", "EXAMINE INBOX")
    assert re.fullmatch(rb"\* OK \[UIDVALIDITY \d+\] UIDs valid", lines[4])
    assert lines[:4] + lines[5:] == [
        b"* 1 EXISTS", b"* 0 RECENT", b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $label1)",
        b"* OK [PERMANENTFLAGS ()] read-only mailbox",
        b"* OK [UIDNEXT 2] predicted next UID", b"* OK [HIGHESTMODSEQ 2] highest",
        b"t3 OK [READ-ONLY] EXAMINE completed"]
    assert tagged(t.transact("NO", "UID STORE 1 +FLAGS (\\Seen)")).startswith(b"NO [")
    assert body(t.transact("OK", "UID FETCH 1 (FLAGS BODY[TEXT])")) == [    # no \Seen on a read-only fetch
        b"* 1 FETCH (UID 1 FLAGS ($label1) BODY[TEXT] {5}\r\nHej\r\n)"]
    lines = t.transact("OK", 'select "INBOX"')
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $label1 \\*)] flags permitted" \
        in lines
    assert lines[-1] == b"t6 OK [READ-WRITE] SELECT completed"


# --- Thunderbird -----------------------------------------------------------------------


def test_thunderbird_connect_and_first_sync(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    assert body(t.transact("OK", 'ID ("name" "Thunderbird" "version" "128.5.0")')) == [
        b'* ID ("name" "dp2bridge" "vendor" "dp2bridge")']
    caps = set(body(t.transact("OK", "capability"))[0].split()[2:])
    assert {b"IMAP4rev1", b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"LIST-EXTENDED",
            b"CONDSTORE", b"LITERAL+", b"ID", b"ENABLE", b"UNSELECT", b"CHILDREN"} <= caps
    assert body(t.transact("OK", "namespace")) == [b'* NAMESPACE (("" "/")) NIL (("Shared/" "/"))']
    assert body(t.transact("OK", 'list (special-use) "" "*"')) == [
        b'* LIST (\\HasNoChildren \\Archive \\Subscribed) "/" "Archive"',
        b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" "Drafts"',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"',
        b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" "Trash"']
    subscribed = body(t.transact("OK", 'LIST (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)'))
    assert subscribed[0] == b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"' and len(subscribed) == 6
    assert body(t.transact("OK", 'lsub "" "*"')) == [
        b'* LSUB () "/" "%s"' % n for n in (b"INBOX", b"Archive", b"Drafts", b"Receipts", b"Sent", b"Trash")]
    assert body(t.transact("OK", 'list "" "INBOX"')) == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"']
    append_sync(t, b"INBOX", note("Et"))
    append_sync(t, b"INBOX", note("To"), b"(\\Seen) ")
    lines = t.transact("OK", 'select "INBOX"')
    assert lines[:2] == [b"* 2 EXISTS", b"* 0 RECENT"] and lines[-1].endswith(b"OK [READ-WRITE] SELECT completed")
    assert body(t.transact("OK", "UID fetch 1:* (FLAGS)")) == [
        b"* 1 FETCH (UID 1 FLAGS ())", b"* 2 FETCH (UID 2 FLAGS (\\Seen))"]
    headers = body(t.transact("OK", f"UID fetch 1 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS ({TB_HEADERS})])"))
    assert len(headers) == 1 and headers[0].startswith(
        b"* 1 FETCH (UID 1 RFC822.SIZE %d FLAGS () BODY[HEADER.FIELDS (%s)] {" % (len(note("Et")), TB_HEADERS.encode()))
    assert b"\r\nSubject: Et\r\n" in headers[0] and b"MIME-Version" not in headers[0]
    assert body(t.transact("OK", "UID fetch 1 (UID RFC822.SIZE FLAGS BODY.PEEK[])"))[0].endswith(
        b"\r\n\r\nHej\r\n)")
    assert body(t.transact("OK", "uid store 1 +FLAGS (\\Seen)")) == [b"* 1 FETCH (UID 1 FLAGS (\\Seen))"]
    assert body(t.transact("OK", 'STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)')) == [
        b'* STATUS "Sent" (UIDNEXT 1 MESSAGES 0 UNSEEN 0 RECENT 0)']
    assert body(t.transact("OK", "noop")) == []
    bye = t.transact("OK", "logout")
    assert bye[0] == b"* BYE dp2bridge logging out" and tagged(bye) == b"OK LOGOUT completed"


def test_thunderbird_sent_copy_draft_save_and_draft_delete(sqlite_bridge: RunningBridge,
                                                           transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    sent = append_sync(t, b'"Sent"', note("Sendt"), b"(\\Seen) ")
    assert re.fullmatch(rb"t\d+ OK \[APPENDUID \d+ 1\] APPEND completed", sent[-1])
    assert tagged(append_sync(t, b'"Sendte elementer"', note("Sendt"), b"(\\Seen) ")) == \
        b"NO [TRYCREATE] no such mailbox"
    t.transact("OK", 'select "Drafts"')
    draft = append_sync(t, b'"Drafts"', note("Udkast 1"), b"(\\Seen \\Draft) ")
    assert draft[0] == b"* 1 EXISTS"                                   # into the selected mailbox
    uidvalidity = re.search(rb"APPENDUID (\d+) 1\]", draft[-1]).group(1)  # type: ignore[union-attr]
    draft2 = append_sync(t, b'"Drafts"', note("Udkast 2"), b"(\\Seen \\Draft) ")
    assert draft2[0] == b"* 2 EXISTS" and b"[APPENDUID %s 2]" % uidvalidity in draft2[-1]
    # Thunderbird replaces the old draft: flag it \Deleted and expunge just that UID (UIDPLUS).
    assert body(t.transact("OK", "uid store 1 +FLAGS (\\Deleted)")) == [
        b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Draft \\Seen))"]
    assert body(t.transact("OK", "UID EXPUNGE 1")) == [b"* 1 EXPUNGE"]
    assert body(t.transact("OK", "UID fetch 1:* (FLAGS)")) == [b"* 1 FETCH (UID 2 FLAGS (\\Draft \\Seen))"]


def test_thunderbird_move_copy_and_empty_trash(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    for n in range(4):
        append_sync(t, b"INBOX", note(f"Brev {n}"))
    t.transact("OK", 'select "INBOX"')
    moved = t.transact("OK", 'UID MOVE 2 "Archive"')
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 2 1\] moved", moved[0])
    assert moved[1:] == [b"* 2 EXPUNGE", b"t7 OK MOVE completed"]
    # Thunderbird without MOVE, and K-9: COPY, flag \Deleted, UID EXPUNGE.
    copied = t.transact("OK", 'UID COPY 3:4 "Trash"')
    assert re.fullmatch(rb"t8 OK \[COPYUID \d+ 3:4 1:2\] COPY completed", copied[0])
    assert body(t.transact("OK", "UID STORE 3:4 +FLAGS.SILENT (\\Deleted)")) == []
    assert body(t.transact("OK", "UID EXPUNGE 3:4")) == [b"* 3 EXPUNGE", b"* 2 EXPUNGE"]
    assert tagged(t.transact("NO", 'UID MOVE 1 "Papirkurv"')) == b"NO [TRYCREATE] no such mailbox"
    assert body(t.transact("OK", "UID MOVE 99 Trash")) == []             # no such UID: nothing to do
    # Empty Trash: select it, flag everything, EXPUNGE.
    t.transact("OK", 'select "Trash"')
    assert body(t.transact("OK", "UID STORE 1:* +FLAGS.SILENT (\\Deleted)")) == []
    assert body(t.transact("OK", "expunge")) == [b"* 2 EXPUNGE", b"* 1 EXPUNGE"]
    assert body(t.transact("OK", 'STATUS "INBOX" (MESSAGES)')) == [b'* STATUS "INBOX" (MESSAGES 1)']
    assert body(t.transact("OK", 'STATUS "Archive" (MESSAGES)')) == [b'* STATUS "Archive" (MESSAGES 1)']


def test_thunderbird_smime_signed_message(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    append_sync(t, b"INBOX", SIGNED)
    t.transact("OK", 'select "INBOX"')
    assert body(t.transact("OK", "UID fetch 1 (BODYSTRUCTURE)")) == [
        b"* 1 FETCH (UID 1 BODYSTRUCTURE " + SIGNED_STRUCTURE + b")"]
    start = SIGNED.index(b"--------------ms010203\r\n") + len(b"--------------ms010203\r\n")
    first = SIGNED[start:SIGNED.index(b"\r\n--------------ms010203\r\nContent-Type: application")]
    # The signed part, byte-exact, MIME header included: what the signature covers.
    mime, text = first.split(b"\r\n\r\n", 1)
    assert body(t.transact("OK", "UID fetch 1 (BODY.PEEK[1.MIME] BODY.PEEK[1])")) == [
        b"* 1 FETCH (UID 1 BODY[1.MIME] {%d}\r\n%s\r\n\r\n BODY[1] {%d}\r\n%s)" % (len(mime) + 4, mime, len(text), text)]
    p7s = body(t.transact("OK", "UID fetch 1 (BODY.PEEK[2])"))[0]
    assert p7s.endswith(b"{74}\r\nMIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAKCC\r\n)")
    assert body(t.transact("OK", "UID fetch 1 (FLAGS)")) == [b"* 1 FETCH (UID 1 FLAGS ())"]   # PEEK


def test_thunderbird_idle_sees_mail_filed_by_another_session(sqlite_bridge: RunningBridge,
                                                              transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    t.transact("OK", 'select "INBOX"')
    t.send(b"t9 IDLE\r\n")
    assert t.readline() == b"+ idling"
    other = plain_login(sqlite_bridge, transcript)
    append_sync(other, b"INBOX", note("Ny post"))
    assert t.readline() == b"* 1 EXISTS"
    t.send(b"DONE\r\n")
    assert t.readline() == b"t9 OK IDLE completed"
    assert body(t.transact("OK", "UID fetch 1:* (FLAGS)")) == [b"* 1 FETCH (UID 1 FLAGS ())"]


# --- Outlook, Apple Mail, K-9/FairEmail, mutt, Evolution ------------------------------------


def test_outlook_selects_without_list_and_fetches_envelopes(sqlite_bridge: RunningBridge,
                                                             transcript: Opener) -> None:
    t = transcript(sqlite_bridge)
    t.transact("OK", f"LOGIN {ANNA} {PASSWORDS[ANNA]}")
    append_sync(t, b"INBOX", SIGNED, b'(\\Seen) "27-Nov-2026 10:00:00 +0100" ')
    lines = t.transact("OK", "SELECT INBOX")                          # no LIST before it
    assert lines[0] == b"* 1 EXISTS" and lines[-1].endswith(b"OK [READ-WRITE] SELECT completed")
    anna = b'(("Anna Borger" NIL "anna" "borger.dp2.test"))'
    assert body(t.transact("OK", "UID FETCH 1:* (UID FLAGS ENVELOPE INTERNALDATE RFC822.SIZE)")) == [
        b'* 1 FETCH (UID 1 FLAGS (\\Seen) ENVELOPE ("Fri, 27 Nov 2026 10:00:00 +0100" '
        b'"=?UTF-8?Q?K=C3=A6re_sagsbehandler?=" ' + anna + b" " + anna + b" " + anna +
        b' (("Jobcenter, Aarhus" NIL "jobcenter" "kommune.dp2.test")) NIL NIL NIL "<tb-1@borger.dp2.test>") '
        b'INTERNALDATE "27-Nov-2026 09:00:00 +0000" RFC822.SIZE %d)' % len(SIGNED)]
    assert body(t.transact("OK", "UID STORE 1 +FLAGS (\\Deleted)")) == [b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Seen))"]
    assert body(t.transact("OK", "EXPUNGE")) == [b"* 1 EXPUNGE"]
    assert body(t.transact("OK", "CHECK")) == []


def test_apple_mail_condstore_resync(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    t.transact("OK", 'ID ("name" "Mac OS X Mail" "version" "16.0 (3774)" "os" "macOS")')
    assert body(t.transact("OK", 'LIST "" ""')) == [b'* LIST (\\Noselect) "/" ""']
    for n in range(3):
        append_sync(t, b"INBOX", note(f"Brev {n}"))
    status = body(t.transact("OK", "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"))[0]
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", status).group(1))  # type: ignore[union-attr]
    other = plain_login(sqlite_bridge, transcript)                     # the phone reads one meanwhile
    other.transact("OK", "SELECT INBOX")
    other.transact("OK", "UID STORE 2 +FLAGS.SILENT (\\Seen)")
    lines = t.transact("OK", "SELECT INBOX (CONDSTORE)")
    assert b"* OK [HIGHESTMODSEQ %d] highest" % (modseq + 1) in lines
    assert body(t.transact("OK", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")) == [
        b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (%d))" % (modseq + 1)]
    assert body(t.transact("OK", "UID SEARCH 1:* UNDELETED")) == [b"* SEARCH 1 2 3"]
    assert body(t.transact("OK", "UID FETCH 3 (BODY.PEEK[HEADER.FIELDS (date subject from message-id)])")) == [
        b"* 3 FETCH (UID 3 BODY[HEADER.FIELDS (date subject from message-id)] {%d}\r\n"
        % len(b"From: Anna Borger <anna@borger.dp2.test>\r\nSubject: Brev 2\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
              b"Message-ID: <" + str(abs(hash("Brev 2"))).encode() + b"@borger.dp2.test>\r\n\r\n") +
        b"From: Anna Borger <anna@borger.dp2.test>\r\nSubject: Brev 2\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\n"
        b"Message-ID: <" + str(abs(hash("Brev 2"))).encode() + b"@borger.dp2.test>\r\n\r\n)"]


def test_k9_and_fairemail_sync(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    for n in range(3):
        append_sync(t, b"INBOX", note(f"Brev {n}", body="Linje\r\n" * 40))
    t.transact("OK", 'SELECT "INBOX"')
    t.transact("OK", "UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert body(t.transact("OK", "UID SEARCH 1:* NOT DELETED")) == [b"* SEARCH 1 3"]
    k9 = ("UID FETCH 3 (UID INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (date subject from content-type to "
          "cc reply-to message-id references in-reply-to X-K9mail-Identity Chat-Version)])")
    assert b"Subject: Brev 2\r\n" in body(t.transact("OK", k9))[0]
    raw = note("Brev 2", body="Linje\r\n" * 40)
    assert body(t.transact("OK", "UID FETCH 3 (UID RFC822.SIZE BODY.PEEK[]<0.100>)")) == [
        b"* 3 FETCH (UID 3 RFC822.SIZE %d BODY[]<0> {100}\r\n%s)" % (len(raw), raw[:100])]
    assert body(t.transact("OK", "UID FETCH 3 (UID BODY.PEEK[1]<0.14>)")) == [
        b"* 3 FETCH (UID 3 BODY[1]<0> {14}\r\nLinje\r\nLinje\r\n)"]
    assert body(t.transact("OK", "UID FETCH 1:3 (UID FLAGS)")) == [
        b"* 1 FETCH (UID 1 FLAGS ())", b"* 2 FETCH (UID 2 FLAGS (\\Deleted))", b"* 3 FETCH (UID 3 FLAGS ())"]


def test_mutt_sync_and_append(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    assert body(t.transact("OK", 'LIST "" "%"'))[0] == b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"'
    appended = append_sync(t, b'"Sent"', note("Fra mutt"), b'(\\Seen) "27-Nov-2026 10:00:00 +0100" ')
    assert tagged(appended).endswith(b"APPEND completed")
    t.transact("OK", 'SELECT "Sent"')
    mutt = ("FETCH 1:1 (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (DATE FROM SENDER SUBJECT TO "
            "CC MESSAGE-ID REFERENCES CONTENT-TYPE CONTENT-DESCRIPTION IN-REPLY-TO REPLY-TO LINES LIST-POST "
            "X-LABEL X-ORIGINAL-TO)])")
    line = body(t.transact("OK", mutt))[0]
    assert line.startswith(b'* 1 FETCH (UID 1 FLAGS (\\Seen) INTERNALDATE "27-Nov-2026 09:00:00 +0000" RFC822.SIZE ')
    assert body(t.transact("OK", "UID STORE 1 -FLAGS.SILENT (\\Seen)")) == []
    assert body(t.transact("OK", "UID STORE 1 +FLAGS.SILENT (\\Flagged \\Answered)")) == []
    assert body(t.transact("OK", "FETCH 1 (FLAGS)")) == [b"* 1 FETCH (FLAGS (\\Answered \\Flagged))"]
    assert body(t.transact("OK", 'STATUS "INBOX" (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)'))[0].startswith(
        b'* STATUS "INBOX" (MESSAGES 0 RECENT 0 UIDNEXT 1 UIDVALIDITY ')


def test_evolution_list_status_and_qresync(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    append_sync(t, b"INBOX", note("Et"))
    append_sync(t, b"INBOX", note("To"))
    lines = body(t.transact("OK", 'LIST "" "*" RETURN (SUBSCRIBED CHILDREN SPECIAL-USE STATUS '
                                  '(MESSAGES UNSEEN UIDVALIDITY UIDNEXT HIGHESTMODSEQ))'))
    assert lines[0] == b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"'
    assert re.fullmatch(rb'\* STATUS "INBOX" \(MESSAGES 2 UNSEEN 2 UIDVALIDITY (\d+) UIDNEXT 3 HIGHESTMODSEQ 3\)',
                        lines[1])
    uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", lines[1]).group(1))  # type: ignore[union-attr]
    assert len(lines) == 12                                            # six mailboxes, LIST + STATUS each
    assert body(t.transact("OK", "ENABLE QRESYNC")) == [b"* ENABLED QRESYNC"]
    t.transact("OK", "SELECT INBOX")
    t.transact("OK", "UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    t.transact("OK", "UID EXPUNGE 1")
    t.transact("OK", "UNSELECT")
    lines = t.transact("OK", f"SELECT INBOX (QRESYNC ({uidvalidity} 3 1:2))")
    assert b"* VANISHED (EARLIER) 1" in lines and lines[0] == b"* 1 EXISTS"
    assert tagged(lines) == b"OK [READ-WRITE] SELECT completed"


def test_search_charset_utf8_with_danish_letters(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    append_sync(t, b"INBOX", SIGNED)                                  # Subject: =?UTF-8?Q?K=C3=A6re_...?=
    append_sync(t, b"INBOX", note("=?utf-8?q?Afg=C3=B8relse?=", body="Se afg\u00f8relsen.\r\n"))
    append_sync(t, b"INBOX", note("Ingen"))
    t.transact("OK", 'SELECT "INBOX"')
    assert body(t.transact("OK", b"SEARCH CHARSET UTF-8 SUBJECT {4+}\r\nK\xc3\xa6r")) == [b"* SEARCH 1"]
    assert body(t.transact("OK", b'UID SEARCH CHARSET UTF-8 SUBJECT "afg\xc3\xb8relse"')) == [b"* SEARCH 2"]
    assert body(t.transact("OK", b"UID SEARCH CHARSET UTF-8 TEXT {8+}\r\nafg\xc3\xb8rel")) == [b"* SEARCH 2"]
    assert body(t.transact("OK", b"SEARCH CHARSET UTF-8 OR SUBJECT {4+}\r\nk\xc3\xa6r BODY {11+}\r\nafg\xc3\xb8relsen"
                           )) == [b"* SEARCH 1 2"]
    assert tagged(t.transact("NO", b"SEARCH CHARSET ISO-8859-1 SUBJECT {3+}\r\nK\xe6r")) == \
        b"NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset"


def test_literal8_append_and_binary_fetch(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    t = plain_login(sqlite_bridge, transcript)
    raw = note("Bin\u00e6r", body="K\u00e6re Anna\r\n")
    assert tagged(t.transact("OK", b"APPEND INBOX (\\Seen) ~{%d+}\r\n%s" % (len(raw), raw))).endswith(
        b"APPEND completed")
    t.transact("OK", "SELECT INBOX")
    assert body(t.transact("OK", "UID FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])")) == [
        b"* 1 FETCH (UID 1 BINARY[1] {12}\r\nK\xc3\xa6re Anna\r\n BINARY.SIZE[1] 12)"]


def test_extensions_answered_bad_are_not_advertised(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    # Thunderbird sends GETQUOTAROOT, MYRIGHTS, XLIST and COMPRESS only when the capability is
    # offered; each is unknown here, so none may be offered.
    t = plain_login(sqlite_bridge, transcript)
    caps = body(t.transact("OK", "CAPABILITY"))[0].split()[2:]
    assert not [c for c in caps if c.split(b"=")[0] in (b"QUOTA", b"ACL", b"RIGHTS", b"XLIST", b"COMPRESS",
                                                       b"X-GM-EXT-1", b"NOTIFY", b"MULTIAPPEND", b"METADATA")]
    for command in ("GETQUOTAROOT INBOX", "MYRIGHTS INBOX", 'XLIST "" "*"', "COMPRESS DEFLATE", "GETACL INBOX"):
        assert tagged(t.transact("BAD", command)) == b"BAD unknown command"
    assert body(t.transact("OK", "NOOP")) == []


# --- a selected mailbox deleted ----------------------------------------------------------


def test_deleting_the_selected_mailbox_closes_it_for_every_session(sqlite_bridge: RunningBridge,
                                                                   transcript: Opener) -> None:
    # Thunderbird on the desktop has "Gammelt" selected (one session idling, one not) while the
    # phone deletes the folder: no SERVERBUG, no STORE into a mailbox that is gone.
    desktop, idler, phone = (plain_login(sqlite_bridge, transcript) for _ in range(3))
    phone.transact("OK", "CREATE Gammelt")
    append_sync(phone, b"Gammelt", note("Gammelt brev"))
    desktop.transact("OK", "SELECT Gammelt")
    idler.transact("OK", "SELECT Gammelt")
    idler.send(b"i1 IDLE\r\n")
    assert idler.readline() == b"+ idling"
    phone.transact("OK", "DELETE Gammelt")
    assert idler.readline() == b"* OK [CLOSED] mailbox deleted"
    idler.send(b"DONE\r\n")
    assert idler.readline() == b"i1 OK IDLE completed"
    lines = desktop.transact("NO", "UID STORE 1 +FLAGS (\\Seen)")
    assert lines[0] == b"* OK [CLOSED] mailbox closed" and tagged(lines) == b"NO [NONEXISTENT] no such mailbox"
    assert tagged(desktop.transact("BAD", "UID FETCH 1:* (FLAGS)")) == b"BAD select a mailbox first"
    assert tagged(desktop.transact("NO", "SELECT Gammelt")) == b"NO [NONEXISTENT] no such mailbox"
    # Deleting the mailbox one has selected (Thunderbird deleting a folder it shows) closes it.
    desktop.transact("OK", "CREATE Tom")
    desktop.transact("OK", "SELECT Tom")
    assert desktop.transact("OK", "DELETE Tom")[0] == b"* OK [CLOSED] mailbox deleted"
    assert tagged(desktop.transact("BAD", "UID FETCH 1:* (FLAGS)")) == b"BAD select a mailbox first"
    assert body(desktop.transact("OK", "NOOP")) == [] and body(idler.transact("OK", "NOOP")) == []
