"""crypto.evidence: the tenant PKI on disk, detached CMS signatures, and their verification,
checked by our verifier and by the real `openssl` binary."""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.crypto.certs import create_dev_ca
from bridge.crypto.evidence import (
    SignatureInvalid,
    TenantPKI,
    ensure_tenant_pki,
    load_tenant_pki,
    verify_detached,
)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
EMAIL = "receipts@kommune.dp2.test"
# A receipt's signed part: exact CRLF bytes, as the receipt builder passes them.
PART = (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Kvittering / Receipt: SubmissionAcceptance\r\nmessage 7f1c\r\n")


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="module")
def pki(certs_dir: Path) -> TenantPKI:
    return ensure_tenant_pki(certs_dir, "kommune", "Demo Kommune", EMAIL)


@pytest.fixture(scope="module")
def signature(pki: TenantPKI) -> bytes:
    return pki.sign(PART)


def reason(data: bytes, sig: bytes, trust: list[bytes], **kw: object) -> str:
    with pytest.raises(SignatureInvalid) as exc:
        verify_detached(data, sig, trust, **kw)
    assert exc.value.reason_da and exc.value.reason == str(exc.value)
    return exc.value.reason


# --- PKI on disk -------------------------------------------------------------------------

def test_the_tenant_pki_has_the_promised_certificates(pki: TenantPKI) -> None:
    ca = x509.load_pem_x509_certificate(pki.ca_pem())
    cert = x509.load_pem_x509_certificate(pki.cert_pem())
    assert ca.subject.rfc4514_string() == "CN=Demo Kommune dp2bridge CA" and ca.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert cert.subject.rfc4514_string() == "CN=Demo Kommune evidence (dp2bridge)"
    assert cert.public_key().key_size == 3072
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_encipherment
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.EMAIL_PROTECTION]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [EMAIL]
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == 825
    cert.verify_directly_issued_by(ca)


def test_keys_are_private_to_the_owner(pki: TenantPKI) -> None:
    for path in (pki.key_path, pki.ca_path.with_name("ca.key")):
        assert os.stat(path).st_mode & 0o777 == 0o600, path
    assert os.stat(pki.key_path.parent).st_mode & 0o777 == 0o700


def test_ensure_is_idempotent_and_never_replaces_a_key(certs_dir: Path, pki: TenantPKI) -> None:
    files = {p: p.read_bytes() for p in pki.key_path.parent.iterdir()}
    assert ensure_tenant_pki(certs_dir, "kommune", "Other Name", "x@y.example") == pki
    assert {p: p.read_bytes() for p in pki.key_path.parent.iterdir()} == files
    # A lost certificate is issued again for the key on disk, not with a new key.
    cert_pem = pki.cert_path.read_bytes()
    pki.cert_path.unlink()
    try:
        again = ensure_tenant_pki(certs_dir, "kommune", "Demo Kommune", EMAIL)
        assert again.key_path.read_bytes() == files[pki.key_path]
        old, new = (x509.load_pem_x509_certificate(p) for p in (cert_pem, again.cert_pem()))
        assert new.public_key() == old.public_key() and new.serial_number != old.serial_number
        verify_detached(PART, again.sign(PART), [again.ca_pem()])
    finally:
        pki.cert_path.write_bytes(cert_pem)


@pytest.mark.parametrize("lost", [["evidence.key"], ["ca.key", "evidence.pem"]])
def test_a_certificate_whose_key_was_lost_is_not_reissued_silently(
        tmp_path: Path, pki: TenantPKI, lost: list[str]) -> None:
    shutil.copytree(pki.key_path.parent, tmp_path / "tenants" / "kommune")
    for name in lost:
        (tmp_path / "tenants" / "kommune" / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"{lost[0]} is missing but .* exists"):
        ensure_tenant_pki(tmp_path, "kommune", "Demo Kommune", EMAIL)
    assert not any((tmp_path / "tenants" / "kommune" / name).exists() for name in lost)


def test_racing_processes_end_with_one_consistent_pki(tmp_path: Path) -> None:
    results: list[TenantPKI] = []
    threads = [threading.Thread(target=lambda: results.append(
        ensure_tenant_pki(tmp_path, "advokat", "Advokat", "receipts@advokat.dp2.test")))
        for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    pki = results[0]
    verify_detached(PART, pki.sign(PART), [pki.ca_pem()])
    assert sorted(p.name for p in pki.key_path.parent.iterdir()) == [
        "ca.key", "ca.pem", "evidence.key", "evidence.pem"]        # no temp files left


def test_load_names_what_is_missing(tmp_path: Path, pki: TenantPKI, certs_dir: Path) -> None:
    assert load_tenant_pki(certs_dir, "kommune") == pki
    with pytest.raises(FileNotFoundError, match="tenant 'borger' has no evidence certificate"):
        load_tenant_pki(tmp_path, "borger")


@pytest.mark.parametrize("name", ["../kommune", "Kommune", "", "a/b", ".hidden"])
def test_tenant_names_cannot_leave_the_certs_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="lowercase"):
        ensure_tenant_pki(tmp_path, name, "X", EMAIL)
    assert not any(tmp_path.iterdir())


