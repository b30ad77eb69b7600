"""`dp2bridge init`: a new home directory with config, dev CA, certificates, database and
(with --demo) the demo tenants of DESIGN.md section 9.

Layout of a home:
  bridge.toml            the configuration (see config/bridge.example.toml for every option)
  bridge.sqlite3         the database (SQLite; WAL files beside it)
  blobs/                 message blobs, content-addressed
  certs/ca.pem, ca.key   the development CA (key 0600); import ca.pem into mail clients
  certs/server.pem, .key the listeners' certificate chain and key
  certs/tenants/<name>/  each tenant's CA and evidence certificate (crypto/evidence.py)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bridge.admin.usercerts import ensure_bridge_identity
from bridge.clock import SystemClock
from bridge.config import load_config
from bridge.core.admin import Admin, check_domain
from bridge.crypto.certs import create_dev_ca, issue_server_cert
from bridge.errors import AdminError
from bridge.store.sql import SqlStore

CONFIG_TEMPLATE = """\
# dp2bridge configuration, written by `dp2bridge init`.
# Every option, with its meaning and default, is in config/bridge.example.toml.

[bridge]
hostname = "{hostname}"
directory_domain = "{directory_domain}"
blob_dir = "blobs"

[database]
url = "sqlite:///bridge.sqlite3"

[tls]
cert_file = "certs/server.pem"
key_file = "certs/server.key"
ca_file = "certs/ca.pem"

[smtp]
listen_starttls = ["127.0.0.1:{smtp}"]
listen_implicit_tls = ["127.0.0.1:{smtps}"]

[imap]
listen_starttls = ["127.0.0.1:{imap}"]
listen_implicit_tls = ["127.0.0.1:{imaps}"]

[api]
listen = ["127.0.0.1:{api}"]

[logging]
level = "info"
"""


_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class DemoAccount:
    login: str
    password: str
    role: str


def init_home(home: Path, *, demo: bool, port_base: int, directory_domain: str, hostname: str,
              progress: Callable[[str], None] = lambda s: None) -> list[DemoAccount]:
    """Create a home; returns the demo accounts with their (random) passwords.

    The home is built in a temporary sibling directory and renamed into place at the end,
    so an interrupted init leaves nothing half-made behind."""
    home = home.absolute()
    if (home / "bridge.toml").exists():
        raise AdminError(f"{home} is already a dp2bridge home (bridge.toml exists); "
                         f"serve it with `dp2bridge serve --config {home / 'bridge.toml'}`")
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise AdminError(f"{home} exists and is not an empty directory; choose another --home")
    if not 0 <= port_base <= 65535 - 993:
        raise AdminError("--port-base must be between 0 and 64542, so that BASE+993 is a port")
    directory_domain = check_domain(directory_domain)
    if not _HOSTNAME_RE.match(hostname):
        raise AdminError(f"--hostname {hostname!r} is not a host name like mail.kommune.example.dk")
    try:
        home.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{home.name}.init-", dir=home.parent))
    except OSError as exc:
        raise AdminError(f"cannot create {home}: {exc.strerror or 'the system refused it'}; give a "
                         f"--home in a directory this user may write to") from None
    try:
        accounts = _build_home(work, demo, port_base, directory_domain, hostname, progress)
        if home.exists():
            home.rmdir()
        work.rename(home)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return accounts


def _build_home(home: Path, demo: bool, port_base: int, directory_domain: str, hostname: str,
                progress: Callable[[str], None]) -> list[DemoAccount]:
    os.chmod(home, 0o700)
    progress("creating the development CA and server certificate")
    certs = home / "certs"
    certs.mkdir()
    ca_cert, ca_key = create_dev_ca(certs, f"dp2bridge development CA ({hostname})")
    issue_server_cert(ca_cert, ca_key, certs, list(dict.fromkeys([hostname, "localhost"])),
                      ["127.0.0.1", "::1"])
    (home / "bridge.toml").write_text(CONFIG_TEMPLATE.format(
        hostname=hostname, directory_domain=directory_domain, smtp=port_base + 587,
        smtps=port_base + 465, imap=port_base + 143, imaps=port_base + 993,
        api=port_base + 443), encoding="utf-8")
    config = load_config(home / "bridge.toml")
    progress("creating the database")
    store = SqlStore(config.database_url, SystemClock())
    try:
        store.migrate()
        accounts = seed_demo(Admin(store, SystemClock(), "init"), progress) if demo else []
        tenants = store.tenants()
        if tenants:
            progress("creating the tenants' evidence-signing certificates")
        for tenant in tenants:
            ensure_bridge_identity(config, tenant)      # the CA, evidence and bridge certificates
        return accounts
    finally:
        store.close()


def seed_demo(admin: Admin, progress: Callable[[str], None]) -> list[DemoAccount]:
    progress("adding the demo tenants")
    admin.add_tenant("kommune", "Demo Kommune", "authority", "29190000", ["kommune.dp2.test"])
    admin.add_tenant("advokat", "Advokatfirma Demo", "company", "30000000", ["advokat.dp2.test"])
    admin.add_tenant("borger", "Borgere", "citizens", None, ["borger.dp2.test"])
    admin.add_contact_point("jobcenter@kommune.dp2.test", "Jobcenter")
    out = []
    for login, name, cpr, role in (
            ("sagsbehandler@kommune.dp2.test", "Sagsbehandler Demo", None, "caseworker, granted jobcenter"),
            ("advokat@advokat.dp2.test", "Advokat Demo", None, "law firm staff"),
            ("anna@borger.dp2.test", "Anna Demo", "0101701234", "citizen, CPR 0101701234")):
        out.append(DemoAccount(login, admin.add_account(login, name, cpr, None) or "", role))
    admin.grant("jobcenter@kommune.dp2.test", "sagsbehandler@kommune.dp2.test")
    return out
