"""Users' S/MIME certificates, the bridge's own encryption identity, CRLs and trust anchors.

Owns, for one tenant (files under `<home>/certs/tenants/<tenant>/`, see evidence.py):

- issuing a user's S/MIME certificate from the tenant CA, with its key, as a
  PKCS#12 file that Thunderbird and Outlook import (`issue_user_cert`);
- checking a certificate a user brings along (`inspect_imported`), so the
  bridge can encrypt to them;
- the certificate revocation list of the tenant CA (`build_crl`, `write_tenant_crl`);
- the bridge's encryption certificate, which users encrypt submissions to
  (`ensure_bridge_cert`, `load_bridge_identity`): bridge.pem and bridge.key (0600);
- external CAs (e.g. OCES3) that the tenant trusts for its users' signatures,
  one PEM file per certificate in `trust/` (`add_trust_anchors`,
  `trust_anchors`, `tenant_trust_pems`).

Serial numbers are written as lowercase hex without leading zeros
(`serial_hex`), fingerprints as lowercase SHA-256 hex (`fingerprint`): the
store keys certificates by these.  The private key of a user certificate is
never written anywhere but into the password-protected PKCS#12.  This module
must not import `bridge.core`, `bridge.store` or any front end.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.crypto.certs import (
    _CERT_MODE,
    _authority_key_id,
    _builder,
    _signature_hash,
    _start_of_validity,
    _write_atomic,
)
from bridge.crypto.evidence import (
    RSA_BITS,
    smime_leaf,
    PrivateKey,
    _ensure_key,
    _refuse_orphan,
    _write_new,
    tenant_dir,
)

USER_CERT_DAYS = 730                # tenant policy `user_cert_days` overrides it
KEY_KINDS = ("rsa", "p256")
BRIDGE_VALIDITY = datetime.timedelta(days=825)
CRL_VALIDITY = datetime.timedelta(days=7)
P12_KDF_ROUNDS = 50_000
# RFC 5280 §5.3.1 reason codes an admin may give (removeFromCRL and the CA ones are not for users).
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}


class CertificateRefused(ValueError):
    """A certificate cannot be used as asked; the text says why and what to do instead."""


@dataclass(frozen=True)
class CertFacts:
    """What the store keeps of a certificate."""

    serial: str                         # serial_hex()
    fingerprint: str                    # SHA-256 of the DER, lowercase hex
    issuer_fingerprint: str             # of the issuing CA when known, else ""
    pem: str
    not_before: datetime.datetime
    not_after: datetime.datetime


@dataclass(frozen=True)
class IssuedCert:
    facts: CertFacts
    p12: bytes                          # PKCS#12: key, certificate and the tenant CA


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def subject_rfc4514(der: bytes) -> str:
    """The subject of the DER certificate `der` as an RFC 4514 string (e.g. "CN=Anna Ærø")."""
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def normalise_serial(text: str) -> str:
    """A serial as an admin types it ("1A:2B", "0x1a2b", "001A2B") in `serial_hex` form.

    :raises ValueError: when it is not hexadecimal.
    """
    digits = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    return serial_hex(int(digits, 16))


# --- users' certificates -----------------------------------------------------------

def issue_user_cert(certs_dir: Path, tenant: str, login: str, display_name: str,
                    password: bytes, *, key_kind: str = "rsa", days: int = USER_CERT_DAYS,
                    now: datetime.datetime | None = None) -> IssuedCert:
    """Issue an S/MIME certificate for `login` from the tenant CA, with a new key.

    RSA 3072 (default) gets keyUsage digitalSignature + keyEncipherment; P-256
    gets digitalSignature + keyAgreement, the EC counterpart (an EC key cannot
    encipher keys; the bridge encrypts to RSA certificates only).  EKU
    emailProtection and clientAuth (for the HTTPS API), SAN rfc822Name = login, CN = display name, 159-bit random
    serial, validity `days` (cut short where the CA ends earlier).

    :raises FileNotFoundError: when the tenant CA (ca.pem, ca.key) does not exist.
    :raises ValueError: for an unknown `key_kind`, `days` < 1 or an empty password.
    """
    if key_kind not in KEY_KINDS:
        raise ValueError(f"key kind {key_kind!r} is not one of {', '.join(KEY_KINDS)}")
    if days < 1:
        raise ValueError("a certificate must be valid for at least one day")
    if not password:
        raise ValueError("a PKCS#12 file needs a password")
    ca, ca_key = _load_ca(certs_dir, tenant)
    key: PrivateKey = (rsa.generate_private_key(65537, RSA_BITS) if key_kind == "rsa"
                       else ec.generate_private_key(ec.SECP256R1()))
    start = _start_of_validity(now)
    end = min(start + datetime.timedelta(days=days), ca.not_valid_after_utc)
    name = display_name.strip() or login
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    rsa_key = key_kind == "rsa"
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=rsa_key, data_encipherment=False,
                          key_agreement=not rsa_key, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    cert = (_builder(subject, ca.subject, key.public_key(), start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            # clientAuth too, as OCES/MitID personal certificates have: OpenSSL refuses a TLS
            # client certificate whose extendedKeyUsage lacks it (the HTTPS API's mutual TLS).
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            # RFC 8550 §3: the address goes in subjectAltName rfc822Name.
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(login)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(_authority_key_id(ca), critical=False)
            .sign(ca_key, _signature_hash(ca_key)))
    return IssuedCert(_facts(cert, fingerprint(ca)),
                      _p12(f"{name} <{login}>", key, cert, ca, password))


def _p12(friendly_name: str, key: PrivateKey, cert: x509.Certificate, ca: x509.Certificate,
         password: bytes) -> bytes:
    # PBES2 with AES-256-CBC and an HMAC-SHA256 MAC: what OpenSSL 3, Thunderbird and current
    # Outlook/Windows import; the legacy RC2/3DES profile is refused by OpenSSL 3's defaults.
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(P12_KDF_ROUNDS)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256())
                  .build(password))
    return pkcs12.serialize_key_and_certificates(friendly_name.encode(), key, cert, [ca],
                                                 encryption)


def inspect_imported(data: bytes, login: str, trust_pems: list[bytes], *,
                     now: datetime.datetime | None = None) -> CertFacts:
    """Check a user's own S/MIME certificate (PEM or DER; of a PEM chain, the first) for
    encrypting mail to `login`: an end-entity certificate for e-mail protection, naming
    `login` in subjectAltName, valid now, with an RSA key that may encipher keys.
    Its issuer's fingerprint is recorded when the issuer is among `trust_pems`.

    :raises CertificateRefused: saying what is wrong.
    """
    cert = _load_one(data)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if _basic_constraints_ca(cert):
        raise CertificateRefused("this is a CA certificate; import the user's own certificate "
                                 "(to trust a CA, use `dp2bridge cert trust`)")
    if ExtendedKeyUsageOID.EMAIL_PROTECTION not in _eku(cert):
        raise CertificateRefused("the certificate is not for e-mail (its extendedKeyUsage "
                                 "lacks emailProtection); ask for an S/MIME certificate")
    emails = [e.lower() for e in _emails(cert)]
    if login.lower() not in emails:
        named = ", ".join(emails) or "no e-mail address"
        raise CertificateRefused(f"the certificate is for {named}, not {login}: its "
                                 f"subjectAltName must name {login}")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateRefused(f"the certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d} "
                                 f"to {cert.not_valid_after_utc:%Y-%m-%d}; import a current one")
    if not _can_encrypt_to(cert):
        raise CertificateRefused("mail cannot be encrypted to this certificate: the bridge "
                                 "encrypts to RSA keys whose keyUsage allows keyEncipherment")
    return _facts(cert, _issuer_fingerprint(cert, trust_pems))


def can_encrypt_to(pem: str | bytes) -> bool:
    """True when S/MIME mail can be encrypted to the certificate in `pem` (RSA key; keyUsage,
    if present, allows keyEncipherment)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    return _can_encrypt_to(x509.load_pem_x509_certificate(data))


