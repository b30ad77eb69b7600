"""Shared fixtures: demo homes on SQLite and PostgreSQL, a running bridge, passwords.

`home` is a real `dp2bridge init --demo` home in a temporary directory, with
known passwords set through the admin use cases.  `bridge` starts the real
App (every listener on 127.0.0.1, ephemeral ports, real TLS with the home's
dev CA) in a background thread with its own event loop, so tests drive it with
ordinary blocking clients (smtplib).  Tests marked `postgres` (or using the
`db` fixture's "postgresql" param) run against a fresh database on the
PostgreSQL server named by DP2BRIDGE_TEST_POSTGRES and are skipped, saying why,
when it is not set.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import create_engine, text

from bridge.admin.home import init_home
from bridge.app import App
from bridge.clock import SystemClock
from bridge.config import Config, load_config
from bridge.core.admin import Admin
from bridge.store.sql import SqlStore

PASSWORDS = {
    "sagsbehandler@kommune.dp2.test": "Sagsbehandler-Secret-1",
    "advokat@advokat.dp2.test": "Advokat-Secret-2",
    "anna@borger.dp2.test": "Anna-Secret-3-aeoa",
}
CASEWORKER, LAWYER, ANNA = PASSWORDS
JOBCENTER = "jobcenter@kommune.dp2.test"
ANNA_CPR_ADDR = "0101701234@cpr.dp2.test"
PG_ENV = "DP2BRIDGE_TEST_POSTGRES"
PG_SKIP = f"PostgreSQL tests need {PG_ENV} (e.g. {PG_ENV}=postgresql+psycopg://postgres@127.0.0.1:5432/postgres)"


def postgres_admin_url() -> str | None:
    value = os.environ.get(PG_ENV, "")
    if not value:
        return None
    return value if "://" in value else "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards."""
    admin_url = postgres_admin_url()
    if admin_url is None:
        pytest.skip(PG_SKIP)
    name = f"dp2test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> str:
    """"sqlite" or a PostgreSQL URL: tests using it run once on each engine."""
    if request.param == "sqlite":
        return "sqlite"
    return request.getfixturevalue("pg_database")


def write_config(home: Path, database_url: str | None = None, **sections: dict[str, Any]) -> Path:
    """Rewrite home/bridge.toml for tests: ephemeral ports, given overrides."""
    base: dict[str, dict[str, Any]] = {
        "bridge": {"hostname": "localhost", "directory_domain": "dp2.test"},
        "database": {"url": database_url or "sqlite:///bridge.sqlite3"},
        "smtp": {"listen_starttls": ["127.0.0.1:0"], "listen_implicit_tls": ["127.0.0.1:0"]},
        "imap": {"listen_starttls": ["127.0.0.1:0"], "listen_implicit_tls": ["127.0.0.1:0"]},
        "api": {"listen": ["127.0.0.1:0"]},
        "auth": {"failure_delay": 0.05, "failure_delay_max": 0.2},
        "delivery": {"poll_interval": 0.2},
        "logging": {"level": "debug"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
    path = home / "bridge.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_home(tmp: Path, db: str = "sqlite", **sections: dict[str, Any]) -> Config:
    """A demo home with PASSWORDS set, on SQLite or on the (empty) PostgreSQL database `db`.

    Homes are copies of one template made per test process (init, migrations and argon2
    hashing cost about a second; a copy costs milliseconds).  On PostgreSQL the database
    is re-created from a template database."""
    home = tmp / "home"
    shutil.copytree(_template_home(), home)
    url = None if db == "sqlite" else db
    if url:
        _clone_postgres(url)
    return load_config(write_config(home, url, **sections))


_TEMPLATES: dict[str, Any] = {}


def _template_home() -> Path:
    if "home" not in _TEMPLATES:
        root = Path(tempfile.mkdtemp(prefix="dp2-template-"))
        atexit.register(shutil.rmtree, root, True)
        home = root / "home"
        init_home(home, demo=True, port_base=20000, directory_domain="dp2.test", hostname="localhost")
        _set_passwords(load_config(home / "bridge.toml").database_url)
        _TEMPLATES["home"] = home
    return _TEMPLATES["home"]


def _set_passwords(url: str) -> None:
    store = SqlStore(url, SystemClock())
    try:
        admin = Admin(store, SystemClock(), "tests")
        for login, password in PASSWORDS.items():
            admin.set_password(login, password)
    finally:
        store.close()


def _clone_postgres(url: str) -> None:
    """Replace the empty database at `url` by a copy of a seeded template database."""
    from bridge.admin.home import seed_demo
    admin_url = postgres_admin_url()
    assert admin_url, PG_SKIP
    base = admin_url.rsplit("/", 1)[0]
    if "pg" not in _TEMPLATES:
        name = f"dp2tmpl_{uuid.uuid4().hex[:12]}"
        _pg_admin(f'CREATE DATABASE "{name}"')
        atexit.register(_pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        store = SqlStore(f"{base}/{name}", SystemClock())
        try:
            store.migrate()
            seed_demo(Admin(store, SystemClock(), "tests"), lambda s: None)
        finally:
            store.close()
        _set_passwords(f"{base}/{name}")
        _TEMPLATES["pg"] = name
    target = url.rsplit("/", 1)[1]
    _pg_admin(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
    _pg_admin(f'CREATE DATABASE "{target}" TEMPLATE "{_TEMPLATES["pg"]}"')


def _pg_admin(sql: str) -> None:
    engine = create_engine(postgres_admin_url() or "", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture
def home(tmp_path: Path, db: str) -> Config:
    return make_home(tmp_path, db)


@pytest.fixture
def sqlite_home(tmp_path: Path) -> Config:
    return make_home(tmp_path)


@dataclass
class RunningBridge:
    app: App
    config: Config
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def port(self, role: str) -> int:
        return next(p for r, _, p in self.app.bound() if r == role)

    @property
    def smtp_port(self) -> int:
        return self.port("smtp-starttls")

    @property
    def smtps_port(self) -> int:
        return self.port("smtp-implicit-tls")

    @property
    def ca_file(self) -> str:
        return str(self.config.resolve(self.config.tls.ca_file))

    @property
    def store(self) -> SqlStore:
        return self.app.store

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.call(self.app.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def start_bridge(config: Config, clock: Any = None) -> RunningBridge:
    """The real App on its own loop thread; `clock` (e.g. clock.FixedClock) replaces the system
    clock everywhere in it, for tests of what happens at a later date."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bridge-loop", daemon=True)
    thread.start()
    app = asyncio.run_coroutine_threadsafe(_make_app(config, clock), loop).result(30)
    running = RunningBridge(app, config, loop, thread)
    running.call(app.start())
    return running


async def _make_app(config: Config, clock: Any = None) -> App:
    return App(config, clock)


@pytest.fixture
def bridge(home: Config) -> Iterator[RunningBridge]:
    running = start_bridge(home)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def sqlite_bridge(sqlite_home: Config) -> Iterator[RunningBridge]:
    running = start_bridge(sqlite_home)
    try:
        yield running
    finally:
        running.stop()
