"""The reader's copy: header adjusted per reader, body byte-exact (DESIGN.md section 3)."""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes
from email.policy import default
from email.utils import getaddresses

from bridge.core.render import (auth_results_field, field_name, received_field, render_copy,
                                split_header)

ANNA_CPR = "0101701234@cpr.dp2.test"
BO_CPR = "0202802345@cpr.dp2.test"
ANNA = "anna@borger.dp2.test"
RECEIVED = received_field("localhost", "3f1c0a56-0000-4000-8000-000000000001",
                          dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "smtp")
AUTH = auth_results_field("localhost", "jobcenter@kommune.dp2.test", "cvr:29190000")
# The body has header-like lines, a CPR address, a bare-looking blank line and trailing spaces:
# none of it may change.
BODY = (b"Bcc: not-a-header@example.org\r\nTo: " + BO_CPR.encode() + b"\r\n\r\n"
        b"Authentication-Results: fake; auth=pass\r\n  trailing spaces   \r\n\xc3\xa6\xc3\xb8\r\n")


def message(*fields: str, body: bytes = BODY) -> bytes:
    return "".join(f + "\r\n" for f in fields).encode() + b"\r\n" + body


def render(raw: bytes, *, reader: str = ANNA, directory_address: str | None = ANNA_CPR,
           authority: bool = False) -> bytes:
    return render_copy(raw, reader_address=reader, reader_directory_address=directory_address,
                       reader_is_authority=authority, directory_domain="dp2.test",
                       received=RECEIVED, auth_results=AUTH)


def headers(raw: bytes, name: str) -> list[bytes]:
    fields, _ = split_header(raw)
    return [f for f in fields if field_name(f) == name.lower().encode()]


def body_of(raw: bytes) -> bytes:
    return raw[raw.index(b"\r\n\r\n") + 4:]


LETTER = message(
    "From: Jobcenter <jobcenter@kommune.dp2.test>",
    f"To: Anna Hansen <{ANNA_CPR}>",
    "Subject: =?utf-8?q?Bevilling_af_st=C3=B8tte?=",
    "Message-ID: <letter-1@kommune.dp2.test>",
    "Date: Fri, 02 Jan 2026 03:04:05 +0000",
)


def test_body_is_byte_exact() -> None:
    for authority in (False, True):
        out = render(LETTER, authority=authority)
        assert body_of(out) == BODY
        assert out.endswith(b"\r\n\r\n" + BODY)


def test_own_fields_are_prepended_and_others_kept_in_order() -> None:
    out = render(LETTER)
    fields, _ = split_header(out)
    assert fields[0] == RECEIVED and fields[1] == AUTH
    assert [field_name(f) for f in fields[2:]] == [b"from", b"to", b"subject", b"message-id", b"date"]
    assert headers(out, "Subject") == headers(LETTER, "Subject")


def test_bcc_is_removed() -> None:
    raw = message("From: jobcenter@kommune.dp2.test", f"To: {ANNA_CPR}",
                  "Bcc: hidden@kommune.dp2.test,", " other@kommune.dp2.test", "BCC : x@y.example",
                  "Subject: s")
    for authority in (False, True):
        out = render(raw, authority=authority)
        assert headers(out, "Bcc") == []
        assert b"hidden@" not in out.split(b"\r\n\r\n")[0] and b"other@kommune" not in out
        assert body_of(out) == BODY


def test_foreign_authentication_results_are_removed() -> None:
    raw = message("Authentication-Results: evil.example; auth=pass smtp.auth=minister@kommune.dk",
                  "authentication-results: evil.example;", "\tdkim=pass", "From: jobcenter@kommune.dp2.test",
                  f"To: {ANNA_CPR}")
    out = render(raw)
    assert headers(out, "Authentication-Results") == [AUTH]
    assert b"evil.example" not in out


def test_own_cpr_is_replaced_by_own_address_keeping_the_display_name() -> None:
    out = render(LETTER)
    (to,) = headers(out, "To")
    assert b"0101701234" not in out.split(b"\r\n\r\n")[0]
    msg = message_from_bytes(out, policy=default)
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [("Anna Hansen", ANNA)]
    assert to.endswith(b"\r\n")


def test_another_citizens_cpr_is_removed() -> None:
    raw = message("From: jobcenter@kommune.dp2.test", f"To: Anna <{ANNA_CPR}>, Bo <{BO_CPR}>",
                  f"Cc: {BO_CPR}, Sagsbehandler <sagsbehandler@kommune.dp2.test>", "Subject: s")
    out = render(raw)
    header = out.split(b"\r\n\r\n")[0]
    assert b"0202802345" not in header and b"Bo" not in header
    (to,) = headers(out, "To")
    (cc,) = headers(out, "Cc")
    assert getaddresses([to.decode().partition(":")[2]]) == [("Anna", ANNA)]
    assert getaddresses([cc.decode().partition(":")[2]]) == [("Sagsbehandler",
                                                             "sagsbehandler@kommune.dp2.test")]


