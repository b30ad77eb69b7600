"""S/MIME on whole messages: verify a signed message, decrypt one sent to the bridge,
encrypt one for its recipients.

Owns: `verify_smime` (multipart/signed and opaque signed-data, RFC 8551 §3.5 and
§3.4.2), `decrypt_smime` and `encrypt_smime` (enveloped-data, RFC 8551 §3.3),
`is_signed` and `is_encrypted` (cheap looks at the top-level Content-Type), and
`SmimeRefused`, the error a submission gets for an encrypted message the bridge
will not open.

Messages are bytes with CRLF line ends.  Signed content is taken from the raw
bytes by finding the boundary lines, never re-serialised through the email
package, which would change the bytes the signature covers.  EFAIL (2018): only a
top-level body is decrypted, decrypted content is never combined with other parts,
and with `require_signature` CBC content is only released when the signature
inside it verifies.

Pure: no database, no network.  This module must not import `bridge.core`,
`bridge.store` or any front end.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.message
import email.parser
import re
from typing import Callable

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from bridge.crypto._cms import SignedBy, check_integrity, encapsulated, signed_data, trusted_chain
from bridge.crypto.evidence import SignatureInvalid, _check_usage, _check_validity
from bridge.crypto.results import SigResult
from bridge.errors import MessageRejected

_SIGNATURE_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature"}
_MIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
_DECRYPTABLE = {"aes128_cbc", "aes256_cbc"}       # what cryptography's pkcs7_decrypt_der opens
_ALGORITHM_NAMES = {"tripledes_3key": "3DES", "des": "DES", "rc2": "RC2", "rc4": "RC4",
                    "aes128_gcm": "AES-GCM", "aes192_gcm": "AES-GCM", "aes256_gcm": "AES-GCM",
                    "aes192_cbc": "AES-192", "rsaes_oaep": "RSA-OAEP"}
# A signingTime this far ahead of the bridge's clock is not believed.
_CLOCK_SKEW = datetime.timedelta(hours=1)
_B64_LINE = 76                                    # RFC 2045 §6.8


class SmimeRefused(MessageRejected):               # a 554 reply
    """An encrypted message the bridge will not open; `enhanced` is its RFC 3463 code,
    `public` (English) and `reason_da` (Danish) say why.  Never holds decrypted text."""

    temporary = False

    def __init__(self, enhanced: str, public: str, reason_da: str) -> None:
        super().__init__(public, public=public)
        self.enhanced = enhanced
        self.reason_da = reason_da


# --- cheap checks ------------------------------------------------------------------------

def is_signed(raw: bytes) -> bool:
    """True if the top-level body is S/MIME signed (multipart/signed or opaque)."""
    return _signed_kind(_content_type(_split(raw)[0])) is not None


def is_encrypted(raw: bytes) -> bool:
    """True if the top-level body is S/MIME encrypted: smime-type enveloped-data or
    authEnveloped-data, or no smime-type and a .p7m name."""
    return _is_enveloped(_content_type(_split(raw)[0]))


# --- verification ------------------------------------------------------------------------

def verify_smime(raw: bytes, *, from_address: str, trust_pems: list[bytes],
                 is_revoked: Callable[[str, str], bool],
                 now: datetime.datetime) -> SigResult | None:
    """The S/MIME signature result of a whole message, or None when its top-level body
    is not S/MIME signed.

    Pass only when: the signature covers the whole top-level body; it has exactly one
    signer; the signer certificate's e-mail address (subjectAltName rfc822Name, else
    the subject's emailAddress) is `from_address` (case-insensitive); a path of at
    most four certificates leads from it, through certificates carried in the CMS, to
    one of `trust_pems`, each valid at the signing time (signingTime, else `now`);
    `is_revoked(issuer_sha256_hex, serial_hex)` is false for every certificate on the
    path below the anchor (lowercase hex, the serial without leading zeros, as
    crypto.usercerts' `fingerprint` and `serial_hex`); and the signer's keyUsage and
    extendedKeyUsage allow e-mail signatures.  Never raises for any input.
    """
    try:
        header, body = _split(raw)
        kind = _signed_kind(_content_type(header))
    except Exception:
        return None                        # no readable top-level Content-Type: not signed
    if kind is None:
        return None
    try:
        by = _integrity(kind, _content_type(header), body)
    except SignatureInvalid as exc:
        return SigResult("smime", "fail", None, exc.reason)
    except Exception:
        return SigResult("smime", "fail", None,
                         "the signature is damaged or is not an S/MIME signature")
    claimed: list[str] = []
    try:
        claimed = _emails(by.signer)
        signer = _check_signer(by, from_address, claimed, trust_pems, is_revoked, now)
    except SignatureInvalid as exc:
        return SigResult("smime", "fail", claimed[0] if claimed else None, exc.reason)
    except Exception:
        return SigResult("smime", "fail", claimed[0] if claimed else None,
                         "the signer's certificate or its chain could not be read")
    return SigResult("smime", "pass", signer)


def _integrity(kind: str, ctype: email.message.Message, body: bytes) -> SignedBy:
    if kind == "multipart":
        content, der = _multipart_signed(body, ctype.get_boundary())
        signed = signed_data(der)
        if encapsulated(signed) is not None:
            raise SignatureInvalid("the detached signature carries content of its own",
                                   "den adskilte signatur indeholder selv indhold")
    else:
        signed = signed_data(_decode_body(ctype, body))
        content = encapsulated(signed)
        if content is None:
            raise SignatureInvalid("the signed message carries no content",
                                   "den underskrevne meddelelse har intet indhold")
    return check_integrity(signed, content)


def _check_signer(by: SignedBy, from_address: str, claimed: list[str], trust_pems: list[bytes],
                  is_revoked: Callable[[str, str], bool], now: datetime.datetime) -> str:
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    wanted = from_address.strip().casefold()
    match = next((e for e in claimed if e.casefold() == wanted), None)
    if match is None:
        who = claimed[0] if claimed else "no e-mail address"
        raise SignatureInvalid(f"signed by a certificate for {who}, not the sender {from_address}",
                               f"underskrevet med et certifikat for {who}, ikke afsenderen "
                               f"{from_address}")
    when = by.signing_time or now
    if when > now + _CLOCK_SKEW:
        raise SignatureInvalid(f"the signing time {when.isoformat()} lies in the future",
                               f"underskrifttidspunktet {when.isoformat()} ligger i fremtiden")
    _check_validity(by.signer, when, "the signer's certificate", "underskriverens certifikat")
    _check_usage(by.signer)
    chain = trusted_chain(by.signer, by.others, _anchors(trust_pems), when)
    for cert, issuer in zip(chain, chain[1:]):
        if is_revoked(issuer.fingerprint(hashes.SHA256()).hex(), format(cert.serial_number, "x")):
            whose = "the signer's certificate" if cert is by.signer else \
                f"the CA certificate {cert.subject.rfc4514_string()}"
            raise SignatureInvalid(f"certificate revoked: {whose} has been revoked",
                                   f"certifikatet er tilbagekaldt: {whose}")
    return match


def _anchors(trust_pems: list[bytes]) -> list[x509.Certificate]:
    try:
        return [c for pem in trust_pems for c in x509.load_pem_x509_certificates(pem)]
    except ValueError:
        raise SignatureInvalid("a trusted CA file holds no readable PEM certificate",
                               "en betroet CA-fil indeholder intet læsbart PEM-certifikat") from None


def _emails(cert: x509.Certificate) -> list[str]:
    """RFC 8550 §3: subjectAltName rfc822Name, else the subject's emailAddress."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = list(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        found = []
    return found or [str(a.value) for a in cert.subject.get_attributes_for_oid(
        NameOID.EMAIL_ADDRESS)]


def _multipart_signed(body: bytes, boundary: str | None) -> tuple[bytes, bytes]:
    """(the exact bytes of the signed first part, the DER signature of the second).

    RFC 2046 §5.1.1: the CRLF before a boundary line belongs to the boundary."""
    if not boundary:
        raise SignatureInvalid("the signed message has no MIME boundary",
                               "den underskrevne meddelelse har ingen MIME-grænse")
    lines = list(re.finditer(rb"(?:\A|\r\n)--" + re.escape(boundary.encode("ascii")) +
                             rb"(--)?[ \t]*(?=\r\n|\Z)", body))
    closes = [i for i, m in enumerate(lines) if m.group(1)]
    if len(lines) < 3 or not closes or closes[0] != 2:
        raise SignatureInvalid("the signed message does not have exactly two parts (the content "
                               "and the signature)",
                               "den underskrevne meddelelse har ikke præcis to dele (indhold og "
                               "signatur)")
    first, second, close = lines[:3]
    content = body[first.end() + 2:second.start()]
    part_header, part_body = _split(body[second.end() + 2:close.start()])
    part_type = _content_type(part_header)
    if part_type.get_content_type() not in _SIGNATURE_TYPES:
        raise SignatureInvalid("the second part of the signed message is not a signature",
                               "den anden del af den underskrevne meddelelse er ikke en signatur")
    return content, _decode_body(part_type, part_body)


# --- decryption --------------------------------------------------------------------------

def decrypt_smime(raw: bytes, cert_pem: bytes, key_pem: bytes, *,
                  require_signature: bool = False) -> bytes:
    """The message whose top-level body is S/MIME encrypted to `cert_pem`, decrypted: its
    header fields other than Content-* and MIME-Version, then the decrypted MIME
    entity (header and body), all with CRLF line ends.  An outer MIME-Version is kept,
    as `MIME-Version: 1.0`, when the decrypted entity has none.

    With `require_signature`, the decrypted entity must itself be S/MIME signed by
    exactly one signer whose signature matches it (EFAIL CBC gadgets); whether that
    signer is trusted and is the sender is `verify_smime`'s question, asked of the
    returned message.

    :raises SmimeRefused: for any message that is not opened, including damaged input.
    :raises ValueError: when `cert_pem` or `key_pem` cannot be read (the bridge's own
        files, a server fault).
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the bridge's S/MIME decryption key must be an RSA key")
    try:
        return _decrypt(raw, cert, key, require_signature)
    except SmimeRefused:
        raise
    except Exception:
        raise _broken() from None


def _decrypt(raw: bytes, cert: x509.Certificate, key: rsa.RSAPrivateKey,
             require_signature: bool) -> bytes:
    header, body = _split(raw)
    ctype = _content_type(header)
    if not _is_enveloped(ctype):
        if _has_encrypted_part(raw):
            raise SmimeRefused(
                "5.6.1", "an encrypted part must be the whole message; an encrypted part mixed "
                "with other parts is not accepted",
                "en krypteret del skal være hele meddelelsen; en krypteret del blandet med andre "
                "dele accepteres ikke")
        raise SmimeRefused("5.6.0", "the message is not S/MIME encrypted",
                           "meddelelsen er ikke S/MIME-krypteret")
    der = _decode_body(ctype, body)
    _check_envelope(der, cert)
    try:
        plain = pkcs7.pkcs7_decrypt_der(der, cert, key, [])
    except Exception:
        raise _broken() from None
    entity = _crlf(plain)
    inner_header, _ = _split(entity)       # may be empty: then the entity is text/plain
    if require_signature:
        _require_signature(inner_header, entity)
    kept = [f for f in _fields(header) if not _is_content_field(f)]
    inner_names = {_field_name(f) for f in _fields(inner_header)}
    if b"mime-version" not in inner_names and any(
            _field_name(f) == b"mime-version" for f in _fields(header)):
        kept.append(b"MIME-Version: 1.0\r\n")
    return b"".join(kept) + entity


def _require_signature(inner_header: bytes, entity: bytes) -> None:
    _, inner_body = _split(entity)
    ctype = _content_type(inner_header)
    kind = _signed_kind(ctype)
    try:
        if kind is None:
            raise SignatureInvalid("not signed", "ikke underskrevet")
        _integrity(kind, ctype, inner_body)
    except Exception:
        raise SmimeRefused(
            "5.7.7", "the encrypted message is not signed inside the encryption, or its "
            "signature does not match: it may have been altered on the way; sign and encrypt it",
            "den krypterede meddelelse er ikke underskrevet inden i krypteringen, eller "
            "underskriften passer ikke: den kan være ændret undervejs; underskriv og krypter "
            "den") from None


def _check_envelope(der: bytes, cert: x509.Certificate) -> None:
    """Refuse, before decrypting, what cryptography cannot or should not open."""
    info = cms.ContentInfo.load(der, strict=True)
    kind = info["content_type"].native
    if kind == "authenticated_enveloped_data":
        raise _unsupported("AES-GCM (AuthEnvelopedData)")
    if kind != "enveloped_data":
        raise _broken()
    envelope = info["content"]
    algorithm = envelope["encrypted_content_info"]["content_encryption_algorithm"]
    name = algorithm["algorithm"].native
    if name not in _DECRYPTABLE:
        raise _unsupported(_ALGORITHM_NAMES.get(name, name))
    ours = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    mine = [ri.chosen for ri in envelope["recipient_infos"]
            if ri.name == "ktri" and _is_recipient(ri.chosen["rid"], ours)]
    if not mine:
        raise SmimeRefused(
            "5.7.5", "not encrypted for this bridge: encrypt the message to the bridge's "
            "certificate for your organisation",
            "ikke krypteret til denne bro: krypter meddelelsen til broens certifikat for din "
            "organisation")
    key_algorithm = mine[0]["key_encryption_algorithm"]["algorithm"].native
    if key_algorithm != "rsaes_pkcs1v15":
        raise _unsupported(_ALGORITHM_NAMES.get(key_algorithm, key_algorithm))


def _is_recipient(rid: cms.RecipientIdentifier, cert: asn1_x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        return (rid.chosen["issuer"] == cert.issuer
                and rid.chosen["serial_number"].native == cert.serial_number)
    return rid.chosen.native == cert.key_identifier


def _has_encrypted_part(raw: bytes) -> bool:
    message = email.parser.BytesParser().parsebytes(raw)
    return any(part.get_content_type() in _MIME_TYPES
               or str(part.get_filename() or "").lower().endswith(".p7m")
               for part in message.walk() if part is not message)


def _unsupported(algorithm: str) -> SmimeRefused:
    return SmimeRefused(
        "5.6.3", f"the message is encrypted with {algorithm}, which this bridge does not accept; "
        f"use AES-256",
        f"meddelelsen er krypteret med {algorithm}, som denne bro ikke accepterer; brug AES-256")


def _broken() -> SmimeRefused:
    return SmimeRefused("5.6.0", "the encrypted content is damaged and cannot be decrypted",
                        "det krypterede indhold er beskadiget og kan ikke dekrypteres")


# --- encryption --------------------------------------------------------------------------

def encrypt_smime(raw: bytes, recipient_cert_pems: list[bytes]) -> bytes:
    """The message with its body S/MIME-encrypted (AES-256-CBC, RSA PKCS#1 v1.5 key
    transport) to every certificate in `recipient_cert_pems`.

    The encrypted entity is the message's Content-* header fields and its body; the
    other header fields stay outside, with `MIME-Version: 1.0` and an
    `application/pkcs7-mime; smime-type=enveloped-data` body in base64 lines of 76.

    :raises ValueError: when there is no recipient certificate or one cannot be read;
        TypeError when a certificate's key is not RSA (cryptography encrypts to RSA only).
    """
    header, body = _split(raw)
    fields = _fields(header)
    entity = b"".join(f for f in fields
                      if _is_content_field(f) and _field_name(f) != b"mime-version")
    entity += b"\r\n" + body
    builder = (pkcs7.PKCS7EnvelopeBuilder().set_data(entity)
               .set_content_encryption_algorithm(algorithms.AES256))
    certs = [c for pem in recipient_cert_pems for c in x509.load_pem_x509_certificates(pem)]
    if not certs:
        raise ValueError("encrypt_smime needs at least one recipient certificate")
    for cert in certs:
        builder = builder.add_recipient(cert)
    der = builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    encoded = base64.b64encode(der)
    lines = [encoded[i:i + _B64_LINE] + b"\r\n" for i in range(0, len(encoded), _B64_LINE)]
    outer = [f for f in fields if not _is_content_field(f)]
    return (b"".join(outer) + b"MIME-Version: 1.0\r\n"
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b"Content-Disposition: attachment; filename=smime.p7m\r\n\r\n" + b"".join(lines))


# --- message framing ---------------------------------------------------------------------

def _split(raw: bytes) -> tuple[bytes, bytes]:
    """(header section with the CRLF of its last line, body); no blank line: all header."""
    if raw.startswith(b"\r\n"):
        return b"", raw[2:]
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw, b""
    return raw[:end + 2], raw[end + 4:]


def _fields(header: bytes) -> list[bytes]:
    """Each header field with its folded continuation lines and line ends."""
    fields: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def _is_content_field(field: bytes) -> bool:
    name = _field_name(field)
    return name.startswith(b"content-") or name == b"mime-version"


def _content_type(header: bytes) -> email.message.Message:
    """The header parsed for its Content-Type parameters (nothing is re-serialised)."""
    return email.parser.BytesHeaderParser().parsebytes(header + b"\r\n")


def _signed_kind(ctype: email.message.Message) -> str | None:
    """"multipart" (multipart/signed with a PKCS#7 protocol), "opaque", or None."""
    content_type = ctype.get_content_type()
    if content_type == "multipart/signed":
        protocol = (ctype.get_param("protocol") or "")
        return "multipart" if str(protocol).lower() in _SIGNATURE_TYPES else None
    if content_type in _MIME_TYPES:
        smime_type = str(ctype.get_param("smime-type") or "").lower()
        return "opaque" if smime_type == "signed-data" else None
    return None


def _is_enveloped(ctype: email.message.Message) -> bool:
    if ctype.get_content_type() not in _MIME_TYPES:
        return False
    smime_type = str(ctype.get_param("smime-type") or "").lower()
    if smime_type:                   # RFC 8551 §3.2.2; authEnveloped-data: RFC 5083 (AES-GCM)
        return smime_type in ("enveloped-data", "authenveloped-data")
    name = str(ctype.get_param("name") or ctype.get_filename() or "").lower()
    return name.endswith(".p7m")


def _decode_body(ctype: email.message.Message, body: bytes) -> bytes:
    """The DER in a base64 (or binary) body; a damaged one raises ValueError."""
    encoding = str(ctype.get("Content-Transfer-Encoding", "")).strip().lower()
    if encoding == "binary":
        return body
    if encoding != "base64":
        raise ValueError(f"PKCS#7 content in transfer encoding {encoding!r}")
    try:
        return base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
    except binascii.Error:
        raise ValueError("damaged base64") from None


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)
