"""bridge.toml: the documented example, validation that reports every problem, paths.

The example (config/bridge.example.toml) must name every option of every
section dataclass with a prose comment above it and the default as its value,
so the documentation cannot drift from the code (mox generates its config docs
for the same reason).  `load_config` must report all problems at once, each
with its key; `dp2bridge serve` prints them and exits 2.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bridge.admin.cli import main
from bridge.config import SECTIONS, Config, load_config, parse_listen
from bridge.crypto.certs import create_dev_ca, issue_server_cert
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "bridge.example.toml"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with certs/ca.pem, server.pem and server.key (generated, 0600 key)."""
    home = tmp_path_factory.mktemp("certs-home")
    ca_cert, ca_key = create_dev_ca(home / "certs", "test CA")
    issue_server_cert(ca_cert, ca_key, home / "certs", ["localhost"], ["127.0.0.1"])
    return home / "certs"


def home_with(tmp_path: Path, certs: Path, text: str, name: str = "bridge.toml") -> Path:
    """A home directory holding the certificates and a config file with `text`."""
    shutil.copytree(certs, tmp_path / "certs")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the example ------------------------------------------------------------------

def test_example_names_every_option_of_every_section() -> None:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(raw) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(raw[section]) == names, f"[{section}] differs from {cls.__name__}"


def test_every_example_option_has_a_prose_comment_above_it() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    options = [i for i, line in enumerate(lines) if line and line[0].isalpha() and " = " in line]
    assert len(options) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values())
    for i in options:
        above = lines[i - 1]
        assert above.startswith("# ") and len(above) > 10, f"no comment above {lines[i]!r}"


def test_example_loads_and_every_value_is_the_default(tmp_path: Path, certs: Path) -> None:
    config = load_config(home_with(tmp_path, certs, EXAMPLE.read_text(encoding="utf-8")))
    for section, cls in SECTIONS.items():
        assert getattr(config, section) == cls(), f"[{section}] in the example is not the default"


def test_an_empty_file_means_every_default(tmp_path: Path, certs: Path) -> None:
    config = load_config(home_with(tmp_path, certs, ""))
    assert all(getattr(config, s) == cls() for s, cls in SECTIONS.items())


# --- every problem, with its key ----------------------------------------------------

THREE_MISTAKES = """\
[smtp]
listen_starttls = ["localhost"]
max_recipients = "many"

[delivery]
poll_intervall = 2.0
"""
MISTAKE_KEYS = ("smtp.listen_starttls", "smtp.max_recipients", "delivery.poll_intervall")


