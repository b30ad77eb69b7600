"""What the admin CLI prints when a command fails for a reason that is not a BridgeError.

`cli.main` catches the rest here, so no exception text or traceback reaches an
admin: a file the command could not read or write (`os_problem`), a database it
could not use (`database_problem`), and a bug (`crash_report`: the traceback
goes to a private file the admin can send to the maintainers, and the message
says where it is).  Set DP2BRIDGE_TRACEBACK=1 to get the traceback on stderr
instead, when developing.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import traceback
from pathlib import Path
from typing import Any

TRACEBACK_ENV = "DP2BRIDGE_TRACEBACK"


def os_problem(exc: OSError) -> str | None:
    """A readable text for a file or directory the command could not use, else None."""
    if exc.filename is None:
        return None
    name = exc.filename
    reason = (exc.strerror or "cannot use it").rstrip(".")
    if isinstance(exc, IsADirectoryError):
        todo = "give a file name, not a directory"
    elif isinstance(exc, FileNotFoundError):
        todo = "check the path; the directory must exist"
    elif isinstance(exc, (FileExistsError, NotADirectoryError)):
        todo = "a directory is needed there, not a file; check the path"
    elif isinstance(exc, PermissionError):
        todo = "check its permissions, or run the command as the user that owns the home"
    else:
        todo = "check the path and that there is room on the disk"
    return f"cannot use {name}: {reason}; {todo}"


def database_problem(exc: Exception, url: str, config_path: Any) -> str | None:
    """A readable text for a database the command could not use, else None (a bug)."""
    from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
    if not isinstance(exc, DBAPIError):
        return None
    sqlite = url.startswith("sqlite")
    where = url.removeprefix("sqlite:///") if sqlite else url.split("@")[-1]  # no user or password
    first = str(exc.orig).strip().splitlines()[0] if exc.orig and str(exc.orig).strip() else ""
    if isinstance(exc, IntegrityError):
        return "the change conflicts with one made at the same time; look with the list command and retry"
    if sqlite and "locked" in first:
        return (f"the database {where} is busy: another process kept it locked for 30 seconds "
                f"(a long command or a backup?); try again when it has finished")
    if sqlite and ("not a database" in first or "malformed" in first):
        return (f"{where} is not a usable SQLite database ({first}); check database.url in "
                f"{config_path}, or restore the file from a backup")
    if sqlite and "readonly" in first:
        return (f"this user may not write the database {where} (or its directory): run the command "
                f"as the user that owns the home, or fix the permissions")
    if sqlite and "unable to open" in first:
        return (f"cannot open the database {where}: it must be a file that this user may read and "
                f"write, in a writable directory; check database.url in {config_path}")
    if isinstance(exc, OperationalError) or sqlite:
        reason = f": {first}" if first else ""
        hint = ("is database.url in {0} right?" if sqlite else
                "is the database server running, and is database.url in {0} right?")
        return f"cannot use the database ({where}){reason} (hint: {hint.format(config_path)})"
    return (f"the database ({where}) refused the command ({first or 'no reason given'}); "
            f"if it happens again, run `dp2bridge upgrade --config {config_path}`")


def crash_report(exc: BaseException, argv: list[str]) -> str:
    """Write exc's traceback to a private file; the text to print says where it is."""
    text = "".join(traceback.format_exception(exc))
    command = " ".join(argv[:2])               # the command and verb only: arguments may be secrets
    try:
        fd, name = tempfile.mkstemp(prefix="dp2bridge-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:     # mkstemp: mode 0600
            f.write(f"dp2bridge {command}\n\n{text}")
        where = f"the details are in {Path(name)}; please send that file to the maintainers"
    except OSError:
        where = f"run it again with {TRACEBACK_ENV}=1 to see the details, and send them to the maintainers"
    return (f"internal error in `dp2bridge {command}`: this is a bug in dp2bridge, not a mistake "
            f"of yours; {where}")


_BIND_ERRORS = {
    errno.EADDRINUSE: ("the address is already in use",
                       "stop the program that listens there (another dp2bridge?) or change {key} in {path}"),
    errno.EACCES: ("permission denied",
                   "ports below 1024 need root or CAP_NET_BIND_SERVICE; use a higher port in {key} in {path}"),
    errno.EADDRNOTAVAIL: ("this machine has no such address",
                          "give one of this machine's addresses in {key} in {path}"),
}


def bind_problem(exc: OSError, config: Any) -> str:
    """What `serve` prints when a listener cannot be opened: which address, which option."""
    found = re.search(r"\('([^']*)', (\d+)", str(exc))
    host, port = (found.group(1), int(found.group(2))) if found else ("", 0)
    keys = [f"{section}.{key}" for section, obj, names in (
                ("smtp", config.smtp, ("listen_starttls", "listen_implicit_tls")),
                ("imap", config.imap, ("listen_starttls", "listen_implicit_tls")),
                ("api", config.api, ("listen",)))
            for key in names for text in getattr(obj, key)
            if found and text.rsplit(":", 1)[-1] == str(port) and host in text]
    key = " / ".join(keys) or "the listen_* addresses"
    reason, todo = _BIND_ERRORS.get(exc.errno or 0, (exc.strerror or "the system refused it",
                                                     "check {key} in {path}"))
    where = f" on {host}:{port} ({key})" if found else ""
    return f"cannot serve: cannot listen{where}: {reason}; {todo.format(key=key, path=config.path)}"


def tls_problem(exc: Exception, config: Any) -> str:
    """What `serve` prints when the server certificate and key cannot be loaded."""
    cert, key = config.resolve(config.tls.cert_file), config.resolve(config.tls.key_file)
    if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        reason = "the key does not belong to the certificate"
    else:
        reason = "they are not a PEM certificate (chain) and its PEM private key"
    return (f"cannot serve: cannot load the TLS certificate {cert} (tls.cert_file) with the key {key} "
            f"(tls.key_file): {reason}; check them with `openssl x509 -in {cert} -noout -subject` and "
            f"`openssl pkey -in {key} -noout`, or fix tls.cert_file and tls.key_file in {config.path}")