def _can_encrypt_to(cert: x509.Certificate) -> bool:
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        return False
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    except x509.ExtensionNotFound:
        return True


def _load_one(data: bytes) -> x509.Certificate:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateRefused("the file holds no readable X.509 certificate (PEM or DER)") from None


def _issuer_fingerprint(cert: x509.Certificate, trust_pems: list[bytes]) -> str:
    for pem in trust_pems:
        for ca in x509.load_pem_x509_certificates(pem):
            if ca.subject == cert.issuer:
                try:
                    cert.verify_directly_issued_by(ca)
                except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
                    continue                    # same name, another CA
                return fingerprint(ca)
    return ""


def _facts(cert: x509.Certificate, issuer_fingerprint: str) -> CertFacts:
    return CertFacts(serial=serial_hex(cert.serial_number), fingerprint=fingerprint(cert),
                     issuer_fingerprint=issuer_fingerprint,
                     pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                     not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc)


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


def _emails(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.RFC822Name)


def _basic_constraints_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


# --- revocation --------------------------------------------------------------------

def build_crl(ca_cert: bytes, ca_key: bytes,
              revoked: list[tuple[str, datetime.datetime, str | None]],
              now: datetime.datetime) -> bytes:
    """A PEM CRL signed by the CA (`ca_cert`, `ca_key`: PEM) listing `revoked`
    ((serial hex, revoked at, reason name from REASONS or None)); next update in 7 days.
    The CRL number is `now` in seconds, so later CRLs have larger numbers (RFC 5280 §5.2.3).

    :raises ValueError: when the key is not the CA's, or a reason is unknown.
    """
    ca = x509.load_pem_x509_certificate(ca_cert)
    key = serialization.load_pem_private_key(ca_key, password=None)
    if key.public_key() != ca.public_key():
        raise ValueError("the CA key is not the key of the CA certificate")
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(ca.subject)
               .last_update(now)
               .next_update(now + CRL_VALIDITY)
               .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
               .add_extension(_authority_key_id(ca), critical=False))
    for serial, when, reason in revoked:
        entry = (x509.RevokedCertificateBuilder()
                 .serial_number(int(serial, 16))
                 .revocation_date(when))
        # RFC 5280 §5.3.1: leave the reason out rather than say "unspecified".
        if reason and reason != "unspecified":
            if reason not in REASONS:
                raise ValueError(f"unknown revocation reason {reason!r}")
            entry = entry.add_extension(x509.CRLReason(REASONS[reason]), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    crl = builder.sign(key, _signature_hash(key))
    return crl.public_bytes(serialization.Encoding.PEM)


def write_tenant_crl(certs_dir: Path, tenant: str,
                     revoked: list[tuple[str, datetime.datetime, str | None]],
                     now: datetime.datetime) -> tuple[Path, bytes]:
    """Build the tenant CA's CRL and write it to `<tenant dir>/crl.pem`; (path, PEM).

    :raises FileNotFoundError: when the tenant CA does not exist.
    """
    d = tenant_dir(certs_dir, tenant)
    pem = build_crl((d / "ca.pem").read_bytes(), (d / "ca.key").read_bytes(), revoked, now)
    path = d / "crl.pem"
    _write_atomic(path, pem, _CERT_MODE)
    return path, pem


def tenant_ca_fingerprint(certs_dir: Path, tenant: str) -> str:
    """SHA-256 of the tenant CA certificate (what `CertFacts.issuer_fingerprint` holds for
    certificates it issued).

    :raises FileNotFoundError: when the tenant CA does not exist.
    """
    path = tenant_dir(certs_dir, tenant) / "ca.pem"
    return fingerprint(x509.load_pem_x509_certificate(path.read_bytes()))


def _load_ca(certs_dir: Path, tenant: str) -> tuple[x509.Certificate, PrivateKey]:
    d = tenant_dir(certs_dir, tenant)
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    if key.public_key() != ca.public_key():
        raise ValueError(f"{d / 'ca.key'} is not the private key of {d / 'ca.pem'}")
    return ca, key


# --- the bridge's encryption certificate -------------------------------------------

def bridge_address(domains: list[str], hostname: str) -> str:
    """bridge@ the tenant's first domain, else bridge@ the bridge's host name."""
    return f"bridge@{domains[0] if domains else hostname}"


def ensure_bridge_cert(certs_dir: Path, tenant: str, display_name: str, email: str, *,
                       now: datetime.datetime | None = None) -> tuple[Path, Path]:
    """Make the tenant's bridge encryption certificate (RSA 3072, issued by the tenant CA)
    where it is missing; (bridge.pem, bridge.key).  Race-safe and never replacing, as
    `ensure_tenant_pki`.

    :raises FileNotFoundError: when the tenant CA is missing, or bridge.pem exists
        without bridge.key.
    """
    d = tenant_dir(certs_dir, tenant)
    cert_path, key_path = d / "bridge.pem", d / "bridge.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    _refuse_orphan(cert_path, key_path)
    ca, ca_key = _load_ca(certs_dir, tenant)
    key = _ensure_key(key_path, lambda: rsa.generate_private_key(65537, RSA_BITS))
    if not cert_path.exists():
        _write_new(cert_path, _bridge_cert(key.public_key(), f"{display_name} bridge (dp2bridge)",
                                           email, ca, ca_key, now))
    return cert_path, key_path


def _bridge_cert(public_key: rsa.RSAPublicKey, common_name: str, email: str,
                 ca: x509.Certificate, ca_key: PrivateKey,
                 now: datetime.datetime | None) -> x509.Certificate:
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False)
    return smime_leaf(public_key, common_name, email, ca, ca_key, now, BRIDGE_VALIDITY, usage)


