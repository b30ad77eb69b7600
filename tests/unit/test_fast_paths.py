"""The hand-written fast paths give what the general code they replace gives.

Each fast path (SMTP DATA lines, MAIL/RCPT paths, receipts' quoted-printable and
evidence.xml) is compared with the general implementation on the same input: aiosmtpd's
own methods, Python's quoted-printable decoder, and ElementTree writing the same tree.
"""

from __future__ import annotations

import asyncio
import binascii
import dataclasses
import random
import xml.etree.ElementTree as ET

import pytest
from aiosmtpd.smtp import SMTP

from bridge.receipts import evidence as ev_mod
from bridge.receipts.evidence import PartyRef, to_xml
from bridge.receipts.mime import quoted_printable
from bridge.smtpserver.server import BridgeSMTP
from tests.unit.test_receipt_messages import make_evidence

# --- SMTP DATA ------------------------------------------------------------------------


class _Envelope:
    def __init__(self) -> None:
        self.rcpt_tos = ["anna@example.test"]
        self.content = self.original_content = None


class _Session:
    """What smtp_DATA touches of an SMTP session, with a reader fed `stream`."""

    line_length_limit = 1001
    _decode_data = False
    enable_SMTPUTF8 = True
    _handle_hooks = {"DATA": None}

    def __init__(self, stream: bytes, limit: int) -> None:
        self._reader = asyncio.StreamReader(limit=1001)
        self._reader.feed_data(stream)
        self._reader.feed_eof()
        self.data_size_limit, self.transport, self._writer = limit, object(), None
        self.envelope, self.said = _Envelope(), []

    async def check_helo_needed(self) -> bool:
        return False

    async def check_auth_needed(self, _command: str) -> bool:
        return False

    async def push(self, line: str) -> None:
        self.said.append(line)

    def _set_post_data_state(self) -> None:
        self.said.append("(reset)")

    async def _call_handler_hook(self, _name: str) -> str:
        self.said.append(("handler got", bytes(self.envelope.original_content)))
        return "250 2.0.0 OK"


async def _data(method, stream: bytes, limit: int) -> tuple:
    session = _Session(stream, limit)
    await method(session, "")
    return session.said, await session._reader.read()     # the reply, and what is left unread


_PIECES = [b"line", b"\r\n", b".", b"..", b"\n", b"\r", b".\r\n", b"\r\n.\r\n", b"x" * 300,
           b"y" * 999, b"z" * 1000, b"w" * 1001, b"v" * 2500, b"From ", b"\r\n..\r\n", b"QUIT\r\n"]


def test_data_is_read_as_aiosmtpd_reads_it() -> None:
    rng = random.Random(4)
    streams = [b"Subject: x\r\n\r\nbody\r\n.\r\n", b".\r\n", b"..\r\n.\r\nQUIT\r\n", b"a\n.\nb\r\n.\r\n",
               b"w" * 1001 + b"\r\n.\r\n", b"v" * 2500 + b"\r\nok\r\n.\r\n"]
    streams += [b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 14))) + b"\r\n.\r\nRSET\r\n"
                for _ in range(1500)]

    async def compare() -> None:
        for stream in streams:
            for limit in (0, 50, 1000, 100_000):
                assert await _data(BridgeSMTP.smtp_DATA, stream, limit) == \
                    await _data(SMTP.smtp_DATA, stream, limit), (stream[:80], limit)
    asyncio.run(compare())


# --- MAIL FROM / RCPT TO paths ---------------------------------------------------------

