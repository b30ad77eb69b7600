"""`dp2bridge cert issue|list|revoke|crl|import|trust` and `cert show --tenant T --bridge|--trust`.

Users' S/MIME certificates (issue 5, DESIGN.md section 7): issued by the
tenant CA as a PKCS#12 file, or the user's own imported for encrypting to
them; revoked at once in the store (and in the tenant's CRL file); external
CAs (e.g. OCES3) added as trust anchors for a tenant's users; the bridge's own
encryption certificate per tenant.  Registered under the `cert` noun by
admin/certs.py (`add_verbs`).  Certificate work is in crypto.usercerts, rows
and audit events in store.certificates.  A PKCS#12 password is read from
stdin or generated and printed once, never taken as an argument.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any, Callable

from bridge.admin.certs import CERTS_DIR, ensure_tenant_evidence
from bridge.admin.context import Context, emit, read_input, read_secret, record, table, wants_json
from bridge.config import Config
from bridge.core.admin import MIN_PASSWORD
from bridge.core.audit import AuditEvent
from bridge.errors import AdminError

MAX_CERT_DAYS = 3650
_P12_MODE = 0o600

ISSUE_HELP = """\
Issue an S/MIME certificate for LOGIN from its tenant's CA and write it, with its
new private key and the tenant CA, to a PKCS#12 file that Thunderbird
(Settings > Privacy & Security > Manage Certificates > Your Certificates > Import)
and Outlook (double-click the file) import.  Without --password-stdin a random
password is generated and printed once; give it to the user with the file.  The
file is written with mode 0600 and an existing file is never overwritten.
Validity: the tenant policy user_cert_days (default 730).  Mail clients must
also trust the tenant CA: `dp2bridge cert show --tenant T --ca`.

examples:
  dp2bridge cert issue anna@borger.dp2.test --p12 anna.p12
  printf '%s\\n' "$PW" | dp2bridge cert issue anna@borger.dp2.test --p12 anna.p12 --password-stdin
"""

KEY_HELP = ("rsa (default): RSA 3072, keyUsage digitalSignature + keyEncipherment, for signing "
            "and for receiving encrypted mail; p256: an EC P-256 key, keyUsage digitalSignature + "
            "keyAgreement (keyEncipherment is for RSA keys only), for signing; the bridge cannot "
            "encrypt to it")

REVOKE_HELP = """\
Revoke LOGIN's certificate with --serial (see `dp2bridge cert list LOGIN`), or
all of them.  It takes effect at once: the bridge no longer accepts the
certificate's signatures or encrypts to it.  The tenant's CRL file
(<home>/certs/tenants/<tenant>/crl.pem) is rewritten too.
"""

TRUST_HELP = """\
Trust an external CA chain (e.g. OCES3 root and issuing CA, PEM) for the
signatures of this tenant's users, beside the tenant's own CA.  Each CA
certificate is copied to <home>/certs/tenants/<tenant>/trust/; list them with
`dp2bridge cert show --tenant T --trust`.
"""


def ensure_bridge_identity(config: Config, tenant: dict) -> Path:
    """Make the tenant's bridge encryption certificate (and its CA) if missing; bridge.pem.
    Its address is bridge@ the tenant's first domain (else the bridge's host name)."""
    from bridge.crypto.usercerts import bridge_address, ensure_bridge_cert
    ensure_tenant_evidence(config, tenant)
    email = bridge_address(tenant["domains"], config.bridge.hostname)
    return ensure_bridge_cert(config.resolve(CERTS_DIR), tenant["name"], tenant["display_name"],
                              email)[0]


def cmd_issue(ctx: Context) -> int:
    from bridge.crypto.usercerts import issue_user_cert
    a = ctx.args
    target = Path(a.p12)
    if target.exists():
        raise AdminError(f"{target} exists; give another --p12 file (an existing file is never "
                         f"overwritten)")
    if not target.parent.is_dir():
        raise AdminError(f"the directory {target.parent} does not exist; create it or give "
                         f"another --p12 file")
    password = read_secret(a)
    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(15)
    elif len(password) < MIN_PASSWORD:
        raise AdminError(f"the PKCS#12 password must have at least {MIN_PASSWORD} characters")
    repo = _repo(ctx)
    owner = repo.owner(a.login)
    tenant = ctx.store.tenant(owner.tenant)
    ensure_tenant_evidence(ctx.config, tenant)
    issued = issue_user_cert(_certs_dir(ctx), owner.tenant, owner.login, owner.display_name,
                             password.encode(), key_kind=a.key, days=_cert_days(tenant))
    f = issued.facts
    _write_exclusive(target, issued.p12, lambda: repo.add(
        owner.login, serial=f.serial, issuer_fingerprint=f.issuer_fingerprint,
        fingerprint=f.fingerprint, pem=f.pem, not_before=f.not_before, not_after=f.not_after,
        source="issued", actor=_actor(ctx)))
    text = (f"certificate for {owner.login} issued: serial {f.serial}, valid until "
            f"{f.not_after:%Y-%m-%d}\nPKCS#12 written to {target} (mode 0600)\n"
            f"mail clients must trust the tenant CA: dp2bridge cert show --tenant {owner.tenant} --ca")
    if generated:
        text += f"\nPKCS#12 password (shown only now): {password}"
    emit(a, {"login": owner.login, "serial": f.serial, "fingerprint": f.fingerprint,
             "not_after": f.not_after.isoformat(), "file": str(target),
             "password": password if generated else None}, text)
    return 0


def _write_exclusive(path: Path, data: bytes, record_it: Callable[[], Any]) -> None:
    """Claim `path` (new, 0600), run `record_it`, then write `data`; the file is removed when
    anything fails, so no PKCS#12 exists that the store does not know."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _P12_MODE)
    except FileExistsError:
        raise AdminError(f"{path} exists; give another --p12 file") from None
    except OSError as exc:
        raise AdminError(f"cannot create {path}: {exc.strerror}; give another --p12 file") from None
    try:
        with os.fdopen(fd, "wb") as out:
            record_it()
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def cmd_list(ctx: Context) -> int:
    login = ctx.args.login.strip().lower()
    rows = [c.summary() for c in _repo(ctx).list_for(login)]
    table(ctx.args, rows, (("serial", "SERIAL"), ("source", "SOURCE"), ("not_after", "NOT AFTER"),
                           ("revoked_at", "REVOKED"), ("fingerprint", "SHA-256")),
          f"{login} has no certificates; issue one with `dp2bridge cert issue {login} --p12 FILE`")
    return 0