def test_three_mistakes_are_all_reported_with_their_keys(tmp_path: Path, certs: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(home_with(tmp_path, certs, THREE_MISTAKES))
    problems = exc.value.problems
    assert len(problems) == 3, problems
    for key, problem in zip(sorted(MISTAKE_KEYS), sorted(problems), strict=True):
        assert problem.startswith(key + ":"), problems
    text = "\n".join(problems)
    assert "is not host:port" in text and "expected an integer" in text and "unknown option" in text
    assert "known: poll_interval" in text        # the hint names the option meant


def test_serve_with_three_mistakes_prints_them_all_and_exits_2(tmp_path: Path, certs: Path) -> None:
    path = home_with(tmp_path, certs, THREE_MISTAKES, "bad.toml")
    proc = subprocess.run([sys.executable, "-m", "bridge", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "3 problem(s)" in proc.stderr
    for key in MISTAKE_KEYS:
        assert f"  - {key}:" in proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text, key, words", [
    ("[smtp]\nlisten_implicit_tls = [\"0.0.0.0:25\"]\n", "smtp.listen_implicit_tls", "port 25"),
    ("[smtp]\nlisten_starttls = [\"127.0.0.1:99999\"]\n", "smtp.listen_starttls", "no valid port"),
    ("[imap]\nlisten_starttls = [\"127.0.0.1:1587\"]\n", "imap.listen_starttls", "also used by"),
    ("[smtp]\ntimeout = true\n", "smtp.timeout", "expected an integer"),
    ("[smtp]\nmax_message_size = 0\n", "smtp.max_message_size", "greater than 0"),
    ("[auth]\nfailure_delay = -1\n", "auth.failure_delay", "must not be negative"),
    ("[smtps]\nx = 1\n", "smtps", "unknown section"),
    ("smtp = 1\n", "smtp", "must be a table"),
    ("[bridge]\nhostname = \"mail example\"\n", "bridge.hostname", "not a domain name"),
    ("[database]\nurl = \"mysql://x\"\n", "database.url", "neither sqlite"),
    ("[logging]\nlevel = \"loud\"\n", "logging.level", "not one of"),
    ("[logging]\nlevels = { \"bridge.smtp\" = \"loud\" }\n", "logging.levels.bridge.smtp", "not one of"),
    ("[tls]\ncert_file = \"certs/missing.pem\"\n", "tls.cert_file", "does not exist"),
])
def test_each_check_names_its_key(tmp_path: Path, certs: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(home_with(tmp_path, certs, text))
    assert any(p.startswith(key + ":") and words in p for p in exc.value.problems), exc.value.problems


def test_a_key_readable_by_others_is_refused_with_a_hint(tmp_path: Path, certs: Path) -> None:
    path = home_with(tmp_path, certs, "")
    (tmp_path / "certs" / "server.key").chmod(0o644)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert any(p.startswith("tls.key_file:") and "chmod 600" in p for p in exc.value.problems)


def test_an_integer_is_accepted_where_a_number_is_expected(tmp_path: Path, certs: Path) -> None:
    config = load_config(home_with(tmp_path, certs, "[delivery]\npoll_interval = 2\n"))
    assert config.delivery.poll_interval == 2.0 and isinstance(config.delivery.poll_interval, float)


def test_a_single_listen_string_is_taken_as_a_list(tmp_path: Path, certs: Path) -> None:
    config = load_config(home_with(tmp_path, certs, "[smtp]\nlisten_starttls = \"[::1]:2587\"\n"))
    assert config.smtp.listen_starttls == ("[::1]:2587",)
    assert str(config.smtp_listeners()["starttls"][0]) == "[::1]:2587"
    assert parse_listen("[::1]:2587").host == "::1"


# --- unreadable files ---------------------------------------------------------------

def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nowhere" / "bridge.toml")
    assert "file not found" in exc.value.problems[0]
    assert "dp2bridge init --home" in exc.value.problems[0]


def test_cli_with_missing_config_exits_2_with_the_hint(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert "nope.toml" in err and "file not found" in err and "dp2bridge init" in err


def test_cli_without_any_config_names_the_ways_to_give_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DP2BRIDGE_CONFIG", raising=False)
    assert main(["tenant", "list"]) == 2
    err = capsys.readouterr().err
    assert "var/bridge.toml" in err and "--config" in err and "DP2BRIDGE_CONFIG" in err
    assert "dp2bridge init --home ./var --demo" in err


def test_toml_syntax_error_is_reported_with_its_line(tmp_path: Path, certs: Path) -> None:
    path = home_with(tmp_path, certs, "[smtp]\ntimeout = \n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert len(exc.value.problems) == 1
    assert "not valid TOML" in exc.value.problems[0] and "line 2" in exc.value.problems[0]


def test_cli_reports_toml_syntax_error_without_traceback(
        tmp_path: Path, certs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = home_with(tmp_path, certs, "[smtp\n")
    assert main(["tenant", "list", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid TOML" in err and str(path) in err


# --- relative paths -----------------------------------------------------------------

def test_relative_paths_resolve_against_the_config_directory(
        tmp_path: Path, certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home_with(home, certs, '[bridge]\nblob_dir = "data/blobs"\n'
                           '[database]\nurl = "sqlite:///data/bridge.sqlite3"\n'
                           '[logging]\nfile = "logs/bridge.log"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../home/bridge.toml")
    assert config.home == home
    assert config.resolve(config.bridge.blob_dir) == home / "data" / "blobs"
    assert config.resolve(config.logging.file) == home / "logs" / "bridge.log"
    assert config.resolve(config.tls.cert_file) == home / "certs" / "server.pem"
    assert config.database_url == f"sqlite:///{home}/data/bridge.sqlite3"


def test_absolute_paths_stay_as_they_are(tmp_path: Path, certs: Path) -> None:
    key = tmp_path / "certs" / "server.key"
    config = load_config(home_with(tmp_path, certs, f'[tls]\nkey_file = "{key}"\n'
                                                    f'[database]\nurl = "sqlite:////srv/db.sqlite3"\n'))
    assert config.resolve(config.tls.key_file) == key
    assert config.database_url == "sqlite:////srv/db.sqlite3"
    assert isinstance(config, Config)
