"""core.mimeinfo: ENVELOPE, body structure, section numbers and limits of raw messages."""

from __future__ import annotations

import json
import random
from dataclasses import asdict

import pytest

from bridge.core.mimeinfo import MessageInfo, MimeLimits, analyze, find_part
from bridge.errors import HeaderTooLarge, MalformedMessage, MimeTooDeep, TooManyHeaders

PDF_B64 = b"JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK"


def crlf(*lines: bytes | str) -> bytes:
    """Join lines with CRLF; str lines are UTF-8 encoded."""
    return b"\r\n".join(x.encode() if isinstance(x, str) else x for x in lines)


def body_of(raw: bytes, node: dict) -> bytes:
    _header_start, body_start, end = node["offsets"]
    return raw[body_start:end]


SIMPLE = crlf(
    "Date: Mon, 1 Jan 2024 10:00:00 +0100",
    'From: "Alice A." <Alice@A.Example>',
    "To: bob@b.example",
    "Subject: hello",
    "Message-ID: <m1@a.example>",
    "Content-Type: text/plain; charset=utf-8",
    "",
    "line one",
    "line two",
    "",
)


def test_simple_text_message():
    info = analyze(SIMPLE)
    assert info.size == len(SIMPLE)
    assert SIMPLE[info.header_size - 4:info.header_size] == b"\r\n\r\n"
    assert (info.message_id, info.subject, info.date) == (
        "<m1@a.example>", "hello", "Mon, 1 Jan 2024 10:00:00 +0100")
    assert info.from_addrs == ["alice@a.example"] and info.to_addrs == ["bob@b.example"]
    assert info.envelope[2] == [["Alice A.", None, "Alice", "A.Example"]]
    body = info.body
    assert (body["type"], body["subtype"]) == ("text", "plain")
    assert body["params"] == [["charset", "utf-8"]]
    assert (body["encoding"], body["lines"], body["size"]) == ("7BIT", 2, 20)
    assert body_of(SIMPLE, body) == b"line one\r\nline two\r\n"
    assert "parts" not in body and "message" not in body


def test_info_survives_a_json_round_trip():
    info = analyze(SIMPLE)
    stored = json.loads(json.dumps(asdict(info)))
    assert MessageInfo(**stored) == info


def test_message_without_content_type_is_us_ascii_plain_text():
    raw = crlf("From: a@a.example", "", "hi")
    body = analyze(raw).body
    assert (body["type"], body["subtype"]) == ("text", "plain")
    assert body["params"] == [["charset", "us-ascii"]]
    assert body["lines"] == 1 and body_of(raw, body) == b"hi"


def test_invalid_content_type_means_the_default():
    raw = crlf("From: a@a.example", "Content-Type: garbage", "", "hi")
    assert analyze(raw).body["params"] == [["charset", "us-ascii"]]


def test_headers_only_message_is_accepted():
    raw = crlf("From: a@a.example", "Subject: no body")
    info = analyze(raw)
    assert info.header_size == len(raw) and info.body["size"] == 0
    assert info.subject == "no body"


@pytest.mark.parametrize("raw", [b"", b" From: a@a.example\r\n\r\nx", b"hello world\r\n\r\nx"])
def test_input_that_cannot_be_a_message_is_malformed(raw):
    with pytest.raises(MalformedMessage):
        analyze(raw)


def test_folded_header_is_unfolded_and_8bit_header_tolerated():
    raw = crlf("From: a@a.example", "Subject: one", "\t two", b"X-Junk: \xff\xfe", "", "")
    info = analyze(raw)
    assert info.subject == "one\t two" and info.envelope[1] == "one\t two"


MIXED = crlf(
    "From: a@a.example",
    "Subject: report",
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="XYZ"',
    "",
    "This is the preamble.",
    "--XYZ",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "See attached.",
    "",
    "--XYZ  ",
    "Content-Type: application/pdf; name=report.pdf",
    "Content-Transfer-Encoding: base64",
    'Content-Disposition: attachment; filename="report.pdf"',
    "",
    PDF_B64,
    "--XYZ--",
    "epilogue",
    "",
)


