"""`dp2bridge <noun> <verb>`: the admin command line (DESIGN.md section 9).

`init`, `serve` and `upgrade` live here; each noun has its own module
(tenants.py, accounts.py, contact_points.py, certs.py, consent.py, audit.py,
trace.py, verify.py) that adds its verbs to the one parser.  Commands call core.admin or the store.  Secrets are read from stdin
(`--password-stdin`) or printed once when generated; never taken from the
command line.  Errors print what was wrong and what to do: exit 1 for a
refused command, 2 for configuration or usage problems, 130 when interrupted
(Ctrl-C); no traceback ever (failures.py).  With --json a failure also prints
{"error": TEXT, "exit_code": N} on stdout, so the output always parses.  Admin commands work
while `serve` runs: they share the database, not the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from bridge.admin import accounts, certs, contact_points, tenants
from bridge.admin import audit, consent, trace, verify
from bridge.admin import pgp
from bridge.admin import tokens
from bridge.admin import failures
from bridge.admin.context import Context, wants_json
from bridge.errors import BridgeError, ConfigError

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130                  # 128 + SIGINT, as shells report it

INIT_HELP = """\
Create a home directory: DIR/bridge.toml, a development CA and server
certificate under DIR/certs/, each tenant's CA and evidence certificate under
DIR/certs/tenants/, and the SQLite database.  Listeners are on 127.0.0.1:
BASE+587 (SMTP submission, STARTTLS), BASE+465 (submission, TLS), BASE+143
(IMAP, STARTTLS) and BASE+993 (IMAP, TLS).  With --demo it adds the demo
tenants and accounts and prints their random passwords, once.

example:
  dp2bridge init --home ./var --demo
"""


def cmd_init(ctx: Context) -> int:
    from bridge.admin.home import init_home
    a = ctx.args
    accounts_ = init_home(Path(a.home), demo=a.demo, port_base=a.port_base,
                          directory_domain=a.directory_domain, hostname=a.hostname,
                          progress=lambda s: print(f"init: {s}", file=sys.stderr, flush=True))
    home = Path(a.home).absolute()
    print(f"Initialised {home}\n  config: {home / 'bridge.toml'}\n"
          f"  CA for mail clients to trust: {home / 'certs' / 'ca.pem'}")
    if accounts_:
        print("\nDemo accounts (passwords are shown only now; reset with "
              "`dp2bridge account passwd LOGIN --password-stdin`):")
        for acc in accounts_:
            print(f"  {acc.login:34} {acc.password}   ({acc.role})")
    base = a.port_base
    print(f"\nSMTP submission: 127.0.0.1:{base + 587} (STARTTLS), 127.0.0.1:{base + 465} (TLS); "
          f"log in with the full address"
          f"\nIMAP: 127.0.0.1:{base + 993} (TLS), 127.0.0.1:{base + 143} (STARTTLS)"
          f"\nHTTPS API for systems (MeMo): https://127.0.0.1:{base + 443}/openapi.json"
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
    try:
        asyncio.run(serve(c, ready))
    except ssl.SSLError as exc:
        print(f"dp2bridge: {failures.tls_problem(exc, c)}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:                   # a listener, else a file or directory it names
        text = failures.os_problem(exc) if exc.filename else failures.bind_problem(exc, c)
        print(f"dp2bridge: cannot serve: {text} (configuration: {c.path})"
              if exc.filename else f"dp2bridge: {text}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_upgrade(ctx: Context) -> int:
    from bridge.store import migrate
    store = ctx.open_store()
    steps = logging.getLogger("alembic.runtime.migration")
    progress, level = _MigrationProgress(), steps.level
    try:
        before = migrate.current(store.read_engine)
        if before != migrate.head():
            print(f"upgrade: {before or 'empty'} -> {migrate.head()}; on a large database a step "
                  f"can take minutes", file=sys.stderr, flush=True)
            steps.addHandler(progress)
            steps.setLevel(logging.INFO)
        store.migrate()
        after = migrate.current(store.read_engine)
    finally:
        steps.removeHandler(progress)
        steps.setLevel(level)
        store.close()
    print(f"database schema: {before or 'empty'} -> {after}" if before != after
          else f"database schema is up to date ({after})")
    return 0


class _MigrationProgress(logging.Handler):
    """Alembic's "Running upgrade A -> B, doc" records as one "upgrade: A -> B: doc" line each."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Running upgrade "):
            step, _, doc = text.removeprefix("Running upgrade ").partition(", ")
            step = step.strip()
            print(f"upgrade: {'empty ' if step.startswith('->') else ''}{step}: {doc.splitlines()[0] if doc else ''}",
                  file=sys.stderr, flush=True)


