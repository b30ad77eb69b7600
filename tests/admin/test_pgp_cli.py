"""`dp2bridge pgp import|list|remove|show` on a demo home, with keys made by the real gpg in a
user's own temporary GnuPG home (HOME is temporary too: ~/.gnupg is never touched)."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from bridge.clock import SystemClock
from bridge.config import Config
from bridge.crypto.pgp import TenantKeyring
from bridge.store.sql import SqlStore
from tests.admin.conftest import in_process_cli

GPG = shutil.which("gpg")
pytestmark = pytest.mark.skipif(GPG is None, reason="the gpg binary is not installed")

ANNA, CASEWORKER = "anna@borger.dp2.test", "sagsbehandler@kommune.dp2.test"


def user_gpg(home: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess:
    r = subprocess.run([GPG, "--homedir", str(home), "--batch", "--no-tty", "--pinentry-mode",
                        "loopback", "--passphrase", "", "--status-fd", "2", *args],
                       input=data, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r


def kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True,
                   timeout=30)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A user's GnuPG home with a key for Anna and one for the caseworker; address -> key file."""
    tmp = tmp_path_factory.mktemp("pgp-user")
    home = tmp / "gnupg"
    home.mkdir(mode=0o700)
    out: dict[str, object] = {"home": home}
    try:
        for address in (ANNA, CASEWORKER):
            r = user_gpg(home, "--quick-gen-key", f"Test <{address}>", "future-default", "default", "never")
            fpr = re.search(rb"KEY_CREATED [BP] ([0-9A-F]+)", r.stderr).group(1).decode()
            path = tmp / f"{address}.asc"
            path.write_bytes(user_gpg(home, "--armor", "--export", fpr).stdout)
            out[address] = (fpr, path)
        yield out
    finally:
        kill_agent(home)


@pytest.fixture
def cli(home: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Iterator:
    """run("pgp", ...) against a fresh demo home (SQLite, and PostgreSQL when configured) -> Result."""
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.delenv("GNUPGHOME", raising=False)
    run = in_process_cli(capsys, monkeypatch, home.path)
    run.home = home                                    # type: ignore[attr-defined]
    try:
        yield run
    finally:
        for ring in (home.home / "gnupg").glob("*"):
            kill_agent(ring)


def audit(config: Config, kind: str) -> list[dict]:
    store = SqlStore(config.database_url, SystemClock())
    try:
        return [e for e in store.audit_events() if e["kind"] == kind]
    finally:
        store.close()


def test_import_pins_the_key_and_is_audited(cli, keys) -> None:
    fpr, path = keys[ANNA]
    r = cli("pgp", "import", ANNA, str(path))
    assert r.code == 0, r.err
    assert r.out.strip() == f"key {fpr} imported and pinned to {ANNA}"
    ring_dir = cli.home.home / "gnupg" / "borger"
    assert stat.S_IMODE(ring_dir.stat().st_mode) == 0o700
    assert json.loads((ring_dir / "pins.json").read_text()) == {ANNA: [fpr]}
    r = cli("pgp", "list", "--json")
    [row] = json.loads(r.out)
    assert (row["login"], row["tenant"], row["fingerprint"], row["status"]) == (ANNA, "borger", fpr, "valid")
    r = cli("pgp", "list", ANNA)
    assert r.code == 0 and fpr in r.out and "LOGIN" in r.out
    [ev] = audit(cli.home, "pgp.import")
    assert (ev["chain"], ev["subject"], ev["result"]) == ("borger", ANNA, "ok")
    assert ev["details"]["fingerprint"] == fpr
    assert ev["actor"].startswith("cli:")
    assert r.out and not (Path(cli.home.home).parent / "user-home" / ".gnupg").exists()


def test_import_refuses_a_key_of_another_address(cli, keys) -> None:
    _, path = keys[CASEWORKER]
    r = cli("pgp", "import", ANNA, str(path))
    assert r.code == 1 and f"no user id with the address {ANNA}" in r.err
    assert cli("pgp", "list", "--json").out.strip() == "[]"
    assert audit(cli.home, "pgp.import") == []
    r = cli("pgp", "import", "nobody@borger.dp2.test", str(path))
    assert r.code == 1 and "no account" in r.err
    r = cli("pgp", "import", ANNA, str(Path(path).parent / "missing.asc"))
    assert r.code == 1 and "cannot read" in r.err


def test_each_login_goes_to_its_own_tenants_keyring(cli, keys) -> None:
    for address, tenant in ((ANNA, "borger"), (CASEWORKER, "kommune")):
        assert cli("pgp", "import", address, str(keys[address][1])).code == 0
        pins = json.loads((cli.home.home / "gnupg" / tenant / "pins.json").read_text())
        assert list(pins) == [address]
    rows = json.loads(cli("pgp", "list", "--json").out)
    assert {(r["login"], r["tenant"]) for r in rows} == {(ANNA, "borger"), (CASEWORKER, "kommune")}


def test_remove_unpins_and_is_audited(cli, keys) -> None:
    fpr, path = keys[ANNA]
    assert cli("pgp", "import", ANNA, str(path)).code == 0
    spaced = " ".join(fpr[i:i + 4] for i in range(0, 40, 4)).lower()
    r = cli("pgp", "remove", ANNA, spaced)
    assert r.code == 0 and fpr in r.out
    assert cli("pgp", "list", "--json").out.strip() == "[]"
    [ev] = audit(cli.home, "pgp.remove")
    assert (ev["chain"], ev["subject"], ev["details"]["fingerprint"]) == ("borger", ANNA, fpr)
    r = cli("pgp", "remove", ANNA, fpr)
    assert r.code == 1 and "no key" in r.err
    r = cli("pgp", "remove", ANNA, "not-a-fingerprint")
    assert r.code == 1 and "not an OpenPGP fingerprint" in r.err


def test_show_bridge_key_is_made_once_and_decrypts_what_users_encrypt(cli, keys) -> None:
    r = cli("pgp", "show", "--tenant", "borger", "--bridge")
    assert r.code == 0 and r.out.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----"), r.err
    again = json.loads(cli("pgp", "show", "--tenant", "borger", "--bridge", "--json").out)
    assert again["armored"] == r.out and again["address"] == "receipts@borger.dp2.test"
    [ev] = audit(cli.home, "pgp.bridge_key")
    assert ev["details"]["fingerprint"] == again["fingerprint"]
    # a user imports it and encrypts to it; the tenant's keyring decrypts
    home = keys["home"]
    user_gpg(home, "--import", data=r.out.encode())
    entity = b"Content-Type: text/plain\r\n\r\nhemmeligt\r\n"
    ct = user_gpg(home, "--trust-model", "always", "--armor", "--encrypt", "--recipient",
                  again["fingerprint"], data=entity).stdout.replace(b"\n", b"\r\n")
    raw = (b"From: anna@borger.dp2.test\r\nContent-Type: multipart/encrypted;"
           b' protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n--b\r\n'
           b"Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\n"
           b"Content-Type: application/octet-stream\r\n\r\n" + ct + b"\r\n--b--\r\n")
    ring = TenantKeyring(cli.home.home / "gnupg" / "borger")
    assert ring.decrypt_pgp_mime(raw) == b"From: anna@borger.dp2.test\r\n" + entity


def test_show_needs_bridge_and_a_tenant(cli) -> None:
    r = cli("pgp", "show", "--tenant", "borger")
    assert r.code == 1 and "--bridge" in r.err
    r = cli("pgp", "show", "--tenant", "nosuch", "--bridge")
    assert r.code == 1 and "tenant" in r.err
    assert not (cli.home.home / "gnupg" / "nosuch").exists()