def test_field_with_only_other_citizens_is_dropped() -> None:
    raw = message("From: jobcenter@kommune.dp2.test", f"To: {ANNA_CPR}", f"Cc: Bo <{BO_CPR}>")
    out = render(raw)
    assert headers(out, "Cc") == []


def test_reader_reached_by_login_sees_no_cpr_at_all() -> None:
    raw = message("From: jobcenter@kommune.dp2.test", f"To: {ANNA}, {BO_CPR}")
    out = render(raw, directory_address=None)
    (to,) = headers(out, "To")
    assert getaddresses([to.decode().partition(":")[2]]) == [("", ANNA)]


def test_authority_readers_keep_cpr_numbers() -> None:
    raw = message("From: Anna <anna@borger.dp2.test>", f"To: Anna <{ANNA_CPR}>, Bo <{BO_CPR}>",
                  "Cc: jobcenter@kommune.dp2.test")
    out = render(raw, reader="jobcenter@kommune.dp2.test", directory_address=None, authority=True)
    assert headers(out, "To") == headers(raw, "To")
    assert headers(out, "Cc") == headers(raw, "Cc")


def test_folded_to_header_is_handled_as_one_field() -> None:
    raw = message("From: jobcenter@kommune.dp2.test",
                  f"To: \"Hansen, Anna\" <{ANNA_CPR}>,",
                  f"\tBo Jensen <{BO_CPR}>,",
                  "  Sagsbehandler <sagsbehandler@kommune.dp2.test>",
                  "Subject: folded")
    out = render(raw)
    header = out.split(b"\r\n\r\n")[0]
    assert b"0202802345" not in header and b"0101701234" not in header
    (to,) = headers(out, "To")
    assert getaddresses([to.decode().partition(":")[2]]) == [
        ("Hansen, Anna", ANNA), ("Sagsbehandler", "sagsbehandler@kommune.dp2.test")]
    assert [field_name(f) for f in split_header(out)[0][2:]] == [b"from", b"to", b"subject"]
    assert body_of(out) == BODY


def test_group_syntax_does_not_leave_empty_addresses() -> None:
    raw = message("From: jobcenter@kommune.dp2.test", f"To: undisclosed-recipients:;, {ANNA_CPR}")
    (to,) = headers(render(raw), "To")
    assert to == f"To: {ANNA}\r\n".encode()


def test_non_ascii_display_name_survives_as_an_encoded_word() -> None:
    raw = message("From: jobcenter@kommune.dp2.test", f"To: Anna Sørensen <{ANNA_CPR}>")
    out = render(raw)
    assert out.split(b"\r\n\r\n")[0].isascii()
    msg = message_from_bytes(out, policy=default)
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [("Anna Sørensen", ANNA)]


def test_message_without_a_body_is_rendered() -> None:
    raw = b"From: jobcenter@kommune.dp2.test\r\nTo: " + ANNA_CPR.encode() + b"\r\n"
    out = render(raw)
    assert out.startswith(RECEIVED + AUTH)
    assert b"0101701234" not in out


def test_received_and_authentication_results_fields() -> None:
    assert RECEIVED.startswith(b"Received: by localhost (dp2bridge) with ESMTPSA id 3f1c0a56-")
    assert RECEIVED.endswith(b"\r\n\tFri, 02 Jan 2026 03:04:05 +0000\r\n")
    assert AUTH == (b"Authentication-Results: localhost;\r\n"
                    b"\tauth=pass (cvr:29190000) header.from=jobcenter@kommune.dp2.test\r\n")
    assert b"(" not in auth_results_field("localhost", "anna@borger.dp2.test", None)


def test_rewritten_long_field_is_folded_between_addresses() -> None:
    others = [f"Kollega {i} <kollega{i}@kommune.dp2.test>" for i in range(60)]
    raw = message("From: jobcenter@kommune.dp2.test", f"Cc: {ANNA_CPR}, " + ", ".join(others))
    (cc,) = headers(render(raw), "Cc")
    lines = cc.split(b"\r\n")
    assert len(lines) == 62 and lines[-1] == b""
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b"\t") for line in lines[1:-1])
    assert [a for _, a in getaddresses([cc.decode().partition(":")[2]])] == \
        [ANNA] + [f"kollega{i}@kommune.dp2.test" for i in range(60)]