# --- parser --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dp2bridge", description="dp2bridge: secure mail bridge for Danish Digital Post.",
        epilog="Commands that use a home take --config FILE (default: $DP2BRIDGE_CONFIG, else "
               "./var/bridge.toml). `dp2bridge COMMAND --help` tells more.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", metavar="FILE",
                        help="bridge.toml (default: $DP2BRIDGE_CONFIG, else ./var/bridge.toml)")
    store = argparse.ArgumentParser(add_help=False, parents=[config])
    store.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parents = {"config": config, "store": store}

    init = sub.add_parser("init", help="create a home directory: config, certificates, database",
                          description=INIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("--home", required=True, metavar="DIR", help="directory to create (e.g. ./var)")
    init.add_argument("--demo", action="store_true", help="add the demo tenants and accounts")
    init.add_argument("--port-base", type=int, default=1000, metavar="N",
                      help="ports are N+587, N+465 (SMTP), N+143, N+993 (IMAP); default 1000")
    init.add_argument("--directory-domain", default="dp2.test", metavar="DOMAIN",
                      help="domain of CPR/CVR addresses: <cpr>@cpr.DOMAIN; default dp2.test")
    init.add_argument("--hostname", default="localhost", help="the bridge's host name; default localhost")
    init.set_defaults(func=cmd_init)

    serve = sub.add_parser("serve", parents=[config], help="run every listener and the delivery worker",
                           description="Run the SMTP listeners and the delivery worker until "
                                       "SIGTERM or Ctrl-C; queued deliveries survive a stop.")
    serve.set_defaults(func=cmd_serve)
    upgrade = sub.add_parser("upgrade", parents=[config], help="bring the database schema up to date",
                             description="Apply the database migrations this version needs "
                                         "(safe to repeat; also creates the schema of an empty database).")
    upgrade.set_defaults(func=cmd_upgrade)

    tenants.register(sub, parents)
    accounts.register(sub, parents)
    contact_points.register(sub, parents)
    certs.register(sub, parents)
    audit.register(sub, parents)
    trace.register(sub, parents)
    verify.register(sub, parents)
    consent.register(sub, parents)
    pgp.register(sub, parents)
    tokens.register(sub, parents)
    return p


class _Parser(argparse.ArgumentParser):
    """argparse, plus a JSON error object on stdout for a usage error when --json was given."""

    json_errors = False                       # set by main() for one command line

    def error(self, message: str) -> NoReturn:
        for action in self._actions:             # `dp2bridge tenant`: name the verbs it takes
            if (isinstance(action, argparse._SubParsersAction) and action.metavar
                    and message.endswith(f"required: {action.metavar}")):
                message += (f"; give one of: {', '.join(action.choices)} "
                            f"(`{self.prog} --help` tells what each does)")
        if _Parser.json_errors:
            _json_error(f"{self.prog}: {message}", EXIT_USAGE)
        super().error(message)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    _Parser.json_errors = "--json" in argv
    try:
        if any(_password_option(a) for a in argv):
            # argparse would take it for --password-stdin and echo the password in its error
            parser.error("no command takes a password on the command line (it would stay in the "
                         "shell history); give it on standard input with --password-stdin, e.g. "
                         "`printf '%s\\n' \"$PW\" | dp2bridge account passwd LOGIN --password-stdin`")
        args = parser.parse_args(argv)
    finally:
        _Parser.json_errors = False
    ctx = Context(args)
    func: Callable[[Context], int] = args.func

    def fail(text: str, code: int = EXIT_REFUSED, problems: list[str] | None = None) -> int:
        print(f"dp2bridge: {text}{':' if problems else ''}", file=sys.stderr)
        for problem in problems or []:
            print(f"  - {problem}", file=sys.stderr)
        if wants_json(args):
            _json_error(text, code, problems)
        return code
    try:
        return func(ctx)
    except ConfigError as exc:
        return fail(f"configuration {exc.path} has {len(exc.problems)} problem(s)", EXIT_USAGE,
                    list(exc.problems))
    except BridgeError as exc:
        return fail(exc.public)
    except BrokenPipeError:                  # e.g. `dp2bridge account list | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_REFUSED
    except KeyboardInterrupt:                # Ctrl-C: a transaction not yet committed is rolled back
        print(file=sys.stderr)
        return fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        text = _known_problem(exc, ctx)
        if text is None:
            if os.environ.get(failures.TRACEBACK_ENV):
                raise
            text = failures.crash_report(exc, argv)
        return fail(text)
    finally:
        ctx.close()


def _password_option(arg: str) -> bool:
    """--password, --passwd, --pw or any other short form of --password-stdin, with or without =VALUE."""
    name, eq, _ = arg.partition("=")
    if name == "--password-stdin":
        return bool(eq)
    return name in ("--passwd", "--pw") or (len(name) >= 6 and "--password-stdin".startswith(name))


def _json_error(text: str, code: int, problems: list[str] | None = None) -> None:
    """The error as one JSON object on stdout, so `--json` output always parses."""
    data: dict[str, Any] = {"error": text, "exit_code": code}
    if problems:
        data["problems"] = problems
    print(json.dumps(data, indent=2), flush=True)


def _known_problem(exc: Exception, ctx: Context) -> str | None:
    """A readable text for a file or database the command could not use, else None (a bug)."""
    if isinstance(exc, OSError):
        return failures.os_problem(exc)
    if ctx.loaded_config is None:
        return None
    return failures.database_problem(exc, ctx.loaded_config.database_url, ctx.loaded_config.path)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
