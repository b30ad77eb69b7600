"""bridge.receipts: evidence.xml, receipt messages, and taking them apart again.

Receipts are signed with a real CMS signer made here with `cryptography` (a
throw-away CA and an RSA or P-256 certificate for emailProtection) and checked
with the real `openssl smime -verify` binary and with Python's `email` package.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import random
import shutil
import subprocess
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.receipts import (
    EVENTS, Evidence, EvidenceError, PartyRef, ReceiptFormatError, build_receipt, from_xml,
    parse_receipt, to_xml,
)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")
T0 = dt.datetime(2026, 11, 27, 11, 44, 42, 123456, tzinfo=dt.timezone.utc)
HOST = "mail.kommune.dp2.test"
DSN_EVENTS = ("ContentConsignment", "ContentConsignmentFailure", "SubmissionRejection")


# --- a real signer -----------------------------------------------------------

class Signer:
    """Signs like crypto/ does (detached DER CMS, SHA-256) and remembers what it signed."""

    def __init__(self, cert: x509.Certificate, key) -> None:
        self.cert, self.key = cert, key
        self.signed: list[bytes] = []

    def __call__(self, data: bytes) -> bytes:
        self.signed.append(data)
        return (pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(self.cert, self.key, hashes.SHA256())
                .sign(serialization.Encoding.DER,
                      [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pki(tmp: Path, leaf_key) -> tuple[Path, Signer]:
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("Demo Kommune evidence")).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("kvittering@kommune.dp2.test")]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = tmp / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ca_pem, Signer(leaf, leaf_key)


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory) -> tuple[Path, Signer]:
    return _pki(tmp_path_factory.mktemp("rsa"), rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_pki(tmp_path_factory) -> tuple[Path, Signer]:
    return _pki(tmp_path_factory.mktemp("ec"), ec.generate_private_key(ec.SECP256R1()))


# --- evidence and receipts ---------------------------------------------------

def make_evidence(event: str, **kw: object) -> Evidence:
    base: dict = dict(
        evidence_id=str(uuid.uuid4()), event=event, time=T0, issuer="kommune", issuer_name="Demo Kommune",
        sender=PartyRef("sagsbehandler@kommune.dp2.test", "Sagsbehandler Søren", "cvr:29190000"),
        recipient=PartyRef("anna@borger.dp2.test", "Anna Ærø", "cpr:010170-****"),
        message_uuid=str(uuid.uuid4()), message_id="<letter-1@kommune.dp2.test>", sha256="ab" * 32,
        delivered_sha256=None, audit_chain="kommune", audit_seq=42, audit_hash="cd" * 32,
        subject="Afgørelse om boligstøtte",
    )
    base.update({
        "SubmissionRejection": dict(status="5.1.1", reason="no such recipient: bob@borger.dp2.test"),
        "ContentConsignment": dict(status="2.0.0", delivered_sha256="ef" * 32),
        "ContentConsignmentFailure": dict(status="5.2.2", reason="mailbox full"),
        "ContentAccessTracking": dict(read_mode="consent"),
        "HandlingStarted": dict(handler="Jobcenter", handler_person="Sagsbehandler Søren"),
    }.get(event, {}))
    base.update(kw)
    return Evidence(**base)


def make_receipt(ev: Evidence, signer: Signer) -> bytes:
    return build_receipt(ev, from_address="kvittering@kommune.dp2.test", from_name="Demo Kommune – Kvittering",
                         to_address="sagsbehandler@kommune.dp2.test", hostname=HOST, sign=signer,
                         arrival=T0 - dt.timedelta(seconds=3))


def as_email(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def report_part(msg: EmailMessage) -> EmailMessage | None:
    return next((p for p in msg.walk() if p.get_content_type() == "multipart/report"), None)


def openssl_verify(ca: Path, receipt: Path) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, "smime", "-verify", "-CAfile", str(ca), "-in", str(receipt),
                           "-out", "/dev/null"], capture_output=True, timeout=30)


# --- the message -------------------------------------------------------------

@pytest.mark.parametrize("event", EVENTS)
def test_receipt_is_a_signed_mail_that_email_parses(event, rsa_pki):
    msg = as_email(make_receipt(make_evidence(event), rsa_pki[1]))
    assert msg.get_content_type() == "multipart/signed"
    assert msg.get_param("protocol") == "application/pkcs7-signature"
    assert msg.get_param("micalg") == "sha-256"
    content, signature = msg.get_payload()
    assert content.get_content_type() == "multipart/mixed"
    assert signature.get_content_type() == "application/pkcs7-signature"
    assert signature.get_filename() == "smime.p7s"
    assert not msg.defects and all(not p.defects for p in msg.walk())


@pytest.mark.parametrize("event", EVENTS)
def test_headers_classify_the_receipt(event, rsa_pki):
    ev = make_evidence(event)
    msg = as_email(make_receipt(ev, rsa_pki[1]))
    assert msg["X-DP2-Receipt"] == event
    assert msg["X-DP2-Ref-Message-ID"] == ev.message_id
    assert msg["X-DP2-Message-UUID"] == ev.message_uuid
    assert msg["X-DP2-Evidence-ID"] == ev.evidence_id
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"] == f"<{ev.evidence_id}@{HOST}>"
    assert msg["From"].addresses[0].display_name == "Demo Kommune – Kvittering"
    assert msg["To"] == "sagsbehandler@kommune.dp2.test"
    assert msg["Date"].datetime == T0.replace(microsecond=0)
    assert msg["Subject"].startswith("Kvittering: ") and "/ Receipt: " in msg["Subject"]
    assert msg["Subject"].endswith(" – Afgørelse om boligstøtte")


def test_subject_names_the_event_in_both_languages(rsa_pki):
    msg = as_email(make_receipt(make_evidence("SubmissionAcceptance"), rsa_pki[1]))
    assert msg["Subject"] == "Kvittering: Modtaget / Receipt: Accepted – Afgørelse om boligstøtte"
    msg = as_email(make_receipt(make_evidence("ContentConsignmentFailure", subject=None), rsa_pki[1]))
    assert msg["Subject"] == "Kvittering: Ikke leveret / Receipt: Not delivered"


def test_given_message_id_is_used(rsa_pki):
    raw = build_receipt(make_evidence("SubmissionAcceptance"), from_address="kvittering@kommune.dp2.test",
                        from_name="", to_address="a@b.test", hostname=HOST, sign=rsa_pki[1],
                        message_id="<given@x.test>")
    assert as_email(raw)["Message-ID"] == "<given@x.test>"
    assert b"\r\nFrom: kvittering@kommune.dp2.test\r\n" in raw


@pytest.mark.parametrize("event", EVENTS)
def test_every_line_is_crlf_ascii_and_short(event, rsa_pki):
    ev = make_evidence(event, subject="Ø" * 120, reason="r " * 90 if event in DSN_EVENTS else None)
    raw = make_receipt(ev, rsa_pki[1])
    assert raw.isascii()
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert as_email(raw)["Subject"].endswith("Ø" * 120)


@pytest.mark.parametrize("event", EVENTS)
def test_danish_and_english_text_present(event, rsa_pki):
    msg = as_email(make_receipt(make_evidence(event), rsa_pki[1]))
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    assert text.index("Kvittering fra Demo Kommune") < text.index("Receipt from Demo Kommune")
    for needle in ("Afgørelse om boligstøtte", "<letter-1@kommune.dp2.test>", "dp2bridge verify",
                   "Sagsbehandler Søren <sagsbehandler@kommune.dp2.test> (cvr:29190000)",
                   "12:44:42 dansk tid (11:44:42 UTC)", "27 November 2026, 11:44:42 UTC"):
        assert needle in text


def test_handling_started_names_the_contact_point_and_person(rsa_pki):
    text = _text(make_receipt(make_evidence("HandlingStarted"), rsa_pki[1]))
    assert "Din henvendelse behandles nu af Jobcenter (sagsbehandler: Sagsbehandler Søren)." in text
    assert "Your request is now being handled by Jobcenter (caseworker: Sagsbehandler Søren)." in text
    text = _text(make_receipt(make_evidence("HandlingStarted", handler_person=None), rsa_pki[1]))
    assert "Din henvendelse behandles nu af Jobcenter." in text and "Søren" not in text.split("Afsender")[0]


def test_failure_text_gives_the_reason(rsa_pki):
    text = _text(make_receipt(make_evidence("ContentConsignmentFailure"), rsa_pki[1]))
    assert "Årsag (på engelsk): mailbox full" in text and "Reason: mailbox full" in text


def _text(raw: bytes) -> str:
    return next(p for p in as_email(raw).walk() if p.get_content_type() == "text/plain").get_content()


# --- the standard parts ------------------------------------------------------

@pytest.mark.parametrize("event, action, status", [
    ("ContentConsignment", "delivered", "2.0.0"),
    ("ContentConsignmentFailure", "failed", "5.2.2"),
    ("SubmissionRejection", "failed", "5.1.1"),
])
def test_delivery_status_part(event, action, status, rsa_pki):
    ev = make_evidence(event)
    report = report_part(as_email(make_receipt(ev, rsa_pki[1])))
    assert report is not None and report.get_param("report-type") == "delivery-status"
    human, dsn = report.get_payload()
    assert human.get_content_type() == "text/plain"
    assert dsn.get_content_type() == "message/delivery-status"
    per_message, per_recipient = dsn.get_payload()
    assert per_message["Reporting-MTA"] == f"dns; {HOST}"
    assert per_message["X-DP2-Message-UUID"] == ev.message_uuid
    assert per_message["Arrival-Date"] == "Fri, 27 Nov 2026 11:44:39 +0000"
    assert per_recipient["Final-Recipient"] == "rfc822; anna@borger.dp2.test"
    assert per_recipient["Action"] == action
    assert per_recipient["Status"] == status
    if ev.reason:
        assert per_recipient["Diagnostic-Code"] == f"x-dp2bridge; {ev.reason}"
    else:
        assert per_recipient["Diagnostic-Code"] is None


def test_delivery_status_defaults_the_status_by_outcome(rsa_pki):
    for event, status in (("ContentConsignment", "2.0.0"), ("ContentConsignmentFailure", "5.0.0")):
        report = report_part(as_email(make_receipt(make_evidence(event, status=None), rsa_pki[1])))
        assert report.get_payload()[1].get_payload()[1]["Status"] == status


def test_rejection_without_recipient_has_text_but_no_dsn(rsa_pki):
    msg = as_email(make_receipt(make_evidence("SubmissionRejection", recipient=None), rsa_pki[1]))
    assert report_part(msg) is None
    assert "Din meddelelse blev afvist" in _text(make_receipt(
        make_evidence("SubmissionRejection", recipient=None), rsa_pki[1]))


@pytest.mark.parametrize("mode, disposition", [
    ("consent", "automatic-action/MDN-sent-automatically; displayed"),
    ("mdn", "manual-action/MDN-sent-manually; displayed"),
])
def test_read_receipt_has_an_mdn(mode, disposition, rsa_pki):
    ev = make_evidence("ContentAccessTracking", read_mode=mode)
    report = report_part(as_email(make_receipt(ev, rsa_pki[1])))
    assert report.get_param("report-type") == "disposition-notification"
    human, mdn = report.get_payload()
    assert mdn.get_content_type() == "message/disposition-notification"
    fields = mdn.get_payload()[0]               # email parses the MDN fields as one header block
    assert fields["Reporting-UA"] == f"{HOST}; dp2bridge"
    assert fields["Final-Recipient"] == "rfc822; anna@borger.dp2.test"
    assert fields["Original-Message-ID"] == ev.message_id
    assert fields["Disposition"] == disposition


@pytest.mark.parametrize("event", ["SubmissionAcceptance", "HandlingStarted"])
def test_acceptance_and_handling_have_only_text_and_evidence(event, rsa_pki):
    content = as_email(make_receipt(make_evidence(event), rsa_pki[1])).get_payload()[0]
    assert [p.get_content_type() for p in content.get_payload()] == ["text/plain", "application/xml"]


@pytest.mark.parametrize("event", EVENTS)
def test_evidence_attachment_round_trips(event, rsa_pki):
    ev = make_evidence(event)
    content = as_email(make_receipt(ev, rsa_pki[1])).get_payload()[0]
    attachment = content.get_payload()[-1]
    assert attachment.get_content_type() == "application/xml"
    assert attachment.get_filename() == "evidence.xml"
    assert attachment.get_content_disposition() == "attachment"
    assert from_xml(attachment.get_payload(decode=True)) == ev


# --- signatures: openssl and the bytes that were signed -----------------------

@pytest.mark.parametrize("event", EVENTS)
def test_parse_returns_exactly_the_signed_bytes(event, rsa_pki):
    signer = rsa_pki[1]
    ev = make_evidence(event)
    raw = make_receipt(ev, signer)
    parsed = parse_receipt(raw)
    assert parsed.signed_bytes == signer.signed[-1]
    assert parsed.signature_der == _signature_of(raw)
    assert pkcs7.load_der_pkcs7_certificates(parsed.signature_der) == [signer.cert]
    assert parsed.evidence == ev
    assert parsed.event == event and parsed.ref_message_id == ev.message_id


def _signature_of(raw: bytes) -> bytes:
    return as_email(raw).get_payload()[1].get_payload(decode=True)


@needs_openssl
@pytest.mark.parametrize("event", EVENTS)
def test_openssl_verifies_and_rejects_a_changed_byte(event, rsa_pki, tmp_path):
    ca, signer = rsa_pki
    raw = make_receipt(make_evidence(event), signer)
    path = tmp_path / "receipt.eml"
    path.write_bytes(raw)
    ok = openssl_verify(ca, path)
    assert ok.returncode == 0, ok.stderr
    signed = parse_receipt(raw).signed_bytes
    at = raw.index(signed) + signed.index(b"Kvittering fra") + 1   # inside the signed text
    path.write_bytes(raw[:at] + b"W" + raw[at + 1:])
    assert openssl_verify(ca, path).returncode != 0


@needs_openssl
def test_openssl_verifies_a_p256_signature(ec_pki, tmp_path):
    ca, signer = ec_pki
    path = tmp_path / "receipt.eml"
    path.write_bytes(make_receipt(make_evidence("ContentConsignment"), signer))
    result = openssl_verify(ca, path)
    assert result.returncode == 0, result.stderr


@needs_openssl
def test_openssl_rejects_another_ca(rsa_pki, ec_pki, tmp_path):
    path = tmp_path / "receipt.eml"
    path.write_bytes(make_receipt(make_evidence("ContentConsignment"), rsa_pki[1]))
    assert openssl_verify(ec_pki[0], path).returncode != 0


def test_lf_only_file_gives_the_signed_bytes_with_lf(rsa_pki):
    signer = rsa_pki[1]
    ev = make_evidence("ContentConsignmentFailure")
    raw = make_receipt(ev, signer).replace(b"\r\n", b"\n")
    parsed = parse_receipt(raw)
    assert parsed.signed_bytes == signer.signed[-1].replace(b"\r\n", b"\n")
    assert parsed.signed_bytes.replace(b"\n", b"\r\n") == signer.signed[-1]
    assert parsed.evidence == ev


@needs_openssl
def test_openssl_verifies_a_receipt_saved_with_lf_only(rsa_pki, tmp_path):
    path = tmp_path / "receipt.eml"
    path.write_bytes(make_receipt(make_evidence("ContentConsignment"), rsa_pki[1]).replace(b"\r\n", b"\n"))
    result = openssl_verify(rsa_pki[0], path)
    assert result.returncode == 0, result.stderr


# --- evidence.xml ------------------------------------------------------------

@pytest.mark.parametrize("event", EVENTS)
def test_evidence_xml_round_trips(event):
    ev = make_evidence(event)
    data = to_xml(ev)
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<Evidence xmlns=\"urn:dp2bridge:evidence:1\""
                           b" version=\"1\">")
    assert from_xml(data) == ev


def test_evidence_xml_escapes_and_times():
    ev = make_evidence("SubmissionAcceptance", issuer_name="A & B <C> \"D\"", subject="x]]>y</Subject>",
                       time=dt.datetime(2026, 3, 29, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    data = to_xml(ev)
    assert b"<EventTime>2026-03-29T01:00:00.000000Z</EventTime>" in data
    assert b"A &amp; B &lt;C&gt;" in data
    assert from_xml(data) == ev and from_xml(data).time.tzinfo is dt.timezone.utc


def test_free_text_is_made_xml_safe():
    ev = make_evidence("SubmissionAcceptance", subject="a\x01b\r\nc\ud800d", sender=PartyRef("s@x.test", "N\x00"))
    assert ev.subject == "a\ufffdb c\ufffdd" and ev.sender.name == "N\ufffd"
    assert from_xml(to_xml(ev)) == ev


@pytest.mark.parametrize("kw, text", [
    (dict(event="Delivered"), "unknown evidence event"),
    (dict(time=dt.datetime(2026, 1, 1)), "aware"),
    (dict(sha256="AB" * 32), "sha256"),
    (dict(message_id="no-brackets@x"), "message_id"),
    (dict(evidence_id="not-a-uuid"), "evidence_id"),
    (dict(status="2.0"), "status"),
    (dict(audit_seq=-1), "audit_seq"),
    (dict(event="ContentConsignment", recipient=None), "must name the recipient"),
    (dict(event="ContentAccessTracking", read_mode=None), "read_mode"),
    (dict(event="HandlingStarted", handler=None), "handler"),
])
def test_invalid_evidence_is_refused(kw, text):
    with pytest.raises(EvidenceError, match=text):
        make_evidence(str(kw.pop("event", "SubmissionAcceptance")), **kw)


def _xml(ev: Evidence) -> str:
    return to_xml(ev).decode("utf-8")


@pytest.mark.parametrize("change, text", [
    (lambda s: s.replace("SubmissionAcceptance", "Teleported"), "unknown evidence event"),
    (lambda s: s.replace("<AuditHash>", "<X>").replace("</AuditHash>", "</X>"), "unexpected element"),
    (lambda s: _drop(s, "MessageSHA256"), "no MessageSHA256 element"),
    (lambda s: _drop(s, "Name"), "no Name element"),
    (lambda s: s.replace('version="1"', 'version="2"'), "version"),
    (lambda s: s.replace("urn:dp2bridge:evidence:1", "urn:other"), "root element"),
    (lambda s: s.replace("<Issuer>", "<Issuer>kommune</Issuer><Issuer>"), "appears twice"),
    (lambda s: s.replace(".123456Z", "Z"), "EventTime"),
    (lambda s: s.replace("<AuditSeq>42", "<AuditSeq>4x2"), "AuditSeq"),
    (lambda s: s[:len(s) // 2], "not well-formed"),
    (lambda s: s.replace("?>", '?>\n<!DOCTYPE Evidence [<!ENTITY a "aaaa">]>', 1), "DTD"),
])
def test_bad_evidence_xml_is_refused(change, text):
    data = change(_xml(make_evidence("SubmissionAcceptance"))).encode("utf-8")
    with pytest.raises(EvidenceError, match=text):
        from_xml(data)


def _drop(xml: str, tag: str) -> str:
    start = xml.index(f"<{tag}>")
    return xml[:start] + xml[xml.index(f"</{tag}>") + len(tag) + 3:]


# --- hostile and wrong input -------------------------------------------------

@pytest.fixture(scope="module")
def good(rsa_pki) -> bytes:
    return make_receipt(make_evidence("ContentConsignmentFailure"), rsa_pki[1])


@pytest.mark.parametrize("name, mangle, text", [
    ("not mail", lambda r: b"hello", "no end of its header section"),
    ("plain mail", lambda r: b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n", "not multipart/signed"),
    ("no boundary", lambda r: r.replace(b'; boundary="=_dp2s_', b'; x="', 1), "no valid boundary"),
    ("boundary absent", lambda r: r.replace(b"\r\n--=_dp2s_", b"\r\n--=_XXXX_"), "never occurs"),
    ("truncated", lambda r: r[: len(r) * 2 // 3], "truncated"),
    ("huge", lambda r: r + b"x" * (2 * 1024 * 1024), "larger than"),
    ("not s/mime", lambda r: r.replace(b'protocol="application/pkcs7-signature"',
                                       b'protocol="application/pgp-signature"', 1), "not an S/MIME"),
    ("no evidence", lambda r: r.replace(b'filename="evidence.xml"', b'filename="other.xml"')
                               .replace(b'name="evidence.xml"', b'name="other.xml"'), "no evidence.xml"),
    ("bad base64 signature", lambda r: _replace_signature(r, b"!!!!"), "not valid base64"),
    ("event header lies", lambda r: r.replace(b"X-DP2-Receipt: ContentConsignmentFailure",
                                              b"X-DP2-Receipt: ContentConsignment"), "X-DP2-Receipt says"),
    ("ref header lies", lambda r: r.replace(b"X-DP2-Ref-Message-ID: <letter-1@",
                                            b"X-DP2-Ref-Message-ID: <letter-2@"), "X-DP2-Ref-Message-ID says"),
])
def test_wrong_input_raises_receipt_format_error(name, mangle, text, good):
    with pytest.raises(ReceiptFormatError, match=text):
        parse_receipt(mangle(good))


def _replace_signature(raw: bytes, body: bytes) -> bytes:
    head, _, rest = raw.partition(b'filename="smime.p7s"\r\n\r\n')
    return head + b'filename="smime.p7s"\r\n\r\n' + body + rest[rest.index(b"\r\n--=_dp2s_"):]


def test_two_evidence_parts_are_refused(good):
    start = good.index(b"--=_dp2m_")
    start = good.index(b"--=_dp2m_", start + 1)                     # the evidence part's delimiter
    end = good.index(b"\r\n--=_dp2m_", start)
    with pytest.raises(ReceiptFormatError, match="2 evidence.xml parts"):
        parse_receipt(good[:end] + b"\r\n" + good[start:end] + good[end:])


def test_bad_evidence_inside_is_a_format_error(good):
    with pytest.raises(ReceiptFormatError, match="evidence.xml is not valid"):
        parse_receipt(good.replace(b"Content-Transfer-Encoding: base64\r\n\r\nPD94", b"Content-Transfer-"
                                   b"Encoding: base64\r\n\r\nAAAA", 1))


def test_mangled_receipts_never_raise_anything_else(good):
    rng = random.Random(4)
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.choice(b"\r\n-=\"; \x00\xffAz")
        cut = rng.choice([len(data), rng.randrange(len(data))])
        try:
            parse_receipt(bytes(data[:cut]))
        except ReceiptFormatError:
            pass


def test_non_bytes_is_refused():
    with pytest.raises(ReceiptFormatError, match="bytes"):
        parse_receipt("text")  # type: ignore[arg-type]


def test_evidence_is_a_frozen_value():
    ev = make_evidence("SubmissionAcceptance")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.event = "SubmissionRejection"  # type: ignore[misc]
