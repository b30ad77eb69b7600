"""Tenant evidence keys: each tenant's CA and evidence certificate, CMS signing and verification.

Owns: the per-tenant PKI on disk (`ensure_tenant_pki`, `load_tenant_pki`),
detached CMS (S/MIME) signatures over receipts (`TenantPKI.sign`) and their
verification (`verify_detached`), which `openssl smime -verify -CAfile ca.pem`
and `dp2bridge verify` both perform.

On-disk layout, one directory per tenant (normally `<home>/certs/tenants/<tenant>/`)::

    ca.pem         the tenant CA (self-signed, P-256, pathlen 0); publish it:
                   it is all a verifier needs (`-CAfile ca.pem`)
    ca.key         its private key, PEM PKCS#8, mode 0600
    evidence.pem   the evidence-signing certificate (RSA 3072, issued by ca.pem)
    evidence.key   its private key, PEM PKCS#8, mode 0600

RSA rather than P-256 for the evidence key because every S/MIME client
(Outlook, Thunderbird, Apple Mail, openssl) verifies RSA PKCS#1 v1.5.
Keys are written with crypto.certs' atomic 0600 writer and never replaced.

cryptography signs CMS but cannot verify it, so verification parses with
asn1crypto and does the maths with cryptography.  This module must not import
`bridge.core`, `bridge.store` or any front end.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.crypto.certs import (
    _CERT_MODE,
    _KEY_MODE,
    CA_VALIDITY,
    _authority_key_id,
    _builder,
    _key_pem,
    _key_usage,
    _start_of_validity,
    _write_atomic,
)
from bridge.errors import BridgeError

# 825 days, as for server certificates (crypto.certs): long enough to sign
# receipts for two years, short enough for clients that cap leaf validity.
EVIDENCE_VALIDITY = datetime.timedelta(days=825)
# Renewed (same key, new validity) when fewer days than this are left.
RENEW_BEFORE = datetime.timedelta(days=60)
RSA_BITS = 3072
_TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # as core.admin: also a safe directory name
PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
_DIGESTS = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class SignatureInvalid(BridgeError):
    """A signature does not verify; `reason` (English) and `reason_da` (Danish) say why."""

    temporary = False

    def __init__(self, reason: str, reason_da: str) -> None:
        super().__init__(reason, public=reason)
        self.reason = reason
        self.reason_da = reason_da


@dataclass(frozen=True)
class Verified:
    """What a valid signature proves: who signed, under which CA, and when."""

    signer_subject: str
    signer_email: str | None
    signer_cert_pem: bytes
    ca_subject: str
    signing_time: datetime.datetime | None
    # True when the data only matched after bare LF line ends were turned into CRLF
    # (a saved .eml that lost its CRs); the content is otherwise unchanged.
    canonicalised: bool


@dataclass(frozen=True)
class TenantPKI:
    """The files of one tenant's PKI; `sign` loads the key once and keeps it."""

    tenant: str
    ca_path: Path
    cert_path: Path
    key_path: Path

    def ca_pem(self) -> bytes:
        return self.ca_path.read_bytes()

    def cert_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    def sign(self, data: bytes) -> bytes:
        """A DER CMS SignedData over `data`: detached, SHA-256, RSA PKCS#1 v1.5, with
        contentType, signingTime and messageDigest signed attributes and the signer
        certificate.  `data` is signed byte for byte (no MIME canonicalisation): pass
        exactly the CRLF bytes of the signed part.

        :raises ValueError: when evidence.key is not the key of evidence.pem.
        :raises FileNotFoundError: when either file is gone.
        """
        cert, key = self._signer
        return (pkcs7.PKCS7SignatureBuilder()
                .set_data(data)
                # RFC 8551 §2.2: PKCS#1 v1.5; `openssl smime` does not verify RSA-PSS.
                .add_signer(cert, key, hashes.SHA256(), rsa_padding=padding.PKCS1v15())
                .sign(serialization.Encoding.DER,
                      [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.DetachedSignature]))

    @functools.cached_property
    def _signer(self) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey) or key.public_key() != cert.public_key():
            raise ValueError(f"{self.key_path} is not the private key of {self.cert_path}")
        return cert, key


