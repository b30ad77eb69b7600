"""`dp2bridge` admin commands, called in-process as `main([...])`: exit code, stdout, stderr.

Store-touching commands run on SQLite and PostgreSQL (the `home` fixture).
Passwords that commands set or print are checked the way a login checks
them: against the hashes `store.credentials()` returns, with `verify_any`.
"""

from __future__ import annotations

import argparse
import smtplib
from pathlib import Path
from typing import Iterator

import pytest

from bridge.admin.cli import build_parser, main
from bridge.clock import SystemClock
from bridge.config import Config, load_config
from bridge.crypto.passwords import verify_any
from bridge.store.sql import SqlStore
from tests.conftest import ANNA, CASEWORKER, JOBCENTER, LAWYER, PASSWORDS, RunningBridge
from tests.helpers.smtp import connect
from tests.admin.conftest import Cli, in_process_cli


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """run("tenant", "list", stdin="...") -> Result; stdin is a pipe with that text."""
    return in_process_cli(capsys, monkeypatch)


@pytest.fixture
def cfg(home: Config, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The demo home (SQLite or PostgreSQL), named by $DP2BRIDGE_CONFIG."""
    monkeypatch.setenv("DP2BRIDGE_CONFIG", str(home.path))
    return home


@pytest.fixture
def shared(shared_home: Config, monkeypatch: pytest.MonkeyPatch) -> Config:
    """A demo home shared by this module's tests that change nothing (tests/admin/conftest.py)."""
    monkeypatch.setenv("DP2BRIDGE_CONFIG", str(shared_home.path))
    return shared_home


def open_store(config: Config) -> Iterator[SqlStore]:
    s = SqlStore(config.database_url, SystemClock())
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def store(cfg: Config) -> Iterator[SqlStore]:
    yield from open_store(cfg)


@pytest.fixture
def shared_store(shared: Config) -> Iterator[SqlStore]:
    yield from open_store(shared)


def password_works(store: SqlStore, login: str, password: str) -> bool:
    creds = store.credentials(login)
    return creds is not None and verify_any(password, [h for _, h in creds[2]]) is not None


# --- init ----------------------------------------------------------------------------

def test_init_demo_makes_a_home_and_prints_each_password_once(tmp_path: Path, cli: Cli) -> None:
    r = cli("init", "--home", tmp_path / "var", "--demo", "--port-base", 3000,
            "--directory-domain", "dp.example")
    assert r.code == 0, r.err
    config = load_config(tmp_path / "var" / "bridge.toml")
    assert config.smtp.listen_starttls == ("127.0.0.1:3587",)
    assert config.smtp.listen_implicit_tls == ("127.0.0.1:3465",)
    assert config.imap.listen_starttls == ("127.0.0.1:3143",)
    assert config.imap.listen_implicit_tls == ("127.0.0.1:3993",)
    assert config.bridge.directory_domain == "dp.example"
    assert (tmp_path / "var" / "certs" / "ca.pem").is_file()
    assert "init: creating the development CA" in r.err     # progress goes to stderr
    printed = {line.split()[0]: line.split()[1] for line in r.out.splitlines()
               if line.startswith("  ") and "@" in line}
    assert set(printed) == set(PASSWORDS)
    store = SqlStore(config.database_url, SystemClock())
    try:
        for login, password in printed.items():
            assert r.out.count(password) == 1
            assert password_works(store, login, password)
    finally:
        store.close()
    assert "127.0.0.1:3587 (STARTTLS)" in r.out and "dp2bridge serve --config" in r.out


def test_init_without_demo_has_no_tenants(tmp_path: Path, cli: Cli) -> None:
    assert cli("init", "--home", tmp_path / "h").code == 0
    r = cli("tenant", "list", "--config", tmp_path / "h" / "bridge.toml")
    assert (r.code, r.out) == (0, "")
    assert "no tenants yet" in r.err


def test_init_refuses_an_existing_home_and_says_how_to_serve_it(tmp_path: Path, cli: Cli) -> None:
    assert cli("init", "--home", tmp_path / "h").code == 0
    before = (tmp_path / "h" / "bridge.toml").read_bytes()
    r = cli("init", "--home", tmp_path / "h", "--demo")
    assert r.code == 1
    assert "already a dp2bridge home" in r.err and "dp2bridge serve --config" in r.err
    assert (tmp_path / "h" / "bridge.toml").read_bytes() == before


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "notes.txt").write_text("mine")
    r = cli("init", "--home", tmp_path / "h")
    assert r.code == 1 and "not an empty directory" in r.err and "another --home" in r.err
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["notes.txt"]


