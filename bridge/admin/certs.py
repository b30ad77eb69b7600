"""`dp2bridge cert show`: the listeners' certificate and the CA that mail clients must trust,
or (with --tenant) a tenant's evidence certificate that signs its receipts.

Without --tenant it reads only the files named in [tls]; with --tenant it
checks the tenant in the database and prints its PEM from
`<home>/certs/tenants/<tenant>/`.  It touches no private key.  Also owns
`ensure_tenant_evidence`, which `tenant add` and `init` call to give a new
tenant its CA and evidence certificate.  Certificate work is in crypto/
(only crypto/ imports `cryptography`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from bridge.admin.context import Context, record, wants_json
from bridge.config import Config
from bridge.errors import AdminError

if TYPE_CHECKING:
    from bridge.crypto.evidence import TenantPKI

# Under the home, beside the listeners' certificates; tenants/<name>/ holds each tenant's PKI.
CERTS_DIR = "certs"


def ensure_tenant_evidence(config: Config, tenant: dict) -> TenantPKI:
    """Create the CA and evidence certificate of `tenant` (a store.tenant() record) if missing.

    The certificate's address is receipts@ the tenant's first domain (else the bridge's
    host name)."""
    from bridge.crypto.evidence import ensure_tenant_pki, receipts_address
    email = receipts_address(tenant["domains"], config.bridge.hostname)
    return ensure_tenant_pki(config.resolve(CERTS_DIR), tenant["name"], tenant["display_name"],
                             email)


def cmd_show(ctx: Context) -> int:
    if ctx.args.tenant:
        return _show_tenant(ctx)
    if ctx.args.ca:
        raise AdminError("--ca goes with --tenant (without it, the CA is shown anyway)")
    from bridge.crypto.certs import certificate_info
    c = ctx.config
    out: dict[str, Any] = {}
    for key, label in (("cert_file", "server"), ("ca_file", "ca")):
        path = c.resolve(getattr(c.tls, key))
        try:
            out[label] = {"file": str(path), **certificate_info(path)}
        except FileNotFoundError:
            if label == "server":
                raise AdminError(f"tls.cert_file {path} does not exist") from None
        except ValueError:
            raise AdminError(f"tls.{key} {path} holds no PEM certificate") from None
    if wants_json(ctx.args):
        record(ctx.args, out)
        return 0
    for i, (label, info) in enumerate(out.items()):
        if i:
            print()
        print(f"{'Server certificate' if label == 'server' else 'CA (import ca_file into mail clients)'}:")
        record(ctx.args, info)
    return 0


def _show_tenant(ctx: Context) -> int:
    """The tenant's evidence certificate (or with --ca its CA) as PEM on stdout."""
    from bridge.crypto.evidence import load_tenant_pki
    name = ctx.args.tenant
    ctx.store.tenant(name)                     # NotFound names `tenant list` when it does not exist
    try:
        pki = load_tenant_pki(ctx.config.resolve(CERTS_DIR), name)
    except FileNotFoundError as exc:
        raise AdminError(f"{exc}; restart `dp2bridge serve` to create it") from None
    path = pki.ca_path if ctx.args.ca else pki.cert_path
    pem = path.read_bytes().decode("ascii")
    if wants_json(ctx.args):
        record(ctx.args, {"tenant": name, "file": str(path), "pem": pem})
    else:
        print(pem, end="")
    return 0


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    v = sub.add_parser("cert", help="certificates: the server's and each tenant's evidence certificate",
                       description="Certificates of the listeners.")
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser("show", parents=[parents["store"]], help="show the server certificate and CA",
                            description="Show tls.cert_file (names it is valid for, validity, SHA-256 "
                                        "fingerprint) and tls.ca_file, the CA mail clients must trust. "
                                        "With --tenant, print that tenant's evidence certificate "
                                        "(PEM), which signs its receipts; with --tenant and --ca, the "
                                        "tenant CA that verifies them (`openssl smime -verify -CAfile`).")
    show.add_argument("--tenant", metavar="NAME", help="print this tenant's evidence certificate (PEM)")
    show.add_argument("--ca", action="store_true", help="with --tenant: print the tenant's CA instead")
    show.set_defaults(func=cmd_show)
    from bridge.admin import usercerts       # users' certificates: issue, list, revoke, crl, ...
    usercerts.add_verbs(verbs, parents, show)
