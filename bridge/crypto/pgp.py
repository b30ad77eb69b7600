"""OpenPGP for one tenant: its keyring, PGP/MIME (RFC 3156) verification, decryption, encryption.

A `TenantKeyring` is a GnuPG home directory of its own (0700; never the user's
~/.gnupg: every gpg call gets `--homedir`) plus `pins.json` (0600), which maps a
login to the fingerprints imported for it.  Trust is that pin and nothing else:
a signature passes only when gpg calls it good AND its key (or, for a subkey,
the primary key) is pinned for the header From address; gpg's web of trust is
not consulted.  The keyring also holds the bridge's own key for the tenant
(`ensure_bridge_key`), without passphrase, to which users encrypt submissions.

python-gnupg starts one gpg process per call (DESIGN.md section 10), so nothing
here runs gpg for a message that is not PGP/MIME: `verify_pgp_mime` and
`decrypt_pgp_mime` look at the bytes first, and the gpg handle itself is made
on first use.  gpg's status lines (`[GNUPG:] ...`) decide every outcome; its
human-readable text never reaches a client.  Pure of the database: files only.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import fcntl
import json
import os
import re
import secrets
import tempfile
from email.message import Message
from pathlib import Path
from typing import Any, Iterator

import gnupg

from bridge.crypto.results import SigResult
from bridge.errors import AdminError, MessageRejected, NotFound
from bridge.files import write_atomic

PINS_FILE = "pins.json"
_LOCK_FILE = "pins.lock"
# Every call: no terminal, no pinentry dialog (an unprotected key needs none), no greeting.
_GPG_OPTIONS = ["--pinentry-mode", "loopback", "--no-greeting", "--no-permission-warning"]
_FPR_RE = re.compile(r"^[0-9A-F]{40}([0-9A-F]{24})?$")      # v4 (40) or v5 (64) fingerprints
_EMAIL_IN_UID = re.compile(r"<([^<>\s]+@[^<>\s]+)>\s*$")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_PGP_ENCRYPTED = re.compile(rb"pgp-encrypted", re.IGNORECASE)   # the cheap test: no copy of raw
_HEADER_LINE = re.compile(rb"^(?:[!-9;-~]+:|[ \t])")
MAX_PLAINTEXT = 64 * 1024 * 1024         # bytes; above the SMTP size limit (DESIGN.md section 10)


class PgpKeyError(AdminError):
    """A key cannot be imported or removed; the text says why and what to do."""


class PgpRefused(MessageRejected):
    """A PGP/MIME message the bridge will not decrypt or encrypt.  `public` (English) and
    `public_da` (Danish) are safe to show; `enhanced` is the RFC 3463 code for SMTP."""

    def __init__(self, detail: str, public: str, public_da: str, enhanced: str = "5.6.0") -> None:
        super().__init__(detail, public=public)
        self.public_da = public_da
        self.enhanced = enhanced


# --- the keyring ---------------------------------------------------------------------------

class TenantKeyring:
    """One tenant's GnuPG home, its login -> fingerprint pins and its bridge key."""

    def __init__(self, gnupg_home: Path) -> None:
        self.home = Path(gnupg_home).absolute()
        if self.home == (Path.home() / ".gnupg").absolute():
            raise ValueError("a tenant keyring must not be the user's ~/.gnupg")
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)
        self._gpg: gnupg.GPG | None = None

    @property
    def gpg(self) -> gnupg.GPG:
        """The python-gnupg handle, made on first use (making it runs `gpg --version`)."""
        if self._gpg is None:
            self._gpg = gnupg.GPG(gnupghome=str(self.home), options=list(_GPG_OPTIONS))
            self._gpg.encoding = "utf-8"
        return self._gpg

    # pins.json -------------------------------------------------------------------------

    def pins(self) -> dict[str, list[str]]:
        """login -> fingerprints (upper-case hex), as stored."""
        try:
            data = json.loads((self.home / PINS_FILE).read_text("utf-8"))
        except FileNotFoundError:
            return {}
        return {str(k): [str(f) for f in v] for k, v in data.items()}

    @contextlib.contextmanager
    def _pins_locked(self) -> Iterator[dict[str, list[str]]]:
        """The pins under an exclusive lock; written back atomically (0600) when the block ends."""
        fd = os.open(self.home / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            pins = self.pins()
            yield pins
            write_atomic(self.home / PINS_FILE,
                         json.dumps({k: v for k, v in sorted(pins.items()) if v}, indent=2).encode())
        finally:
            os.close(fd)

    # key management ----------------------------------------------------------------------

    def import_key(self, login: str, key: bytes) -> str:
        """Import one public key (armored or binary) for `login` and pin it; its fingerprint.

        Refused (PgpKeyError): no key, more than one key, a secret key, or no user id whose
        address is the login.  The user ids are checked after gpg imported the key, so only
        self-signed ones count.  Importing a key again merges it (e.g. a revocation)."""
        login = login.strip().lower()
        scanned = self.gpg.scan_keys_mem(key)
        if any(k.get("type") == "sec" for k in scanned) or b"PRIVATE KEY BLOCK" in key:
            raise PgpKeyError("the file holds a secret (private) key; export and import only the "
                              "public key (`gpg --export --armor ADDRESS`)")
        fprs = {k["fingerprint"] for k in scanned if k.get("type") == "pub"}
        if len(fprs) != 1:
            raise PgpKeyError(f"the file must hold exactly one OpenPGP public key; it holds {len(fprs)}")
        fpr = fprs.pop()
        before = self._listed(fpr)
        result = self.gpg.import_keys(key)
        if fpr not in (result.fingerprints or []) and before is None:
            raise PgpKeyError("gpg could not import the key (is it a valid OpenPGP public key?)")
        listed = self._listed(fpr)
        if listed is None or login not in _uid_emails(listed):
            if before is None and listed is not None:
                self.gpg.delete_keys(fpr)
            raise PgpKeyError(f"the key {fpr} has no user id with the address {login} "
                              f"(it has: {', '.join(_uid_emails(listed or {})) or 'none'})")
        with self._pins_locked() as pins:
            if fpr not in pins.setdefault(login, []):
                pins[login].append(fpr)
        return fpr

    def keys(self, login: str | None = None) -> list[dict[str, Any]]:
        """One record per pinned (login, key): login, fingerprint, uids, created, expires
        (unix times as text, "" for never) and status (valid | expired | revoked | missing)."""
        login = login.strip().lower() if login else None
        pins = self.pins()
        wanted = {lg: fprs for lg, fprs in pins.items() if login is None or lg == login}
        fprs = sorted({f for fs in wanted.values() for f in fs})
        listed = {k["fingerprint"]: k for k in self.gpg.list_keys(keys=fprs)} if fprs else {}
        out = []
        for lg in sorted(wanted):
            for fpr in wanted[lg]:
                k = listed.get(fpr)
                out.append({"login": lg, "fingerprint": fpr, "uids": list(k["uids"]) if k else [],
                            "created": k["date"] if k else "", "expires": k["expires"] if k else "",
                            "status": _status(k)})
        return out

    def remove(self, login: str, fingerprint: str) -> None:
        """Unpin a key from a login; the key leaves the keyring when no login pins it any more."""
        login, fpr = login.strip().lower(), normalize_fingerprint(fingerprint)
        with self._pins_locked() as pins:
            if fpr not in pins.get(login, []):
                raise NotFound(f"no key {fpr} is imported for {login} "
                               f"(see `dp2bridge pgp list {login}`)")
            pins[login].remove(fpr)
            still_used = any(fpr in fs for fs in pins.values())
        if not still_used and self._listed(fpr) is not None:
            self.gpg.delete_keys(fpr)

    def _listed(self, fpr: str) -> dict[str, Any] | None:
        found = [k for k in self.gpg.list_keys(keys=[fpr]) if k["fingerprint"] == fpr]
        return found[0] if found else None

    # the bridge's own key -------------------------------------------------------------------

    def ensure_bridge_key(self, email_address: str) -> str:
        """The fingerprint of the bridge's key for `email_address` (ed25519 + cv25519, no
        passphrase, no expiry), made when the keyring has no secret key for that address."""
        email_address = email_address.strip().lower()
        existing = self.bridge_key(email_address)
        if existing:
            return existing
        params = self.gpg.gen_key_input(
            key_type="EDDSA", key_curve="ed25519", key_usage="sign", subkey_type="ECDH",
            subkey_curve="cv25519", subkey_usage="encrypt", name_real="dp2bridge",
            name_email=email_address, expire_date="0", no_protection=True)
        result = self.gpg.gen_key(params)
        if not result.fingerprint:
            raise RuntimeError(f"gpg could not make the bridge key: {_status_tokens(result)}")
        return str(result.fingerprint)

    def export_bridge_key(self, email_address: str | None = None) -> str:
        """The bridge key's armored public key (of `email_address`, else the only one)."""
        fpr = self.bridge_key(email_address.strip().lower() if email_address else None)
        if not fpr:
            raise NotFound("this tenant has no bridge OpenPGP key yet; make it with "
                           "`dp2bridge pgp show --tenant T --bridge`")
        return str(self.gpg.export_keys(fpr, armor=True))

    def bridge_key(self, email_address: str | None = None) -> str | None:
        """The fingerprint of the bridge key (of `email_address`, else the first), None if none."""
        for k in self.gpg.list_keys(secret=True):
            if email_address is None or email_address in _uid_emails(k):
                return str(k["fingerprint"])
        return None

    # PGP/MIME ---------------------------------------------------------------------------------

    def verify_pgp_mime(self, raw: bytes, from_address: str) -> SigResult | None:
        """The result for an RFC 3156 `multipart/signed` top-level body; None when the message is
        not PGP/MIME signed (no gpg call then).  Pass needs a good signature over the first
        part's exact bytes by a key pinned for `from_address`."""
        head, body = _split(raw)
        ctype = _content_type(head)
        if ctype is None or ctype.get_content_type() != "multipart/signed" \
                or str(ctype.get_param("protocol") or "").lower() != "application/pgp-signature":
            return None
        sender = from_address.strip().lower()

        def fail(reason: str) -> SigResult:
            return SigResult("pgp", "fail", sender, reason)
        parts = _parts(body, ctype.get_boundary())
        if parts is None or len(parts) != 2:
            return fail("malformed PGP/MIME: multipart/signed must have exactly two parts")
        sig_part = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(parts[1])
        if sig_part.get_content_type() != "application/pgp-signature":
            return fail("malformed PGP/MIME: the second part is not application/pgp-signature")
        signature = sig_part.get_payload(decode=True)
        if not isinstance(signature, bytes) or not signature.strip():
            return fail("malformed PGP/MIME: the signature part is empty")
        signed = _BARE_LF.sub(b"\r\n", parts[0])           # RFC 3156: CRLF is canonical
        with tempfile.NamedTemporaryFile(dir=self.home, prefix="sig-", suffix=".asc") as f:
            f.write(signature)
            f.flush()
            result = self.gpg.verify_data(f.name, signed)
        return _judge(_status_lines(result), sender, self.pins())

    def decrypt_pgp_mime(self, raw: bytes, max_size: int = MAX_PLAINTEXT) -> bytes | None:
        """The complete message of an RFC 3156 `multipart/encrypted` top-level body: the outer
        header fields except Content-*, then the decrypted entity (CRLF line ends).  Of the
        entity's own header only the Content-* fields are kept: a From, Subject ... inside
        (protected headers) must not add to or contradict the outer ones that were checked.

        None when the message holds no PGP/MIME encryption at all (no gpg call then).
        PgpRefused when: encrypted parts sit anywhere but as the whole top-level body (EFAIL),
        the structure is not RFC 3156, it is not encrypted to this tenant's bridge key, it has
        no integrity protection (MDC or AEAD), the plaintext would exceed `max_size` bytes
        (gpg --max-output: a compressed message can expand enormously), or gpg fails.  No
        plaintext leaves a refusal."""
        if not _PGP_ENCRYPTED.search(raw):
            return None
        head, body = _split(raw)
        ctype = _content_type(head)
        top = ctype is not None and ctype.get_content_type() == "multipart/encrypted"
        if not top or str(ctype.get_param("protocol") or "").lower() != "application/pgp-encrypted":
            if _has_nested_pgp(raw):
                raise PgpRefused("encrypted part below the top level", *_EFAIL)
            return None
        parts = _parts(body, ctype.get_boundary())
        if parts is None or len(parts) != 2:
            raise PgpRefused("multipart/encrypted without exactly two parts", *_MALFORMED)
        parser = email.parser.BytesParser(policy=email.policy.compat32)
        control, data = parser.parsebytes(parts[0]), parser.parsebytes(parts[1])
        if control.get_content_type() != "application/pgp-encrypted" \
                or data.get_content_type() != "application/octet-stream":
            raise PgpRefused("multipart/encrypted parts of the wrong types", *_MALFORMED)
        ciphertext = data.get_payload(decode=True)
        if not isinstance(ciphertext, bytes) or not ciphertext.strip():
            raise PgpRefused("empty encrypted part", *_MALFORMED)
        result = self.gpg.decrypt(ciphertext, extra_args=["--max-output", str(max_size)])
        status = _status_lines(result)
        plaintext = _released(status, result)
        if plaintext is None:
            raise PgpRefused(f"gpg did not release plaintext (exit {result.returncode}): "
                             f"{_status_tokens(result)}", *_refusal(status))
        inner_head, inner_body = _split_entity(_BARE_LF.sub(b"\r\n", plaintext))
        return _outer_fields(head) + _content_fields(inner_head) + b"\r\n" + inner_body

    def encrypt_pgp_mime(self, raw: bytes, fingerprints: list[str]) -> bytes:
        """`raw` as an RFC 3156 multipart/encrypted message to `fingerprints` (each must be
        pinned for some login; trusted as such, and only they): the outer header fields except
        Content-* stay outside, the Content-* fields and body are encrypted (with MDC)."""
        fprs = [normalize_fingerprint(f) for f in fingerprints]
        pinned = {f for fs in self.pins().values() for f in fs}
        if not fprs or any(f not in pinned for f in fprs):
            raise PgpRefused(f"recipients not pinned: {sorted(set(fprs) - pinned)}", *_NOT_PINNED)
        head, body = _split(raw)
        entity = _BARE_LF.sub(b"\r\n", _content_fields(head) + b"\r\n" + body)
        result = self.gpg.encrypt(entity, fprs, always_trust=True, armor=True)
        if not result.ok:
            raise PgpRefused(f"gpg could not encrypt: {_status_tokens(result)}", *_ENCRYPT_FAILED)
        armored = _BARE_LF.sub(b"\r\n", result.data)
        boundary = "----------dp2bridge-pgp-" + secrets.token_hex(12)
        outer = _outer_fields(head)
        if b"\nmime-version:" not in b"\n" + outer.lower():
            outer += b"MIME-Version: 1.0\r\n"
        return (outer
                + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
                + b' boundary="' + boundary.encode() + b'"\r\n\r\n'
                + b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
                + b"--" + boundary.encode() + b"\r\n"
                + b"Content-Type: application/pgp-encrypted\r\n"
                + b"Content-Description: PGP/MIME version identification\r\n\r\n"
                + b"Version: 1\r\n\r\n"
                + b"--" + boundary.encode() + b"\r\n"
                + b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
                + b"Content-Description: OpenPGP encrypted message\r\n"
                + b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
                + armored + (b"" if armored.endswith(b"\r\n") else b"\r\n")
                + b"\r\n--" + boundary.encode() + b"--\r\n")


def normalize_fingerprint(text: str) -> str:
    """Upper-case hex without spaces; ValueError for anything that is not a fingerprint."""
    fpr = re.sub(r"\s+", "", text).upper().removeprefix("0X")
    if not _FPR_RE.match(fpr):
        raise PgpKeyError(f"{text!r} is not an OpenPGP fingerprint (40 hex digits, see `dp2bridge pgp list`)")
    return fpr


# --- refusals (English, Danish, enhanced status) ----------------------------------------------

_EFAIL = ("encrypted content is accepted only as the whole message body (RFC 3156 "
          "multipart/encrypted at the top level); this message mixes it with other parts",
          "krypteret indhold modtages kun som hele beskedens indhold (RFC 3156 multipart/encrypted "
          "yderst); denne besked blander det med andre dele", "5.6.0")
_MALFORMED = ("the PGP/MIME encrypted message is not well-formed (RFC 3156)",
              "den PGP/MIME-krypterede besked er ikke korrekt opbygget (RFC 3156)", "5.6.0")
_NO_MDC = ("the message is encrypted without integrity protection (no MDC); it was not "
           "decrypted. Encrypt it again with a current OpenPGP program",
           "beskeden er krypteret uden integritetsbeskyttelse (ingen MDC) og blev ikke dekrypteret. "
           "Krypter den igen med et nyere OpenPGP-program", "5.6.5")
_NOT_FOR_US = ("the message is not encrypted to this bridge's OpenPGP key",
               "beskeden er ikke krypteret til denne bros OpenPGP-nøgle (dp2bridge)", "5.7.5")
_TOO_BIG = ("the decrypted message exceeds the size limit",
            "den dekrypterede besked overskrider størrelsesgrænsen", "5.3.4")
_GPG_FAILED = ("the encrypted message could not be decrypted",
               "den krypterede besked kunne ikke dekrypteres", "5.6.5")
_NOT_PINNED = ("no usable OpenPGP key is registered for the recipient",
               "der er ingen brugbar OpenPGP-nøgle registreret for modtageren", "5.7.1")
_ENCRYPT_FAILED = ("the message could not be encrypted to the recipient's OpenPGP key",
                   "beskeden kunne ikke krypteres til modtagerens OpenPGP-nøgle", "5.7.1")


# --- gpg results --------------------------------------------------------------------------

def _status_lines(result: Any) -> list[list[str]]:
    """gpg's `[GNUPG:] KEYWORD args...` lines, split into words."""
    return [line[len("[GNUPG:] "):].split() for line in (result.stderr or "").splitlines()
            if line.startswith("[GNUPG:] ") and len(line) > len("[GNUPG:] ")]


def _status_tokens(result: Any) -> str:
    """The status keywords only, for logs (no key ids, no text)."""
    return " ".join(words[0] for words in _status_lines(result)) or "no status"


def _judge(status: list[list[str]], sender: str, pins: dict[str, list[str]]) -> SigResult:
    """Pass or fail from a `gpg --verify` run's status lines and the pins."""
    words = {w[0]: w for w in status}

    def fail(reason: str) -> SigResult:
        return SigResult("pgp", "fail", sender, reason)
    if sum(1 for w in status if w[0] == "NEWSIG") > 1:
        return fail("more than one signature")
    if "BADSIG" in words:
        return fail("bad signature: the signed part was changed after signing")
    if "ERRSIG" in words:
        if "NO_PUBKEY" in words:
            return fail("unknown key: no OpenPGP key is imported for the signer")
        return fail("the signature could not be checked (unsupported algorithm or damaged)")
    if "REVKEYSIG" in words:
        return fail("the signing key is revoked")
    if "EXPKEYSIG" in words:
        return fail("the signing key has expired")
    if "EXPSIG" in words:
        return fail("the signature has expired")
    if "GOODSIG" not in words or "VALIDSIG" not in words:
        return fail("no valid signature")
    valid = words["VALIDSIG"]
    signing, primary = valid[1].upper(), valid[-1].upper()
    mine = pins.get(sender, [])
    if primary in mine or signing in mine:
        return SigResult("pgp", "pass", sender)
    if any(primary in fs or signing in fs for fs in pins.values()):
        return fail("signed by a key that belongs to another address")
    return fail(f"unknown key: the key is not imported for {sender}")


def _released(status: list[list[str]], result: Any) -> bytes | None:
    """The plaintext, only when gpg decrypted it and its integrity was checked."""
    keys = {w[0] for w in status}
    if "DECRYPTION_FAILED" in keys or "BADMDC" in keys or "DECRYPTION_OKAY" not in keys:
        return None
    aead = any(w[0] == "DECRYPTION_INFO" and len(w) > 3 and w[3] != "0" for w in status)
    if "GOODMDC" not in keys and not aead:
        return None
    if getattr(result, "returncode", 0) not in (0, None):
        return None
    return bytes(result.data)


def _refusal(status: list[list[str]]) -> tuple[str, str, str]:
    """Why gpg released no plaintext, as (English, Danish, enhanced status)."""
    keys = {w[0] for w in status}
    if {"DECRYPTION_OKAY", "GOODMDC"} <= keys:        # decrypted fine, but writing failed:
        return _TOO_BIG                               # --max-output is the one way that happens
    info = [w for w in status if w[0] == "DECRYPTION_INFO"]
    if "NO_SECKEY" in keys and "DECRYPTION_OKAY" not in keys and "DECRYPTION_KEY" not in keys:
        return _NOT_FOR_US
    if "GOODMDC" not in keys and (any(len(w) > 1 and w[1] == "0" for w in info)
                                  or any(w[0] == "ERROR" and "nomdc" in " ".join(w) for w in status)):
        return _NO_MDC
    return _GPG_FAILED


def _uid_emails(key: dict[str, Any]) -> list[str]:
    found = []
    for uid in key.get("uids", []):
        m = _EMAIL_IN_UID.search(uid)
        addr = m.group(1) if m else uid.strip()
        if "@" in addr:
            found.append(addr.lower())
    return found


def _status(key: dict[str, Any] | None) -> str:
    if key is None:
        return "missing"
    return {"r": "revoked", "e": "expired"}.get(key.get("trust", ""), "valid")


# --- raw MIME, by bytes -------------------------------------------------------------------------

def _split(raw: bytes) -> tuple[bytes, bytes]:
    """(header section without the empty line, body) at the first empty line."""
    m = re.search(rb"\r?\n\r?\n", raw)
    if m is None:
        return raw, b""
    return raw[:m.start()], raw[m.end():]


def _split_entity(entity: bytes) -> tuple[bytes, bytes]:
    """A decrypted entity's (header, body); an entity that does not start with header fields
    is all body (a client that encrypted bare text)."""
    if entity.startswith(b"\r\n"):
        return b"", entity[2:]
    end = entity.find(b"\r\n\r\n")
    head = entity[:end]
    if end < 0 or not all(_HEADER_LINE.match(line) for line in head.split(b"\r\n")):
        return b"", entity
    return head, entity[end + 4:]


def _content_type(head: bytes) -> Message | None:
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n")
    if msg.get_all("content-type") is None or len(msg.get_all("content-type")) != 1:
        return None
    return msg


def _parts(body: bytes, boundary: str | None) -> list[bytes] | None:
    """The body parts between `--boundary` lines (the line end before a delimiter belongs to
    it, RFC 2046), exactly as sent; None without a boundary or a closing delimiter."""
    if not boundary:
        return None
    delim = re.escape(b"--" + boundary.encode("ascii", "replace"))
    lines = list(re.finditer(rb"(?:^|\r?\n)" + delim + rb"(--)?[ \t]*(?=\r?\n|$)", body))
    parts, start, closed = [], None, False
    for m in lines:
        if start is not None:
            parts.append(body[start:m.start()])
        if m.group(1):
            closed = True
            break
        nl = body.find(b"\n", m.end())
        if nl < 0:
            return None
        start = nl + 1
    return parts if closed else None


def _has_nested_pgp(raw: bytes) -> bool:
    """Whether any part below the top level is PGP/MIME encrypted content."""
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    for part in msg.walk():
        if part is msg:
            continue
        ctype = part.get_content_type()
        if ctype == "application/pgp-encrypted" or (
                ctype == "multipart/encrypted"
                and str(part.get_param("protocol") or "").lower() == "application/pgp-encrypted"):
            return True
    return False


def _fields(head: bytes) -> list[bytes]:
    """Header fields with their continuation lines, each ending in CRLF."""
    fields: list[bytes] = []
    for line in re.split(rb"\r?\n", head):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields


def _outer_fields(head: bytes) -> bytes:
    """The header fields that are not Content-* (CRLF line ends)."""
    return b"".join(f for f in _fields(head) if not f.lower().startswith(b"content-"))


def _content_fields(head: bytes) -> bytes:
    return b"".join(f for f in _fields(head) if f.lower().startswith(b"content-"))