def test_init_into_an_empty_directory_works(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "h").mkdir()
    assert cli("init", "--home", tmp_path / "h").code == 0
    assert (tmp_path / "h" / "bridge.toml").is_file()


@pytest.mark.parametrize("args, words", [
    (["--port-base", "65000"], "--port-base must be between"),
    (["--port-base", "-1"], "--port-base must be between"),
    (["--directory-domain", "not a domain"], "is not a domain name"),
    (["--hostname", "mail_server!"], "is not a host name"),
])
def test_init_refuses_bad_values_and_leaves_nothing(tmp_path: Path, cli: Cli, args: list[str],
                                                    words: str) -> None:
    r = cli("init", "--home", tmp_path / "h", *args)
    assert r.code == 1 and words in r.err
    assert list(tmp_path.iterdir()) == []


# --- tenants -------------------------------------------------------------------------

def test_tenant_add_list_show(cfg: Config, cli: Cli) -> None:
    r = cli("tenant", "add", "forsikring", "--kind", "company", "--display-name", "Forsikring A/S",
            "--cvr", "12345678", "--domain", "Forsikring.DP2.test")
    assert (r.code, r.out.strip()) == (0, "tenant forsikring added")
    listing = cli("tenant", "list")
    assert listing.out.splitlines()[0].split() == ["NAME", "KIND", "CVR", "DOMAINS", "DISPLAY", "NAME"]
    assert any(line.split()[:4] == ["forsikring", "company", "12345678", "forsikring.dp2.test"]
               for line in listing.out.splitlines())
    rows = cli("tenant", "list", "--json").json()
    assert [t["name"] for t in rows] == ["advokat", "borger", "forsikring", "kommune"]
    shown = cli("tenant", "show", "kommune", "--json").json()
    assert shown["cvr"] == "29190000" and shown["contact_points"] == [JOBCENTER]
    assert shown["accounts"] == 1 and shown["domains"] == ["kommune.dp2.test"]
    text = cli("tenant", "show", "kommune").out
    assert "kind:" in text and "authority" in text


def test_tenant_add_json_returns_the_tenant(cfg: Config, cli: Cli) -> None:
    r = cli("tenant", "add", "by", "--kind", "authority", "--cvr", "11111111", "--domain", "by.dk",
            "--domain", "BY.dk", "--may-address-cpr", "--json")
    t = r.json()
    assert (t["name"], t["kind"], t["domains"], t["policy"]) == ("by", "authority", ["by.dk"],
                                                                 {"may_address_cpr": True})


@pytest.mark.parametrize("args, words", [
    (["x", "--kind", "ministry", "--cvr", "12345678", "--domain", "x.dk"], "give --kind one of"),
    (["x", "--kind", "company", "--cvr", "1234", "--domain", "x.dk"], "is not a CVR number"),
    (["x", "--kind", "company", "--domain", "x.dk"], "need --cvr"),
    (["x", "--kind", "company", "--cvr", "12345678"], "at least one mail domain with --domain"),
    (["x", "--kind", "citizens", "--cvr", "12345678", "--domain", "x.dk"], "leave out --cvr"),
    (["X Y", "--kind", "citizens", "--domain", "x.dk"], "lowercase a-z letters"),
    (["x", "--kind", "citizens", "--domain", "x dk"], "is not a domain name"),
    (["kommune", "--kind", "company", "--cvr", "12345678", "--domain", "x.dk"], "already exists"),
    (["x", "--kind", "company", "--cvr", "12345678", "--domain", "kommune.dp2.test"],
     "already belongs to tenant 'kommune'"),
])
def test_tenant_add_refusals_say_what_to_do(shared: Config, cli: Cli, args: list[str], words: str) -> None:
    before = cli("tenant", "list", "--json").json()
    r = cli("tenant", "add", *args)
    assert r.code == 1 and words in r.err and r.out == ""
    assert r.err.startswith("dp2bridge: ") and "Traceback" not in r.err
    assert cli("tenant", "list", "--json").json() == before