def test_multipart_mixed_offsets_slice_out_each_body():
    body = analyze(MIXED).body
    text, pdf = body["parts"]
    assert body_of(MIXED, text) == b"See attached.\r\n"  # the CRLF before "--XYZ" is the boundary's
    assert body_of(MIXED, pdf) == PDF_B64
    assert MIXED[pdf["offsets"][0]:].startswith(b"Content-Type: application/pdf")
    assert (pdf["encoding"], pdf["size"], pdf["lines"]) == ("BASE64", len(PDF_B64), None)
    assert pdf["disposition"] == ["attachment", [["filename", "report.pdf"]]]
    assert (text["lines"], body["lines"]) == (1, None)


def test_missing_close_delimiter_runs_the_last_part_to_the_end():
    raw = MIXED.split(b"--XYZ--")[0] + b"tail"
    pdf = analyze(raw).body["parts"][1]
    assert body_of(raw, pdf) == PDF_B64 + b"\r\ntail"


@pytest.mark.parametrize("content_type", [
    "multipart/mixed",                      # no boundary parameter
    'multipart/mixed; boundary=""',         # empty boundary
    "multipart/mixed; boundary=nothere",    # no boundary line found
])
def test_multipart_without_parts_is_an_opaque_leaf(content_type):
    raw = crlf("From: a@a.example", f"Content-Type: {content_type}", "",
               "--XYZ", "", "x", "--XYZ--")
    body = analyze(raw).body
    assert (body["type"], body["subtype"]) == ("application", "octet-stream")
    assert "parts" not in body and body["lines"] is None
    assert body_of(raw, body) == raw.split(b"\r\n\r\n", 1)[1]


ALTERNATIVE = crlf(
    "From: a@a.example",
    "Content-Type: multipart/mixed; boundary=outer",
    "",
    "--outer",
    "Content-Type: multipart/alternative; boundary=inner",
    "",
    "--inner",
    "Content-Type: text/plain",
    "",
    "plain",
    "--inner",
    "Content-Type: text/html",
    "",
    "<p>html</p>",
    "--inner--",
    "--outer",
    "Content-Type: image/png",
    "Content-ID: <img1@a.example>",
    "",
    "PNG",
    "--outer--",
)


def test_alternative_inside_mixed_numbers_sections_per_rfc_9051():
    body = analyze(ALTERNATIVE).body
    assert find_part(body, []) is body
    assert find_part(body, [1])["subtype"] == "alternative"
    assert body_of(ALTERNATIVE, find_part(body, [1, 1])) == b"plain"
    assert body_of(ALTERNATIVE, find_part(body, [1, 2])) == b"<p>html</p>"
    assert find_part(body, [2])["id"] == "<img1@a.example>"
    for missing in ([0], [3], [1, 3], [2, 1], [1, 1, 1]):
        assert find_part(body, missing) is None, missing


def test_non_multipart_message_has_only_part_one():
    body = analyze(SIMPLE).body
    assert find_part(body, [1]) is body
    assert find_part(body, [2]) is None and find_part(body, [1, 1]) is None


FORWARD = crlf(
    "From: a@a.example",
    "Subject: fwd",
    "Content-Type: multipart/mixed; boundary=fw",
    "",
    "--fw",
    "",
    "see below",
    "--fw",
    "Content-Type: message/rfc822",
    "",
    "From: Carol <carol@c.example>",
    "Subject: the original",
    "Content-Type: multipart/alternative; boundary=alt",
    "",
    "--alt",
    "",
    "orig plain",
    "--alt",
    "Content-Type: text/html",
    "",
    "<b>orig</b>",
    "--alt--",
    "--fw--",
    "",
)