def cmd_revoke(ctx: Context) -> int:
    from bridge.crypto.usercerts import normalise_serial
    a = ctx.args
    serial = None
    if a.serial is not None:
        try:
            serial = normalise_serial(a.serial)
        except ValueError:
            raise AdminError(f"--serial {a.serial!r} is not hexadecimal; copy it from "
                             f"`dp2bridge cert list {a.login}`") from None
    repo = _repo(ctx)
    owner = repo.owner(a.login)
    done = repo.revoke(owner.login, serial, a.reason, _actor(ctx))
    if not done:
        raise AdminError(f"{owner.login} has no certificate {'with serial ' + serial + ' ' if serial else ''}"
                         f"that is not revoked already (see `dp2bridge cert list {owner.login}`)")
    crl = _write_crl(ctx, owner.tenant)
    serials = [c.serial for c in done]
    emit(a, {"login": owner.login, "revoked": serials, "crl": str(crl) if crl else None},
         f"revoked {len(serials)} certificate(s) of {owner.login}: {', '.join(serials)}"
         + (f"\nCRL rewritten: {crl}" if crl else ""))
    return 0


def cmd_crl(ctx: Context) -> int:
    a = ctx.args
    ctx.store.tenant(a.tenant)                 # NotFound names `tenant list`
    path = _write_crl(ctx, a.tenant)
    if path is None:
        raise AdminError(f"tenant {a.tenant!r} has no CA (ca.pem in {_certs_dir(ctx)}/tenants/"
                         f"{a.tenant} is missing); restart `dp2bridge serve` to create it")
    pem = path.read_bytes()
    if a.output:
        try:
            Path(a.output).write_bytes(pem)
        except OSError as exc:
            raise AdminError(f"cannot write --output {a.output}: {exc.strerror}; give a file in an "
                             f"existing directory (the CRL was renewed in {path} all the same)") from None
    if wants_json(a):
        record(a, {"tenant": a.tenant, "file": str(path), "output": a.output,
                   "pem": pem.decode("ascii")})
    elif a.output:
        print(f"CRL of tenant {a.tenant} written to {a.output} and {path}; it is valid for 7 days: "
              f"run this again (e.g. daily) to renew it")
    else:
        sys.stdout.write(pem.decode("ascii"))
        print(f"(also written to {path})", file=sys.stderr)
    return 0