def test_tenant_show_unknown_points_to_the_list(shared: Config, cli: Cli) -> None:
    r = cli("tenant", "show", "nope")
    assert r.code == 1 and "no tenant named 'nope'" in r.err and "dp2bridge tenant list" in r.err


# --- accounts ------------------------------------------------------------------------

def test_account_add_with_password_from_stdin(cfg: Config, cli: Cli, store: SqlStore) -> None:
    r = cli("account", "add", "Ny@Kommune.dp2.test", "--name", "Ny Medarbejder", "--password-stdin",
            stdin="Correct-Horse-9\n")
    assert (r.code, r.out.strip()) == (0, "account ny@kommune.dp2.test added")
    assert "Correct-Horse-9" not in r.out + r.err
    assert password_works(store, "ny@kommune.dp2.test", "Correct-Horse-9")
    assert not password_works(store, "ny@kommune.dp2.test", "Correct-Horse-9\n")
    event = store.audit_events("kommune")[-1]
    assert (event["kind"], event["subject"], event["protocol"]) == \
        ("account.added", "ny@kommune.dp2.test", "cli")
    assert event["actor"].startswith("cli:")


def test_account_add_generates_a_password_shown_once(cfg: Config, cli: Cli, store: SqlStore) -> None:
    r = cli("account", "add", "ny@advokat.dp2.test")
    assert r.code == 0
    password = r.out.split("password (shown only now): ")[1].strip()
    assert password_works(store, "ny@advokat.dp2.test", password)
    listing = cli("account", "list")
    assert password not in listing.out and "ny@advokat.dp2.test" in listing.out
    j = cli("account", "add", "to@advokat.dp2.test", "--json").json()
    assert j["login"] == "to@advokat.dp2.test" and password_works(store, j["login"], j["password"])


def test_citizen_account_needs_and_keeps_the_cpr(cfg: Config, cli: Cli) -> None:
    assert cli("account", "add", "bo@borger.dp2.test", "--cpr", "0202802345", "--name", "Bo").code == 0
    rows = cli("account", "list", "--tenant", "borger", "--json").json()
    bo = next(a for a in rows if a["login"] == "bo@borger.dp2.test")
    assert (bo["role"], bo["party"], bo["display_name"]) == ("citizen", "cpr:0202802345", "Bo")
    assert {a["tenant"] for a in rows} == {"borger"}


@pytest.mark.parametrize("args, stdin, words", [
    (["bo@borger.dp2.test"], "", "need --cpr"),
    (["bo@borger.dp2.test", "--cpr", "010170-1234"], "", "is not a CPR number"),
    (["bo@borger.dp2.test", "--cpr", "0101701234"], "", "already has an account"),
    (["ny@kommune.dp2.test", "--cpr", "0202802345"], "", "only citizens have --cpr"),
    (["ny@example.org"], "", "not a domain of any tenant"),
    (["not-an-address"], "", "is not a mail address"),
    ([CASEWORKER], "", "already an account or contact point"),
    ([JOBCENTER], "", "already an account or contact point"),
    (["ny@kommune.dp2.test", "--password-stdin"], "short\n", "too short"),
    (["ny@kommune.dp2.test", "--password-stdin"], "", "standard input is empty"),
])
def test_account_add_refusals_say_what_to_do(shared: Config, cli: Cli, args: list[str], stdin: str,
                                             words: str) -> None:
    before = cli("account", "list", "--json").json()
    r = cli("account", "add", *args, stdin=stdin)
    assert r.code == 1 and words in r.err and r.out == "", r.err
    assert cli("account", "list", "--json").json() == before