# --- signing and our verifier ----------------------------------------------------------

def test_a_signature_verifies_and_names_signer_and_ca(pki: TenantPKI, signature: bytes) -> None:
    v = verify_detached(PART, signature, [pki.ca_pem()])
    assert v.signer_subject == "CN=Demo Kommune evidence (dp2bridge)"
    assert v.ca_subject == "CN=Demo Kommune dp2bridge CA"
    assert v.signer_email == EMAIL and v.signer_cert_pem == pki.cert_pem()
    assert v.signing_time is not None and not v.canonicalised
    assert abs(v.signing_time - datetime.datetime.now(datetime.timezone.utc)).total_seconds() < 300


@pytest.mark.parametrize("index", [0, len(PART) // 2, len(PART) - 1])
def test_one_changed_byte_is_reported_as_a_change(signature: bytes, pki: TenantPKI, index: int) -> None:
    changed = bytearray(PART)
    changed[index] ^= 0x01
    assert reason(bytes(changed), signature, [pki.ca_pem()]) == (
        "the message was changed after it was signed")


def test_a_copy_that_lost_its_carriage_returns_verifies_and_says_so(signature: bytes,
                                                                     pki: TenantPKI) -> None:
    v = verify_detached(PART.replace(b"\r\n", b"\n"), signature, [pki.ca_pem()])
    assert v.canonicalised


def test_another_ca_is_not_trusted(tmp_path: Path, signature: bytes) -> None:
    other_ca, _ = create_dev_ca(tmp_path, "Demo Kommune dp2bridge CA")   # same name, other key
    assert "signed by a certificate not issued by CN=Demo Kommune dp2bridge CA" in reason(
        PART, signature, [other_ca.read_bytes()])
    assert "(no CA given)" in reason(PART, signature, [])
    assert "holds no readable PEM certificate" in reason(PART, signature, [b"not a pem"])


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    old = ensure_tenant_pki(tmp_path, "gammel", "Gammel", EMAIL,
                            now=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc))
    text = reason(PART, old.sign(PART), [old.ca_pem()])
    assert text.startswith("the signer's certificate expired on 2002-")


def test_a_signature_dated_before_the_certificate_is_refused(signature: bytes, pki: TenantPKI) -> None:
    at = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    assert "was not yet valid" in reason(PART, signature, [pki.ca_pem()], at=at)


def issue(pki: TenantPKI, eku: list[x509.ObjectIdentifier] | None,
          digital_signature: bool = True) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A P-256 certificate from the tenant CA with the given EKU and key usage."""
    ca = x509.load_pem_x509_certificate(pki.ca_pem())
    ca_key = serialization.load_pem_private_key(pki.ca_path.with_name("ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test signer")]))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.KeyUsage(digital_signature, False, not digital_signature, False,
                                            False, False, False, False, False), critical=True))
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def sign_with(cert: x509.Certificate, key: object, data: bytes = PART,
              digest: hashes.HashAlgorithm | None = None, detached: bool = True) -> bytes:
    options = [pkcs7.PKCS7Options.Binary] + ([pkcs7.PKCS7Options.DetachedSignature] if detached else [])
    return (pkcs7.PKCS7SignatureBuilder().set_data(data)
            .add_signer(cert, key, digest or hashes.SHA256())
            .sign(serialization.Encoding.DER, options))


def test_ecdsa_signers_verify(pki: TenantPKI) -> None:
    cert, key = issue(pki, [ExtendedKeyUsageOID.EMAIL_PROTECTION])
    assert verify_detached(PART, sign_with(cert, key), [pki.ca_pem()]).signer_subject == "CN=test signer"
    cert, key = issue(pki, None)            # no EKU at all: any use, S/MIME included
    verify_detached(PART, sign_with(cert, key, digest=hashes.SHA512()), [pki.ca_pem()])


def test_a_certificate_without_email_protection_is_refused(pki: TenantPKI) -> None:
    cert, key = issue(pki, [ExtendedKeyUsageOID.SERVER_AUTH])
    assert "lacks emailProtection" in reason(PART, sign_with(cert, key), [pki.ca_pem()])


def test_a_certificate_not_for_signatures_is_refused(pki: TenantPKI) -> None:
    cert, key = issue(pki, [ExtendedKeyUsageOID.EMAIL_PROTECTION], digital_signature=False)
    assert "may not be used for signatures" in reason(PART, sign_with(cert, key), [pki.ca_pem()])


def test_weaker_digests_and_embedded_content_are_refused(pki: TenantPKI) -> None:
    cert, key = issue(pki, [ExtendedKeyUsageOID.EMAIL_PROTECTION])
    assert "digest algorithm sha224" in reason(PART, sign_with(cert, key, digest=hashes.SHA224()),
                                             [pki.ca_pem()])
    assert "not detached" in reason(PART, sign_with(cert, key, detached=False), [pki.ca_pem()])


def test_a_signature_made_with_another_key_does_not_match(pki: TenantPKI) -> None:
    cert, _ = issue(pki, [ExtendedKeyUsageOID.EMAIL_PROTECTION])
    _, other_key = issue(pki, [ExtendedKeyUsageOID.EMAIL_PROTECTION])
    forged = sign_with(cert, other_key)
    assert "signature does not match" in reason(PART, forged, [pki.ca_pem()])


@pytest.mark.parametrize("garbage", [b"", b"garbage", bytes(range(256)) * 4, b"\x30\x03\x06\x01\x00"])
def test_garbage_gives_a_readable_refusal(pki: TenantPKI, garbage: bytes) -> None:
    reason(PART, garbage, [pki.ca_pem()])


def test_no_damage_to_a_signature_escapes_as_another_exception(pki: TenantPKI,
                                                               signature: bytes) -> None:
    trust = [pki.ca_pem()]
    for n in range(0, len(signature), 5):
        reason(PART, signature[:n], trust)
    refused = 0
    for i in range(len(signature)):
        for bit in (0x01, 0x80):
            damaged = bytearray(signature)
            damaged[i] ^= bit
            try:
                verify_detached(PART, bytes(damaged), trust)
            except SignatureInvalid:
                refused += 1
    # Only unsigned metadata (versions, the informational digest list, NULL parameters)
    # may change without notice; everything else is refused.
    assert refused > 0.95 * 2 * len(signature)


# --- the openssl binary ----------------------------------------------------------------

def smime_message(part: bytes, signature: bytes) -> bytes:
    """A minimal multipart/signed message (RFC 8551 §3.5) around `part`, CRLF throughout."""
    b64 = base64.encodebytes(signature).replace(b"\n", b"\r\n")
    return (b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
            b'micalg=sha-256; boundary="=-b-="\r\n\r\n'
            b"This is an S/MIME signed message.\r\n"
            b"--=-b-=\r\n" + part + b"\r\n--=-b-=\r\n"
            b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n" + b64 +
            b"\r\n--=-b-=--\r\n")


def openssl(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30)


@needs_openssl
def test_openssl_smime_verifies_a_signed_message_and_notices_a_change(
        tmp_path: Path, pki: TenantPKI, signature: bytes) -> None:
    msg = tmp_path / "msg.eml"
    msg.write_bytes(smime_message(PART, signature))
    r = openssl("smime", "-verify", "-CAfile", pki.ca_path, "-in", msg, "-out", "/dev/null")
    assert r.returncode == 0, r.stderr
    changed = PART.replace(b"message 7f1c", b"message 7f1d")
    msg.write_bytes(smime_message(changed, signature))
    r = openssl("smime", "-verify", "-CAfile", pki.ca_path, "-in", msg, "-out", "/dev/null")
    assert r.returncode != 0 and "digest failure" in r.stderr


@needs_openssl
def test_openssl_cms_verifies_the_der_signature_for_smime_signing(
        tmp_path: Path, pki: TenantPKI, signature: bytes) -> None:
    (tmp_path / "data.bin").write_bytes(PART)
    (tmp_path / "sig.der").write_bytes(signature)
    r = openssl("cms", "-verify", "-binary", "-inform", "DER", "-content", tmp_path / "data.bin",
                "-in", tmp_path / "sig.der", "-CAfile", pki.ca_path, "-purpose", "smimesign",
                "-out", "/dev/null")
    assert r.returncode == 0, r.stderr


def test_an_evidence_certificate_near_its_end_is_renewed_and_old_receipts_still_verify(tmp_path: Path) -> None:
    from bridge.crypto.evidence import EVIDENCE_VALIDITY, RENEW_BEFORE, renew_evidence_cert
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    pki = ensure_tenant_pki(tmp_path, "kommune", "Demo Kommune", EMAIL, now=start)
    first = x509.load_pem_x509_certificate(pki.cert_pem())
    signed_then = pki.sign(PART)

    assert renew_evidence_cert(pki, now=start + datetime.timedelta(days=30)) is False   # not due
    assert pki.cert_pem() == first.public_bytes(serialization.Encoding.PEM)

    due = first.not_valid_after_utc - RENEW_BEFORE + datetime.timedelta(days=1)
    again = ensure_tenant_pki(tmp_path, "kommune", "Demo Kommune", EMAIL, now=due)   # renews on the way
    second = x509.load_pem_x509_certificate(again.cert_pem())
    assert second.serial_number != first.serial_number
    assert second.public_key() == first.public_key()                                  # same key
    assert second.not_valid_after_utc > first.not_valid_after_utc + EVIDENCE_VALIDITY / 2
    assert second.subject == first.subject and second.issuer == first.issuer
    archived = tmp_path / "tenants" / "kommune" / f"evidence-{first.serial_number:x}.pem"
    assert x509.load_pem_x509_certificate(archived.read_bytes()) == first
    # A receipt signed before still verifies (checked at its signing time), and a new one too.
    ca = [pki.ca_pem()]
    assert verify_detached(PART, signed_then, ca).signer_cert_pem == first.public_bytes(serialization.Encoding.PEM)
    renewed = load_tenant_pki(tmp_path, "kommune")
    assert verify_detached(PART, renewed.sign(PART), ca, at=due).signer_cert_pem == renewed.cert_pem()
    assert renew_evidence_cert(renewed, now=due) is False                              # once