def _write_crl(ctx: Context, tenant: str) -> Path | None:
    """Rewrite the tenant CA's crl.pem from the store; None when the tenant has no CA."""
    from bridge.crypto.usercerts import tenant_ca_fingerprint, write_tenant_crl
    certs_dir = _certs_dir(ctx)
    try:
        issuer = tenant_ca_fingerprint(certs_dir, tenant)
    except FileNotFoundError:
        return None
    revoked = _repo(ctx).revocations(tenant, issuer)
    return write_tenant_crl(certs_dir, tenant, revoked, ctx.store.clock.now())[0]


def cmd_import(ctx: Context) -> int:
    from bridge.crypto.usercerts import CertificateRefused, inspect_imported, tenant_trust_pems
    a = ctx.args
    data = _read_file(a.file)
    repo = _repo(ctx)
    owner = repo.owner(a.login)
    try:
        f = inspect_imported(data, owner.login, tenant_trust_pems(_certs_dir(ctx), owner.tenant),
                             now=ctx.store.clock.now())
    except CertificateRefused as exc:
        raise AdminError(f"{a.file}: {exc}") from None
    repo.add(owner.login, serial=f.serial, issuer_fingerprint=f.issuer_fingerprint,
             fingerprint=f.fingerprint, pem=f.pem, not_before=f.not_before, not_after=f.not_after,
             source="imported", actor=_actor(ctx))
    emit(a, {"login": owner.login, "serial": f.serial, "fingerprint": f.fingerprint,
             "not_after": f.not_after.isoformat()},
         f"certificate of {owner.login} imported (serial {f.serial}, valid until "
         f"{f.not_after:%Y-%m-%d}); mail to {owner.login} can be encrypted to it")
    return 0


def cmd_trust(ctx: Context) -> int:
    from bridge.crypto.usercerts import CertificateRefused, add_trust_anchors
    a = ctx.args
    ctx.store.tenant(a.tenant)
    data = _read_file(a.file)
    try:
        anchors = add_trust_anchors(_certs_dir(ctx), a.tenant, data)
    except CertificateRefused as exc:
        raise AdminError(f"{a.file}: {exc}") from None
    for anchor in anchors:
        if anchor["added"]:
            ctx.store.append_audit(AuditEvent(
                time=ctx.store.clock.now(), chain=a.tenant, kind="cert.trust-added", result="ok",
                actor=_actor(ctx), subject=anchor["fingerprint"], protocol="cli",
                details={"ca_subject": anchor["subject"], "not_after": anchor["not_after"]}))
    table(a, anchors, (("subject", "SUBJECT"), ("not_after", "NOT AFTER"), ("added", "ADDED"),
                       ("fingerprint", "SHA-256")), "no certificates")
    return 0


def show_tenant_extra(ctx: Context, show: Callable[[Context], int]) -> int:
    """`cert show` with --bridge or --trust; otherwise the plain `show`."""
    a = ctx.args
    if not (a.bridge or a.trust):
        return show(ctx)
    if not a.tenant:
        raise AdminError("--bridge and --trust go with --tenant NAME")
    if sum((a.ca, a.bridge, a.trust)) > 1:
        raise AdminError("give one of --ca, --bridge, --trust")
    tenant = ctx.store.tenant(a.tenant)
    if a.trust:
        from bridge.crypto.usercerts import trust_anchors
        table(a, trust_anchors(_certs_dir(ctx), a.tenant),
              (("subject", "SUBJECT"), ("not_after", "NOT AFTER"), ("fingerprint", "SHA-256")),
              f"tenant {a.tenant} trusts only its own CA; add others with `dp2bridge cert trust`")
        return 0
    path = ensure_bridge_identity(ctx.config, tenant)
    pem = path.read_text("ascii")
    if wants_json(a):
        record(a, {"tenant": a.tenant, "file": str(path), "pem": pem})
    else:
        print(pem, end="")
    return 0