def receipts_address(domains: list[str], hostname: str) -> str:
    """The address in a tenant's evidence certificate: receipts@ its first domain, else
    receipts@ the bridge's host name."""
    return f"receipts@{domains[0] if domains else hostname}"


def tenant_dir(certs_dir: Path, tenant: str) -> Path:
    """`certs_dir/tenants/<tenant>`; raises ValueError for a name that is not a tenant name."""
    if not _TENANT_RE.match(tenant):
        raise ValueError(f"tenant name {tenant!r} must be lowercase a-z letters, digits and '-'")
    return certs_dir / "tenants" / tenant


def load_tenant_pki(certs_dir: Path, tenant: str) -> TenantPKI:
    """The tenant's PKI files (not read yet).

    :raises FileNotFoundError: when the CA certificate, evidence certificate or
        evidence key is missing.
    """
    pki = _paths(certs_dir, tenant)
    missing = [p.name for p in (pki.ca_path, pki.cert_path, pki.key_path) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"tenant {tenant!r} has no evidence certificate ({', '.join(missing)} missing in "
            f"{tenant_dir(certs_dir, tenant)}); `dp2bridge tenant add` and `dp2bridge init` "
            f"create it")
    return pki


def ensure_tenant_pki(certs_dir: Path, tenant: str, display_name: str, email: str, *,
                      now: datetime.datetime | None = None) -> TenantPKI:
    """Create whatever of the tenant's CA and evidence certificate is missing; return them.

    Idempotent and safe when two processes race: a key is written only where
    none exists (the loser of a race uses the winner's key), and a certificate
    is issued only for a key on disk.  `now` fixes the start of validity
    (tests; default: the system clock).  Existing files are never replaced,
    except an evidence certificate that is due for renewal (`renew_evidence_cert`).

    :raises ValueError: when `tenant` is not a valid tenant name, or ca.key is
        not the key of ca.pem.
    :raises FileNotFoundError: when a certificate exists without its key
        (ca.pem without ca.key, evidence.pem without evidence.key): a new key
        would not match it, and certificates are not replaced.
    """
    directory = tenant_dir(certs_dir, tenant)
    pki = _paths(certs_dir, tenant)
    if all(p.exists() for p in (pki.ca_path, pki.cert_path, pki.key_path)):
        renew_evidence_cert(pki, now=now)       # usually: nothing due
        return pki
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key_path = directory / "ca.key"
    _refuse_orphan(pki.ca_path, ca_key_path)
    _refuse_orphan(pki.cert_path, pki.key_path)
    ca_key = _ensure_key(ca_key_path, lambda: ec.generate_private_key(ec.SECP256R1()))
    if not pki.ca_path.exists():
        _write_new(pki.ca_path, _ca_cert(ca_key, f"{display_name} dp2bridge CA", now))
    ca = x509.load_pem_x509_certificate(pki.ca_path.read_bytes())
    if ca.public_key() != ca_key.public_key():
        raise ValueError(f"{ca_key_path} is not the private key of {pki.ca_path}")
    key = _ensure_key(pki.key_path, lambda: rsa.generate_private_key(65537, RSA_BITS))
    if not pki.cert_path.exists():
        cn = f"{display_name} evidence (dp2bridge)"
        _write_new(pki.cert_path, _evidence_cert(key.public_key(), cn, email, ca, ca_key, now))
    return pki