@pytest.mark.parametrize("local_part_limit", [0, 64])
def test_paths_are_parsed_as_aiosmtpd_parses_them(local_part_limit: int) -> None:
    session = BridgeSMTP.__new__(BridgeSMTP)
    session.local_part_limit = local_part_limit
    rng = random.Random(5)
    pieces = ["<", ">", "a", "B", "0", ".", "@", "-", "_", "+", "=", " ", "\t", "(c)", '"', "\\",
              "[1.2.3.4]", "æ", "x.y", "SIZE=10", " BODY=8BITMIME", ",", ":", "@route:"]
    args = ["<anna@example.com>", " <x@y>  SIZE=100 BODY=8BITMIME ", "<y@z>\tSIZE=1\t",
            "<x@y>(comment) SIZE=1", "<>", "<a..b@c>", "<.a@b>", "<a@b.>", "<a@b..c>", "<a@b>>",
            "<" + "a" * 70 + "@b>", "a@b"]
    args += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(5000)]
    for arg in args:
        try:
            expected = SMTP._getaddr(session, arg)
        except Exception as exc:          # aiosmtpd's parser fails on some inputs: so must we
            with pytest.raises(type(exc)):
                session._getaddr(arg)
            continue
        assert session._getaddr(arg) == expected, arg


# --- receipts: quoted-printable, evidence.xml ---------------------------------------------

def test_quoted_printable_decodes_to_the_text_and_keeps_the_rules() -> None:
    rng = random.Random(1)
    alphabet = " \t.=Fromabc\u00e6\u00f8\u00e5\u2013\x01~"
    texts = ["From here\n.\nend \n\t\n", "x" * 75 + "\u00e6" + "y" * 80 + "\n",
             "x" * 75 + "." + "y" * 80, "x" * 75 + "From " + "y" * 80, "." * 300]
    lengths = [0, 1, 24, 74, 75, 76, 77, 160]
    texts += ["\n".join("".join(rng.choice(alphabet) for _ in range(rng.choice(lengths))) for _ in range(4))
              for _ in range(3000)]
    for text in texts:
        encoded = quoted_printable(text)
        lines = encoded.split(b"\r\n")
        assert all(len(line) <= 76 and line.isascii() for line in lines), text
        for line in lines:                  # a piece after a soft break is a line to an MTA too
            assert not line.endswith((b" ", b"\t")), text
            assert not line.startswith((b".", b"From ")), text
        assert binascii.a2b_qp(encoded).decode("utf-8") == text.replace("\n", "\r\n"), text


def _elementtree_xml(ev: ev_mod.Evidence) -> bytes:
    """evidence.xml as ElementTree writes the tree (how to_xml wrote it before)."""
    root = ET.Element("Evidence", {"xmlns": ev_mod.NS, "version": ev_mod.VERSION})
    for name, tag in ev_mod._ELEMENTS.items():
        value = getattr(ev, name)
        if value is None:
            continue
        element = ET.SubElement(root, tag)
        if isinstance(value, PartyRef):
            for pname, ptag in ev_mod._PARTY_ELEMENTS.items():
                if getattr(value, pname) is not None:
                    ET.SubElement(element, ptag).text = getattr(value, pname)
        elif name == "time":
            element.text = value.strftime(ev_mod._TIME_FORMAT)
        else:
            element.text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def test_evidence_xml_is_what_elementtree_writes() -> None:
    rng = random.Random(3)
    chars = list("abc\u00e6\u00f8 &<>\"'\t") + ["\U0001F600", "]]>", "&amp;", ""]
    events = ["SubmissionAcceptance", "SubmissionRejection", "ContentConsignment",
              "ContentConsignmentFailure", "ContentAccessTracking", "HandlingStarted"]
    for _ in range(3000):
        text = lambda: "".join(rng.choice(chars) for _ in range(rng.randint(0, 10)))  # noqa: E731
        ev = make_evidence(rng.choice(events))
        changes = {f: (text() if rng.random() < 0.8 else None)
                   for f in ("issuer_name", "subject", "reason", "handler_person", "signature")
                   if rng.random() < 0.7}
        if rng.random() < 0.5:
            changes["sender"] = PartyRef(rng.choice(["a@b", "\u00e6@\u00f8.dk", "a&b@c"]), text(),
                                         rng.choice([None, text(), "cpr:010170-xxxx"]))
        try:
            ev = dataclasses.replace(ev, **changes)
        except ev_mod.EvidenceError:
            continue
        assert to_xml(ev) == _elementtree_xml(ev)
