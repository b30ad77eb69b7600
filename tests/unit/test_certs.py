"""bridge.crypto.certs: dev CA and server certificates, checked by openssl and a TLS handshake.

The certificates are inspected only through `openssl` and `ssl`, never
through `cryptography`: only `bridge/crypto/` imports it (STYLE.md §4).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from bridge.crypto import certs

NOW = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A dev CA and a server certificate for localhost and 127.0.0.1."""
    ca_cert, ca_key = certs.create_dev_ca(tmp_path, "dp2bridge test CA")
    chain, key = certs.issue_server_cert(ca_cert, ca_key, tmp_path, ["localhost"], ["127.0.0.1"])
    return {"ca_cert": ca_cert, "ca_key": ca_key, "chain": chain, "key": key}


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=30)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- files -----------------------------------------------------------------


def test_files_are_where_documented(pki, tmp_path):
    assert pki == {
        "ca_cert": tmp_path / "ca.pem",
        "ca_key": tmp_path / "ca.key",
        "chain": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.key", "ca.pem", "server.key", "server.pem"
    ], "no temporary files may be left behind"


def test_keys_are_mode_0600(pki):
    assert mode(pki["ca_key"]) == 0o600
    assert mode(pki["key"]) == 0o600


def test_keys_are_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        ca_cert, ca_key = certs.create_dev_ca(tmp_path, "CA")
        _, key = certs.issue_server_cert(ca_cert, ca_key, tmp_path, ["localhost"], [])
    finally:
        os.umask(old)
    assert mode(ca_key) == 0o600 and mode(key) == 0o600
    assert mode(ca_cert) == 0o644


def test_key_files_are_created_0600_from_the_first_byte(tmp_path, monkeypatch):
    """Every file that ever holds key bytes is created by os.open with 0600 and O_EXCL."""
    created: list[tuple[str, int, int]] = []
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT:
            created.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    ca_cert, ca_key = certs.create_dev_ca(tmp_path, "CA")
    certs.issue_server_cert(ca_cert, ca_key, tmp_path, ["localhost"], [])
    monkeypatch.undo()

    key_files = [c for c in created if ".key" in Path(c[0]).name]
    assert len(key_files) == 2
    for path, flags, file_mode in key_files:
        assert file_mode == 0o600, path
        assert flags & os.O_EXCL, path
    key_text = (tmp_path / "server.key").read_text()
    assert key_text.startswith("-----BEGIN " + "PRIVATE KEY-----")  # PKCS#8, unencrypted (split: not a key)