def test_account_list_of_unknown_tenant(shared: Config, cli: Cli) -> None:
    r = cli("account", "list", "--tenant", "nope")
    assert r.code == 1 and "no tenant named 'nope'" in r.err


def test_account_list_table_and_json(shared: Config, cli: Cli) -> None:
    rows = cli("account", "list", "--json").json()
    assert [a["login"] for a in rows] == sorted(PASSWORDS)
    assert all("password" not in key for a in rows for key in a)
    lines = cli("account", "list").out.splitlines()
    assert lines[0].split()[:3] == ["LOGIN", "TENANT", "ROLE"] and len(lines) == 4


def test_passwd_without_password_stdin_refuses_and_explains(shared: Config, cli: Cli,
                                                          shared_store: SqlStore) -> None:
    r = cli("account", "passwd", ANNA, stdin="Brand-New-Secret\n")
    assert r.code == 1
    assert "--password-stdin" in r.err and f"dp2bridge account passwd {ANNA} --password-stdin" in r.err
    assert password_works(shared_store, ANNA, PASSWORDS[ANNA])
    assert not password_works(shared_store, ANNA, "Brand-New-Secret")


def test_passwd_sets_the_password_from_stdin(cfg: Config, cli: Cli, store: SqlStore) -> None:
    r = cli("account", "passwd", ANNA.upper(), "--password-stdin", stdin="Brand-New-Secret\r\n")
    assert (r.code, r.out.strip()) == (0, f"password of {ANNA} changed")
    assert password_works(store, ANNA, "Brand-New-Secret")
    assert not password_works(store, ANNA, PASSWORDS[ANNA])
    assert store.audit_events("borger")[-1]["kind"] == "account.password"


@pytest.mark.parametrize("login, stdin, words", [
    (ANNA, "short\n", "too short: use at least 10 characters"),
    (ANNA, "x" * 2000 + "\n", "too long"),
    (ANNA, "", "standard input is empty"),
    ("nobody@borger.dp2.test", "Long-Enough-Secret\n", "no account"),
])
def test_passwd_refusals_keep_the_old_password(shared: Config, cli: Cli, shared_store: SqlStore,
                                               login: str, stdin: str, words: str) -> None:
    r = cli("account", "passwd", login, "--password-stdin", stdin=stdin)
    assert r.code == 1 and words in r.err
    assert password_works(shared_store, ANNA, PASSWORDS[ANNA])


# --- app passwords -------------------------------------------------------------------

def test_app_password_add_list_revoke(cfg: Config, cli: Cli, store: SqlStore) -> None:
    r = cli("account", "app-password", "add", ANNA, "Thunderbird")
    assert r.code == 0
    secret = r.out.rsplit(": ", 1)[1].strip()
    assert "thunderbird" in r.out and password_works(store, ANNA, secret)
    assert password_works(store, ANNA, PASSWORDS[ANNA])           # the main password still works
    rows = cli("account", "app-password", "list", ANNA, "--json").json()
    assert [(p["name"], p["revoked_at"], p["last_used_at"]) for p in rows] == [("thunderbird", None, None)]
    assert secret not in cli("account", "app-password", "list", ANNA).out
    r = cli("account", "app-password", "revoke", ANNA, "thunderbird")
    assert (r.code, r.out.strip()) == (0, f"app password thunderbird of {ANNA} revoked")
    assert not password_works(store, ANNA, secret)
    assert cli("account", "app-password", "list", ANNA, "--json").json()[0]["revoked_at"]
    again = cli("account", "app-password", "revoke", ANNA, "thunderbird")
    assert again.code == 1 and "no active app password" in again.err and "app-password list" in again.err
    j = cli("account", "app-password", "add", ANNA, "thunderbird", "--json").json()
    assert j["name"] == "thunderbird" and password_works(store, ANNA, j["password"])