def renew_evidence_cert(pki: TenantPKI, *, now: datetime.datetime | None = None) -> bool:
    """Re-issue the evidence certificate for the same key when it ends within
    `RENEW_BEFORE` (and the CA would let a new one last longer); True if it did.

    The old certificate is kept beside it as `evidence-<serial>.pem`.  Receipts
    signed under it stay verifiable: each signature carries its certificate, and
    verification checks validity at the signing time.  Safe when two processes
    race: either new certificate serves, both for the same key.
    """
    when = now or datetime.datetime.now(datetime.timezone.utc)
    old = x509.load_pem_x509_certificate(pki.cert_path.read_bytes())
    if old.not_valid_after_utc - when > RENEW_BEFORE:
        return False
    ca = x509.load_pem_x509_certificate(pki.ca_path.read_bytes())
    if ca.not_valid_after_utc <= old.not_valid_after_utc:
        return False                            # only a new CA helps: `dp2bridge cert show` says when
    ca_key = serialization.load_pem_private_key((pki.ca_path.parent / "ca.key").read_bytes(), password=None)
    key = serialization.load_pem_private_key(pki.key_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey) or key.public_key() != old.public_key():
        raise ValueError(f"{pki.key_path} is not the private key of {pki.cert_path}")
    emails = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.RFC822Name)
    common_name = old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    new = _evidence_cert(key.public_key(), str(common_name), emails[0], ca, ca_key, when)
    archive = pki.cert_path.with_name(f"evidence-{old.serial_number:x}.pem")
    _write_atomic(archive, old.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
    _write_atomic(pki.cert_path, new.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
    return True


def _refuse_orphan(cert_path: Path, key_path: Path) -> None:
    if cert_path.exists() and not key_path.exists():
        raise FileNotFoundError(
            f"{key_path} is missing but {cert_path} exists: restore the key from a backup, or "
            f"move {cert_path.name} away to have a new key and certificate made")


def _paths(certs_dir: Path, tenant: str) -> TenantPKI:
    d = tenant_dir(certs_dir, tenant)
    return TenantPKI(tenant, d / "ca.pem", d / "evidence.pem", d / "evidence.key")


def _ensure_key(path: Path, generate: Callable[[], PrivateKey]) -> PrivateKey:
    """The private key in `path`, generated and written first if there is none."""
    if not path.exists():
        try:
            _write_atomic(path, _key_pem(generate()), _KEY_MODE, replace=False)
        except FileExistsError:
            pass  # another process won the race: use its key
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _write_new(path: Path, cert: x509.Certificate) -> None:
    try:
        _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), _CERT_MODE,
                      replace=False)
    except FileExistsError:
        pass  # issued concurrently for the same key: either certificate serves


def _ca_cert(key: ec.EllipticCurvePrivateKey, common_name: str,
             now: datetime.datetime | None) -> x509.Certificate:
    start = _start_of_validity(now)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (_builder(name, name, key.public_key(), start, start + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))


def _evidence_cert(public_key: rsa.RSAPublicKey, common_name: str, email: str,
                   ca: x509.Certificate, ca_key: PrivateKey,
                   now: datetime.datetime | None) -> x509.Certificate:
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False)
    return smime_leaf(public_key, common_name, email, ca, ca_key, now, EVIDENCE_VALIDITY, usage)


