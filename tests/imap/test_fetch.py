"""FETCH completeness (issue 3, acceptance 2): Anna reads the caseworker's letters over IMAPS with
imaplib, and ENVELOPE, BODYSTRUCTURE and every body section agree with what Python's `email`
package makes of the same stored bytes."""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import re
import urllib.parse
from email.message import Message
from typing import Any

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.imap import Transcript, imap_client
from tests.helpers.smtp import login, wait_for
from tests.imap.conftest import Opener

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"        # NUL and 8-bit octets inside


def _b64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))


INNER = ("From: Jobcenter <jobcenter@kommune.dp2.test>\r\nTo: anna@borger.dp2.test\r\n"
         "Subject: Tidligere brev\r\nMessage-ID: <inner-1@kommune.dp2.test>\r\n"
         "Date: Mon, 02 Nov 2026 09:00:00 +0100\r\nMIME-Version: 1.0\r\n"
         "Content-Type: text/plain; charset=us-ascii\r\n\r\nDet tidligere brev.\r\n")

LETTER = (
    f"From: Jobcenter Aarhus <{JOBCENTER}>\r\nTo: Anna Borger <{ANNA_CPR_ADDR}>\r\n"
    "Subject: =?utf-8?q?Afg=C3=B8relse_om_ydelse?=\r\nMessage-ID: <letter-1@kommune.dp2.test>\r\n"
    "Date: Fri, 27 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="outer-b"\r\n\r\n'
    "This is a multi-part message in MIME format.\r\n"
    "--outer-b\r\n"
    'Content-Type: multipart/alternative; boundary="alt-b"\r\n\r\n'
    "--alt-b\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    "K=C3=A6re Anna,\r\nhermed afg=C3=B8relsen.\r\n"
    "--alt-b\r\n"
    "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    "Content-Language: da, en\r\n\r\n"
    "<p>Kære Anna,</p>\r\n<p>hermed afgørelsen.</p>\r\n"
    "--alt-b--\r\n"
    "--outer-b\r\n"
    "Content-Type: application/pdf; name*=utf-8''Afg%C3%B8relse.pdf\r\n"
    "Content-Transfer-Encoding: base64\r\nContent-ID: <pdf-1@kommune.dp2.test>\r\n"
    "Content-Description: Afgoerelse\r\n"
    "Content-Disposition: attachment; filename*0*=utf-8''Afg%C3%B8;\r\n filename*1=relse.pdf\r\n\r\n"
    f"{_b64(PDF)}\r\n"
    "--outer-b\r\n"
    "Content-Type: message/rfc822\r\n\r\n"
    f"{INNER}"
    "--outer-b--\r\n"
).encode()

NO_CONTENT_TYPE = (f"From: {JOBCENTER}\r\nTo: {ANNA_CPR_ADDR}\r\nSubject: Uden type\r\n"
                   "Message-ID: <plain-1@kommune.dp2.test>\r\nDate: Fri, 27 Nov 2026 11:00:00 +0100\r\n"
                   "\r\nKun tekst.\r\nTo linjer.\r\n").encode()

EIGHT_BIT = (f"From: Jobcentret Ærø <{JOBCENTER}>\r\nTo: {ANNA_CPR_ADDR}\r\nSubject: Afgørelse på ø\r\n"
             "Message-ID: <eight-1@kommune.dp2.test>\r\nDate: Fri, 27 Nov 2026 12:00:00 +0100\r\n"
             "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\nBrev på dansk: æøå.\r\n").encode()


def deliver(bridge: RunningBridge, raw: bytes) -> bytes:
    """Send `raw` as the caseworker to Anna; the bytes the store keeps for her."""
    before = len(bridge.store.mailbox_entries(ANNA))
    with login(bridge, CASEWORKER) as c:
        c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], raw)
    entry = wait_for(lambda: (e := bridge.store.mailbox_entries(ANNA)) and len(e) > before and e[-1], 10)
    return bridge.app.blobs.get(entry["sha256"])


# --- reading imaplib's FETCH data back into nested lists ------------------------------------

_TOKEN = re.compile(rb'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|(~?\{\d+\}$)|([^\s()"\[]+(?:\[[^\]]*\](?:<\d+>)?)?))')


def parse_fetch(data: list[Any]) -> dict[str, Any]:
    """imaplib's data for ONE message's FETCH response -> {item name: value}; strings are bytes,
    NIL is None, lists are lists."""
    stream: list[Any] = []
    for piece in data:
        text, lit = (piece[0], piece[1]) if isinstance(piece, tuple) else (piece, None)
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                break
            pos = m.end()
            if m.group(1):
                stream.append("(")
            elif m.group(2):
                stream.append(")")
            elif m.group(3) is not None:
                stream.append(re.sub(rb"\\(.)", rb"\1", m.group(3)))
            elif m.group(4):
                stream.append(lit)
            else:
                word = m.group(5)
                stream.append(None if word == b"NIL" else word.decode())
    value, _ = _value(stream, stream.index("("))
    return {value[i]: value[i + 1] for i in range(0, len(value), 2)}


