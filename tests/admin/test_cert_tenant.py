"""`dp2bridge cert show --tenant T [--ca]`, and the evidence PKI that `init` and `tenant add`
give every tenant: checked with the openssl binary, as a recipient of a receipt would."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.config import Config
from tests.admin.conftest import Cli, in_process_cli

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")


@pytest.fixture
def cli(sqlite_home: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """run("cert", "show", ...) against the demo home -> Result."""
    return in_process_cli(capsys, monkeypatch, sqlite_home.path)


def x509_text(pem: str, *args: str) -> str:
    r = subprocess.run([OPENSSL, "x509", "-noout", *args], input=pem, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


@needs_openssl
def test_init_gave_every_demo_tenant_an_evidence_certificate(cli) -> None:
    for tenant, display in (("kommune", "Demo Kommune"), ("advokat", "Advokatfirma Demo"),
                            ("borger", "Borgere")):
        r = cli("cert", "show", "--tenant", tenant)
        assert r.code == 0 and r.out.startswith("-----BEGIN CERTIFICATE-----"), r.err
        assert r.out.count("BEGIN CERTIFICATE") == 1
        assert "E-mail Protection" in x509_text(r.out, "-ext", "extendedKeyUsage")
        assert f"email:receipts@{tenant}.dp2.test" in x509_text(r.out, "-ext", "subjectAltName")
        assert f"CN = {display} evidence (dp2bridge)" in x509_text(r.out, "-subject")


@needs_openssl
def test_the_tenant_ca_verifies_the_evidence_certificate(cli, tmp_path: Path) -> None:
    ca = cli("cert", "show", "--tenant", "kommune", "--ca").out
    assert "CN = Demo Kommune dp2bridge CA" in x509_text(ca, "-subject")
    (tmp_path / "ca.pem").write_text(ca)
    (tmp_path / "evidence.pem").write_text(cli("cert", "show", "--tenant", "kommune").out)
    r = subprocess.run([OPENSSL, "verify", "-purpose", "smimesign", "-CAfile", tmp_path / "ca.pem",
                        tmp_path / "evidence.pem"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    other = cli("cert", "show", "--tenant", "advokat", "--ca").out
    (tmp_path / "ca.pem").write_text(other)
    r = subprocess.run([OPENSSL, "verify", "-CAfile", tmp_path / "ca.pem", tmp_path / "evidence.pem"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0                     # each tenant has its own CA


@needs_openssl
def test_tenant_add_creates_the_evidence_pki(cli, sqlite_home: Config) -> None:
    r = cli("tenant", "add", "forsikring", "--kind", "company", "--display-name", "Forsikring A/S",
            "--cvr", "12345678", "--domain", "forsikring.dp2.test", "--domain", "alt.dp2.test")
    assert r.code == 0, r.err
    pem = cli("cert", "show", "--tenant", "forsikring").out
    assert "CN = Forsikring A/S evidence (dp2bridge)" in x509_text(pem, "-subject")
    # The first --domain given, not the alphabetically first.
    assert "email:receipts@forsikring.dp2.test" in x509_text(pem, "-ext", "subjectAltName")
    key = sqlite_home.home / "certs" / "tenants" / "forsikring" / "evidence.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_json_names_the_file(cli, sqlite_home: Config) -> None:
    r = cli("cert", "show", "--tenant", "borger", "--json")
    data = json.loads(r.out)
    assert data["file"] == str(sqlite_home.home / "certs" / "tenants" / "borger" / "evidence.pem")
    assert data["pem"].startswith("-----BEGIN CERTIFICATE-----")


def test_an_unknown_tenant_is_refused(cli) -> None:
    r = cli("cert", "show", "--tenant", "nope")
    assert (r.code, r.out) == (1, "")
    assert "no tenant named 'nope'" in r.err and "Traceback" not in r.err


def test_a_tenant_without_pki_is_refused_with_a_hint(cli, sqlite_home: Config) -> None:
    shutil.rmtree(sqlite_home.home / "certs" / "tenants" / "advokat")
    r = cli("cert", "show", "--tenant", "advokat")
    assert (r.code, r.out) == (1, "")
    assert "tenant 'advokat' has no evidence certificate" in r.err and "dp2bridge serve" in r.err


def test_ca_without_tenant_is_refused(cli) -> None:
    r = cli("cert", "show", "--ca")
    assert r.code == 1 and "--ca goes with --tenant" in r.err
