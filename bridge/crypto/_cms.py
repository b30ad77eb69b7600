"""CMS SignedData checks for S/MIME: the signature itself, and a bounded certificate path.

Owns: reading a SignedData (detached or with its content inside), checking its one
signer's digest and signature (`check_integrity`), and building and checking the
path from the signer to a trust anchor through intermediates carried in the CMS
(`trusted_chain`).  The per-signer primitives (digest algorithms, signed attributes,
the signature maths, validity and key usage) are evidence.py's, which verifies
receipts with the same rules.

Path validation is done here, bounded and small, rather than with
pyhanko-certvalidator: that library's validation API is asynchronous only (its
synchronous `validate_usage` is gone in 0.33), it pulls in aiohttp, and its oscrypto
1.3.0 dependency raises "Error detecting the version of libcrypto" on this
machine's OpenSSL 3.0.19.  What is checked: every link's signature
(`verify_directly_issued_by`), CA basicConstraints and pathLenConstraint, keyUsage
keyCertSign on CAs, validity at the signing time, and at most `MAX_CHAIN`
certificates.  Not checked: name constraints and policy constraints
(todo: when a tenant imports a chain that uses them).

Pure: no I/O.  Raises `SignatureInvalid` (from evidence.py) with a plain reason.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from bridge.crypto.evidence import (
    SignatureInvalid,
    _check_digest,
    _check_signature,
    _check_validity,
    _digest_algorithm,
    _signed_attributes,
    _signer_certificate,
)

# Certificates from the signer to the trust anchor, both counted: room for an
# OCES3-like root -> issuing CA -> intermediate -> user, and no more.
MAX_CHAIN = 4


@dataclass(frozen=True)
class SignedBy:
    """What a SignedData whose signature matches its content says about its signer."""

    signer: x509.Certificate
    others: list[x509.Certificate]          # the other certificates carried in the CMS
    signing_time: datetime.datetime | None  # the signed signingTime attribute, if any


def signed_data(der: bytes) -> cms.SignedData:
    """The SignedData in a DER ContentInfo over plain data (id-data)."""
    info = cms.ContentInfo.load(der, strict=True)
    if info["content_type"].native != "signed_data":
        raise SignatureInvalid("the signature is not a CMS SignedData",
                               "signaturen er ikke en CMS SignedData")
    signed = info["content"]
    if signed["encap_content_info"]["content_type"].native != "data":
        raise SignatureInvalid("the signature is not over plain data (eContentType is not id-data)",
                               "signaturen dækker ikke almindelige data (eContentType er ikke id-data)")
    return signed


def encapsulated(signed: cms.SignedData) -> bytes | None:
    """The content carried inside the SignedData (opaque signing), or None (detached)."""
    return signed["encap_content_info"]["content"].native


def check_integrity(signed: cms.SignedData, content: bytes) -> SignedBy:
    """Exactly one signer, whose digest matches `content` and whose signature matches the
    certificate it names.  Says nothing yet about whether that certificate is trusted."""
    infos = signed["signer_infos"]
    if len(infos) != 1:
        raise SignatureInvalid(f"more than one signer ({len(infos)}); exactly one is accepted"
                               if len(infos) > 1 else "the signature has no signer",
                               f"mere end én underskriver ({len(infos)}); kun én accepteres"
                               if len(infos) > 1 else "signaturen har ingen underskriver")
    info = infos[0]
    digest = _digest_algorithm(info)
    attrs = _signed_attributes(info)
    _check_digest(content, attrs["message_digest"], digest)
    signer = _signer_certificate(signed, info["sid"])
    _check_signature(info, signer, digest)
    others = [x509.load_der_x509_certificate(choice.chosen.dump())
              for choice in signed["certificates"] or [] if choice.name == "certificate"]
    return SignedBy(signer, [c for c in others if c != signer], attrs.get("signing_time"))


def trusted_chain(signer: x509.Certificate, others: list[x509.Certificate],
                  anchors: list[x509.Certificate],
                  when: datetime.datetime) -> list[x509.Certificate]:
    """[signer, intermediates..., anchor]: the first path found from `signer` to one of
    `anchors`, through `others`, every CA on it checked at `when`.

    :raises SignatureInvalid: why no path was found: the most specific failure of a
        CA that did issue the certificate below it, else "not issued by a CA this
        bridge trusts".
    """
    failures: list[SignatureInvalid] = []
    chain = _extend([signer], others, anchors, when, failures)
    if chain is not None:
        return chain
    if failures:
        raise failures[0]
    raise SignatureInvalid(
        f"not issued by a CA this bridge trusts (the issuer is {signer.issuer.rfc4514_string()})",
        f"ikke udstedt af en CA, som denne bro har tillid til "
        f"(udstederen er {signer.issuer.rfc4514_string()})")


def _extend(chain: list[x509.Certificate], others: list[x509.Certificate],
            anchors: list[x509.Certificate], when: datetime.datetime,
            failures: list[SignatureInvalid]) -> list[x509.Certificate] | None:
    for anchor in anchors:
        if _issued(anchor, chain, when, failures):
            return chain + [anchor]
    if len(chain) + 2 > MAX_CHAIN:         # one more intermediate, then the anchor
        return None
    for ca in others:
        if ca not in chain and _issued(ca, chain, when, failures):
            found = _extend(chain + [ca], others, anchors, when, failures)
            if found is not None:
                return found
    return None


def _issued(ca: x509.Certificate, chain: list[x509.Certificate], when: datetime.datetime,
            failures: list[SignatureInvalid]) -> bool:
    """True if `ca` signed the last certificate of `chain` and may have signed it."""
    cert = chain[-1]
    if ca.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    try:
        _check_ca(ca, len(chain) - 1, when)
    except SignatureInvalid as exc:
        failures.append(exc)
        return False
    return True


def _check_ca(ca: x509.Certificate, intermediates_below: int, when: datetime.datetime) -> None:
    name = ca.subject.rfc4514_string()
    try:
        basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise SignatureInvalid(f"the issuing certificate {name} is not a CA (basicConstraints)",
                               f"det udstedende certifikat {name} er ikke en CA (basicConstraints)")
    if basic.path_length is not None and intermediates_below > basic.path_length:
        raise SignatureInvalid(f"the CA {name} may not have intermediate CAs below it "
                               f"(pathLenConstraint {basic.path_length})",
                               f"CA'en {name} må ikke have mellemliggende CA'er under sig "
                               f"(pathLenConstraint {basic.path_length})")
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise SignatureInvalid(f"the CA {name} may not sign certificates (keyUsage)",
                               f"CA'en {name} må ikke underskrive certifikater (keyUsage)")
    _check_validity(ca, when, f"the CA certificate {name}", f"CA-certifikatet {name}")