def _value(stream: list[Any], i: int) -> tuple[Any, int]:
    if stream[i] != "(":
        return stream[i], i + 1
    out, i = [], i + 1
    while stream[i] != ")":
        item, i = _value(stream, i)
        out.append(item)
    return out, i + 1


def fetch(client: imaplib.IMAP4, seq: str, items: str) -> dict[str, Any]:
    typ, data = client.fetch(seq, items)
    assert typ == "OK", data
    return parse_fetch(data)


# --- what email makes of the same bytes -----------------------------------------------------

def body_of(part: Message) -> bytes:
    """The raw body octets of a leaf part, as the email package split them out."""
    payload = part.get_payload(decode=False)
    if isinstance(payload, list):              # message/rfc822: the embedded message as written
        return payload[0].as_bytes(policy=email.policy.default.clone(linesep="\r\n"))
    return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else payload


def check_structure(bs: list[Any], part: Message, extended: bool = True) -> None:
    """A BODYSTRUCTURE (or BODY) list against the email package's view of `part`."""
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        subparts = part.get_payload()
        assert len(bs) >= len(subparts) + 1
        for sub_bs, sub in zip(bs, subparts):
            check_structure(sub_bs, sub, extended)
        rest = bs[len(subparts):]
        assert rest[0].decode().lower() == part.get_content_subtype()
        if extended:
            assert [rest[1][0].lower(), rest[1][1]] == [b"boundary", part.get_boundary().encode()]
            assert rest[2:] == [None, None, None]
        else:
            assert len(rest) == 1
        return
    mtype, subtype, params, cid, desc, enc, size = bs[:7]
    mtype, subtype = mtype.decode().lower(), subtype.decode().lower()
    assert (mtype, subtype) == (part.get_content_maintype(), part.get_content_subtype())
    expected_params = {k.lower(): v for k, v in part.get_params()[1:]} if part.get("content-type") else \
        {"charset": "us-ascii"}
    got = {}
    for k, v in zip((params or [])[::2], (params or [])[1::2]):
        k = k.decode()
        if k.endswith("*"):                       # RFC 2231 form
            got[k[:-1].lower()] = rfc2231(v)
        else:
            got[k.lower()] = v.decode()
    assert got == {k: email.utils.collapse_rfc2231_value(v) for k, v in expected_params.items()}
    assert cid == (part["content-id"].encode() if part["content-id"] else None)
    assert desc == (part["content-description"].encode() if part["content-description"] else None)
    assert enc.decode().upper() == (part.get("content-transfer-encoding") or "7bit").upper()
    body = body_of(part)
    assert int(size) == len(body)
    rest = bs[7:]
    if mtype == "message":
        inner = part.get_payload(0)
        envelope, inner_bs, lines = rest[:3]
        check_envelope(envelope, inner)
        check_structure(inner_bs, inner, extended)
        assert int(lines) == body.count(b"\n") + (not body.endswith(b"\n"))
        rest = rest[3:]
    elif mtype == "text":
        assert int(rest[0]) == body.count(b"\n") + (not body.endswith(b"\n"))
        rest = rest[1:]
    if not extended:
        assert rest == []
        return
    md5, disposition, language, location = rest
    assert md5 is None and location is None
    if part.get_content_disposition():
        assert disposition[0].decode().lower() == part.get_content_disposition()
        dparams = dict(zip([k.decode().lower() for k in disposition[1][::2]], disposition[1][1::2]))
        if "filename*" in dparams:
            name = rfc2231(dparams["filename*"])
            assert name == part.get_filename()
    else:
        assert disposition is None
    langs = [x.strip() for x in (part["content-language"] or "").split(",") if x.strip()]
    if not langs:
        assert language is None
    else:
        assert ([language] if isinstance(language, bytes) else language) == [x.encode() for x in langs]