def test_nested_message_rfc822_has_its_own_envelope_and_numbering():
    body = analyze(FORWARD).body
    attached = find_part(body, [2])
    assert (attached["type"], attached["subtype"], attached["lines"]) == ("message", "rfc822", 12)
    embedded = attached["message"]
    assert embedded["envelope"][1] == "the original"
    assert embedded["envelope"][2] == [["Carol", None, "carol", "c.example"]]
    assert find_part(body, [2, 1]) is embedded["body"]["parts"][0]
    assert body_of(FORWARD, find_part(body, [2, 2])) == b"<b>orig</b>"
    assert embedded["body"]["offsets"][0] == attached["offsets"][1]
    assert find_part(body, [2, 3]) is None


def test_message_rfc822_with_base64_encoding_is_opaque():
    raw = crlf("From: a@a.example", "Content-Type: message/rfc822",
               "Content-Transfer-Encoding: base64", "", "RnJvbTogeEB5", "")
    body = analyze(raw).body
    assert (body["type"], "message" in body, body["encoding"]) == ("application", False, "BASE64")


def test_digest_parts_default_to_message_rfc822():
    raw = crlf("From: a@a.example", "Content-Type: multipart/digest; boundary=d", "",
               "--d", "", "From: x@x.example", "Subject: digested", "", "text", "--d--")
    part = find_part(analyze(raw).body, [1])
    assert (part["type"], part["subtype"], part["params"]) == ("message", "rfc822", [])
    assert part["message"]["envelope"][1] == "digested"


def test_rfc2231_continuation_is_joined_and_decoded():
    raw = crlf("From: a@a.example", "Content-Type: application/pdf",
               "Content-Disposition: attachment; filename*0*=utf-8''%C3%A6ble; filename*1=.pdf",
               "", "x")
    assert analyze(raw).body["disposition"] == ["attachment", [["filename", "æble.pdf"]]]


def test_rfc2231_value_wins_over_plain_parameter():
    raw = crlf("From: a@a.example",
               "Content-Type: text/plain; NAME=\"plain.txt\"; name*=iso-8859-1'da'%E6.txt", "", "x")
    assert analyze(raw).body["params"] == [["name", "æ.txt"]]


def test_8bit_utf8_subject_is_kept_raw():
    raw = crlf("From: a@a.example", "Subject: Æbler og pærer".encode(), "", "")
    info = analyze(raw)
    assert info.envelope[1] == "Æbler og pærer" and info.subject == "Æbler og pærer"


def test_rfc2047_subject_is_decoded_but_envelope_stays_raw():
    encoded = "=?utf-8?B?w4Y=?= =?UTF-8?Q?bler_?=\r\n =?utf-8?q?=C3?= =?utf-8?q?=A6?= x"
    raw = crlf("From: a@a.example", f"Subject: {encoded}", "", "")
    info = analyze(raw)
    assert info.subject == "Æbler æ x"  # one character split across two words
    assert info.envelope[1] == encoded.replace("\r\n", "")


def test_unknown_charset_keeps_the_encoded_word():
    raw = crlf("From: a@a.example", "Subject: =?x-nope?q?a?= =?zlib?q?b?=", "", "")
    assert analyze(raw).subject == "=?x-nope?q?a?= =?zlib?q?b?="


def test_group_address_in_to_uses_rfc_9051_markers():
    raw = crlf("From: a@a.example",
               'To: Team: "Bob, B." <bob@b.example>, carl@c.example;, dora@d.example',
               "Cc: undisclosed-recipients:;", "", "")
    info = analyze(raw)
    assert info.envelope[5] == [
        [None, None, "Team", None],
        ["Bob, B.", None, "bob", "b.example"],
        [None, None, "carl", "c.example"],
        [None, None, None, None],
        [None, None, "dora", "d.example"],
    ]
    assert info.envelope[6] == [
        [None, None, "undisclosed-recipients", None], [None, None, None, None]]
    assert info.to_addrs == ["bob@b.example", "carl@c.example", "dora@d.example"]
    assert info.cc_addrs == []