def smime_leaf(public_key: Any, common_name: str, email: str, ca: x509.Certificate, ca_key: PrivateKey,
               now: datetime.datetime | None, validity: datetime.timedelta,
               usage: x509.KeyUsage) -> x509.Certificate:
    """An end-entity S/MIME certificate from the tenant CA: EKU emailProtection, the address
    as SAN rfc822Name, `usage` as keyUsage, never outliving the CA."""
    start = _start_of_validity(now)
    end = min(start + validity, ca.not_valid_after_utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (_builder(subject, ca.subject, public_key, start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            # RFC 8550 §3: the signer's address goes in subjectAltName rfc822Name.
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(_authority_key_id(ca), critical=False)
            .sign(ca_key, hashes.SHA256()))


# --- verification ----------------------------------------------------------------

def verify_detached(data: bytes, signature_der: bytes, trust_pems: list[bytes], *,
                    at: datetime.datetime | None = None) -> Verified:
    """Check a detached DER CMS signature over `data` against the CAs in `trust_pems`.

    The signer certificate (carried in the CMS) must be issued directly by one of
    the trusted CAs, be valid at `at` (default: the signed signingTime, else now),
    allow digital signatures and, if it has an extendedKeyUsage, e-mail protection.

    :raises SignatureInvalid: with a reason a person understands, for any
        failure, including unreadable input.
    """
    try:
        return _verify(data, signature_der, trust_pems, at)
    except SignatureInvalid:
        raise
    except Exception as exc:
        # asn1crypto parses lazily and cryptography re-parses the certificate, so damaged
        # input surfaces as ValueError, TypeError, KeyError, InvalidVersion, ... anywhere.
        # The cause stays chained for debugging.
        raise SignatureInvalid(
            "the signature is damaged or is not a CMS (S/MIME) signature",
            "signaturen er beskadiget eller ikke en CMS-signatur (S/MIME)") from exc


def _verify(data: bytes, signature_der: bytes, trust_pems: list[bytes],
            at: datetime.datetime | None) -> Verified:
    signed = _signed_data(signature_der)
    infos = signed["signer_infos"]
    if len(infos) != 1:
        raise SignatureInvalid(f"the signature has {len(infos)} signers, expected exactly one",
                               f"signaturen har {len(infos)} underskrivere, forventet præcis én")
    info = infos[0]
    digest = _digest_algorithm(info)
    attrs = _signed_attributes(info)
    canonicalised = _check_digest(data, attrs["message_digest"], digest)
    cert = _signer_certificate(signed, info["sid"])
    _check_signature(info, cert, digest)
    signing_time = attrs.get("signing_time")
    ca = _issuing_ca(cert, trust_pems)
    when = at or signing_time or datetime.datetime.now(datetime.timezone.utc)
    for c, who_en, who_da in ((cert, "the signer's certificate", "underskriverens certifikat"),
                              (ca, "the CA certificate", "CA-certifikatet")):
        _check_validity(c, when, who_en, who_da)
    _check_usage(cert)
    return Verified(
        signer_subject=cert.subject.rfc4514_string(),
        signer_email=_email(cert),
        signer_cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        ca_subject=ca.subject.rfc4514_string(),
        signing_time=signing_time,
        canonicalised=canonicalised,
    )


def _signed_data(signature_der: bytes) -> cms.SignedData:
    """The detached SignedData of `signature_der` (crypto/_cms.py reads it; it uses this
    module's checks, hence the import here)."""
    from bridge.crypto._cms import signed_data
    signed = signed_data(signature_der)
    if signed["encap_content_info"]["content"].native is not None:
        raise SignatureInvalid("the signature is not detached: it carries its own content",
                               "signaturen er ikke adskilt: den indeholder selv indholdet")
    return signed


def _digest_algorithm(info: cms.SignerInfo) -> hashes.HashAlgorithm:
    name = info["digest_algorithm"]["algorithm"].native
    if name not in _DIGESTS:
        raise SignatureInvalid(f"the signature uses the digest algorithm {name}, which is not "
                               f"accepted (SHA-256, SHA-384 or SHA-512 are)",
                               f"signaturen bruger digest-algoritmen {name}, som ikke accepteres "
                               f"(kun SHA-256, SHA-384 eller SHA-512)")
    return _DIGESTS[name]()


def _signed_attributes(info: cms.SignerInfo) -> dict:
    """contentType, messageDigest and signingTime (when present), each exactly once."""
    if not info["signed_attrs"].native:
        raise SignatureInvalid("the signature has no signed attributes (no message digest)",
                               "signaturen har ingen signerede attributter (ingen digest)")
    found: dict = {}
    for attr in info["signed_attrs"]:
        name = attr["type"].native
        if name in found or len(attr["values"]) != 1:
            raise SignatureInvalid(f"the signed attribute {name} occurs more than once",
                                   f"den signerede attribut {name} forekommer mere end én gang")
        found[name] = attr["values"][0].native
    if "message_digest" not in found or found.get("content_type") != "data":
        raise SignatureInvalid("the signed attributes lack the message digest or content type",
                               "de signerede attributter mangler digest eller indholdstype")
    return found


def _check_digest(data: bytes, signed_digest: bytes, digest: hashes.HashAlgorithm) -> bool:
    """True if `data` matched only after LF -> CRLF; raises if it does not match at all."""
    if _hash(data, digest) == signed_digest:
        return False
    crlf = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    if crlf != data and _hash(crlf, digest) == signed_digest:
        return True
    raise SignatureInvalid("the message was changed after it was signed",
                           "meddelelsen er ændret efter den blev underskrevet")


def _hash(data: bytes, digest: hashes.HashAlgorithm) -> bytes:
    return hashlib.new(digest.name, data).digest()


def _signer_certificate(signed: cms.SignedData, sid: cms.SignerIdentifier) -> x509.Certificate:
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        cert = choice.chosen
        if sid.name == "issuer_and_serial_number":
            match = (cert.issuer == sid.chosen["issuer"]
                     and cert.serial_number == sid.chosen["serial_number"].native)
        else:
            match = cert.key_identifier == sid.chosen.native
        if match:
            return x509.load_der_x509_certificate(cert.dump())
    raise SignatureInvalid("the signer's certificate is not included in the signature",
                           "underskriverens certifikat er ikke med i signaturen")


def _check_signature(info: cms.SignerInfo, cert: x509.Certificate,
                     digest: hashes.HashAlgorithm) -> None:
    # RFC 5652 §5.4: the signature covers the DER of the attributes as a SET OF,
    # not their [0] IMPLICIT encoding inside SignerInfo.
    attrs = info["signed_attrs"].dump()
    signed_bytes = b"\x31" + attrs[1:]
    signature = info["signature"].native
    algo = info["signature_algorithm"].signature_algo
    key = cert.public_key()
    try:
        if algo == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed_bytes, padding.PKCS1v15(), digest)
        elif algo == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed_bytes, ec.ECDSA(digest))
        else:
            raise SignatureInvalid(f"the signature algorithm {algo} is not supported with this "
                                   f"certificate's key (RSA PKCS#1 v1.5 and ECDSA are)",
                                   f"signaturalgoritmen {algo} understøttes ikke med dette "
                                   f"certifikats nøgle (kun RSA PKCS#1 v1.5 og ECDSA)")
    except InvalidSignature:
        raise SignatureInvalid(
            "the signature does not match: it was altered or made with another key",
            "signaturen passer ikke: den er ændret eller lavet med en anden nøgle") from None