def test_app_password_refusals(cfg: Config, cli: Cli) -> None:
    assert cli("account", "app-password", "add", ANNA, "phone").code == 0
    dup = cli("account", "app-password", "add", ANNA, "phone")
    assert dup.code == 1 and "already has an app password named 'phone'" in dup.err
    bad = cli("account", "app-password", "add", ANNA, "my phone!")
    assert bad.code == 1 and "short label" in bad.err
    unknown = cli("account", "app-password", "add", "nobody@borger.dp2.test", "phone")
    assert unknown.code == 1 and "no account" in unknown.err
    empty = cli("account", "app-password", "list", LAWYER)
    assert (empty.code, empty.out) == (0, "") and "has no app passwords" in empty.err


# --- contact points ------------------------------------------------------------------

def test_contact_point_add_grant_revoke_list(cfg: Config, cli: Cli) -> None:
    r = cli("contact-point", "add", "Sekretariat@advokat.dp2.test", "--name", "Sekretariat")
    assert (r.code, r.out.strip()) == (0, "contact point sekretariat@advokat.dp2.test added")
    cp = "sekretariat@advokat.dp2.test"
    r = cli("contact-point", "grant", cp, LAWYER)
    assert (r.code, r.out.strip()) == (0, f"{LAWYER} may now work {cp}")
    rows = {c["address"]: c for c in cli("contact-point", "list", "--json").json()}
    assert rows[cp]["granted"] == [LAWYER] and rows[cp]["tenant"] == "advokat"
    assert rows[JOBCENTER]["granted"] == [CASEWORKER]
    table = cli("contact-point", "list", "--tenant", "advokat").out.splitlines()
    assert table[0].split() == ["ADDRESS", "TENANT", "NAME", "GRANTED"] and len(table) == 2
    r = cli("contact-point", "revoke", cp, LAWYER, "--json")
    assert r.json()["granted"] == []
    again = cli("contact-point", "revoke", cp, LAWYER)
    assert again.code == 1 and "has no grant" in again.err


@pytest.mark.parametrize("argv, words", [
    (["add", "post@borger.dp2.test", "--name", "Post"], "contact points belong to authorities"),
    (["add", "post@example.org", "--name", "Post"], "not a domain of any tenant"),
    (["add", JOBCENTER, "--name", "Jobcenter"], "already an account or contact point"),
    (["add", "post@kommune.dp2.test", "--name", " "], "--name"),
    (["grant", JOBCENTER, LAWYER], "is not staff of the tenant"),
    (["grant", JOBCENTER, ANNA], "is not staff of the tenant"),
    (["grant", "nope@kommune.dp2.test", CASEWORKER], "no contact point"),
    (["grant", JOBCENTER, "nobody@kommune.dp2.test"], "no account"),
])
def test_contact_point_refusals(shared: Config, cli: Cli, argv: list[str], words: str) -> None:
    before = cli("contact-point", "list", "--json").json()
    r = cli("contact-point", *argv)
    assert r.code == 1 and words in r.err, r.err
    assert cli("contact-point", "list", "--json").json() == before


# --- the parser ----------------------------------------------------------------------

def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from command_paths(sub, prefix + (name,))


def test_the_parser_tree_has_every_command_of_the_design() -> None:
    paths = {" ".join(p) for p, _ in command_paths(build_parser())}
    for command in ("init", "serve", "tenant add", "tenant list", "tenant show", "account add",
                    "account list", "account passwd", "account app-password add",
                    "account app-password list", "account app-password revoke", "contact-point add",
                    "contact-point grant", "contact-point revoke", "contact-point list", "upgrade",
                    "cert show"):
        assert command in paths


def test_help_works_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [p for p, _ in command_paths(build_parser())]
    assert len(paths) > 15
    for path in paths:
        with pytest.raises(SystemExit) as exc:
            main([*path, "--help"])
        assert exc.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith("usage: dp2bridge") and len(out.splitlines()) > 3, path


def test_no_command_accepts_a_password_as_an_argument() -> None:
    for path, parser in command_paths(build_parser()):
        for action in parser._actions:
            names = " ".join(action.option_strings + [action.dest or ""]).lower()
            if any(word in names for word in ("pass", "secret", "pw")):
                assert action.option_strings == ["--password-stdin"], (path, action)
                assert action.nargs == 0, (path, action)         # a flag: it takes no value


