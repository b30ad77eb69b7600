"""crypto.usercerts: users' S/MIME certificates, PKCS#12, CRLs, the bridge identity, trust
anchors; checked with the real openssl binary, as a mail client's import would (issue 5,
acceptance 1)."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from bridge.crypto.evidence import ensure_tenant_pki
from bridge.crypto.usercerts import (CertificateRefused, add_trust_anchors, build_crl,
                                     can_encrypt_to, ensure_bridge_cert, inspect_imported,
                                     issue_user_cert, load_bridge_identity, normalise_serial,
                                     tenant_ca_fingerprint, tenant_trust_pems, trust_anchors,
                                     write_tenant_crl)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
ANNA = "anna@borger.dp2.test"
PASSWORD = b"Kodeord-til-Anna-42"


def openssl(*args: str | Path, data: bytes | None = None, stderr: bool = False) -> str:
    """openssl's standard output (with `stderr`, followed by its standard error); it must succeed.
    (OpenSSL prints a BMPString friendlyName as Latin-1, hence the replacement decoding.)"""
    r = subprocess.run([OPENSSL, *map(str, args)], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    return (r.stdout + (r.stderr if stderr else b"")).decode(errors="replace")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    ensure_tenant_pki(d, "borger", "Borgere", "receipts@borger.dp2.test")
    ensure_tenant_pki(d, "kommune", "Demo Kommune", "receipts@kommune.dp2.test")
    return d


@pytest.fixture(scope="module")
def anna(certs: Path):
    return issue_user_cert(certs, "borger", ANNA, "Anna Ærø", PASSWORD)


def extract(p12: bytes, tmp: Path, *args: str, stderr: bool = False) -> str:
    path = tmp / "anna.p12"
    path.write_bytes(p12)
    return openssl("pkcs12", "-in", path, "-passin", f"pass:{PASSWORD.decode()}", *args,
                   stderr=stderr)


@needs_openssl
def test_issued_p12_imports_and_verifies_against_the_tenant_ca(certs: Path, anna, tmp_path: Path) -> None:
    info = extract(anna.p12, tmp_path, "-info", "-noout", stderr=True)  # OpenSSL 3 reads PBES2
    assert "MAC: sha256" in info
    assert info.count("PBES2, PBKDF2, AES-256-CBC, Iteration 50000, PRF hmacWithSHA256") == 2
    leaf = extract(anna.p12, tmp_path, "-clcerts", "-nokeys")
    (tmp_path / "anna.pem").write_text(leaf)
    ca = certs / "tenants" / "borger" / "ca.pem"
    for purpose in ("smimesign", "smimeencrypt", "sslclient"):      # sslclient: the API's mutual TLS
        assert ": OK" in openssl("verify", "-CAfile", ca, "-purpose", purpose, tmp_path / "anna.pem")
    other = certs / "tenants" / "kommune" / "ca.pem"
    r = subprocess.run([OPENSSL, "verify", "-CAfile", other, tmp_path / "anna.pem"], capture_output=True)
    assert r.returncode != 0


@needs_openssl
def test_issued_certificate_has_the_smime_extensions(anna, tmp_path: Path) -> None:
    leaf = extract(anna.p12, tmp_path, "-clcerts", "-nokeys")
    ext = openssl("x509", "-noout", "-ext", "keyUsage,extendedKeyUsage,subjectAltName,basicConstraints",
                  data=leaf.encode())
    assert "Digital Signature, Key Encipherment" in ext
    assert "E-mail Protection, TLS Web Client Authentication" in ext      # as OCES/MitID personal
    assert f"email:{ANNA}" in ext
    assert "CA:FALSE" in ext
    text = openssl("x509", "-noout", "-text", "-nameopt", "utf8", data=leaf.encode())
    assert "Public-Key: (3072 bit)" in text
    assert "CN=Anna Ærø" in openssl("x509", "-noout", "-subject", "-nameopt", "utf8", data=leaf.encode())
    days = (anna.facts.not_after - anna.facts.not_before).days
    assert days == 730
    assert int(anna.facts.serial, 16).bit_length() <= 159


@needs_openssl
def test_p12_holds_the_key_the_ca_and_a_friendly_name(anna, tmp_path: Path) -> None:
    out = extract(anna.p12, tmp_path, "-nodes")
    assert "friendlyName: Anna \ufffdr\ufffd <anna@borger.dp2.test>" in out
    assert out.count("BEGIN CERTIFICATE") == 2                 # Anna's and the tenant CA
    assert "-----BEGIN " + "PRIVATE KEY-----" in out           # (split: no key header literal in the tree)
    r = subprocess.run([OPENSSL, "pkcs12", "-in", tmp_path / "anna.p12", "-passin", "pass:wrong",
                        "-noout"], capture_output=True)
    assert r.returncode != 0


@needs_openssl
def test_p256_certificate_agrees_keys_instead_of_enciphering(certs: Path, tmp_path: Path) -> None:
    issued = issue_user_cert(certs, "borger", ANNA, "Anna", PASSWORD, key_kind="p256", days=30)
    ext = openssl("x509", "-noout", "-ext", "keyUsage", data=issued.facts.pem.encode())
    assert "Digital Signature, Key Agreement" in ext and "Encipherment" not in ext
    assert (issued.facts.not_after - issued.facts.not_before).days == 30
    assert not can_encrypt_to(issued.facts.pem)
    (tmp_path / "p.pem").write_text(issued.facts.pem)
    assert ": OK" in openssl("verify", "-CAfile", certs / "tenants" / "borger" / "ca.pem",
                             "-purpose", "smimesign", tmp_path / "p.pem")


def test_issue_refuses_what_it_cannot_do(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key kind"):
        issue_user_cert(certs, "borger", ANNA, "Anna", PASSWORD, key_kind="dsa")
    with pytest.raises(ValueError, match="password"):
        issue_user_cert(certs, "borger", ANNA, "Anna", b"")
    with pytest.raises(FileNotFoundError):
        issue_user_cert(tmp_path, "borger", ANNA, "Anna", PASSWORD)


@needs_openssl
def test_crl_lists_revoked_serials_with_reasons(certs: Path, anna, tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)
    path, pem = write_tenant_crl(certs, "borger", [(anna.facts.serial, now, "keyCompromise"),
                                                   ("1f", now, None)], now)
    assert path == certs / "tenants" / "borger" / "crl.pem" and path.read_bytes() == pem
    text = openssl("crl", "-noout", "-text", data=pem)
    shown = anna.facts.serial.upper()
    assert f"Serial Number: {shown.zfill(len(shown) + len(shown) % 2)}" in text
    assert "Serial Number: 1F" in text
    assert "Key Compromise" in text
    assert "Next Update: Dec  4 12:00:00 2026 GMT" in text
    ca = certs / "tenants" / "borger" / "ca.pem"
    openssl("crl", "-noout", "-CAfile", ca, data=pem)          # signature checks against the CA
    leaf = extract(anna.p12, tmp_path, "-clcerts", "-nokeys")
    (tmp_path / "anna.pem").write_text(leaf)
    (tmp_path / "crl.pem").write_bytes(pem)
    r = subprocess.run([OPENSSL, "verify", "-crl_check", "-CAfile", ca, "-CRLfile", tmp_path / "crl.pem",
                        "-attime", str(int(now.timestamp())), tmp_path / "anna.pem"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "revoked" in (r.stdout + r.stderr)


def test_crl_refuses_a_key_that_is_not_the_cas(certs: Path) -> None:
    b, k = certs / "tenants" / "borger", certs / "tenants" / "kommune"
    with pytest.raises(ValueError, match="not the key"):
        build_crl((b / "ca.pem").read_bytes(), (k / "ca.key").read_bytes(), [],
                  dt.datetime.now(dt.timezone.utc))


def test_imported_certificate_must_name_the_login(certs: Path, anna) -> None:
    pems = tenant_trust_pems(certs, "borger")
    facts = inspect_imported(anna.facts.pem.encode(), ANNA.upper(), pems)
    assert facts.issuer_fingerprint == tenant_ca_fingerprint(certs, "borger")
    assert inspect_imported(anna.facts.pem.encode(), ANNA, []).issuer_fingerprint == ""
    with pytest.raises(CertificateRefused, match="for anna@borger.dp2.test, not bo@borger.dp2.test"):
        inspect_imported(anna.facts.pem.encode(), "bo@borger.dp2.test", pems)


def test_import_refuses_ca_expired_signing_only_and_garbage(certs: Path, anna) -> None:
    ca = (certs / "tenants" / "borger" / "ca.pem").read_bytes()
    with pytest.raises(CertificateRefused, match="CA certificate"):
        inspect_imported(ca, ANNA, [])
    later = dt.datetime(2040, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(CertificateRefused, match="valid only"):
        inspect_imported(anna.facts.pem.encode(), ANNA, [], now=later)
    p256 = issue_user_cert(certs, "borger", ANNA, "Anna", PASSWORD, key_kind="p256")
    with pytest.raises(CertificateRefused, match="keyEncipherment"):
        inspect_imported(p256.facts.pem.encode(), ANNA, [])
    evidence = (certs / "tenants" / "borger" / "evidence.pem").read_bytes()
    with pytest.raises(CertificateRefused, match="is for receipts@borger.dp2.test"):
        inspect_imported(evidence, ANNA, [])
    with pytest.raises(CertificateRefused, match="no readable"):
        inspect_imported(b"not a certificate", ANNA, [])


def test_import_reads_der(anna) -> None:
    der = subprocess.run([OPENSSL, "x509", "-outform", "DER"], input=anna.facts.pem.encode(),
                         capture_output=True, check=True).stdout if OPENSSL else None
    if der is None:
        pytest.skip("the openssl binary is not installed")
    assert inspect_imported(der, ANNA, []).fingerprint == anna.facts.fingerprint


@needs_openssl
def test_bridge_certificate_is_made_once_and_encrypts(certs: Path, tmp_path: Path) -> None:
    cert_path, key_path = ensure_bridge_cert(certs, "borger", "Borgere", "bridge@borger.dp2.test")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    first = cert_path.read_bytes()
    assert ensure_bridge_cert(certs, "borger", "Borgere", "x@y.test") == (cert_path, key_path)
    assert cert_path.read_bytes() == first                    # never replaced
    pem, key = load_bridge_identity(certs, "borger")
    assert pem == first and b"PRIVATE KEY" in key
    ext = openssl("x509", "-noout", "-ext", "keyUsage,extendedKeyUsage,subjectAltName", data=pem)
    assert "Key Encipherment" in ext and "E-mail Protection" in ext
    assert "email:bridge@borger.dp2.test" in ext
    # a user encrypts to it with openssl, the bridge's key decrypts
    (tmp_path / "msg.txt").write_bytes(b"Hej bridge\r\n")
    enc = subprocess.run([OPENSSL, "smime", "-encrypt", "-aes256", "-in", tmp_path / "msg.txt",
                          cert_path], capture_output=True, check=True).stdout
    (tmp_path / "enc.eml").write_bytes(enc)
    out = openssl("smime", "-decrypt", "-in", tmp_path / "enc.eml", "-recip", cert_path,
                  "-inkey", key_path)
    assert out.replace("\r\n", "\n") == "Hej bridge\n"
    with pytest.raises(FileNotFoundError):
        load_bridge_identity(certs, "kommune")


def test_bridge_certificate_needs_the_tenant_ca(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ensure_bridge_cert(tmp_path, "borger", "Borgere", "bridge@borger.dp2.test")


def test_trust_anchors_are_copied_listed_and_trusted(certs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    ensure_tenant_pki(other, "oces", "OCES test", "receipts@oces.test")
    ca_pem = (other / "tenants" / "oces" / "ca.pem").read_bytes()
    added = add_trust_anchors(certs, "kommune", ca_pem)
    assert [a["added"] for a in added] == [True]
    assert add_trust_anchors(certs, "kommune", ca_pem)[0]["added"] is False
    listed = trust_anchors(certs, "kommune")
    assert [a["fingerprint"] for a in listed] == [added[0]["fingerprint"]]
    assert "OCES test" in listed[0]["subject"]
    pems = tenant_trust_pems(certs, "kommune")
    assert pems[0] == (certs / "tenants" / "kommune" / "ca.pem").read_bytes()
    assert pems[1:] == [ca_pem]
    assert trust_anchors(certs, "borger") == []              # one tenant's anchors only
    leaf = (other / "tenants" / "oces" / "evidence.pem").read_bytes()
    with pytest.raises(CertificateRefused, match="not a CA"):
        add_trust_anchors(certs, "kommune", leaf)
    with pytest.raises(CertificateRefused, match="no PEM"):
        add_trust_anchors(certs, "kommune", b"junk")


def test_serials_typed_by_admins_are_normalised() -> None:
    assert normalise_serial("0x00:1A:2b") == "1a2b"
    assert normalise_serial(" 001a2b ") == "1a2b"
    with pytest.raises(ValueError):
        normalise_serial("xyz")