def test_create_dev_ca_refuses_to_overwrite_a_key(tmp_path):
    ca_cert, ca_key = certs.create_dev_ca(tmp_path, "first")
    before = (ca_key.read_bytes(), ca_cert.read_bytes())
    with pytest.raises(FileExistsError):
        certs.create_dev_ca(tmp_path, "second")
    assert (ca_key.read_bytes(), ca_cert.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem"]


def test_issue_server_cert_replaces_earlier_one(pki, tmp_path):
    old = pki["key"].read_bytes()
    chain, key = certs.issue_server_cert(
        pki["ca_cert"], pki["ca_key"], tmp_path, ["localhost"], ["127.0.0.1"]
    )
    assert key.read_bytes() != old and mode(key) == 0o600


def test_issue_server_cert_rejects_bad_input(pki, tmp_path):
    with pytest.raises(ValueError):
        certs.issue_server_cert(pki["ca_cert"], pki["ca_key"], tmp_path, [], ["127.0.0.1"])
    with pytest.raises(ValueError):
        certs.issue_server_cert(pki["ca_cert"], pki["ca_key"], tmp_path, ["a"], ["not-an-ip"])
    with pytest.raises(ValueError, match="not the private key"):
        certs.issue_server_cert(pki["ca_cert"], pki["key"], tmp_path, ["a"], [])


# --- what openssl says -----------------------------------------------------


@needs_openssl
def test_openssl_verifies_the_leaf_against_the_ca(pki):
    result = openssl("verify", "-x509_strict", "-purpose", "sslserver",
                     "-CAfile", str(pki["ca_cert"]), str(pki["chain"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{pki['chain']}: OK"


@needs_openssl
def test_openssl_rejects_the_leaf_against_another_ca(pki, tmp_path):
    other_ca, _ = certs.create_dev_ca(tmp_path / "other", "other CA")
    result = openssl("verify", "-CAfile", str(other_ca), str(pki["chain"]))
    assert result.returncode != 0


@needs_openssl
def test_ca_extensions(pki):
    text = openssl("x509", "-in", str(pki["ca_cert"]), "-noout", "-text").stdout
    assert "ASN1 OID: prime256v1" in text
    assert "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0" in text
    assert "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign" in text
    assert "X509v3 Subject Key Identifier" in text


@needs_openssl
def test_server_extensions(pki):
    text = openssl("x509", "-in", str(pki["chain"]), "-noout", "-text").stdout
    assert "ASN1 OID: prime256v1" in text
    assert "Subject: CN = localhost" in text
    assert "X509v3 Key Usage: critical\n                Digital Signature" in text
    assert "X509v3 Extended Key Usage: \n                TLS Web Server Authentication" in text
    assert "DNS:localhost, IP Address:127.0.0.1" in text
    assert "X509v3 Subject Key Identifier" in text
    assert "X509v3 Authority Key Identifier" in text
    assert "CA:FALSE" in text


@needs_openssl
def test_keys_match_their_certificates(pki):
    def pubkey(*args: str) -> str:
        result = openssl(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert pubkey("pkey", "-in", str(pki["key"]), "-pubout") == pubkey(
        "x509", "-in", str(pki["chain"]), "-noout", "-pubkey")
    assert pubkey("pkey", "-in", str(pki["ca_key"]), "-pubout") == pubkey(
        "x509", "-in", str(pki["ca_cert"]), "-noout", "-pubkey")


# --- certificate_info ------------------------------------------------------


@needs_openssl
def test_certificate_info_of_server_chain(tmp_path):
    ca_cert, ca_key = certs.create_dev_ca(tmp_path, "Demo CA", now=NOW)
    chain, _ = certs.issue_server_cert(ca_cert, ca_key, tmp_path, ["mail.dp2.test", "localhost"],
                                       ["127.0.0.1", "::1"], name="mail", now=NOW)
    info = certs.certificate_info(chain)
    fingerprint = openssl("x509", "-in", str(chain), "-noout", "-fingerprint", "-sha256").stdout
    assert fingerprint.strip() == f"sha256 Fingerprint={info['sha256']}"
    assert info["subject"] == "CN=mail.dp2.test"
    assert info["issuer"] == "CN=Demo CA"
    assert info["san"] == ["DNS:mail.dp2.test", "DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    assert info["not_before"] == "2026-05-01T11:55:00+00:00"
    assert info["not_after"] == "2028-08-03T11:55:00+00:00"  # 825 days later
    assert info["is_ca"] is False
    assert int(info["serial"], 16) > 0


def test_certificate_info_of_ca(tmp_path):
    ca_cert, _ = certs.create_dev_ca(tmp_path, "Demo CA", now=NOW)
    info = certs.certificate_info(ca_cert)
    assert info["subject"] == info["issuer"] == "CN=Demo CA"
    assert info["not_after"] == "2036-04-30T11:55:00+00:00"  # 3652 days: about 10 years
    assert info["san"] == [] and info["is_ca"] is True


def test_server_cert_never_outlives_its_ca(tmp_path):
    ca_cert, ca_key = certs.create_dev_ca(tmp_path, "CA", now=NOW)
    late = NOW + datetime.timedelta(days=3600)
    chain, _ = certs.issue_server_cert(ca_cert, ca_key, tmp_path, ["localhost"], [], now=late)
    ca_end = certs.certificate_info(ca_cert)["not_after"]
    assert certs.certificate_info(chain)["not_after"] == ca_end


# --- a real TLS handshake --------------------------------------------------


@contextlib.contextmanager
def tls_server(context: ssl.SSLContext):
    """Accept one TLS connection on 127.0.0.1, send b"hello\\n"; yields (port, server errors)."""
    errors: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve_one() -> None:
            try:
                conn, _ = listener.accept()
                with conn, context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello\n")
            except (OSError, ssl.SSLError) as exc:  # a refused handshake is the client's test
                errors.append(exc)

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1], errors
        finally:
            thread.join(10)


def server_context(pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["chain"], pki["key"])
    return context


def handshake(pki, server_hostname: str) -> bytes:
    client = ssl.create_default_context(cafile=str(pki["ca_cert"]))
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    with tls_server(server_context(pki)) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname=server_hostname) as tls:
                return tls.recv(16)


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_tls_handshake_verifies_hostname_and_ip(pki, server_hostname):
    assert handshake(pki, server_hostname) == b"hello\n"


def test_tls_handshake_refuses_a_name_not_in_the_certificate(pki):
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake(pki, "mail.example.org")


def test_tls_handshake_refuses_without_trusting_the_dev_ca(pki, tmp_path):
    other_ca, _ = certs.create_dev_ca(tmp_path / "other", "other CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake({**pki, "ca_cert": other_ca}, "localhost")
