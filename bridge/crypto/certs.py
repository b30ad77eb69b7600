"""X.509 certificates for the bridge's TLS listeners: a dev CA and server certificates.

Owns: generating the development CA (`create_dev_ca`), issuing server
certificates from it or from an imported CA (`issue_server_cert`), and the
read-only summary behind `dp2bridge cert show` (`certificate_info`).

On-disk layout (normally `<home>/certs/`, see DESIGN.md §9)::

    ca.pem        CA certificate (public; mail clients import it to trust the bridge)
    ca.key        CA private key, PEM PKCS#8, mode 0600
    server.pem    leaf certificate followed by the CA certificate(s): a chain
                  file for `ssl.SSLContext.load_cert_chain`
    server.key    server private key, PEM PKCS#8, mode 0600

Keys are unencrypted PEM protected by file mode, as DESIGN.md §7 requires
("keys at rest are files with mode 0600 under the state directory"). A key
file is never world- or group-readable, not even for a moment: it is created
as a temporary file with `os.open(..., 0o600)`, fsynced, then renamed into
place, and the directory is fsynced.

This package is the only importer of `cryptography` (STYLE.md §4). This
module must not import `bridge.core`, `bridge.store` or any front end.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.files import write_atomic as _write_atomic  # noqa: F401 - crypto modules import it from here

CA_VALIDITY = datetime.timedelta(days=3652)  # about 10 years: outlives many server certs
# 825 days: the CA/Browser Forum ceiling that Apple platforms still enforce
# for TLS server certificates; a longer one is refused by macOS/iOS mail clients.
SERVER_VALIDITY = datetime.timedelta(days=825)
# Start validity slightly in the past so a client whose clock lags a little
# does not reject a certificate issued a moment ago.
BACKDATE = datetime.timedelta(minutes=5)

_KEY_MODE = 0o600
_CERT_MODE = 0o644


def create_dev_ca(
    directory: Path, common_name: str, *, now: datetime.datetime | None = None
) -> tuple[Path, Path]:
    """Generate a development CA (P-256) and write `ca.pem` and `ca.key` in `directory`.

    The CA may only sign end-entity certificates (pathlen 0). `now` fixes the
    start of validity (tests pass a fixed time; default: the system clock).

    :returns: (cert_path, key_path).
    :raises FileExistsError: when `directory/ca.key` already exists; an
        existing CA key is never replaced, since every certificate it issued
        and every client that trusts it depend on it.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if key_path.exists():
        raise FileExistsError(f"{key_path}: CA key exists, refusing to overwrite it")
    key = ec.generate_private_key(ec.SECP256R1())
    start = _start_of_validity(now)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        _builder(name, name, key.public_key(), start, start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    # The key goes first, without replacing anything: a concurrent `init` that
    # won the race makes this one fail here rather than clobber its CA.
    _write_atomic(key_path, _key_pem(key), _KEY_MODE, replace=False)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
    return cert_path, key_path


def issue_server_cert(
    ca_cert: Path,
    ca_key: Path,
    directory: Path,
    hostnames: list[str],
    ips: list[str],
    name: str = "server",
    *,
    now: datetime.datetime | None = None,
) -> tuple[Path, Path]:
    """Issue a TLS server certificate (P-256) signed by the CA in `ca_cert`/`ca_key`.

    Writes `directory/{name}.pem` (the leaf, then the certificates of
    `ca_cert`) and `directory/{name}.key` (mode 0600), replacing earlier ones
    (renewal). The subject CN is `hostnames[0]`; every hostname and IP goes
    into subjectAltName, which is what clients check. Validity is 825 days,
    cut short if the CA expires earlier.

    :returns: (chain_path, key_path).
    :raises ValueError: when `hostnames` is empty, an IP is malformed, or
        `ca_key` is not the key of the first certificate in `ca_cert`.
    """
    if not hostnames:
        raise ValueError("a server certificate needs at least one hostname (it is the CN)")
    sans = [x509.DNSName(h) for h in hostnames]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    ca_certs = x509.load_pem_x509_certificates(ca_cert.read_bytes())
    issuer = ca_certs[0]
    issuer_key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if issuer_key.public_key() != issuer.public_key():
        raise ValueError(f"{ca_key} is not the private key of {ca_cert}")
    key = ec.generate_private_key(ec.SECP256R1())
    start = _start_of_validity(now)
    end = min(start + SERVER_VALIDITY, issuer.not_valid_after_utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    cert = (
        _builder(subject, issuer.subject, key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
        .sign(issuer_key, _signature_hash(issuer_key))
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    chain_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *ca_certs])
    # todo: a crash between these two renames leaves a new key beside the old
    # chain; the listener then refuses to start and re-issuing repairs it.
    _write_atomic(key_path, _key_pem(key), _KEY_MODE)
    _write_atomic(chain_path, chain, _CERT_MODE)
    return chain_path, key_path


def certificate_info(path: Path) -> dict:
    """Summarise the first certificate in the PEM file `path` (the leaf of a chain file).

    Keys: subject, issuer (RFC 4514 strings), serial (hex), not_before,
    not_after (ISO 8601, UTC), sha256 (colon-separated upper-case hex, as
    `openssl x509 -fingerprint -sha256` prints it), san (["DNS:x", "IP:y"]),
    is_ca (bool).

    :raises ValueError: when the file holds no PEM certificate.
    """
    cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        "san": _san_list(cert),
        "is_ca": _is_ca(cert),
    }


def _builder(subject, issuer, public_key, start, end) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI from the issuer's SKI when it has one (RFC 5280 §4.2.1.1), else from its key."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _signature_hash(key) -> hashes.HashAlgorithm | None:
    # An imported CA may hold an Ed25519/Ed448 key, which signs without a separate hash.
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def _start_of_validity(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    return now - BACKDATE


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san_list(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [f"DNS:{n}" for n in sans.get_values_for_type(x509.DNSName)]
    return names + [f"IP:{ip}" for ip in sans.get_values_for_type(x509.IPAddress)]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
