"""How `dp2bridge` fails: a message that says what was wrong and what to do, the right exit
code, and never a traceback or exception text.

In-process runs (`cli`) check messages; runs of the real executable (`run_exe`) check what
depends on the process: exit codes, signals, what reaches the terminal.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from bridge.admin import tenants
from bridge.admin.cli import main
from bridge.config import Config
from tests.conftest import write_config
from tests.admin.conftest import Cli, in_process_cli

EXE = Path(sys.executable).with_name("dp2bridge")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """run("tenant", "list") -> Result, in-process; usage errors give argparse's exit code."""
    return in_process_cli(capsys, monkeypatch)


@pytest.fixture
def cfg(sqlite_home: Config, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("DP2BRIDGE_CONFIG", str(sqlite_home.path))
    monkeypatch.delenv("DP2BRIDGE_TRACEBACK", raising=False)
    return sqlite_home


def no_internals(text: str) -> None:
    """No traceback, exception class name or Python repr in text a user reads."""
    for word in ("Traceback", "Error:", "Errno", "Exception", "(most recent call", "('"):
        assert word not in text, text


# --- files the command cannot use ------------------------------------------------------

def test_crl_output_that_cannot_be_written_says_so(cfg: Config, cli: Cli, tmp_path: Path) -> None:
    r = cli("cert", "crl", "--tenant", "borger", "--output", tmp_path)
    assert r.code == 1
    assert f"cannot write --output {tmp_path}: Is a directory" in r.err
    assert "renewed in" in r.err
    no_internals(r.err)
    r = cli("cert", "crl", "--tenant", "borger", "--output", tmp_path / "missing" / "crl.pem")
    assert r.code == 1 and "No such file or directory; give a file in an existing directory" in r.err
    no_internals(r.err)


# --- bugs and Ctrl-C -------------------------------------------------------------------

def test_a_bug_prints_no_traceback_but_where_the_details_are(cfg: Config, cli: Cli,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: object) -> int:
        raise ValueError("secret-looking internals")
    monkeypatch.setattr(tenants, "cmd_list", broken)     # a stand-in for a bug in a command
    r = cli("tenant", "list")
    assert r.code == 1
    assert "internal error in `dp2bridge tenant list`: this is a bug" in r.err
    assert "secret-looking internals" not in r.err
    no_internals(r.err)
    report = Path(r.err.split("the details are in ")[1].split(";")[0])
    try:
        assert report.stat().st_mode & 0o077 == 0                  # private to the user
        text = report.read_text()
        assert "ValueError: secret-looking internals" in text and "Traceback" in text
    finally:
        report.unlink()


def test_a_bug_with_the_traceback_switch_raises(cfg: Config, cli: Cli,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: object) -> int:
        raise ValueError("for developers")
    monkeypatch.setattr(tenants, "cmd_list", broken)
    monkeypatch.setenv("DP2BRIDGE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="for developers"):
        main(["tenant", "list"])


def test_ctrl_c_at_the_password_prompt_exits_130_without_traceback(cfg: Config) -> None:
    proc = subprocess.Popen([str(EXE), "account", "add", "ctrlc@borger.dp2.test", "--cpr", "0202801234",
                             "--password-stdin", "--config", str(cfg.path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)                            # it waits for the password on stdin
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip() == "dp2bridge: interrupted" and out == ""
    listed = subprocess.run([str(EXE), "account", "list", "--config", str(cfg.path)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "ctrlc" not in listed.stdout       # nothing half done


# --- a database the command cannot use ------------------------------------------------

def test_a_file_that_is_not_a_database_is_named_without_exception_names(cfg: Config, cli: Cli) -> None:
    db = cfg.resolve("bridge.sqlite3")
    db.write_text("not a database\n" * 1000)
    r = cli("tenant", "list")
    assert r.code == 1
    assert f"{db} is not a usable SQLite database" in r.err and "restore the file from a backup" in r.err
    assert "DatabaseError" not in r.err
    no_internals(r.err)


def test_a_directory_instead_of_the_database_says_what_it_must_be(cfg: Config, cli: Cli) -> None:
    db = cfg.resolve("bridge.sqlite3")
    db.unlink()
    db.mkdir()
    r = cli("tenant", "list")
    assert r.code == 1
    assert f"cannot open the database {db}: it must be a file" in r.err
    assert "database server" not in r.err                 # SQLite has none
    no_internals(r.err)


# --- a configuration file the command cannot use ---------------------------------------

@pytest.mark.parametrize("make, words", [
    (lambda d: d, "is a directory; give the configuration file in it, e.g. {d}/bridge.toml"),
    (lambda d: d / "bridge.toml", "file not found (hint: create one with `dp2bridge init --home {d}`)"),
    (lambda d: d / "other.toml", "file not found; check the path (`dp2bridge init --home DIR` writes"),
])
def test_config_path_problems_say_what_to_give(cli: Cli, tmp_path: Path,
                                               make: Callable[[Path], Path], words: str) -> None:
    r = cli("tenant", "list", "--config", make(tmp_path))
    assert r.code == 2
    assert words.format(d=tmp_path) in r.err
    no_internals(r.err)


def test_a_config_that_is_not_text_is_not_called_bad_toml_with_codec_details(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_bytes(b"\xfc\x00\xff" * 100)
    r = cli("tenant", "list", "--config", path)
    assert r.code == 2
    assert "not a TOML text file (it is not UTF-8); is this the right file?" in r.err
    assert "codec" not in r.err
    no_internals(r.err)


# --- serve -----------------------------------------------------------------------------

@pytest.mark.parametrize("section, key", [("smtp", "listen_implicit_tls"), ("api", "listen")])
def test_serve_names_the_taken_address_and_its_option(sqlite_home: Config, section: str, key: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config(sqlite_home.home, **{section: {key: [f"127.0.0.1:{port}"]}})
        proc = subprocess.run([str(EXE), "serve", "--config", str(sqlite_home.path)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (         # after the log lines
        f"dp2bridge: cannot serve: cannot listen on 127.0.0.1:{port} ({section}.{key}): the address "
        f"is already in use; stop the program that listens there (another dp2bridge?) or change "
        f"{section}.{key} in {sqlite_home.path}")
    no_internals(proc.stderr)


# --- --json: JSON on stdout on success and on failure -----------------------------------

def test_json_refusal_is_a_json_object_on_stdout(cfg: Config, cli: Cli) -> None:
    r = cli("tenant", "show", "nosuch", "--json")
    assert r.code == 1
    assert json.loads(r.out) == {"error": "no tenant named 'nosuch' (see `dp2bridge tenant list`)",
                                 "exit_code": 1}
    assert "no tenant named 'nosuch'" in r.err              # and the human text on stderr


def test_json_usage_error_is_a_json_object_with_exit_code_2(cfg: Config, cli: Cli) -> None:
    r = cli("tenant", "show", "--json")
    assert r.code == 2
    assert json.loads(r.out) == {
        "error": "dp2bridge tenant show: the following arguments are required: name", "exit_code": 2}
    assert "usage: dp2bridge tenant show" in r.err


def test_json_config_problems_are_listed(cli: Cli, tmp_path: Path) -> None:
    r = cli("account", "list", "--json", "--config", tmp_path / "bridge.toml")
    assert r.code == 2
    data = json.loads(r.out)
    assert data["error"] == f"configuration {tmp_path / 'bridge.toml'} has 1 problem(s)"
    assert data["problems"][0].startswith("file not found")


def test_without_json_an_error_leaves_stdout_empty(cfg: Config, cli: Cli) -> None:
    r = cli("tenant", "show", "nosuch")
    assert r.code == 1 and r.out == ""
    assert r.err == "dp2bridge: no tenant named 'nosuch' (see `dp2bridge tenant list`)\n"


# --- unknown names ---------------------------------------------------------------------

def test_contact_point_list_of_an_unknown_tenant_is_refused(cfg: Config, cli: Cli) -> None:
    r = cli("contact-point", "list", "--tenant", "nosuch")
    assert r.code == 1
    assert r.err == "dp2bridge: no tenant named 'nosuch' (see `dp2bridge tenant list`)\n"
    r = cli("contact-point", "list", "--tenant", "borger")           # known, but has none
    assert r.code == 0 and r.out == ""
    assert "tenant borger has no contact points" in r.err


# --- no Python repr in human output ----------------------------------------------------

def test_trace_details_show_a_list_of_records_without_python_repr() -> None:
    from bridge.admin.trace import summary
    text = summary("submit.accepted", {"size": 220, "signatures": [
        {"method": "smime", "status": "none", "signer": None, "session_token": "s3cr3t"}]})
    assert text == 'size=220 signatures={"method": "smime", "status": "none"}'
    assert "None" not in text and "'" not in text and "s3cr3t" not in text


def test_init_where_no_directory_can_be_made_names_the_home(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a directory\n")
    home = tmp_path / "file" / "sub" / "home"
    r = cli("init", "--home", home)
    assert r.code == 1
    assert r.err.startswith(f"dp2bridge: cannot create {home}: ")
    assert r.err.rstrip().endswith("give a --home in a directory this user may write to")
    assert ".init-" not in r.err                             # not the temporary directory's name
    no_internals(r.err)


# --- progress of long operations -------------------------------------------------------

def test_upgrade_shows_each_migration_as_it_runs(cfg: Config, cli: Cli) -> None:
    cfg.resolve("bridge.sqlite3").write_bytes(b"")             # an empty database: every step runs
    r = cli("upgrade")
    assert r.code == 0, r.err
    lines = r.err.splitlines()
    assert lines[0].startswith("upgrade: empty -> ") and "can take minutes" in lines[0]
    assert lines[1].startswith("upgrade: empty -> 0001: ")
    assert lines[2].startswith("upgrade: 0001 -> 0002: ")
    assert all(line.startswith("upgrade: ") for line in lines)
    again = cli("upgrade")                                       # nothing to do: nothing on stderr
    assert again.code == 0 and again.err == "" and "up to date" in again.out


def test_a_read_only_sqlite_database_says_who_may_write_it(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from bridge.admin.failures import database_problem
    db = tmp_path / "bridge.sqlite3"
    writable = create_engine(f"sqlite:///{db}")
    with writable.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    read_only = create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")   # as a user without write access
    with pytest.raises(OperationalError) as exc, read_only.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
    text_ = database_problem(exc.value, f"sqlite:///{db}", tmp_path / "bridge.toml")
    assert text_ == (f"this user may not write the database {db} (or its directory): run the command "
                     f"as the user that owns the home, or fix the permissions")


# --- secrets ---------------------------------------------------------------------------

@pytest.mark.parametrize("option", [["--password", "Hemmelig-123"], ["--passw", "Hemmelig-123"],
                                    ["--pass=Hemmelig-123"], ["--password-stdin=Hemmelig-123"],
                                    ["--pw", "Hemmelig-123"]])
def test_a_password_on_the_command_line_is_refused_without_echoing_it(cfg: Config, cli: Cli,
                                                                      option: list[str]) -> None:
    r = cli("account", "add", "ny@borger.dp2.test", "--cpr", "0202801234", *option, "--json")
    assert r.code == 2
    assert "Hemmelig-123" not in r.out + r.err        # argparse echoed it: "unrecognized arguments: ..."
    assert "no command takes a password on the command line" in r.err and "--password-stdin" in r.err
    assert json.loads(r.out)["exit_code"] == 2
    assert "ny@borger.dp2.test" not in cli("account", "list").out


@pytest.mark.parametrize("damage, reason", [
    ("cert", "they are not a PEM certificate (chain) and its PEM private key"),
    ("key", "the key does not belong to the certificate"),
])
def test_serve_with_a_bad_server_certificate_names_the_files(sqlite_home: Config, damage: str,
                                                            reason: str) -> None:
    cert = sqlite_home.resolve(sqlite_home.tls.cert_file)
    key = sqlite_home.resolve(sqlite_home.tls.key_file)
    if damage == "cert":
        cert.write_text("not a certificate\n")
    else:                                    # a real key, but another certificate's
        key.write_bytes((sqlite_home.home / "certs" / "tenants" / "borger" / "ca.key").read_bytes())
    proc = subprocess.run([str(EXE), "serve", "--config", str(sqlite_home.path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dp2bridge: cannot serve: cannot load the TLS certificate {cert} "
                           f"(tls.cert_file) with the key {key} (tls.key_file): {reason}; ")
    assert "listen" not in last and "_ssl.c" not in proc.stderr
    no_internals(proc.stderr)


# --- files an admin gives ---------------------------------------------------------------

@pytest.mark.parametrize("argv", [["pgp", "import", "anna@borger.dp2.test"],
                                  ["cert", "import", "anna@borger.dp2.test"],
                                  ["cert", "trust", "--tenant", "kommune"]])
def test_a_huge_file_is_refused_without_reading_it(cfg: Config, cli: Cli, tmp_path: Path,
                                                  argv: list[str]) -> None:
    huge = tmp_path / "backup.tar"
    with huge.open("wb") as f:
        f.truncate(3 * 1024 ** 3)              # sparse: 3 GB that reading whole would hold in memory
    r = cli(*argv, huge)
    assert r.code == 1
    assert r.err == (f"dp2bridge: {huge} is larger than 10 MB, far too large for a key or "
                     f"certificate file: is it the right file?\n")


# --- usage errors ----------------------------------------------------------------------

def test_a_noun_without_a_verb_lists_its_verbs_and_exits_2() -> None:
    proc = subprocess.run([str(EXE), "tenant"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == (
        "dp2bridge tenant: error: the following arguments are required: VERB; give one of: "
        "add, list, show, policy (`dp2bridge tenant --help` tells what each does)")


def test_default_contact_point_must_be_one_of_the_tenants(cfg: Config, cli: Cli) -> None:
    r = cli("tenant", "policy", "kommune", "default_contact_point=nosuch@kommune.dp2.test")
    assert r.code == 1
    assert "'nosuch@kommune.dp2.test' is not a contact point of tenant kommune" in r.err
    assert "contact-point list --tenant kommune" in r.err
    assert "default_contact_point" not in cli("tenant", "policy", "kommune").out     # not set
    ok = cli("tenant", "policy", "kommune", "default_contact_point=jobcenter@kommune.dp2.test")
    assert ok.code == 0 and "default_contact_point = jobcenter@kommune.dp2.test" in ok.out


@pytest.mark.parametrize("url", ["mysql://bridge:Hemmelig-123@db.example/dp2",
                                 "mysql://bridge:Hem/mel@ig-123@db.example/dp2"])
def test_a_wrong_database_url_is_shown_without_its_password(sqlite_home: Config, cli: Cli, url: str) -> None:
    path = write_config(sqlite_home.home, url)
    r = cli("tenant", "list", "--config", path)
    assert r.code == 2
    assert "database.url: 'mysql://bridge:***@db.example/dp2' is neither sqlite:///FILE nor" in r.err
    assert "Hemmelig" not in r.err and "ig-123" not in r.err


def test_serve_with_a_file_as_blob_dir_names_the_file_not_the_ports(sqlite_home: Config, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "blobs.txt"
    not_a_dir.write_text("a file\n")
    write_config(sqlite_home.home, bridge={"blob_dir": str(not_a_dir)})
    proc = subprocess.run([str(EXE), "serve", "--config", str(sqlite_home.path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dp2bridge: cannot serve: cannot use {not_a_dir}: ")
    assert "a directory is needed there, not a file" in last and "listen" not in last
    no_internals(proc.stderr)


def test_token_for_a_disabled_account_says_it_will_not_work_yet(cfg: Config, cli: Cli) -> None:
    assert cli("account", "disable", "sagsbehandler@kommune.dp2.test").code == 0
    r = cli("token", "add", "sagsbehandler@kommune.dp2.test", "--name", "esdh")
    assert r.code == 0 and r.out.splitlines()[-1].startswith("dp2_")
    assert r.err == ("note: sagsbehandler@kommune.dp2.test is disabled, so the API refuses this token "
                     "until `dp2bridge account enable sagsbehandler@kommune.dp2.test`\n")
    assert cli("account", "enable", "sagsbehandler@kommune.dp2.test").code == 0
    assert cli("token", "add", "sagsbehandler@kommune.dp2.test", "--name", "esdh2").err == ""


@pytest.mark.parametrize("cpr, day_month", [("3213701234", "day 32, month 13"),
                                            ("0100701234", "day 01, month 00")])
def test_a_cpr_number_that_cannot_start_with_a_date_is_refused(cfg: Config, cli: Cli, cpr: str,
                                                             day_month: str) -> None:
    r = cli("account", "add", "ny@borger.dp2.test", "--cpr", cpr)
    assert r.code == 1
    assert r.err == (f"dp2bridge: --cpr {cpr} does not start with a birth date DDMMYY ({day_month}); "
                     f"check the number\n")
    assert "ny@borger.dp2.test" not in cli("account", "list").out


def test_a_replacement_cpr_number_with_day_plus_60_is_accepted(cfg: Config, cli: Cli) -> None:
    r = cli("account", "add", "ny@borger.dp2.test", "--cpr", "6101701234")
    assert r.code == 0, r.err
