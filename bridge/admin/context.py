"""What every admin command shares: the lazily opened config and store, secret input and output.

A command gets a `Context`; its `config` is read on first use (from `--config`,
else `$DP2BRIDGE_CONFIG`, else `./var/bridge.toml`) and its `store` is opened
on first use and checked to be at the newest schema.  Secrets are read from
standard input only (`read_secret`); output is an aligned table or, with
`--json`, JSON on standard output.  Errors are raised as BridgeError and
printed by cli.main; nothing here prints them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from bridge.clock import SystemClock
from bridge.config import Config, load_config
from bridge.errors import AdminError, ConfigError

DEFAULT_CONFIG = "./var/bridge.toml"
CONFIG_ENV = "DP2BRIDGE_CONFIG"


class Context:
    """Lazily opened config and store for one command."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._config: Config | None = None
        self._store: Any = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = _load(getattr(self.args, "config", None))
        return self._config

    @property
    def loaded_config(self) -> Config | None:
        """The config if a command has read it, else None (never reads it)."""
        return self._config

    @property
    def store(self) -> Any:
        """The SQL store, refusing a database that does not exist or is not migrated."""
        if self._store is None:
            path = self.sqlite_path()
            if path is not None and not path.exists():
                raise AdminError(
                    f"the database {path} does not exist (is --config right? create a home with "
                    f"`dp2bridge init --home DIR`, or the schema with "
                    f"`dp2bridge upgrade --config {self.config.path}`)")
            self._store = self.open_store()
            self._store.check_schema()
        return self._store

    def open_store(self) -> Any:
        from bridge.store.sql import SqlStore
        return SqlStore(self.config.database_url, SystemClock())

    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite URL, else None."""
        url = self.config.database_url
        prefix = "sqlite:///"
        return Path(url[len(prefix):]) if url.startswith(prefix) else None

    def admin(self) -> Any:
        from bridge.core.admin import Admin
        user = os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
        return Admin(self.store, SystemClock(), f"cli:{user}")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _load(given: str | None) -> Config:
    path = given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    if not given and not Path(path).exists():
        source = f"${CONFIG_ENV}" if os.environ.get(CONFIG_ENV) else "the default"
        raise ConfigError(Path(path).absolute(), [
            f"file not found ({source}); give --config FILE or set {CONFIG_ENV}, "
            f"or create a home with `dp2bridge init --home ./var --demo`"])
    return load_config(path)


def read_secret(args: argparse.Namespace) -> str | None:
    """The password on stdin when --password-stdin was given, else None (one line; a
    terminal gets a prompt without echo)."""
    if not getattr(args, "password_stdin", False):
        return None
    if sys.stdin is None:
        raise AdminError("--password-stdin was given but there is no standard input")
    if sys.stdin.isatty():
        return getpass.getpass("Password (not shown): ")
    line = sys.stdin.readline()
    if not line:
        raise AdminError("--password-stdin was given but standard input is empty; "
                         "pipe the password in, e.g. `printf '%s\\n' \"$PW\" | dp2bridge ...`")
    return line.rstrip("\r\n")


MAX_INPUT = 10 * 1024 * 1024        # a key, certificate or CA chain file is far smaller


def read_input(name: str, limit: int = MAX_INPUT) -> bytes:
    """A key or certificate file an admin gave, refused with a readable text when it cannot be
    read or is larger than `limit` (a wrong file: nothing is read into memory then)."""
    try:
        with open(name, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise AdminError(f"cannot read {name}: {exc.strerror or 'the system refused it'}") from None
    if len(data) > limit:
        raise AdminError(f"{name} is larger than {limit // (1024 * 1024)} MB, far too large for a key "
                         f"or certificate file: is it the right file?")
    return data


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print `data` as JSON with --json, else the human `text`."""
    print(json.dumps(data, indent=2, default=str) if wants_json(args) else text)


def table(args: argparse.Namespace, rows: list[dict], columns: Sequence[tuple[str, str]],
          empty: str) -> None:
    """Rows as JSON (--json) or as an aligned table with a header; `empty` goes to stderr
    when there are no rows, so stdout stays parseable."""
    if wants_json(args):
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        print(empty, file=sys.stderr)
        return
    cells = [[title for _, title in columns]]
    cells += [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def record(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """One record as JSON (--json) or as "key: value" lines."""
    if wants_json(args):
        print(json.dumps(data, indent=2, default=str))
        return
    width = max(len(k) for k in data) + 2
    for key, value in data.items():
        print(f"{key + ':':{width}}{_cell(value)}")


def _cell(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)