def _cert_days(tenant: dict) -> int:
    from bridge.crypto.usercerts import USER_CERT_DAYS
    value = (tenant.get("policy") or {}).get("user_cert_days", USER_CERT_DAYS)
    try:
        days = int(value)
    except (TypeError, ValueError):
        days = 0
    if not 1 <= days <= MAX_CERT_DAYS:
        raise AdminError(f"tenant {tenant['name']} has policy user_cert_days = {value!r}; set it to "
                         f"a number of days from 1 to {MAX_CERT_DAYS} with `dp2bridge tenant policy`")
    return days


def _read_file(name: str) -> bytes:
    return read_input(name)


def _repo(ctx: Context) -> Any:
    from bridge.store.certificates import CertificateRepository
    return CertificateRepository(ctx.store)


def _certs_dir(ctx: Context) -> Path:
    return ctx.config.resolve(CERTS_DIR)


def _actor(ctx: Context) -> str:
    return ctx.admin().actor


def add_verbs(verbs: Any, parents: dict[str, argparse.ArgumentParser],
              show: argparse.ArgumentParser) -> None:
    """Add the users' certificate verbs to `cert`, and --bridge/--trust to its `show`."""
    from bridge.crypto.usercerts import KEY_KINDS, REASONS
    raw = argparse.RawDescriptionHelpFormatter
    store = [parents["store"]]
    show.add_argument("--bridge", action="store_true",
                      help="with --tenant: print the bridge's encryption certificate for the "
                           "tenant's users (made if missing)")
    show.add_argument("--trust", action="store_true",
                      help="with --tenant: list the external CAs the tenant trusts (`cert trust`)")
    plain = show.get_default("func")
    show.set_defaults(func=lambda ctx: show_tenant_extra(ctx, plain))
    x = verbs.add_parser("issue", parents=store, formatter_class=raw, description=ISSUE_HELP,
                         help="issue a user's S/MIME certificate as a PKCS#12 file")
    x.add_argument("login")
    x.add_argument("--p12", required=True, metavar="FILE", help="the PKCS#12 file to create")
    x.add_argument("--password-stdin", action="store_true",
                   help="read the PKCS#12 password from standard input (one line)")
    x.add_argument("--key", choices=KEY_KINDS, default="rsa", help=KEY_HELP)
    x.set_defaults(func=cmd_issue)
    x = verbs.add_parser("list", parents=store, help="list a user's certificates",
                         description="List LOGIN's certificates: serial, issued or imported, "
                                     "end of validity, revocation, SHA-256 fingerprint.")
    x.add_argument("login")
    x.set_defaults(func=cmd_list)
    x = verbs.add_parser("revoke", parents=store, formatter_class=raw, description=REVOKE_HELP,
                         help="revoke a user's certificate(s)")
    x.add_argument("login")
    x.add_argument("--serial", metavar="HEX", help="the certificate to revoke (default: all)")
    x.add_argument("--reason", choices=sorted(REASONS), help="recorded in the CRL (default: none)")
    x.set_defaults(func=cmd_revoke)
    x = verbs.add_parser("crl", parents=store, help="write the tenant CA's revocation list",
                         description="Write the tenant CA's CRL (PEM, valid for 7 days) to "
                                     "<home>/certs/tenants/<tenant>/crl.pem and to --output, else "
                                     "standard output.  Publish it where clients fetch it and "
                                     "renew it at least weekly.")
    x.add_argument("--tenant", required=True, metavar="NAME")
    x.add_argument("--output", metavar="FILE", help="also write the CRL here")
    x.set_defaults(func=cmd_crl)
    x = verbs.add_parser("import", parents=store, help="import a user's own S/MIME certificate",
                         description="Import LOGIN's own S/MIME certificate (PEM or DER) so mail "
                                     "to LOGIN can be encrypted to it.  It must be for e-mail "
                                     "protection, name LOGIN in subjectAltName, be valid now and "
                                     "have an RSA key that may encipher keys.")
    x.add_argument("login")
    x.add_argument("file")
    x.set_defaults(func=cmd_import)
    x = verbs.add_parser("trust", parents=store, formatter_class=raw, description=TRUST_HELP,
                         help="trust an external CA chain for a tenant's users")
    x.add_argument("--tenant", required=True, metavar="NAME")
    x.add_argument("file")
    x.set_defaults(func=cmd_trust)
