"""`dp2bridge cert issue|list|revoke|crl|import|trust` and `cert show --bridge|--trust`:
users' S/MIME certificates checked with the real openssl binary (issue 5, acceptance 1)."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from bridge.clock import FixedClock, SystemClock
from bridge.config import Config
from bridge.core.audit import AuditEvent
from bridge.crypto.evidence import ensure_tenant_pki
from bridge.crypto.usercerts import issue_user_cert
from bridge.store.certificates import CertificateRepository
from bridge.store.sql import SqlStore
from tests.admin.conftest import Cli, in_process_cli

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
ANNA = "anna@borger.dp2.test"
LAWYER = "advokat@advokat.dp2.test"
P12_PASSWORD = "Annas-PKCS12-kodeord"


def make_cli(config: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return in_process_cli(capsys, monkeypatch, config.path)


@pytest.fixture
def cli(sqlite_home: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return make_cli(sqlite_home, capsys, monkeypatch)


def openssl(*args: str | Path, data: bytes | None = None, stderr: bool = False) -> str:
    r = subprocess.run([OPENSSL, *map(str, args)], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
    return (r.stdout + (r.stderr if stderr else b"")).decode(errors="replace")


def tenant_dir(config: Config, tenant: str) -> Path:
    return config.home / "certs" / "tenants" / tenant


def issue(cli, tmp: Path, login: str = ANNA, *extra: str) -> tuple[Path, dict]:
    p12 = tmp / f"{login.split('@')[0]}.p12"
    r = cli("cert", "issue", login, "--p12", str(p12), "--password-stdin", "--json", *extra,
            stdin=P12_PASSWORD + "\n")
    assert r.code == 0, r.err
    return p12, json.loads(r.out)


def leaf_of(p12: Path, tmp: Path, password: str = P12_PASSWORD) -> Path:
    pem = openssl("pkcs12", "-in", p12, "-passin", f"pass:{password}", "-clcerts", "-nokeys")
    path = tmp / f"{p12.stem}.pem"
    path.write_text(pem)
    return path


def test_anna_p12_imports_verifies_and_revocation_reaches_store_and_crl(
        home: Config, capsys, monkeypatch, tmp_path: Path) -> None:
    cli = make_cli(home, capsys, monkeypatch)
    p12, issued = issue(cli, tmp_path)
    assert stat.S_IMODE(p12.stat().st_mode) == 0o600
    assert issued["password"] is None and P12_PASSWORD not in json.dumps(issued)
    info = openssl("pkcs12", "-info", "-in", p12, "-passin", f"pass:{P12_PASSWORD}", "-noout",
                   stderr=True)
    assert "PBES2, PBKDF2, AES-256-CBC" in info and "MAC: sha256" in info
    leaf = leaf_of(p12, tmp_path)
    ca = tenant_dir(home, "borger") / "ca.pem"
    for purpose in ("smimesign", "sslclient"):           # S/MIME, and the HTTPS API's mutual TLS
        assert f"{leaf}: OK" in openssl("verify", "-CAfile", ca, "-purpose", purpose, leaf)
    ext = openssl("x509", "-noout", "-ext", "keyUsage,extendedKeyUsage,subjectAltName", "-in", leaf)
    assert "Digital Signature, Key Encipherment" in ext
    assert "E-mail Protection, TLS Web Client Authentication" in ext and f"email:{ANNA}" in ext
    listed = json.loads(cli("cert", "list", ANNA, "--json").out)
    assert [(c["serial"], c["source"], c["revoked_at"]) for c in listed] == [
        (issued["serial"], "issued", None)]

    r = cli("cert", "revoke", ANNA, "--serial", issued["serial"].upper(), "--reason", "keyCompromise")
    assert r.code == 0, r.err
    store = SqlStore(home.database_url, SystemClock())
    try:
        repo = CertificateRepository(store)
        assert [c.revoked_at is not None for c in repo.list_for(ANNA)] == [True]
        assert {s for _, s in repo.revoked_serials("borger")} == {issued["serial"]}
        assert repo.valid_for_encryption(ANNA, dt.datetime.now(dt.timezone.utc)) == []
        kinds = [e["kind"] for e in store.audit_events("borger") if e["kind"].startswith("cert.")]
        assert kinds == ["cert.issued", "cert.revoked"]
    finally:
        store.close()
    out = tmp_path / "borger.crl"
    r = cli("cert", "crl", "--tenant", "borger", "--output", str(out))
    assert r.code == 0, r.err
    text = openssl("crl", "-noout", "-text", "-in", out)
    serial = issued["serial"].upper()
    assert f"Serial Number: {serial.zfill(len(serial) + len(serial) % 2)}" in text
    assert "Key Compromise" in text
    assert (tenant_dir(home, "borger") / "crl.pem").read_bytes() == out.read_bytes()
    r = subprocess.run([OPENSSL, "verify", "-crl_check", "-CAfile", ca, "-CRLfile", out, leaf],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "revoked" in r.stdout + r.stderr


def test_a_client_certificate_names_its_account_only_while_valid(cli, sqlite_home: Config,
                                                                 tmp_path: Path) -> None:
    """`account_for_fingerprint` (the HTTPS API's client certificates): the account while the
    certificate is recorded, current and not revoked and the account enabled; None otherwise."""
    _, issued = issue(cli, tmp_path)
    fp = issued["fingerprint"]
    store = SqlStore(sqlite_home.database_url, SystemClock())
    try:
        repo = CertificateRepository(store)
        found = repo.account_for_fingerprint(fp.upper())
        assert found is not None and store.principal(found).login == ANNA
        assert repo.account_for_fingerprint("00" * 32) is None
        after = dt.datetime.fromisoformat(issued["not_after"]) + dt.timedelta(seconds=1)
        later = SqlStore(sqlite_home.database_url, FixedClock(after))
        try:
            assert CertificateRepository(later).account_for_fingerprint(fp) is None     # expired
        finally:
            later.close()
        assert cli("account", "disable", ANNA).code == 0
        assert repo.account_for_fingerprint(fp) is None
    finally:
        store.close()
    _, other = issue(cli, tmp_path, LAWYER)
    assert cli("cert", "revoke", LAWYER).code == 0
    store = SqlStore(sqlite_home.database_url, SystemClock())
    try:
        assert CertificateRepository(store).account_for_fingerprint(other["fingerprint"]) is None
    finally:
        store.close()


def test_a_generated_password_is_printed_once_and_opens_the_file(cli, tmp_path: Path) -> None:
    p12 = tmp_path / "anna.p12"
    r = cli("cert", "issue", ANNA, "--p12", str(p12), "--key", "p256")
    assert r.code == 0, r.err
    password = re.search(r"PKCS#12 password \(shown only now\): (\S+)", r.out).group(1)
    assert len(password) >= 20
    ext = openssl("x509", "-noout", "-ext", "keyUsage", "-in", leaf_of(p12, tmp_path, password))
    assert "Digital Signature, Key Agreement" in ext
    assert password not in cli("cert", "list", ANNA).out


def test_an_existing_file_is_never_overwritten(cli, tmp_path: Path) -> None:
    p12 = tmp_path / "anna.p12"
    p12.write_bytes(b"keep me")
    r = cli("cert", "issue", ANNA, "--p12", str(p12), stdin=P12_PASSWORD + "\n")
    assert r.code == 1 and "exists" in r.err and p12.read_bytes() == b"keep me"
    assert cli("cert", "list", ANNA, "--json").out.strip() == "[]"


def test_issue_refusals_leave_no_file(cli, tmp_path: Path) -> None:
    p12 = tmp_path / "x.p12"
    r = cli("cert", "issue", "nobody@borger.dp2.test", "--p12", str(p12))
    assert r.code == 1 and "no account nobody@borger.dp2.test" in r.err and not p12.exists()
    r = cli("cert", "issue", ANNA, "--p12", str(p12), "--password-stdin", stdin="short\n")
    assert r.code == 1 and "at least" in r.err and not p12.exists()
    r = cli("cert", "issue", ANNA, "--p12", str(tmp_path / "no" / "x.p12"))
    assert r.code == 1 and "does not exist" in r.err
    assert "Traceback" not in r.err


def test_tenant_policy_sets_the_validity(cli, sqlite_home: Config, tmp_path: Path) -> None:
    store = SqlStore(sqlite_home.database_url, SystemClock())
    try:
        ev = AuditEvent(time=store.clock.now(), chain="borger", kind="tenant.policy", result="ok")
        store.set_policy("borger", {"user_cert_days": 90}, ev)
    finally:
        store.close()
    _, issued = issue(cli, tmp_path)
    not_after = dt.datetime.fromisoformat(issued["not_after"])
    assert 89 <= (not_after - dt.datetime.now(dt.timezone.utc)).days <= 90


def test_revoke_all_then_nothing_left(cli, tmp_path: Path) -> None:
    issue(cli, tmp_path)
    r = cli("cert", "revoke", ANNA)
    assert r.code == 0 and "revoked 1 certificate(s)" in r.out
    r = cli("cert", "revoke", ANNA)
    assert r.code == 1 and "not revoked already" in r.err
    r = cli("cert", "revoke", ANNA, "--serial", "zz")
    assert r.code == 1 and "not hexadecimal" in r.err


def test_import_takes_the_users_own_certificate_and_refuses_another_address(
        cli, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    ensure_tenant_pki(outside, "oces", "OCES test", "receipts@oces.test")
    own = issue_user_cert(outside, "oces", ANNA, "Anna", b"x" * 12).facts
    pem = tmp_path / "anna-own.pem"
    pem.write_text(own.pem)
    r = cli("cert", "import", LAWYER, str(pem))
    assert r.code == 1
    assert f"is for {ANNA}, not {LAWYER}" in r.err and "subjectAltName" in r.err
    der = tmp_path / "anna-own.der"
    der.write_bytes(subprocess.run([OPENSSL, "x509", "-outform", "DER", "-in", pem],
                                   capture_output=True, check=True).stdout)
    r = cli("cert", "import", ANNA, str(der))
    assert r.code == 0, r.err
    listed = json.loads(cli("cert", "list", ANNA, "--json").out)
    assert [(c["fingerprint"], c["source"], c["issuer_fingerprint"]) for c in listed] == [
        (own.fingerprint, "imported", "")]
    r = cli("cert", "import", ANNA, str(der))
    assert r.code == 1 and "recorded already" in r.err
    r = cli("cert", "import", ANNA, str(tmp_path / "missing.pem"))
    assert r.code == 1 and "cannot read" in r.err


def test_show_bridge_makes_the_bridge_certificate_once(cli, sqlite_home: Config) -> None:
    first = cli("cert", "show", "--tenant", "borger", "--bridge")
    assert first.code == 0 and first.out.startswith("-----BEGIN CERTIFICATE-----"), first.err
    assert cli("cert", "show", "--tenant", "borger", "--bridge").out == first.out
    key = tenant_dir(sqlite_home, "borger") / "bridge.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ext = openssl("x509", "-noout", "-ext", "keyUsage,subjectAltName", data=first.out.encode())
    assert "Key Encipherment" in ext and "email:bridge@borger.dp2.test" in ext
    assert cli("cert", "show", "--bridge").code == 1
    r = cli("cert", "show", "--tenant", "borger", "--bridge", "--ca")
    assert r.code == 1 and "one of --ca, --bridge, --trust" in r.err


def test_trust_adds_an_external_ca_for_the_tenant(cli, sqlite_home: Config, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    ensure_tenant_pki(outside, "oces", "OCES3 test", "receipts@oces.test")
    ca = outside / "tenants" / "oces" / "ca.pem"
    assert cli("cert", "show", "--tenant", "kommune", "--trust", "--json").out.strip() == "[]"
    r = cli("cert", "trust", "--tenant", "kommune", str(ca))
    assert r.code == 0 and "OCES3 test" in r.out, r.err
    listed = json.loads(cli("cert", "show", "--tenant", "kommune", "--trust", "--json").out)
    assert [a["subject"] for a in listed] == ["CN=OCES3 test dp2bridge CA"]
    assert Path(listed[0]["file"]).parent == tenant_dir(sqlite_home, "kommune") / "trust"
    assert Path(listed[0]["file"]).read_bytes() == ca.read_bytes()
    r = cli("cert", "trust", "--tenant", "kommune", str(outside / "tenants" / "oces" / "evidence.pem"))
    assert r.code == 1 and "not a CA certificate" in r.err
    assert cli("cert", "trust", "--tenant", "nope", str(ca)).code == 1
    store = SqlStore(sqlite_home.database_url, SystemClock())
    try:
        kinds = [e["kind"] for e in store.audit_events("kommune")]
    finally:
        store.close()
    assert kinds.count("cert.trust-added") == 1


def test_crl_of_a_tenant_without_ca_is_refused_with_a_hint(cli, sqlite_home: Config) -> None:
    r = cli("cert", "crl", "--tenant", "advokat")
    assert r.code == 0 and r.out.startswith("-----BEGIN X509 CRL-----"), r.err
    shutil.rmtree(tenant_dir(sqlite_home, "advokat"))
    r = cli("cert", "crl", "--tenant", "advokat")
    assert (r.code, r.out) == (1, "")
    assert "has no CA" in r.err and "dp2bridge serve" in r.err