def _u(text: str) -> str:
    """email keeps 8-bit header octets as surrogate escapes; they are UTF-8 here."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8")


def rfc2231(value: bytes) -> str:
    charset, _language, text = value.decode("ascii").split("'", 2)
    return urllib.parse.unquote(text, encoding=charset, errors="strict")


def check_envelope(env: list[Any], msg: Message) -> None:
    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = env
    assert date.decode() == str(msg["date"])
    assert email.header.make_header(email.header.decode_header(subject.decode())).__str__() == _u(str(msg["subject"]))
    for field, addrs in (("from", from_), ("to", to)):
        expected = [(_u(a.display_name), a.username, a.domain) for a in msg[field].addresses]
        got = [(email.header.make_header(email.header.decode_header(a[0].decode())).__str__() if a[0] else "",
                a[2].decode(), a[3].decode()) for a in addrs]
        assert got == expected
    assert sender == reply_to == from_                       # RFC 9051 7.5.2 defaults
    assert cc is None and bcc is None and in_reply_to is None
    assert message_id.decode() == str(msg["message-id"])


def parsed(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


# --- the tests --------------------------------------------------------------------------------

@pytest.fixture
def letters(bridge: RunningBridge) -> list[bytes]:
    return [deliver(bridge, raw) for raw in (LETTER, NO_CONTENT_TYPE, EIGHT_BIT)]


def test_envelope_and_bodystructure_match_the_email_package(bridge: RunningBridge, letters: list[bytes]) -> None:
    client = imap_client(bridge, ANNA)
    try:
        assert client.select("INBOX") == ("OK", [b"3"])
        for seq, raw in enumerate(letters, 1):
            got = fetch(client, str(seq), "(ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE)")
            msg = parsed(raw)
            check_envelope(got["ENVELOPE"], msg)
            check_structure(got["BODYSTRUCTURE"], msg, extended=True)
            check_structure(got["BODY"], msg, extended=False)
            assert int(got["RFC822.SIZE"]) == len(raw)
        # The message without Content-Type is text/plain; charset=us-ascii (RFC 2045 section 5.2).
        bs = fetch(client, "2", "BODYSTRUCTURE")["BODYSTRUCTURE"]
        assert bs[:3] == [b"TEXT", b"PLAIN", [b"CHARSET", b"us-ascii"]]
        # 8-bit header text goes out as literals, byte for byte.
        env = fetch(client, "3", "ENVELOPE")["ENVELOPE"]
        assert env[1] == "Afgørelse på ø".encode() and env[2][0][0] == "Jobcentret Ærø".encode()
        assert client.fetch("1:3", "(FLAGS)")[1] == [b"1 (FLAGS ())", b"2 (FLAGS ())", b"3 (FLAGS ())"]
    finally:
        client.logout()


def test_the_rfc2231_filename_and_the_nested_message(bridge: RunningBridge, letters: list[bytes]) -> None:
    client = imap_client(bridge, ANNA)
    try:
        client.select("INBOX")
        bs = fetch(client, "1", "BODYSTRUCTURE")["BODYSTRUCTURE"]
        pdf, rfc822 = bs[1], bs[2]
        assert pdf[:3] == [b"APPLICATION", b"PDF", [b"NAME*", b"utf-8''Afg%C3%B8relse.pdf"]]
        assert pdf[8] == [b"ATTACHMENT", [b"FILENAME*", b"utf-8''Afg%C3%B8relse.pdf"]]
        assert parsed(letters[0]).get_payload()[1].get_filename() == "Afgørelse.pdf"
        assert rfc822[:2] == [b"MESSAGE", b"RFC822"] and rfc822[7][1] == b"Tidligere brev"
        assert rfc822[8][:2] == [b"TEXT", b"PLAIN"]
    finally:
        client.logout()


def test_body_sections_are_byte_exact(bridge: RunningBridge, letters: list[bytes]) -> None:
    raw = letters[0]
    msg = parsed(raw)
    alternative, pdf, attached = msg.get_payload()
    header_end = raw.index(b"\r\n\r\n") + 4
    client = imap_client(bridge, ANNA)
    try:
        client.select("INBOX")
        got = fetch(client, "1", "(BODY.PEEK[] BODY.PEEK[1.2] BODY.PEEK[2.MIME] BODY.PEEK[1.1] "
                                 "BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[]<0.10> BODY.PEEK[1.2]<5.7> "
                                 "BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] BODY.PEEK[3] BODY.PEEK[3.1])")
        assert got["BODY[]"] == raw
        assert got["BODY[1.2]"] == body_of(alternative.get_payload()[1])
        assert got["BODY[1.1]"] == body_of(alternative.get_payload()[0])
        mime_start = raw.index(b"Content-Type: application/pdf")
        assert got["BODY[2.MIME]"] == raw[mime_start:raw.index(b"\r\n\r\n", mime_start) + 4]
        assert got["BODY[HEADER]"] == raw[:header_end] and got["BODY[TEXT]"] == raw[header_end:]
        assert got["BODY[]<0>"] == raw[:10]
        assert got["BODY[1.2]<5>"] == body_of(alternative.get_payload()[1])[5:12]
        # RFC 2046 section 5.1.1: the CRLF before a boundary belongs to the boundary
        assert got["BODY[3]"] == INNER.encode()[:-2] == body_of(attached)
        assert got["BODY[3.HEADER]"] + got["BODY[3.TEXT]"] == INNER.encode()[:-2]
        assert got["BODY[3.TEXT]"] == b"Det tidligere brev." == got["BODY[3.1]"]

        fields = fetch(client, "1", "(BODY.PEEK[HEADER.FIELDS (Subject FROM)] "
                                    "BODY.PEEK[HEADER.FIELDS.NOT (subject from received authentication-results)])")
        assert fields["BODY[HEADER.FIELDS (Subject FROM)]"] == (
            f"From: {msg['from']}\r\nSubject: =?utf-8?q?Afg=C3=B8relse_om_ydelse?=\r\n\r\n").encode()
        assert fields["BODY[HEADER.FIELDS.NOT (subject from received authentication-results)]"] == (
            b"To: Anna Borger <anna@borger.dp2.test>\r\nMessage-ID: <letter-1@kommune.dp2.test>\r\n"
            b"Date: Fri, 27 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="outer-b"\r\n\r\n')

        binary = fetch(client, "1", "(BINARY.PEEK[2] BINARY.SIZE[2] BINARY.PEEK[1.1] BINARY.PEEK[2]<0.4>)")
        assert binary["BINARY[2]"] == PDF == pdf.get_payload(decode=True)
        assert int(binary["BINARY.SIZE[2]"]) == len(PDF)
        assert binary["BINARY[1.1]"] == "Kære Anna,\r\nhermed afgørelsen.".encode() == \
            alternative.get_payload()[0].get_payload(decode=True)
        assert binary["BINARY[2]<0>"] == b"%PDF"
        typ, data = client.fetch("1", "(BINARY.PEEK[2])")
        assert data[0][0].endswith(b"BINARY[2] ~{%d}" % len(PDF))     # literal8: NULs inside

        rfc822 = fetch(client, "1", "(RFC822.HEADER RFC822.SIZE)")
        assert rfc822["RFC822.HEADER"] == raw[:header_end] and int(rfc822["RFC822.SIZE"]) == len(raw)
        assert client.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS ())"]       # all of that was PEEK
        text = fetch(client, "1", "(RFC822.TEXT)")
        assert text["RFC822.TEXT"] == raw[header_end:] and text["FLAGS"] == ["\\Seen"]
        assert fetch(client, "2", "RFC822") == {"RFC822": letters[1], "FLAGS": ["\\Seen"]}
        assert fetch(client, "2", "RFC822") == {"RFC822": letters[1]}     # already seen: no FLAGS
    finally:
        client.logout()


def test_fetch_grammar_over_raw_transcripts(sqlite_bridge: RunningBridge, transcript: Opener) -> None:
    deliver(sqlite_bridge, NO_CONTENT_TYPE)
    deliver(sqlite_bridge, NO_CONTENT_TYPE.replace(b"plain-1", b"plain-2").replace(
        b"\r\n\r\n", b"\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"))
    t = transcript(sqlite_bridge, ANNA)
    t.transact("OK", "EXAMINE INBOX")
    assert t.transact("OK", "FETCH 1 (BODY.PEEK[TEXT]<4.5>)")[0] == b"* 1 FETCH (BODY[TEXT]<4> {5}\r\ntekst)"
    assert t.transact("OK", "FETCH 1 (BODY.PEEK[TEXT]<400.5>)")[0] == b"* 1 FETCH (BODY[TEXT]<400> {0}\r\n)"
    assert t.transact("OK", "FETCH 1 BODY[9]")[0] == b"* 1 FETCH (BODY[9] {0}\r\n)"
    assert t.transact("OK", "FETCH 1 BODY[]")[0].startswith(b"* 1 FETCH (BODY[] {")   # EXAMINE: no \Seen
    assert t.transact("OK", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS ())", b"t7 OK FETCH completed"]
    assert t.transact("OK", "FETCH 1 FAST")[0].startswith(b'* 1 FETCH (FLAGS () INTERNALDATE "')
    for bad in ("FETCH 1 (BODY[HEADER.FIELDS])", "FETCH 1 BODY[", "FETCH 1 (FLAGS", "FETCH 1 FROB",
                "FETCH 1 (ALL)", "FETCH 1 BINARY[HEADER]", "FETCH 0 FLAGS", "FETCH 3 FLAGS",
                "FETCH 1", "FETCH 1 FLAGS (CHANGEDSINCE x)"):
        assert t.transact("BAD", bad)[-1].split(b" ")[1] == b"BAD", bad
    assert t.transact("NO", "FETCH 2 BINARY.PEEK[1]")[-1].startswith(
        b"t19 NO [UNKNOWN-CTE] cannot decode this content transfer encoding (ref ")
    assert t.transact("OK", "FETCH 2 BODY.PEEK[1]<0.3>")[0] == b"* 2 FETCH (BODY[1]<0> {3}\r\nKun)"
