"""`dp2bridge account add|list|passwd` and `account app-password add|list|revoke`.

Passwords are read from standard input (`--password-stdin`) or generated and
printed exactly once; no command takes one as an argument, so none ends up in
shell history or the process list.  Validation, hashing and audit events are
in core.admin.Admin.
"""

from __future__ import annotations

import argparse
from typing import Any

from bridge.admin.context import Context, emit, read_secret, table
from bridge.core.admin import MIN_PASSWORD
from bridge.errors import AdminError

STDIN_HELP = "read the password from standard input (one line); never give it as an argument"

ADD_HELP = f"""\
Add a login.  The address's domain picks the tenant: a citizen (needs --cpr) in a
citizens tenant, staff of the firm or authority otherwise.  Without
--password-stdin a random password is generated and printed once; with it, the
first line of standard input is the password (at least {MIN_PASSWORD} characters).

examples:
  dp2bridge account add anna@borger.dp2.test --name "Anna Demo" --cpr 0101701234
  printf '%s\\n' "$PW" | dp2bridge account add sb@kommune.dp2.test --password-stdin
"""

PASSWD_HELP = f"""\
Set an account's main password.  The new password is the first line of standard
input (at least {MIN_PASSWORD} characters); it is never taken from the command line.

example:
  printf '%s\\n' "$PW" | dp2bridge account passwd anna@borger.dp2.test --password-stdin
"""

APP_HELP = """\
App passwords are extra, named passwords for one device or program each
(e.g. "thunderbird", "phone").  Each is generated, printed once, works
wherever the main password does, and can be revoked alone.
"""


def check_cpr_date(cpr: str | None) -> None:
    """A CPR number starts with the birth date DDMMYY (a replacement number has day + 60);
    refuse a number whose first six digits cannot be one (a typo, or digits swapped)."""
    if not cpr or not (cpr := cpr.strip()).isdigit() or len(cpr) != 10:
        return                                 # the shape is checked by core.admin
    day, month = int(cpr[0:2]), int(cpr[2:4])
    if not (1 <= month <= 12 and (1 <= day <= 31 or 61 <= day <= 91)):
        raise AdminError(f"--cpr {cpr} does not start with a birth date DDMMYY (day {day:02}, month "
                         f"{month:02}); check the number")


def cmd_add(ctx: Context) -> int:
    a = ctx.args
    login = a.login.strip().lower()
    check_cpr_date(a.cpr)
    generated = ctx.admin().add_account(a.login, a.name or "", a.cpr, read_secret(a), system=a.system)
    text = f"account {login} added"
    if generated:
        text += f"\npassword (shown only now): {generated}"
    emit(a, {"login": login, "password": generated}, text)
    return 0


def cmd_list(ctx: Context) -> int:
    table(ctx.args, ctx.store.accounts(ctx.args.tenant),
          (("login", "LOGIN"), ("tenant", "TENANT"), ("role", "ROLE"), ("party", "PARTY"),
           ("display_name", "NAME"), ("disabled", "DISABLED")),
          "no accounts yet; add one with `dp2bridge account add`")
    return 0


def cmd_passwd(ctx: Context) -> int:
    a = ctx.args
    if not a.password_stdin:
        raise AdminError("give the new password on standard input with --password-stdin, e.g. "
                         f"`printf '%s\\n' \"$PW\" | dp2bridge account passwd {a.login} --password-stdin`")
    ctx.admin().set_password(a.login, read_secret(a) or "")
    login = a.login.strip().lower()
    emit(a, {"login": login, "changed": True}, f"password of {login} changed")
    return 0


def cmd_disable(ctx: Context) -> int:
    a = ctx.args
    disabled = a.verb == "disable"
    ctx.admin().set_disabled(a.login, disabled)
    login = a.login.strip().lower()
    emit(a, {"login": login, "disabled": disabled},
         f"{login} {'disabled: it can no longer log in or receive mail' if disabled else 'enabled'}")
    return 0


def cmd_app_add(ctx: Context) -> int:
    a = ctx.args
    secret = ctx.admin().add_app_password(a.login, a.name)
    login, name = a.login.strip().lower(), a.name.lower()
    emit(a, {"login": login, "name": name, "password": secret},
         f"app password {name} for {login} (shown only now): {secret}")
    return 0


def cmd_app_list(ctx: Context) -> int:
    table(ctx.args, ctx.store.app_passwords(ctx.args.login),
          (("name", "NAME"), ("created_at", "CREATED"), ("last_used_at", "LAST USED"),
           ("revoked_at", "REVOKED")),
          f"{ctx.args.login} has no app passwords; add one with "
          f"`dp2bridge account app-password add {ctx.args.login} NAME`")
    return 0


def cmd_app_revoke(ctx: Context) -> int:
    a = ctx.args
    ctx.admin().revoke_app_password(a.login, a.name)
    login, name = a.login.strip().lower(), a.name.lower()
    emit(a, {"login": login, "name": name, "revoked": True}, f"app password {name} of {login} revoked")
    return 0


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    v = sub.add_parser("account", help="accounts (logins) and their app passwords",
                       description="Accounts (logins), their passwords and app passwords.")
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", parents=[parents["store"]], formatter_class=raw, description=ADD_HELP,
                           help="add an account; prints a generated password unless --password-stdin")
    add.add_argument("login", help="the account's mail address; its domain picks the tenant")
    add.add_argument("--name", help="display name")
    add.add_argument("--cpr", help="10-digit CPR number (citizens only, required for them)")
    add.add_argument("--system", action="store_true",
                     help="an account for the tenant's own systems (MeMo drop folder, HTTP API tokens)")
    add.add_argument("--password-stdin", action="store_true", help=STDIN_HELP)
    add.set_defaults(func=cmd_add)
    lst = verbs.add_parser("list", parents=[parents["store"]], help="list accounts",
                           description="List accounts, optionally of one tenant.")
    lst.add_argument("--tenant", help="only this tenant's accounts")
    lst.set_defaults(func=cmd_list)
    pw = verbs.add_parser("passwd", parents=[parents["store"]], formatter_class=raw,
                          description=PASSWD_HELP, help="set an account's password (from stdin)")
    pw.add_argument("login")
    pw.add_argument("--password-stdin", action="store_true", help=STDIN_HELP)
    pw.set_defaults(func=cmd_passwd)
    for verb, text in (("disable", "stop an account from logging in and receiving mail (its mail stays)"),
                       ("enable", "let a disabled account log in and receive mail again")):
        x = verbs.add_parser(verb, parents=[parents["store"]], help=text, description=text)
        x.add_argument("login")
        x.set_defaults(func=cmd_disable)
    _app_passwords(verbs, parents)


def _app_passwords(verbs: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    app = verbs.add_parser("app-password", help="per-device passwords: add, list, revoke",
                           description=APP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    app_verbs = app.add_subparsers(dest="app_verb", metavar="VERB", required=True)
    for verb, func, helptext in (("add", cmd_app_add, "create one; the password is printed once"),
                                 ("revoke", cmd_app_revoke, "revoke one; it stops working at once")):
        x = app_verbs.add_parser(verb, parents=[parents["store"]], help=helptext, description=helptext)
        x.add_argument("login")
        x.add_argument("name", help="a label such as thunderbird or phone")
        x.set_defaults(func=func)
    x = app_verbs.add_parser("list", parents=[parents["store"]], help="list an account's app passwords",
                             description="List an account's app passwords (never the passwords).")
    x.add_argument("login")
    x.set_defaults(func=cmd_app_list)