@pytest.mark.parametrize("argv", [[], ["tenant"], ["account", "app-password"], ["tenant", "add", "x"],
                                  ["account", "add", "x@y.dk", "--password", "secret123456"]])
def test_usage_errors_exit_2_with_usage(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: dp2bridge" in capsys.readouterr().err


# --- the database: shared with a running server, missing, unreachable ---------------

def test_account_added_while_the_server_runs_can_log_in_at_once(sqlite_bridge: RunningBridge,
                                                                 cli: Cli) -> None:
    config = str(sqlite_bridge.config.path)
    r = cli("account", "add", "ny@kommune.dp2.test", "--config", config, "--password-stdin",
            stdin="Fresh-Staff-Secret\n")
    assert r.code == 0, r.err
    assert cli("contact-point", "grant", JOBCENTER, "ny@kommune.dp2.test", "--config", config).code == 0
    with connect(sqlite_bridge) as client:
        code, _ = client.login("ny@kommune.dp2.test", "Fresh-Staff-Secret")
        assert code == 235
        assert client.mail(JOBCENTER)[0] == 250          # the grant is seen by the server at once
    r = cli("account", "passwd", "ny@kommune.dp2.test", "--config", config, "--password-stdin",
            stdin="Second-Staff-Secret\n")
    assert r.code == 0
    with connect(sqlite_bridge) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("ny@kommune.dp2.test", "Fresh-Staff-Secret")


def write_home(tmp_path: Path, sqlite_home: Config, url: str) -> Path:
    """A config like sqlite_home's (same certificates) but with another database URL."""
    text = sqlite_home.path.read_text().replace('url = "sqlite:///bridge.sqlite3"', f'url = "{url}"')
    assert url in text
    path = sqlite_home.home / "other.toml"
    path.write_text(text)
    return path


def test_a_missing_sqlite_database_is_not_created(tmp_path: Path, sqlite_home: Config, cli: Cli) -> None:
    path = write_home(tmp_path, sqlite_home, "sqlite:///missing.sqlite3")
    r = cli("tenant", "list", "--config", path)
    assert r.code == 1 and "does not exist" in r.err and "dp2bridge upgrade --config" in r.err
    assert not (sqlite_home.home / "missing.sqlite3").exists()


def test_upgrade_creates_and_then_keeps_the_schema(tmp_path: Path, sqlite_home: Config, cli: Cli) -> None:
    path = write_home(tmp_path, sqlite_home, "sqlite:///fresh.sqlite3")
    r = cli("upgrade", "--config", path)
    assert r.code == 0 and "empty ->" in r.out
    assert cli("upgrade", "--config", path).out.startswith("database schema is up to date")
    r = cli("tenant", "add", "borger", "--kind", "citizens", "--domain", "b.dk", "--config", path)
    assert r.code == 0, r.err


def test_an_unreachable_database_is_explained_without_secrets(tmp_path: Path, sqlite_home: Config,
                                                              cli: Cli) -> None:
    path = write_home(tmp_path, sqlite_home, "postgresql+psycopg://user:Hemmelig@127.0.0.1:1/nodb")
    r = cli("account", "list", "--config", path)
    assert r.code == 1
    assert "cannot use the database (127.0.0.1:1/nodb)" in r.err and "is the database server running" in r.err
    assert "Hemmelig" not in r.err and "Traceback" not in r.err


# --- certificates --------------------------------------------------------------------

def test_cert_show_names_the_server_certificate_and_its_ca(sqlite_home: Config, cli: Cli) -> None:
    r = cli("cert", "show", "--config", sqlite_home.path, "--json")
    assert r.code == 0, r.err
    info = r.json()
    assert info["server"]["san"] == ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    assert info["server"]["issuer"] == info["ca"]["subject"] and info["ca"]["is_ca"] is True
    assert info["ca"]["file"] == str(sqlite_home.home / "certs" / "ca.pem")
    text = cli("cert", "show", "--config", sqlite_home.path).out
    assert "Server certificate:" in text and "sha256:" in text and "import ca_file into mail clients" in text
