"""`dp2bridge token add|list|revoke`: bearer tokens for the HTTP API (issue 6).

A token lets a system (or a person's script) call the API as one account, under
the same identity and sending rules as that account's SMTP submissions.  It is
printed once by `token add` and never again: only its SHA-256 is stored.
Rows and audit events are in store.tokens.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from bridge.admin.context import Context, emit, table

ADD_HELP = """\
Make a bearer token for LOGIN and print it once (keep it like a password; it
cannot be shown again: revoke it and make a new one if it is lost).  A system
sends it as `Authorization: Bearer TOKEN` to the HTTP API (listen addresses in
[api] of bridge.toml), e.g.

  curl --cacert certs/ca.pem -H "Authorization: Bearer $TOKEN" \\
       -H "Content-Type: application/xml" --data-binary @memo.xml \\
       https://127.0.0.1:1443/v1/messages

example:
  dp2bridge token add system@kommune.dp2.test --name esdh
"""


def _repo(ctx: Context) -> Any:
    from bridge.store.tokens import TokenRepository
    return TokenRepository(ctx.store)


def _actor() -> str:
    return f"cli:{os.environ.get('SUDO_USER') or os.environ.get('USER') or os.getuid()}"


def cmd_add(ctx: Context) -> int:
    a = ctx.args
    token = _repo(ctx).add(a.login, a.name, _actor())
    login, name = a.login.strip().lower(), a.name.strip().lower()
    emit(a, {"login": login, "name": name, "token": token},
         f"API token {name} for {login} (shown only now / vises kun nu):\n{token}")
    if any(acc["login"] == login and acc["disabled"] for acc in ctx.store.accounts()):
        print(f"note: {login} is disabled, so the API refuses this token until "
              f"`dp2bridge account enable {login}`", file=sys.stderr)
    return 0


def cmd_list(ctx: Context) -> int:
    a = ctx.args
    table(a, _repo(ctx).list(a.login),
          (("login", "LOGIN"), ("name", "NAME"), ("created_at", "CREATED"),
           ("last_used_at", "LAST USED"), ("revoked_at", "REVOKED")),
          "no API tokens; make one with `dp2bridge token add LOGIN --name NAME`")
    return 0


def cmd_revoke(ctx: Context) -> int:
    a = ctx.args
    _repo(ctx).revoke(a.login, a.name, _actor())
    login, name = a.login.strip().lower(), a.name.strip().lower()
    emit(a, {"login": login, "name": name, "revoked": True}, f"API token {name} of {login} revoked")
    return 0


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    v = sub.add_parser("token", help="HTTP API bearer tokens: add, list, revoke",
                       description="Bearer tokens for the HTTP API, one or more per account.")
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", parents=[parents["store"]], description=ADD_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           help="make a token; it is printed once")
    add.add_argument("login", help="the account the token acts as")
    add.add_argument("--name", default="default", help="a label such as esdh or print (default: default)")
    add.set_defaults(func=cmd_add)
    lst = verbs.add_parser("list", parents=[parents["store"]], help="list tokens (never the tokens)",
                           description="List the API tokens of LOGIN, or of every account.")
    lst.add_argument("login", nargs="?", help="only this account's tokens")
    lst.set_defaults(func=cmd_list)
    rev = verbs.add_parser("revoke", parents=[parents["store"]], help="revoke a token; it stops at once",
                           description="Revoke LOGIN's token NAME; requests with it get 401 at once.")
    rev.add_argument("login")
    rev.add_argument("name")
    rev.set_defaults(func=cmd_revoke)
