"""`dp2bridge consent grant|revoke|list`: a citizen's consent to share read status.

Without consent, a citizen reading a letter leaves no trace the sender can see.
With it, the sender gets a signed ContentAccessTracking receipt when the
citizen's client marks one of its letters read (DESIGN.md section 5).  The
sender is a party: a tenant (by name), a CVR number, or any address of it.
Logic is in core.admin.Admin.consent and store/receipts.py.
"""

from __future__ import annotations

import argparse
from typing import Any

from bridge.admin.context import Context, emit, table

HELP = """\
A citizen's standing consent that a sender learns when they read its letters.

examples:
  dp2bridge consent grant anna@borger.dp2.test kommune
  dp2bridge consent revoke anna@borger.dp2.test cvr:29190000
  dp2bridge consent list anna@borger.dp2.test
"""


def cmd_change(ctx: Context) -> int:
    a = ctx.args
    given = a.verb == "grant"
    changed, label = ctx.admin().consent(a.citizen, a.sender, given)
    citizen = a.citizen.strip().lower()
    if given:
        text = (f"{citizen} now shares read status with {label}" if changed
                else f"{citizen} already shares read status with {label}")
    else:
        text = (f"{citizen} no longer shares read status with {label}" if changed
                else f"{citizen} did not share read status with {label}; nothing changed")
    emit(a, {"citizen": citizen, "sender": label, "consent": given, "changed": changed}, text)
    return 0


def cmd_list(ctx: Context) -> int:
    table(ctx.args, ctx.admin().consents(ctx.args.citizen),
          (("citizen", "CITIZEN"), ("sender", "SENDER"), ("sender_name", "NAME"), ("since", "SINCE")),
          "no consents: no sender learns when letters are read")
    return 0


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    v = sub.add_parser("consent", help="citizens' consent to share read status with a sender",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text in (("grant", "let SENDER learn when CITIZEN reads its letters (signed read receipts)"),
                       ("revoke", "stop sharing read status with SENDER")):
        x = verbs.add_parser(verb, parents=[parents["store"]], help=text, description=text)
        x.add_argument("citizen", metavar="CITIZEN", help="the citizen's login")
        x.add_argument("sender", metavar="SENDER", help="tenant name, cvr:NUMBER, or an address of the sender")
        x.set_defaults(func=cmd_change)
    lst = verbs.add_parser("list", parents=[parents["store"]], help="list consents",
                           description="List consents, of one citizen or of all.")
    lst.add_argument("citizen", nargs="?", metavar="CITIZEN")
    lst.set_defaults(func=cmd_list)