def test_address_edge_cases():
    raw = crlf("From: a@a.example",
               'To: "john"@x.example (comment), "j doe"@y.example, <@route:r@z.example>,',
               " =?utf-8?q?=C3=86?= <e@e.example>, , <>", "", "")
    info = analyze(raw)
    assert info.to_addrs == ["john@x.example", '"j doe"@y.example', "r@z.example", "e@e.example"]
    assert info.envelope[5][3] == ["=?utf-8?q?=C3=86?=", None, "e", "e.example"]


def test_sender_and_reply_to_default_to_from():
    env = analyze(SIMPLE).envelope
    assert env[3] == env[2] == env[4] and env[3] is not env[2]
    raw = crlf("From: a@a.example", "Sender: s@s.example", "Reply-To: r@r.example", "", "")
    env = analyze(raw).envelope
    assert (env[3][0][2], env[4][0][2]) == ("s", "r")


def test_envelope_fields_are_nil_when_absent():
    env = analyze(crlf("X-Only: 1", "", "")).envelope
    assert env == [None] * 10


def test_two_from_headers_are_counted():
    raw = crlf("From: a@a.example", "from: b@b.example, c@c.example", "", "")
    info = analyze(raw)
    assert info.from_header_count == 2
    assert info.from_addrs == ["a@a.example", "b@b.example", "c@c.example"]
    assert info.envelope[2] == [[None, None, "a", "a.example"]]


def test_msg_ids_are_extracted():
    raw = crlf("From: a@a.example", "Message-ID:  <x@y> ", "In-Reply-To: <p@q> (comment)",
               "References: <r1@q>", "\t<r2@q>  <p@q>", "", "")
    info = analyze(raw)
    assert (info.message_id, info.in_reply_to) == ("<x@y>", ["<p@q>"])
    assert info.references == ["<r1@q>", "<r2@q>", "<p@q>"]
    assert info.envelope[8:] == ["<p@q> (comment)", "<x@y>"]


def test_too_many_header_fields_raise():
    raw = crlf("From: a@a.example", *[f"X-{n}: v" for n in range(10)], "", "")
    assert analyze(raw, MimeLimits(max_header_count=11)).from_header_count == 1
    with pytest.raises(TooManyHeaders):
        analyze(raw, MimeLimits(max_header_count=10))


def test_too_large_header_section_raises():
    raw = crlf("From: a@a.example", "X-Big: " + "x" * 300_000, "", "")
    with pytest.raises(HeaderTooLarge):
        analyze(raw)
    folded = crlf("From: a@a.example", "X-Big: x", *[" y"] * 200, "", "")
    with pytest.raises(HeaderTooLarge):  # folding does not escape the limit
        analyze(folded, MimeLimits(max_header_bytes=400))
    assert analyze(folded, MimeLimits(max_header_bytes=900)).header_size == len(folded)


def test_header_limits_apply_to_embedded_messages():
    embedded = FORWARD.replace(b"Subject: the original", b"X-Big: " + b"x" * 300_000)
    with pytest.raises(HeaderTooLarge):
        analyze(embedded)
    extra = FORWARD.replace(b"Subject: the original", b"Subject: the original\r\nX-A: 1")
    assert analyze(FORWARD, MimeLimits(max_header_count=3)).from_header_count == 1
    with pytest.raises(TooManyHeaders):  # top level 3 fields, the embedded one 4
        analyze(extra, MimeLimits(max_header_count=3))


def nested(levels: int) -> bytes:
    """A message whose body is `levels` nested multiparts around one text part."""
    raw = b"Content-Type: text/plain\r\n\r\nleaf"
    for n in range(levels):
        raw = crlf(f"Content-Type: multipart/mixed; boundary=b{n}", "", f"--b{n}", raw, f"--b{n}--")
    return b"From: a@a.example\r\n" + raw


def test_mime_depth_counts_every_nesting_level():
    body = analyze(nested(19)).body  # 19 multiparts + the text leaf = depth 20
    assert body_of(nested(19), find_part(body, [1] * 19)) == b"leaf"
    with pytest.raises(MimeTooDeep):
        analyze(nested(20))
    with pytest.raises(MimeTooDeep):  # message/rfc822 is a level too
        analyze(FORWARD, MimeLimits(max_mime_depth=3))
    assert analyze(FORWARD, MimeLimits(max_mime_depth=4)).body["parts"][1]["message"]


