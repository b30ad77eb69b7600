"""`dp2bridge pgp import|list|remove|show`: users' OpenPGP keys and the bridge's own key per tenant.

Each tenant has its own GnuPG home, `<home>/gnupg/<tenant>/` (crypto.pgp.TenantKeyring),
never the user's ~/.gnupg.  A key is imported for a login only when one of its
user ids is that login's address; it is then pinned to the login, and that pin
is the only trust a PGP/MIME signature gets.  Imports, removals and a newly
made bridge key are recorded in the tenant's audit chain.  The login's tenant
comes from the store; the keys themselves are files, not database rows.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from bridge.admin.context import Context, emit, read_input, record, table, wants_json
from bridge.errors import AdminError, NotFound

if TYPE_CHECKING:
    from bridge.crypto.pgp import TenantKeyring

GNUPG_DIR = "gnupg"

IMPORT_HELP = """\
Import a user's OpenPGP public key (armored or binary; KEYFILE - reads standard
input) and pin it to LOGIN: PGP/MIME signatures on mail From LOGIN then pass
only with this key (or another key pinned to LOGIN).  The key must have a user
id with the address LOGIN; secret keys are refused.  Importing the same key
again merges updates such as a revocation.

example:
  gpg --export --armor anna@borger.dp2.test > anna.asc
  dp2bridge pgp import anna@borger.dp2.test anna.asc
