"""IMAP response syntax (bridge/imapserver/responses.py): strings, ENVELOPE, BODYSTRUCTURE."""

from __future__ import annotations

from bridge.core.mimeinfo import analyze
from bridge.imapserver.responses import astring, body_structure, envelope, mailbox_name, nil_or_string, string


def test_strings() -> None:
    assert string("abc") == b'"abc"'
    assert string('a"b\\c') == b'"a\\"b\\\\c"'
    assert string("æ") == b"{2}\r\n\xc3\xa6"
    assert string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert string("x" * 1000) == b"{1000}\r\n" + b"x" * 1000
    assert nil_or_string(None) == b"NIL" and nil_or_string("") == b'""'
    assert astring("INBOX") == b"INBOX" and astring("NIL") == b'"NIL"' and astring("a b") == b'"a b"'
    assert mailbox_name("Sent") == b'"Sent"' and mailbox_name("Kvittering ø") == b"{13}\r\nKvittering \xc3\xb8"


def test_envelope_of_a_simple_message() -> None:
    info = analyze(b'From: "A, B" <a@x.test>\r\nTo: c@y.test, undisclosed:;\r\nSubject: Hi\r\n'
                   b"Message-ID: <1@x>\r\n\r\nbody\r\n")
    assert envelope(info.envelope) == (
        b'(NIL "Hi" (("A, B" NIL "a" "x.test")) (("A, B" NIL "a" "x.test")) (("A, B" NIL "a" "x.test")) '
        b'((NIL NIL "c" "y.test")(NIL NIL "undisclosed" NIL)(NIL NIL NIL NIL)) NIL NIL NIL "<1@x>")')


def test_bodystructure_without_content_type() -> None:
    info = analyze(b"Subject: x\r\n\r\nline one\r\nline two")
    assert body_structure(info.body, extended=True) == \
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 18 2 NIL NIL NIL NIL)'
    assert body_structure(info.body, extended=False) == b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 18 2)'


def test_bodystructure_field_order_of_multipart_basic_and_message() -> None:
    raw = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
           b"Content-Type: application/pdf; name*=utf-8''%C3%A6.pdf\r\nContent-Transfer-Encoding: base64\r\n"
           b"Content-ID: <c@x>\r\nContent-Description: doc\r\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
           b"Content-Disposition: attachment; filename=\"a b.pdf\"\r\nContent-Language: da, en\r\n"
           b"Content-Location: http://x.test/a\r\n\r\nAAAA\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
           b"Subject: inner\r\n\r\nhi\r\n--b--\r\n")
    assert body_structure(analyze(raw).body, extended=True) == (
        b'(("APPLICATION" "PDF" ("NAME*" "utf-8\'\'%C3%A6.pdf") "<c@x>" "doc" "BASE64" 4 "Q2hlY2sgSW50ZWdyaXR5IQ==" '
        b'("ATTACHMENT" ("FILENAME" "a b.pdf")) ("da" "en") "http://x.test/a")'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 20 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 2 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL) '
        b'"MIXED" ("BOUNDARY" "b") NIL NIL NIL)')
    assert body_structure(analyze(raw).body, extended=False) == (
        b'(("APPLICATION" "PDF" ("NAME*" "utf-8\'\'%C3%A6.pdf") "<c@x>" "doc" "BASE64" 4)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 20 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 2 1) 3) "MIXED")')


def test_single_language_is_a_string() -> None:
    info = analyze(b"Content-Type: text/plain\r\nContent-Language: da\r\n\r\nx")
    assert body_structure(info.body, extended=True).endswith(b' "7BIT" 1 1 NIL NIL "da" NIL)')
