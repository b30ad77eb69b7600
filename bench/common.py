"""What the benchmarks share: the demo home on free ports (written from `dp2bridge init`'s own
config template), a fresh PostgreSQL database, the server subprocess, test messages and
/proc readings.  Not a benchmark itself; imported by submit.py, imap.py and pipeline.py,
which run with this directory on sys.path (`python bench/x.py`).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from bridge.admin.home import CONFIG_TEMPLATE, init_home, seed_demo
from bridge.clock import SystemClock
from bridge.core.admin import Admin
from bridge.store.sql import SqlStore

CASEWORKER = "sagsbehandler@kommune.dp2.test"
JOBCENTER = "jobcenter@kommune.dp2.test"
ANNA = "anna@borger.dp2.test"
ANNA_CPR_ADDR = "0101701234@cpr.dp2.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# --- the home ------------------------------------------------------------------------

def make_home(root: Path, database_url: str | None, level: str, passwords: dict[str, str]) -> Path:
    """A demo home in root/home on free ports, on SQLite or `database_url` (migrated and
    seeded here), with the given accounts' passwords set."""
    home = root / "home"
    init_home(home, demo=True, port_base=0, directory_domain="dp2.test", hostname="localhost")
    if database_url:
        store = SqlStore(database_url, SystemClock())
        try:
            store.migrate()
            seed_demo(Admin(store, SystemClock(), "bench"), lambda s: None)
        finally:
            store.close()
    smtp, smtps, imap, imaps, api = free_ports(5)
    config = CONFIG_TEMPLATE.format(hostname="localhost", directory_domain="dp2.test", smtp=smtp, smtps=smtps,
                                    imap=imap, imaps=imaps, api=api)
    config = _replace_once(config, 'url = "sqlite:///bridge.sqlite3"', f'url = "{database_url}"') \
        if database_url else config
    (home / "bridge.toml").write_text(_replace_once(config, 'level = "info"', f'level = "{level}"'),
                                      encoding="utf-8")
    store = SqlStore(database_url or f"sqlite:///{home / 'bridge.sqlite3'}", SystemClock())
    try:
        admin = Admin(store, SystemClock(), "bench")
        for login, password in passwords.items():
            admin.set_password(login, password)
    finally:
        store.close()
    return home


def _replace_once(config: str, old: str, new: str) -> str:
    if config.count(old) != 1:
        raise SystemExit(f"bridge/admin/home.py CONFIG_TEMPLATE changed: no single {old!r} to replace")
    return config.replace(old, new)


def fresh_pg_database(server_url: str) -> tuple[str, str]:
    """(url of a new empty database on the server of `server_url`, its name)."""
    name = f"dp2bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{server_url.rsplit('/', 1)[0]}/{name}", name


def drop_pg_database(server_url: str, name: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


# --- the server ----------------------------------------------------------------------

def start_server(home: Path) -> subprocess.Popen[bytes]:
    """`python -m bridge serve` on the home, once it printed "ready"."""
    cmd = [sys.executable, "-m", "bridge", "serve", "--config", str(home / "bridge.toml")]
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                cwd=home)
    assert proc.stdout is not None
    for line in proc.stdout:                 # the server prints only the listeners and "ready"
        if line.strip() == b"ready":
            return proc
    raise SystemExit(f"the server exited ({proc.wait()}) before ready; see {home / 'server.log'}")


def stop_server(proc: subprocess.Popen[bytes], log: Path | None = None) -> None:
    """SIGTERM, as systemd would; killed after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
        if code != 0:
            print(f"server exited {code}" + (f"; log in {log}" if log else ""), file=sys.stderr)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def listen_port(home: Path, section: str, key: str) -> int:
    """The port of the first `[section] key` listener in the home's config."""
    import tomllib
    config = tomllib.loads((home / "bridge.toml").read_text(encoding="utf-8"))
    return int(config[section][key][0].rsplit(":", 1)[1])


# --- messages and /proc ----------------------------------------------------------------

def make_messages(n: int, size: int, seed: int) -> list[bytes]:
    """`n` distinct plain-text letters of about `size` bytes, jobcenter to Anna."""
    rng = random.Random(seed)
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
    pool = bytes(rng.choice(alphabet) for _ in range(76 * 4096))
    out = []
    for i in range(n):
        head = (f"From: Jobcenter <{JOBCENTER}>\r\nTo: <{ANNA_CPR_ADDR}>\r\nSubject: Bench {i}\r\n"
                f"Message-ID: <bench-{i}-{uuid.uuid4()}@client.test>\r\n"
                f"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
        lines, left = [], max(size - len(head), 78)
        while left > 0:
            start = rng.randrange(0, len(pool) - 76)
            lines.append(pool[start:start + min(76, max(left - 2, 1))] + b"\r\n")
            left -= len(lines[-1])
        out.append(head + b"".join(lines))
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process `pid`, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK     # utime, stime (fields 14, 15)


def proc_status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM...) in MB (MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")
