"""Admin-test fixtures: a demo home shared by the tests of a module that change nothing,
and `cli`, the `dp2bridge` command run in-process against the running bridge's home.

A PostgreSQL home costs seconds (a database, migrations, the demo seed), so
tests that only read, or that check a refusal left everything as it was, share
one home per module and engine.  Tests that change data use `home` from
tests/conftest.py, which is new for each test.  Test modules that need the CLI
against another home (no running bridge) define their own `cli` (built with
`in_process_cli`), which overrides this one.
"""

from __future__ import annotations

import io
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from sqlalchemy import create_engine, text

from bridge.admin.cli import main
from bridge.config import Config
from tests.conftest import PG_SKIP, RunningBridge, make_home, postgres_admin_url


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


def in_process_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                   config: Path | None = None) -> Cli:
    """run("tenant", "list", stdin="...") -> Result: `dp2bridge ARGV` in this process, with
    stdin a pipe holding that text; argparse's exits become exit codes.  With `config`, the
    home is named by $DP2BRIDGE_CONFIG."""
    if config is not None:
        monkeypatch.setenv("DP2BRIDGE_CONFIG", str(config))

    def run(*argv: object, stdin: str = "") -> Result:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:               # argparse: usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return run


@pytest.fixture
def cli(bridge: RunningBridge, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """run("audit", "verify") -> Result, against the running bridge's home."""
    return in_process_cli(capsys, monkeypatch, bridge.config.path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_home(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    tmp = tmp_path_factory.mktemp("shared-home")
    if request.param == "sqlite":
        yield make_home(tmp)
        return
    admin_url = postgres_admin_url()
    if admin_url is None:
        pytest.skip(PG_SKIP)
    with _database(admin_url) as url:
        yield make_home(Path(tmp), url)


class _database:
    """A fresh PostgreSQL database for the `with` block; dropped afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"dp2test_{uuid.uuid4().hex[:12]}"
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> str:
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        return f"{self.admin_url.rsplit('/', 1)[0]}/{self.name}"

    def __exit__(self, *exc: object) -> None:
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.engine.dispose()
