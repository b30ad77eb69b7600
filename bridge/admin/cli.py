"""`dp2bridge <noun> <verb>`: the admin command line (DESIGN.md section 9).

One table of subcommands, each a small function calling core.admin or the
store.  Secrets are read from stdin (`--password-stdin`) or printed once when
generated; never taken from the command line.  Errors print what was wrong and
what to do and exit 1 (2 for configuration or usage problems).  Works while
`serve` runs: it shares the database, not the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from bridge.clock import SystemClock
from bridge.config import Config, load_config
from bridge.errors import AdminError, BridgeError, ConfigError

EXIT_USAGE = 2


class Context:
    """Lazily opened config and store for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: Config | None = None
        self._store: Any = None

    @property
    def config(self) -> Config:
        if self._config is None:
            path = self.args.config or os.environ.get("DP2BRIDGE_CONFIG") or "./var/bridge.toml"
            self._config = load_config(path)
        return self._config

    @property
    def store(self) -> Any:
        if self._store is None:
            from bridge.store.sql import SqlStore
            self._store = SqlStore(self.config.database_url, SystemClock())
            self._store.check_schema()
        return self._store

    def admin(self) -> Any:
        from bridge.core.admin import Admin
        user = os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
        return Admin(self.store, SystemClock(), f"cli:{user}")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def read_secret(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    if sys.stdin.isatty():
        print("Type the password and press Enter (input is not hidden; prefer a pipe):", file=sys.stderr)
    line = sys.stdin.readline()
    if not line:
        raise AdminError("--password-stdin was given but standard input is empty")
    return line.rstrip("\r\n")


def out(args: argparse.Namespace, rows: list[dict] | dict, columns: Sequence[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2, default=str))
        return
    for row in rows if isinstance(rows, list) else [rows]:
        print("  ".join(f"{row.get(c)}" if not isinstance(row.get(c), list) else ",".join(row[c])
                        for c in columns))


# --- commands ------------------------------------------------------------------------

def cmd_init(ctx: Context) -> int:
    from bridge.admin.home import init_home
    a = ctx.args
    accounts = init_home(Path(a.home), demo=a.demo, port_base=a.port_base,
                         directory_domain=a.directory_domain, hostname=a.hostname,
                         progress=lambda s: print(f"init: {s}", file=sys.stderr))
    home = Path(a.home).absolute()
    print(f"Initialised {home}\n  config: {home / 'bridge.toml'}\n"
          f"  CA for mail clients to trust: {home / 'certs' / 'ca.pem'}")
    if accounts:
        print("\nDemo accounts (passwords are shown only now; reset with "
              "`dp2bridge account passwd LOGIN --password-stdin`):")
        for acc in accounts:
            print(f"  {acc.login:34} {acc.password}   ({acc.role})")
    base = a.port_base
    print(f"\nSMTP submission: 127.0.0.1:{base + 587} (STARTTLS), 127.0.0.1:{base + 465} (TLS)"
          f"\nServe it with: dp2bridge serve --config {home / 'bridge.toml'}")
    return 0


def cmd_serve(ctx: Context) -> int:
    from bridge.app import serve
    from bridge.logs import setup_logging
    c = ctx.config
    setup_logging(c.logging.level, str(c.resolve(c.logging.file)) if c.logging.file else "",
                  c.logging.levels)

    def ready(app: Any) -> None:
        for role, host, port in app.bound():
            print(f"listening: {role} on {host}:{port}", flush=True)
        print("ready", flush=True)
    asyncio.run(serve(c, ready))
    return 0


def cmd_tenant_add(ctx: Context) -> int:
    a = ctx.args
    ctx.admin().add_tenant(a.name, a.display_name or a.name, a.kind, a.cvr, a.domain, a.may_address_cpr)
    print(f"tenant {a.name} added")
    return 0


def cmd_tenant_list(ctx: Context) -> int:
    out(ctx.args, ctx.store.tenants(), ("name", "kind", "cvr", "domains", "display_name"))
    return 0


def cmd_tenant_show(ctx: Context) -> int:
    t = ctx.store.tenant(ctx.args.name)
    if ctx.args.json:
        out(ctx.args, t, ())
    else:
        for k, v in t.items():
            print(f"{k + ':':16}{', '.join(v) if isinstance(v, list) else v}")
    return 0


def cmd_account_add(ctx: Context) -> int:
    a = ctx.args
    generated = ctx.admin().add_account(a.login, a.name or "", a.cpr, read_secret(a))
    print(f"account {a.login.lower()} added")
    if generated:
        print(f"password (shown only now): {generated}")
    return 0


def cmd_account_list(ctx: Context) -> int:
    out(ctx.args, ctx.store.accounts(ctx.args.tenant), ("login", "tenant", "role", "display_name"))
    return 0


def cmd_account_passwd(ctx: Context) -> int:
    a = ctx.args
    if not a.password_stdin:
        raise AdminError("give the new password on standard input with --password-stdin, e.g. "
                         f"`printf '%s\\n' \"$PW\" | dp2bridge account passwd {a.login} --password-stdin`")
    ctx.admin().set_password(a.login, read_secret(a) or "")
    print(f"password of {a.login.lower()} changed")
    return 0


def cmd_app_password_add(ctx: Context) -> int:
    secret = ctx.admin().add_app_password(ctx.args.login, ctx.args.name)
    print(f"app password {ctx.args.name.lower()} for {ctx.args.login.lower()} (shown only now): {secret}")
    return 0


def cmd_app_password_list(ctx: Context) -> int:
    out(ctx.args, ctx.store.app_passwords(ctx.args.login), ("name", "created_at", "last_used_at",
                                                            "revoked_at"))
    return 0


def cmd_app_password_revoke(ctx: Context) -> int:
    ctx.admin().revoke_app_password(ctx.args.login, ctx.args.name)
    print(f"app password {ctx.args.name.lower()} of {ctx.args.login.lower()} revoked")
    return 0


def cmd_cp_add(ctx: Context) -> int:
    ctx.admin().add_contact_point(ctx.args.address, ctx.args.name)
    print(f"contact point {ctx.args.address.lower()} added")
    return 0


def cmd_cp_grant(ctx: Context) -> int:
    ctx.admin().grant(ctx.args.address, ctx.args.login)
    print(f"{ctx.args.login.lower()} may now work {ctx.args.address.lower()}")
    return 0


def cmd_cp_revoke(ctx: Context) -> int:
    ctx.admin().revoke(ctx.args.address, ctx.args.login)
    print(f"{ctx.args.login.lower()} may no longer work {ctx.args.address.lower()}")
    return 0


def cmd_cp_list(ctx: Context) -> int:
    out(ctx.args, ctx.store.contact_points(ctx.args.tenant), ("address", "tenant", "name", "granted"))
    return 0


# --- parser --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dp2bridge", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="bridge.toml (default: $DP2BRIDGE_CONFIG, else ./var/bridge.toml)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

    init = sub.add_parser("init", help="create a home directory: config, certificates, database")
    init.add_argument("--home", required=True, help="directory to create (e.g. ./var)")
    init.add_argument("--demo", action="store_true", help="add the demo tenants and accounts")
    init.add_argument("--port-base", type=int, default=1000, help="ports are BASE+587/465/143/993")
    init.add_argument("--directory-domain", default="dp2.test", help="CPR/CVR addresses' domain")
    init.add_argument("--hostname", default="localhost", help="the bridge's host name")
    init.set_defaults(func=cmd_init)

    serve = sub.add_parser("serve", parents=[common], help="run every listener and the delivery worker")
    serve.set_defaults(func=cmd_serve)

    _tenant(sub, common)
    _account(sub, common)
    _contact_point(sub, common)
    return p


def _verbs(sub: Any, noun: str, help_: str) -> Any:
    parser = sub.add_parser(noun, help=help_)
    return parser.add_subparsers(dest="verb", metavar="VERB", required=True)


def _tenant(sub: Any, common: Any) -> None:
    v = _verbs(sub, "tenant", "tenants: authorities, companies, citizens")
    add = v.add_parser("add", parents=[common], help="add a tenant")
    add.add_argument("name", help="short name, e.g. kommune")
    add.add_argument("--kind", required=True, choices=("authority", "company", "citizens"))
    add.add_argument("--display-name", help='e.g. "Demo Kommune"')
    add.add_argument("--cvr", help="8-digit CVR number (not for citizens)")
    add.add_argument("--domain", action="append", default=[], help="mail domain (repeatable)")
    add.add_argument("--may-address-cpr", action="store_true",
                     help="allow this non-authority tenant to address citizens by CPR")
    add.set_defaults(func=cmd_tenant_add)
    v.add_parser("list", parents=[common], help="list tenants").set_defaults(func=cmd_tenant_list)
    show = v.add_parser("show", parents=[common], help="show one tenant")
    show.add_argument("name")
    show.set_defaults(func=cmd_tenant_show)


def _account(sub: Any, common: Any) -> None:
    v = _verbs(sub, "account", "accounts (logins) and their app passwords")
    add = v.add_parser("add", parents=[common], help="add an account; prints a password unless "
                                                     "--password-stdin is given")
    add.add_argument("login", help="the account's mail address; its domain picks the tenant")
    add.add_argument("--name", help="display name")
    add.add_argument("--cpr", help="10-digit CPR number (citizens only)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=cmd_account_add)
    lst = v.add_parser("list", parents=[common], help="list accounts")
    lst.add_argument("--tenant")
    lst.set_defaults(func=cmd_account_list)
    pw = v.add_parser("passwd", parents=[common], help="set an account's password (from stdin)")
    pw.add_argument("login")
    pw.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    pw.set_defaults(func=cmd_account_passwd)
    app = v.add_parser("app-password", help="per-device passwords").add_subparsers(
        dest="app_verb", metavar="VERB", required=True)
    for verb, func, helptext in (("add", cmd_app_password_add, "create one; printed once"),
                                 ("revoke", cmd_app_password_revoke, "revoke one")):
        x = app.add_parser(verb, parents=[common], help=helptext)
        x.add_argument("login")
        x.add_argument("name", help="a label such as thunderbird or phone")
        x.set_defaults(func=func)
    x = app.add_parser("list", parents=[common], help="list an account's app passwords")
    x.add_argument("login")
    x.set_defaults(func=cmd_app_password_list)


def _contact_point(sub: Any, common: Any) -> None:
    v = _verbs(sub, "contact-point", "shared functional mailboxes and who may work them")
    add = v.add_parser("add", parents=[common], help="add a contact point")
    add.add_argument("address", help="e.g. jobcenter@kommune.dp2.test")
    add.add_argument("--name", required=True, help='e.g. "Jobcenter"')
    add.set_defaults(func=cmd_cp_add)
    for verb, func in (("grant", cmd_cp_grant), ("revoke", cmd_cp_revoke)):
        x = v.add_parser(verb, parents=[common], help=f"{verb} a staff account's access")
        x.add_argument("address")
        x.add_argument("login")
        x.set_defaults(func=func)
    lst = v.add_parser("list", parents=[common], help="list contact points and granted staff")
    lst.add_argument("--tenant")
    lst.set_defaults(func=cmd_cp_list)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = Context(args)
    func: Callable[[Context], int] = args.func
    try:
        return func(ctx)
    except ConfigError as exc:
        print(f"dp2bridge: configuration {exc.path} has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE
    except BridgeError as exc:
        print(f"dp2bridge: {exc.public}", file=sys.stderr)
        return 1
    finally:
        ctx.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