def load_bridge_identity(certs_dir: Path, tenant: str) -> tuple[bytes, bytes]:
    """(bridge.pem, bridge.key) of the tenant, as PEM bytes, for decrypting mail sent to it.

    :raises FileNotFoundError: when either is missing (`ensure_bridge_cert` makes them).
    """
    d = tenant_dir(certs_dir, tenant)
    return (d / "bridge.pem").read_bytes(), (d / "bridge.key").read_bytes()


# --- trust anchors -----------------------------------------------------------------

def add_trust_anchors(certs_dir: Path, tenant: str, data: bytes) -> list[dict]:
    """Copy the CA certificates in `data` (PEM, one or more) into `<tenant dir>/trust/`,
    one `<fingerprint>.pem` each; the certificates, with `added` False for one already there.

    :raises CertificateRefused: when `data` holds no PEM certificate or one that is not a CA.
    """
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateRefused("the file holds no PEM certificate; give the CA chain as "
                                 "PEM (convert DER with `openssl x509 -inform DER`)") from None
    for cert in certs:
        if not _basic_constraints_ca(cert):
            raise CertificateRefused(f"{cert.subject.rfc4514_string()} is not a CA certificate "
                                     f"(basicConstraints CA:TRUE); give only the CA chain")
    trust = tenant_dir(certs_dir, tenant) / "trust"
    trust.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = []
    for cert in certs:
        path = trust / f"{fingerprint(cert)}.pem"
        added = not path.exists()
        if added:
            _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
        out.append({**_anchor_info(cert, path), "added": added})
    return out


def trust_anchors(certs_dir: Path, tenant: str) -> list[dict]:
    """The external CAs in `<tenant dir>/trust/`: subject, fingerprint, not_after, file."""
    trust = tenant_dir(certs_dir, tenant) / "trust"
    return [_anchor_info(x509.load_pem_x509_certificate(p.read_bytes()), p)
            for p in sorted(trust.glob("*.pem"))]


def tenant_trust_pems(certs_dir: Path, tenant: str) -> list[bytes]:
    """The PEM certificates a signature by one of the tenant's users may chain to: the
    tenant CA (when it exists) followed by the imported anchors in `trust/`."""
    d = tenant_dir(certs_dir, tenant)
    ca = d / "ca.pem"
    pems = [ca.read_bytes()] if ca.exists() else []
    return pems + [p.read_bytes() for p in sorted((d / "trust").glob("*.pem"))]


def _anchor_info(cert: x509.Certificate, path: Path) -> dict:
    return {"subject": cert.subject.rfc4514_string(), "fingerprint": fingerprint(cert),
            "not_after": cert.not_valid_after_utc.isoformat(), "file": str(path)}
