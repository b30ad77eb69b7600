"""`dp2bridge tenant add|list|show|policy`: authorities, companies and the citizens' tenant.

Parses arguments and prints; validation and the audit event are in
core.admin.Admin.add_tenant.  A new tenant also gets its CA and evidence
certificate (admin.certs.ensure_tenant_evidence), which sign its receipts, and its
bridge certificate that users encrypt submissions to (admin.usercerts).
"""

from __future__ import annotations

import argparse
from typing import Any

from bridge.admin.certs import ensure_tenant_evidence
from bridge.admin.usercerts import ensure_bridge_identity
from bridge.admin.context import Context, emit, record, table
from bridge.core.admin import check_domain
from bridge.core.identities import TENANT_KINDS
from bridge.errors import AdminError

ADD_HELP = """\
A tenant is an authority, a company or the tenant that holds citizens.  Its mail
domains decide which tenant an account or contact point belongs to.  Authorities
and companies act under their CVR number; citizens act under their own CPR.

examples:
  dp2bridge tenant add kommune --kind authority --display-name "Demo Kommune" \\
      --cvr 29190000 --domain kommune.dp2.test
  dp2bridge tenant add borger --kind citizens --domain borger.dp2.test
"""


def cmd_add(ctx: Context) -> int:
    a = ctx.args
    ctx.admin().add_tenant(a.name, a.display_name or a.name, a.kind, a.cvr, a.domain,
                           a.may_address_cpr)
    tenant = ctx.store.tenant(a.name)
    # The first --domain given names the receipts address (the store keeps domains sorted).
    given = list(dict.fromkeys(check_domain(d) for d in a.domain))
    record = {**tenant, "domains": given}
    ensure_bridge_identity(ctx.config, record)          # the tenant CA, evidence and bridge certificates
    pki = ensure_tenant_evidence(ctx.config, record)
    emit(a, {**tenant, "evidence_certificate": str(pki.cert_path)}, f"tenant {a.name} added")
    return 0


def cmd_list(ctx: Context) -> int:
    table(ctx.args, ctx.store.tenants(),
          (("name", "NAME"), ("kind", "KIND"), ("cvr", "CVR"), ("domains", "DOMAINS"),
           ("display_name", "DISPLAY NAME")),
          "no tenants yet; add one with `dp2bridge tenant add`")
    return 0


def cmd_show(ctx: Context) -> int:
    record(ctx.args, ctx.store.tenant(ctx.args.name))
    return 0


def cmd_policy(ctx: Context) -> int:
    a = ctx.args
    changes = {}
    for item in a.settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise AdminError(f"{item!r}: write KEY=VALUE, e.g. handling_names_caseworker=true "
                             f"(KEY= unsets it)")
        changes[key.strip()] = value.strip()
    _check_contact_point(ctx, a.name, changes.get("default_contact_point"))
    policy = ctx.admin().set_policy(a.name, changes) if changes else ctx.store.tenant(a.name)["policy"]
    emit(a, {"tenant": a.name, "policy": policy},
         "\n".join(f"{k} = {v}" for k, v in sorted(policy.items())) or f"tenant {a.name} has no policy set")
    return 0


def _check_contact_point(ctx: Context, tenant: str, address: str | None) -> None:
    """default_contact_point must name one of the tenant's contact points (mail to the tenant's
    CVR address goes there)."""
    if not address:
        return
    ctx.store.tenant(tenant)                   # NotFound names `tenant list`
    if address.lower() not in {c["address"].lower() for c in ctx.store.contact_points(tenant)}:
        raise AdminError(f"{address!r} is not a contact point of tenant {tenant} (see `dp2bridge "
                         f"contact-point list --tenant {tenant}`; add one with `dp2bridge "
                         f"contact-point add ADDRESS --name NAME`)")


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    v = sub.add_parser("tenant", help="tenants: authorities, companies, citizens",
                       description="Tenants: authorities, companies and citizens.")
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", parents=[parents["store"]], help="add a tenant",
                           description=ADD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add.add_argument("name", help="short name: lowercase letters, digits and '-', e.g. kommune")
    add.add_argument("--kind", required=True, metavar="KIND",
                     help=f"one of: {', '.join(TENANT_KINDS)}")
    add.add_argument("--display-name", help='e.g. "Demo Kommune" (default: the name)')
    add.add_argument("--cvr", help="8-digit CVR number (required, except for citizens)")
    add.add_argument("--domain", action="append", default=[],
                     help="mail domain of the tenant (repeat for several; at least one)")
    add.add_argument("--may-address-cpr", action="store_true",
                     help="allow this company to address citizens by CPR (authorities always may)")
    add.set_defaults(func=cmd_add)
    lst = verbs.add_parser("list", parents=[parents["store"]], help="list tenants",
                           description="List every tenant with its kind, CVR and domains.")
    lst.set_defaults(func=cmd_list)
    show = verbs.add_parser("show", parents=[parents["store"]], help="show one tenant",
                            description="Show a tenant: domains, policy, accounts, contact points.")
    show.add_argument("name")
    show.set_defaults(func=cmd_show)
    pol = verbs.add_parser("policy", parents=[parents["store"]], help="show or set a tenant's policy",
                           description="Show a tenant's policy, or set keys with KEY=VALUE (KEY= unsets). "
                                       "Keys: may_address_cpr (true/false), default_contact_point "
                                       "(address), handling_names_caseworker (true/false: HandlingStarted "
                                       "receipts name the caseworker), user_cert_days (days), "
                                       "encrypt_at_rest (never, when-possible, required: copies "
                                       "S/MIME-encrypted to their owner's certificate), "
                                       "require_signed_encryption (true/false: open an S/MIME-encrypted "
                                       "submission only when it is signed inside).")
    pol.add_argument("name")
    pol.add_argument("settings", nargs="*", metavar="KEY=VALUE")
    pol.set_defaults(func=cmd_policy)
