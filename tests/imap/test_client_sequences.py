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
