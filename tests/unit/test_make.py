"""The Makefile's set-up targets, checked with `make -n` on a copy of the Makefile.

`make run` must create .venv, install, make the demo home only when ./var holds
none, and serve; a second `make run` must reuse ./var and skip pip when
pyproject.toml did not change.  `make test` must install the test extras
(again only when needed) and run pytest with a timeout.  `.ci/run` must turn
on the PostgreSQL half.  Nothing is installed or served here: `-n` only prints.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def dry_run(tree: Path, target: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    proc = subprocess.run([MAKE or "make", "-n", target], cwd=tree, capture_output=True, text=True,
                          timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def installed(tree: Path) -> None:
    """A .venv whose install stamps are newer than pyproject.toml."""
    (tree / ".venv" / "bin").mkdir(parents=True)
    (tree / ".venv" / "bin" / "python").touch()
    old = (tree / "pyproject.toml").stat().st_mtime - 100
    os.utime(tree / "pyproject.toml", (old, old))
    for stamp in (".installed-run", ".installed-test"):
        (tree / ".venv" / stamp).touch()


def test_first_run_creates_venv_installs_inits_the_demo_and_serves(tree: Path) -> None:
    out = dry_run(tree, "run")
    steps = ["-m venv .venv", "pip --disable-pip-version-check -q install -e .",
             "dp2bridge init --home ./var --demo", "dp2bridge serve --config ./var/bridge.toml"]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), out
    assert "python3.11" in out


def test_second_run_reuses_var_and_skips_pip(tree: Path) -> None:
    installed(tree)
    (tree / "var").mkdir()
    (tree / "var" / "bridge.toml").touch()
    out = dry_run(tree, "run")
    assert out.strip() == ".venv/bin/dp2bridge serve --config ./var/bridge.toml"


def test_run_with_var_but_changed_pyproject_reinstalls_without_init(tree: Path) -> None:
    installed(tree)
    (tree / "var").mkdir()
    (tree / "var" / "bridge.toml").touch()
    newer = (tree / ".venv" / ".installed-run").stat().st_mtime + 100
    os.utime(tree / "pyproject.toml", (newer, newer))
    out = dry_run(tree, "run")
    assert "install -e ." in out and "init" not in out and "-m venv" not in out


def test_test_installs_extras_once_and_runs_pytest_with_a_timeout(tree: Path) -> None:
    first = dry_run(tree, "test")
    assert "install -e '.[test]'" in first and "-m pytest" in first and "--timeout=" in first
    assert "openssl" in first and "apt-get install -y" in first
    installed(tree)
    again = dry_run(tree, "test")
    assert "pip" not in again and "-m pytest -q -p no:cacheprovider --timeout=" in again


def test_ci_run_enables_postgres_and_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    default = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    assert f'DP2BRIDGE_TEST_POSTGRES="${{DP2BRIDGE_TEST_POSTGRES:-{default}}}"' in text
    assert text.rstrip().endswith("make test")
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
