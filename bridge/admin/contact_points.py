"""`dp2bridge contact-point add|grant|revoke|list`: shared functional mailboxes.

A contact point (e.g. jobcenter@kommune.dp2.test) belongs to an authority or a
company; citizens write to it, and the staff granted to it read its shared
INBOX and send as it.  Validation and audit events are in core.admin.Admin.
"""

from __future__ import annotations

import argparse
from typing import Any

from bridge.admin.context import Context, emit, table

ADD_HELP = """\
Add a contact point: a shared mailbox of an authority or a company.  Its
address's domain picks the tenant.  Citizens may write to it; staff granted to it
(`dp2bridge contact-point grant`) receive its mail and may send as it.

example:
  dp2bridge contact-point add jobcenter@kommune.dp2.test --name Jobcenter
  dp2bridge contact-point grant jobcenter@kommune.dp2.test sagsbehandler@kommune.dp2.test
"""


def cmd_add(ctx: Context) -> int:
    a = ctx.args
    address = ctx.admin().add_contact_point(a.address, a.name)
    emit(a, _one(ctx, address), f"contact point {address} added")
    return 0


def cmd_grant(ctx: Context) -> int:
    a = ctx.args
    ctx.admin().grant(a.address, a.login)
    address, login = a.address.strip().lower(), a.login.strip().lower()
    emit(a, _one(ctx, address), f"{login} may now work {address}")
    return 0


def cmd_revoke(ctx: Context) -> int:
    a = ctx.args
    ctx.admin().revoke(a.address, a.login)
    address, login = a.address.strip().lower(), a.login.strip().lower()
    emit(a, _one(ctx, address), f"{login} may no longer work {address}")
    return 0


def cmd_list(ctx: Context) -> int:
    tenant = ctx.args.tenant
    if tenant:
        ctx.store.tenant(tenant)               # an unknown name is refused (NotFound names `tenant list`)
    table(ctx.args, ctx.store.contact_points(tenant),
          (("address", "ADDRESS"), ("tenant", "TENANT"), ("name", "NAME"), ("granted", "GRANTED")),
          (f"tenant {tenant} has no contact points" if tenant else "no contact points yet")
          + "; add one with `dp2bridge contact-point add ADDRESS --name NAME`")
    return 0


def _one(ctx: Context, address: str) -> dict:
    return next((c for c in ctx.store.contact_points() if c["address"] == address), {"address": address})


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    v = sub.add_parser("contact-point", help="shared functional mailboxes and who may work them",
                       description="Contact points: shared mailboxes and the staff granted to them.")
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", parents=[parents["store"]], help="add a contact point",
                           description=ADD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add.add_argument("address", help="e.g. jobcenter@kommune.dp2.test")
    add.add_argument("--name", required=True, help='e.g. "Jobcenter"')
    add.set_defaults(func=cmd_add)
    for verb, func, what in (("grant", cmd_grant, "let a staff account read and send as it"),
                             ("revoke", cmd_revoke, "take that access away again")):
        x = verbs.add_parser(verb, parents=[parents["store"]], help=what,
                             description=f"{verb.capitalize()}: {what}.")
        x.add_argument("address", help="the contact point")
        x.add_argument("login", help="a staff account of the same tenant")
        x.set_defaults(func=func)
    lst = verbs.add_parser("list", parents=[parents["store"]], help="list contact points and granted staff",
                           description="List contact points with the staff granted to each.")
    lst.add_argument("--tenant", help="only this tenant's contact points")
    lst.set_defaults(func=cmd_list)