def _issuing_ca(cert: x509.Certificate, trust_pems: list[bytes]) -> x509.Certificate:
    try:
        cas = [ca for pem in trust_pems for ca in x509.load_pem_x509_certificates(pem)]
    except ValueError:
        raise SignatureInvalid("a trusted CA file holds no readable PEM certificate",
                               "en betroet CA-fil indeholder intet læsbart PEM-certifikat") from None
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return ca
    names = " or ".join(ca.subject.rfc4514_string() for ca in cas) or "(no CA given)"
    raise SignatureInvalid(f"signed by a certificate not issued by {names} "
                           f"(it names {cert.issuer.rfc4514_string()} as issuer)",
                           f"underskrevet med et certifikat, der ikke er udstedt af {names} "
                           f"(det angiver {cert.issuer.rfc4514_string()} som udsteder)")


def _check_validity(cert: x509.Certificate, when: datetime.datetime, who_en: str,
                    who_da: str) -> None:
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    if when > cert.not_valid_after_utc:
        end = cert.not_valid_after_utc.isoformat()
        raise SignatureInvalid(f"{who_en} expired on {end}, before the signature ({when.isoformat()})",
                               f"{who_da} udløb {end}, før signaturen ({when.isoformat()})")
    if when < cert.not_valid_before_utc:
        start = cert.not_valid_before_utc.isoformat()
        raise SignatureInvalid(f"{who_en} was not yet valid at the signature ({when.isoformat()}); "
                               f"it is valid from {start}",
                               f"{who_da} var endnu ikke gyldigt ved signaturen "
                               f"({when.isoformat()}); det gælder fra {start}")


def _check_usage(cert: x509.Certificate) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise SignatureInvalid("the signer's certificate may not be used for signatures (keyUsage)",
                               "underskriverens certifikat må ikke bruges til signaturer (keyUsage)")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku:
        raise SignatureInvalid("the signer's certificate is not for e-mail protection "
                               "(its extendedKeyUsage lacks emailProtection)",
                               "underskriverens certifikat er ikke til e-mail-beskyttelse "
                               "(extendedKeyUsage mangler emailProtection)")


def _email(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    emails = san.get_values_for_type(x509.RFC822Name)
    return emails[0] if emails else None