def test_part_count_is_capped_without_rejecting():
    raw = crlf("From: a@a.example", "Content-Type: multipart/mixed; boundary=p", "",
               *["--p", "", "x"] * 5, "--p--", "")
    assert len(analyze(raw).body["parts"]) == 5
    parts = analyze(raw, MimeLimits(max_parts=3)).body["parts"]
    assert len(parts) == 3 and body_of(raw, parts[2]).startswith(b"x\r\n--p\r\n")
    assert analyze(raw, MimeLimits(max_parts=0)).body["subtype"] == "octet-stream"


def test_limits_reject_impossible_depth():
    with pytest.raises(ValueError):
        MimeLimits(max_mime_depth=0)


# --- hostile input: analyze() returns or raises one of these, nothing else ---

ALLOWED = (MalformedMessage, HeaderTooLarge, TooManyHeaders, MimeTooDeep)
SEEDS = [SIMPLE, MIXED, ALTERNATIVE, FORWARD, nested(25)]
GARBAGE = [
    b"--XYZ", b"--outer--", b"\r\n", b"\n", b"\r", b"\x00", b"\xff\xfe", b":", b";", b'"', b"\\",
    b"=?", b"?=", b"=?utf-8?b?", b"(", b")", b"<", b">", b"@", b",", b"*0*=", b"%", b"'",
    b"Content-Type: multipart/mixed; boundary=XYZ\r\n", b"Content-Type: message/rfc822\r\n",
    b"\r\n\t", b" ", b"filename*99999=", b"charset=zlib", b"=?punycode?q?x?=",
]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(raw) + 1)
        choice = rng.random()
        if choice < 0.3:
            raw = raw[:pos]  # truncated
        elif choice < 0.5:
            raw = raw[:pos] + raw[pos + rng.randint(1, 40):]
        elif choice < 0.8:
            raw = raw[:pos] + rng.choice(GARBAGE) * rng.randint(1, 3) + raw[pos:]
        else:
            raw = raw[:pos] + rng.randbytes(rng.randint(1, 30)) + raw[pos:]
    return raw


def check_hostile(raw: bytes) -> None:
    try:
        info = analyze(raw)
    except ALLOWED:
        return
    json.dumps(asdict(info))
    assert "\\u0000" not in json.dumps(asdict(info))  # PostgreSQL JSON refuses NUL
    walk_offsets(info.body, 0, len(raw))


def walk_offsets(node: dict, lo: int, hi: int) -> None:
    header_start, body_start, end = node["offsets"]
    assert lo <= header_start <= body_start <= end <= hi and node["size"] == end - body_start
    for child in node.get("parts", []):
        walk_offsets(child, body_start, end)
    if "message" in node:
        walk_offsets(node["message"]["body"], body_start, end)


def test_fuzz_random_bytes_never_raise_unexpected_errors():
    rng = random.Random(5322)
    for _ in range(200):
        check_hostile(rng.randbytes(rng.randint(0, 400)))
        check_hostile(b"From: x\r\n" + rng.randbytes(rng.randint(0, 400)))


def test_fuzz_mutated_messages_never_raise_unexpected_errors():
    rng = random.Random(2046)
    for _ in range(400):
        check_hostile(mutate(rng, rng.choice(SEEDS)))


def test_huge_parameter_lists_are_handled():
    params = "".join(f'; p{n}*{n % 7}*="v\\"{n}%ZZ"' for n in range(5000))
    raw = crlf("From: a@a.example", f"Content-Type: multipart/mixed{params}", "", "--x", "", "y")
    body = analyze(raw).body
    assert body["subtype"] == "octet-stream" and len(body["params"]) == 5000
    check_hostile(crlf("From: a@a.example", "To: " + '"\\' * 50_000, "", ""))