"""

SHOW_HELP = """\
Print the bridge's OpenPGP public key for a tenant (armored), making it on first
use (ed25519/cv25519, address receipts@ the tenant's first domain).  Users
import it into their mail client and encrypt submissions to it.

example:
  dp2bridge pgp show --tenant borger --bridge > bridge-borger.asc
"""


def keyring(ctx: Context, tenant: str) -> TenantKeyring:
    """The tenant's keyring at `<home>/gnupg/<tenant>/` (made when missing)."""
    from bridge.crypto.pgp import TenantKeyring
    return TenantKeyring(ctx.config.resolve(GNUPG_DIR) / tenant)


def existing_keyring(ctx: Context, tenant: str) -> TenantKeyring | None:
    """The tenant's keyring, None when it has none yet (so listing makes no directories)."""
    return keyring(ctx, tenant) if (ctx.config.resolve(GNUPG_DIR) / tenant).is_dir() else None


def tenant_of(ctx: Context, login: str) -> str:
    login = login.strip().lower()
    for acc in ctx.store.accounts():
        if acc["login"] == login:
            return str(acc["tenant"])
    raise NotFound(f"no account {login!r} (see `dp2bridge account list`)")


def _audit(ctx: Context, tenant: str, kind: str, subject: str, **details: Any) -> None:
    from bridge.clock import SystemClock
    from bridge.core.audit import AuditEvent
    ctx.store.append_audit(AuditEvent(time=SystemClock().now(), chain=tenant, kind=kind, result="ok",
                                      actor=ctx.admin().actor, subject=subject, protocol="cli",
                                      details=details))


def cmd_import(ctx: Context) -> int:
    a = ctx.args
    login = a.login.strip().lower()
    tenant = tenant_of(ctx, login)
    data = _read_keyfile(a.keyfile)
    ring = keyring(ctx, tenant)
    fpr = ring.import_key(login, data)
    status = next((r["status"] for r in ring.keys(login) if r["fingerprint"] == fpr), "valid")
    _audit(ctx, tenant, "pgp.import", login, fingerprint=fpr, status=status)
    text = f"key {fpr} imported and pinned to {login}"
    if status != "valid":
        text += f" (note: the key is {status}; signatures made with it will fail)"
    emit(a, {"login": login, "tenant": tenant, "fingerprint": fpr, "status": status}, text)
    return 0


def _read_keyfile(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    return read_input(name)


def cmd_list(ctx: Context) -> int:
    a = ctx.args
    if a.login:
        tenants = [tenant_of(ctx, a.login)]
    else:
        tenants = [t["name"] for t in ctx.store.tenants()]
    rows = []
    for tenant in tenants:
        ring = existing_keyring(ctx, tenant)
        if ring is not None:
            rows += [{"tenant": tenant, **r} for r in ring.keys(a.login)]
    table(a, rows, (("login", "LOGIN"), ("tenant", "TENANT"), ("fingerprint", "FINGERPRINT"),
                    ("status", "STATUS"), ("uids", "USER IDS")),
          f"no OpenPGP keys{' for ' + a.login if a.login else ''}; import one with "
          f"`dp2bridge pgp import LOGIN KEYFILE`")
    return 0


def cmd_remove(ctx: Context) -> int:
    from bridge.crypto.pgp import normalize_fingerprint
    a = ctx.args
    login = a.login.strip().lower()
    tenant = tenant_of(ctx, login)
    fpr = normalize_fingerprint(a.fingerprint)
    ring = existing_keyring(ctx, tenant)
    if ring is None:
        raise NotFound(f"no key {fpr} is imported for {login} (see `dp2bridge pgp list {login}`)")
    ring.remove(login, fpr)
    _audit(ctx, tenant, "pgp.remove", login, fingerprint=fpr)
    emit(a, {"login": login, "tenant": tenant, "fingerprint": fpr, "removed": True},
         f"key {fpr} no longer pinned to {login}")
    return 0


def cmd_show(ctx: Context) -> int:
    from bridge.crypto.evidence import receipts_address
    a = ctx.args
    if not a.bridge:
        raise AdminError("say which key: `dp2bridge pgp show --tenant T --bridge` prints the "
                         "bridge's key; users' keys are listed by `dp2bridge pgp list`")
    tenant = ctx.store.tenant(a.tenant)              # NotFound names `tenant list`
    address = receipts_address(tenant["domains"], ctx.config.bridge.hostname)
    ring = keyring(ctx, tenant["name"])
    fpr = ring.bridge_key(address)
    if fpr is None:
        fpr = ring.ensure_bridge_key(address)
        _audit(ctx, tenant["name"], "pgp.bridge_key", address, fingerprint=fpr)
    armored = ring.export_bridge_key(address)
    if wants_json(a):
        record(a, {"tenant": tenant["name"], "address": address, "fingerprint": fpr,
                   "armored": armored})
    else:
        print(armored, end="")
    return 0


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    v = sub.add_parser("pgp", help="OpenPGP keys: users' keys pinned to logins, the bridge's own key",
                       description="OpenPGP keys, in one GnuPG home per tenant under <home>/gnupg/.")
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    imp = verbs.add_parser("import", parents=[parents["store"]], formatter_class=raw,
                           description=IMPORT_HELP, help="import a user's public key and pin it to the login")
    imp.add_argument("login", help="the account whose key it is (a user id must have this address)")
    imp.add_argument("keyfile", help="the public key file, armored or binary; - for standard input")
    imp.set_defaults(func=cmd_import)
    lst = verbs.add_parser("list", parents=[parents["store"]], help="list imported keys",
                           description="List the keys pinned to logins (all tenants, or one login).")
    lst.add_argument("login", nargs="?", help="only this login's keys")
    lst.set_defaults(func=cmd_list)
    rm = verbs.add_parser("remove", parents=[parents["store"]], help="unpin a key from a login",
                          description="Unpin a key from a login; it leaves the tenant's keyring "
                                      "when no other login pins it.  Signatures with it fail from now on.")
    rm.add_argument("login")
    rm.add_argument("fingerprint", help="the key's fingerprint, as `dp2bridge pgp list` shows it")
    rm.set_defaults(func=cmd_remove)
    show = verbs.add_parser("show", parents=[parents["store"]], formatter_class=raw,
                            description=SHOW_HELP, help="print the bridge's public key for a tenant")
    show.add_argument("--tenant", required=True, metavar="NAME", help="the tenant")
    show.add_argument("--bridge", action="store_true", help="the bridge's own key (made if missing)")
    show.set_defaults(func=cmd_show)
