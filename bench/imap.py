"""IMAP benchmark: SELECT latency, FETCH throughput, QRESYNC resync, memory per idle IDLE connection.

Self-contained: makes a demo home in a temporary directory (SQLite, or a fresh database on the
PostgreSQL server given by --database-url, dropped afterwards), seeds Anna's INBOX with
--messages distinct messages of --size bytes straight through the store (blob files, the
mimeinfo analysis the delivery would have stored, one bulk INSERT each for contents, messages
and mailbox entries), plus a folder "Bench100k" of --select-messages entries that reuse those
messages (for the SELECT target), then runs `python -m bridge serve` as a subprocess on free
ports and measures over implicit TLS with a minimal raw client (one socket, 1 MiB reads,
literals skipped by length, so the client costs little CPU):

  SELECT             median of 5 `SELECT` round trips (INBOX, and the Bench100k folder)
  FETCH (FLAGS ENVELOPE), BODY.PEEK[]
                     `FETCH 1:* (...)`: FETCH responses / wall time, bytes received / wall time
                     (the median of 3 runs)
  QRESYNC            100 flag changes are made through the store (as another session or node
                     would), then `SELECT INBOX (QRESYNC (uidvalidity highestmodseq))` on a fresh
                     connection: round trip and the FETCH responses it carried (should be 100)
  IDLE memory        --idle-connections clients log in, SELECT INBOX (--idle-mailbox) and IDLE;
                     the server's PSS after minus before (for Dovecot: summed over its
                     processes), divided by the connections

With `dovecot` on PATH, the same figures are measured for Dovecot started on loopback with a
private configuration and the same messages in a Maildir; else it prints "dovecot not installed".

    .venv/bin/python bench/imap.py [--messages 10000] [--size 20480] [--select-messages 100000]
                                   [--idle-connections 1000] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import pwd
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ANNA, JOBCENTER, drop_pg_database, free_ports, fresh_pg_database,  # noqa: E402
                    listen_port, make_home, make_messages, start_server, stop_server)

from bridge.clock import SystemClock  # noqa: E402
from bridge.core.mimeinfo import analyze  # noqa: E402
from bridge.store import models as m  # noqa: E402
from bridge.store.mailboxes import MailboxRepository  # noqa: E402
from bridge.store.sql import SqlStore  # noqa: E402

PASSWORD = "Bench-Anna-Secret-1"
BIG = "Bench100k"
TARGETS = {"envelope": 10_000.0, "body": 5_000.0, "select_ms": 50.0, "idle_mb": 150.0}
CHANGES = 100
WARMUP = 50


# --- seeding ------------------------------------------------------------------------------

def seed(store: SqlStore, blob_root: Path, messages: list[bytes], big: int) -> None:
    """Anna's INBOX := `messages` (UIDs 1..n, unread); folder BIG := `big` entries reusing them."""
    now = dt.datetime.now(dt.timezone.utc)
    with store.ro() as s:
        anna = s.scalar(select(m.Account).where(m.Account.login == ANNA))
        assert anna is not None
        tenant_id = s.scalar(select(m.Tenant.id).where(m.Tenant.name == "kommune"))
        inbox_id = s.scalar(select(m.Mailbox.id).where(m.Mailbox.account_id == anna.id,
                                                       m.Mailbox.name == "INBOX"))
    contents, msgs, shas = [], [], []
    for raw in messages:
        sha = hashlib.sha256(raw).hexdigest()
        path = blob_root / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)                    # no fsync: a benchmark home, deleted afterwards
        info = analyze(raw)
        shas.append(sha)
        contents.append(dict(sha256=sha, size=info.size, header_size=info.header_size, subject=info.subject,
                             envelope=info.envelope, body=info.body, created_at=now))
        msgs.append(dict(uuid=str(uuid.uuid4()), tenant_id=tenant_id, message_id=info.message_id or "",
                         thread_id=str(uuid.uuid4()), in_reply_to=None, sender_account_id=None,
                         sender_party_id=None, from_address=JOBCENTER, subject=info.subject, sha256=sha,
                         size=len(raw), internal_date=now, origin="smtp", session_id=None,
                         state="delivered", memo={}))
    n = len(messages)
    with store.tx() as s:
        s.execute(insert(m.Content), contents)
        s.execute(insert(m.Message), msgs)
        ids = dict(s.execute(select(m.Message.uuid, m.Message.id)).all())
        pks = [ids[row["uuid"]] for row in msgs]
        s.execute(insert(m.MailboxEntry), [
            dict(mailbox_id=inbox_id, uid=i + 1, message_id=pks[i], sha256=shas[i], flags="", keywords="",
                 modseq=i + 2, internal_date=now) for i in range(n)])
        s.execute(update(m.Mailbox).where(m.Mailbox.id == inbox_id).values(uidnext=n + 1, highestmodseq=n + 1))
        if big:
            box = m.Mailbox(account_id=anna.id, name=BIG, special_use=None,
                            uidvalidity=random.randrange(1, 2**31 - 1), uidnext=big + 1,
                            highestmodseq=big + 1, subscribed=False, created_at=now)
            s.add(box)
            s.flush()
            for start in range(0, big, 20_000):
                s.execute(insert(m.MailboxEntry), [
                    dict(mailbox_id=box.id, uid=i + 1, message_id=pks[i % n], sha256=shas[i % n], flags="",
                         keywords="", modseq=i + 2, internal_date=now)
                    for i in range(start, min(big, start + 20_000))])


def change_flags(store: SqlStore, changes: int, total: int) -> None:
    """`changes` flag changes in Anna's INBOX, one MODSEQ each, as another session makes them."""
    repo = MailboxRepository(store)
    with store.ro() as s:
        anna = s.scalar(select(m.Account.id).where(m.Account.login == ANNA))
    box = repo.find(anna, "INBOX")
    assert box is not None
    for uid in random.Random(7).sample(range(1, total + 1), min(changes, total)):
        repo.store_flags(box.id, [uid], "+", ["\\Flagged"])


# --- a minimal raw client ---------------------------------------------------------------

@dataclass
class Result:
    status: bytes          # the tagged line
    untagged: list[bytes]  # untagged lines (only when kept), literals left out
    fetches: int           # "* n FETCH" responses
    received: int          # bytes received for this command
    seconds: float


class Raw:
    """One IMAP connection over implicit TLS; `run()` sends a command and reads to its tagged reply."""

    def __init__(self, port: int, ctx: ssl.SSLContext, host: str = "localhost") -> None:
        raw = socket.create_connection((host, port), timeout=120)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.buf = bytearray()
        self.pos = 0
        self.n = 0
        self.greeting = self._line()

    def _fill(self) -> int:
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk
        return len(chunk)

    def _line(self) -> bytes:
        while (nl := self.buf.find(b"\r\n", self.pos)) < 0:
            self._fill()
        line = bytes(self.buf[self.pos:nl])
        self.pos = nl + 2
        return line

    def run(self, command: bytes, keep: bool = False) -> Result:
        self.n += 1
        tag = b"b%d" % self.n
        t0 = time.perf_counter()
        self.sock.sendall(tag + b" " + command + b"\r\n")
        untagged: list[bytes] = []
        fetches = received = 0
        while True:
            while (nl := self.buf.find(b"\r\n", self.pos)) < 0:
                received += self._fill()
            start, self.pos = self.pos, nl + 2
            head = bytes(self.buf[start:min(nl, start + 24)])
            if head.startswith(b"* "):
                fetches += b" FETCH " in head
                if keep:
                    untagged.append(bytes(self.buf[start:nl]))
            elif head.startswith(tag + b" "):
                return Result(bytes(self.buf[start:nl]), untagged, fetches, received, time.perf_counter() - t0)
            if self.buf[nl - 1] == 0x7D:                            # "}": a literal follows; skip it
                size = int(self.buf[self.buf.rindex(b"{", start, nl) + 1:nl - 1].rstrip(b"+"))
                while len(self.buf) - self.pos < size:
                    received += self._fill()
                self.pos += size

    def ok(self, command: bytes, keep: bool = False) -> Result:
        result = self.run(command, keep)
        if not result.status.split(b" ", 2)[1:2] == [b"OK"]:
            raise RuntimeError(f"{command[:60]!r}: {result.status!r}")
        return result

    def close(self) -> None:
        try:
            self.run(b"LOGOUT")
        except (OSError, ConnectionError):
            pass
        self.sock.close()


def tree_pss_mb(pid: int) -> float:
    """Proportional set size (PSS: shared pages divided among the processes that map them) of
    `pid` and its descendants, in MB (MiB).  For one process it is about its RSS; for Dovecot,
    which runs a process per connection, summing RSS would count its shared libraries once
    per process."""
    total = 0.0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            total = int(line.split()[1]) / 1024
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            total += tree_pss_mb(int(child))
        except (OSError, ValueError):
            pass
    return total


# --- the measurements ---------------------------------------------------------------------

@dataclass
class Figures:
    select_ms: float = float("nan")
    select_big_ms: float = float("nan")
    big: int = 0
    env_rate: float = float("nan")
    env_mbs: float = float("nan")
    body_rate: float = float("nan")
    body_mbs: float = float("nan")
    fetched: int = 0
    qresync: str = "n/a"
    idle: str = "n/a"
    idle_mb: float = float("nan")


def measure(port: int, ctx: ssl.SSLContext, password: str, pid: int, big: int,
            make_changes: Any, idle_connections: int, idle_mailbox: str = "INBOX") -> Figures:
    f = Figures(big=big)
    c = Raw(port, ctx)
    try:
        c.ok(b"LOGIN " + ANNA.encode() + b" " + password.encode())
        f.select_ms = statistics.median(c.ok(b"SELECT INBOX").seconds for _ in range(5)) * 1000
        if big:
            f.select_big_ms = statistics.median(c.ok(b"SELECT " + BIG.encode()).seconds for _ in range(5)) * 1000
        c.ok(b"SELECT INBOX")
        r = median_run(c, b"FETCH 1:* (FLAGS ENVELOPE)")
        f.fetched = r.fetches
        f.env_rate, f.env_mbs = r.fetches / r.seconds, r.received / r.seconds / 1e6
        r = median_run(c, b"FETCH 1:* BODY.PEEK[]")
        f.body_rate, f.body_mbs = r.fetches / r.seconds, r.received / r.seconds / 1e6
        caps = c.ok(b"CAPABILITY", keep=True).untagged
        has_qresync = any(b" QRESYNC" in line.upper() for line in caps)
        # HIGHESTMODSEQ comes with SELECT once CONDSTORE is enabled (Dovecot sends it only then).
        sel = c.ok(b"SELECT INBOX (CONDSTORE)" if has_qresync else b"SELECT INBOX", keep=True).untagged
    finally:
        c.close()
    f.qresync = qresync(port, ctx, password, sel, make_changes) if has_qresync else "n/a (no QRESYNC capability)"
    if idle_connections:
        f.idle, f.idle_mb = asyncio.run(idle_memory(port, ctx, password, pid, idle_connections, idle_mailbox))
    return f


def median_run(c: Raw, command: bytes, runs: int = 3) -> Result:
    """The run of median duration among `runs` (the machine may be busy with other work)."""
    results = sorted((c.ok(command) for _ in range(runs)), key=lambda r: r.seconds)
    return results[len(results) // 2]


def qresync(port: int, ctx: ssl.SSLContext, password: str, select_lines: list[bytes], make_changes: Any) -> str:
    text = b"\n".join(select_lines)
    uv, hms = re.search(rb"UIDVALIDITY (\d+)", text), re.search(rb"HIGHESTMODSEQ (\d+)", text)
    if not uv or not hms:
        return "n/a (SELECT gave no UIDVALIDITY/HIGHESTMODSEQ)"
    make_changes()
    c = Raw(port, ctx)
    try:
        c.ok(b"LOGIN " + ANNA.encode() + b" " + password.encode())
        enabled = c.run(b"ENABLE QRESYNC")
        if b" OK" not in enabled.status:
            return f"n/a (ENABLE QRESYNC: {enabled.status.decode(errors='replace')})"
        r = c.run(b"SELECT INBOX (QRESYNC (%s %s))" % (uv.group(1), hms.group(1)), keep=True)
        if b" OK" not in r.status:
            return f"n/a (SELECT ... QRESYNC: {r.status.decode(errors='replace')[:80]})"
        vanished = sum(1 for line in r.untagged if line.startswith(b"* VANISHED"))
        return (f"{r.seconds * 1000:8.1f} ms      {r.fetches} FETCH, {vanished} VANISHED for "
                f"{CHANGES} changes")
    finally:
        c.close()


async def idle_memory(port: int, ctx: ssl.SSLContext, password: str, pid: int, n: int,
                      mailbox: str) -> tuple[str, float]:
    """Open n connections that log in, SELECT `mailbox` and IDLE; (description, MB per connection).

    A warm-up of WARMUP such connections comes first and stays open: it grows what the server
    keeps whatever the number of connections (each executor thread's malloc arena after an
    argon2 verification, 19 MiB each; SQLite connections), so that the figure is the memory
    each further connection costs."""
    sem = asyncio.Semaphore(16)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    idling = [0]

    async def until_tagged(reader: asyncio.StreamReader, tag: bytes) -> bytes:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed")
            if line.startswith(tag + b" "):
                return line

    async def one() -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("localhost", port, ssl=ctx, server_hostname="localhost",
                                                           limit=1 << 20)
            conns.append((reader, writer))
            await reader.readline()
            writer.write(b"a LOGIN " + ANNA.encode() + b" " + password.encode() + b"\r\n")
            if b" OK" not in await until_tagged(reader, b"a"):
                raise RuntimeError("login failed")
            writer.write(b"b SELECT " + mailbox.encode() + b"\r\n")
            await until_tagged(reader, b"b")
            writer.write(b"c IDLE\r\n")
            line = await reader.readline()
            if line.startswith(b"+"):
                idling[0] += 1

    async def batch(count: int) -> list[BaseException]:
        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    errors = await batch(WARMUP)
    await asyncio.sleep(1.0)
    before, warm_idling = tree_pss_mb(pid), idling[0]
    t0 = time.monotonic()
    errors += await batch(n)
    opened = time.monotonic() - t0
    await asyncio.sleep(1.0)
    after = tree_pss_mb(pid)
    for _, writer in conns:
        writer.close()
    try:
        await asyncio.wait_for(asyncio.gather(*(w.wait_closed() for _, w in conns), return_exceptions=True), 30)
    except asyncio.TimeoutError:
        pass
    ok = n + WARMUP - len(errors)
    idle = idling[0] - warm_idling
    how = "in IDLE" if idling[0] == ok else f"{idling[0]} in IDLE, {ok - idling[0]} only SELECTed (IDLE refused)"
    extra = f", {len(errors)} failed: {errors[0]!r}"[:160] if errors else ""
    per = (after - before) / max(idle if idle == n else n - len(errors), 1)
    return (f"{WARMUP} warm-up + {n} connections {how} on {mailbox}, server PSS {before:.0f} -> {after:.0f} MB; "
            f"the {n} set up in {opened:.0f} s{extra}"), per


# --- dovecot --------------------------------------------------------------------------------

def dovecot_config(root: Path, base: Path, certs: Path, port: int, connections: int) -> str:
    """A private Dovecot configuration: implicit TLS on `port`, static user and password,
    Maildir under `base`, and the high-performance login mode (one imap-login process per
    CPU serving many connections) that Dovecot's documentation recommends for many clients.
    As root, Dovecot refuses to run its login processes or mail access as root: they run as
    the package's users, and the mail belongs to the `dovecot` user."""
    if os.getuid() == 0:
        login_user, internal_user = "dovenull", "dovecot"
        owner = pwd.getpwnam("dovecot")
        uid, gid = owner.pw_uid, owner.pw_gid
        (base / "home").mkdir(exist_ok=True)
        for top in (base / "mail", base / "home"):
            for path in [top, *top.rglob("*")]:
                os.chown(path, uid, gid)
        os.chmod(root, 0o711)                   # mkdtemp's 0700 would keep the mail user out
        os.chmod(base, 0o711)
    else:
        login_user = internal_user = pwd.getpwuid(os.getuid()).pw_name
        uid, gid = os.getuid(), os.getgid()
    limit = connections + 100
    return f"""\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{certs / 'server.pem'}
ssl_key = <{certs / 'server.key'}
mail_location = maildir:{base}/mail/%u
first_valid_uid = {uid}
default_internal_user = {internal_user}
default_login_user = {login_user}
default_client_limit = {limit * 2}
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%u
}}
protocol imap {{
  mail_max_userip_connections = {limit}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {os.cpu_count() or 1}
  client_limit = {limit}
}}
service imap {{
  process_limit = {limit}
}}
"""


def run_dovecot(root: Path, certs: Path, messages: list[bytes], big: int, args: argparse.Namespace,
                ctx: ssl.SSLContext) -> Figures | str:
    """The same figures for Dovecot on loopback with a private config and the same messages."""
    binary = shutil.which("dovecot")
    if binary is None:
        return "dovecot not installed"
    base = root / "dovecot"
    mail = base / "mail" / ANNA
    for d in ("cur", "new", "tmp"):
        (mail / d).mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    names = []
    for i, raw in enumerate(messages):
        name = f"{now}.M{i}P1.bench,S={len(raw)}:2,"
        (mail / "cur" / name).write_bytes(raw)
        names.append(name)
    if big:
        folder = mail / f".{BIG}"
        for d in ("cur", "new", "tmp"):
            (folder / d).mkdir(parents=True, exist_ok=True)
        for i in range(big):
            os.link(mail / "cur" / names[i % len(names)], folder / "cur" / f"{now}.B{i}P1.bench:2,")
    (port,) = free_ports(1)
    conf = base / "dovecot.conf"
    conf.write_text(dovecot_config(root, base, certs, port, args.idle_connections), encoding="utf-8")
    with open(base / "stderr.log", "wb") as err:
        proc = subprocess.Popen([binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    return f"dovecot did not start (see {base / 'dovecot.log'})"
                time.sleep(0.1)

        def changes() -> None:
            files = sorted((mail / "cur").iterdir())
            for path in random.Random(7).sample(files, min(CHANGES, len(files))):
                path.rename(path.with_name(path.name + "F"))

        return measure(port, ctx, PASSWORD, proc.pid, big, changes, args.idle_connections,
                       args.idle_mailbox)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- report ---------------------------------------------------------------------------------

def report(name: str, f: Figures, messages: int, size: int) -> None:
    ok = lambda good: "ok  " if good else "MISS"           # noqa: E731
    print(f"{name}")
    print(f"  SELECT INBOX ({messages})        {f.select_ms:8.1f} ms")
    if f.big:
        verdict = ok(f.select_big_ms < TARGETS["select_ms"]) if f.big >= 100_000 else "(fewer messages)"
        print(f"  SELECT {BIG} ({f.big})  {f.select_big_ms:8.1f} ms      target < {TARGETS['select_ms']:.0f} ms "
              f"(100,000 messages)  {verdict}")
    print(f"  FETCH 1:* (FLAGS ENVELOPE)    {f.env_rate:8.0f} msg/s  {f.env_mbs:6.1f} MB/s   target >= "
          f"{TARGETS['envelope']:.0f} msg/s  {ok(f.env_rate >= TARGETS['envelope'])}")
    print(f"  FETCH 1:* BODY.PEEK[]         {f.body_rate:8.0f} msg/s  {f.body_mbs:6.1f} MB/s   target >= "
          f"{TARGETS['body']:.0f} msg/s  {ok(f.body_rate >= TARGETS['body'])}")
    if f.fetched != messages:
        print(f"  WARNING: FETCH 1:* returned {f.fetched} responses for {messages} messages")
    print(f"  QRESYNC resync                {f.qresync}")
    if f.idle == "n/a":
        print("  idle IDLE connections         n/a")
    else:
        total = f.idle_mb * 1000
        print(f"  idle IDLE connections         {f.idle_mb * 1024:8.1f} KB/conn  = {total:6.0f} MB per 1,000   "
              f"target < {TARGETS['idle_mb']:.0f} MB  {ok(total < TARGETS['idle_mb'])}")
        print(f"                                ({f.idle})")


def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="dp2bench-imap-"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * args.idle_connections + 256          # our sockets; the server inherits the limit
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    pg_name = None
    proc = None
    try:
        db_url = None
        if args.database_url:
            db_url, pg_name = fresh_pg_database(args.database_url)
        home = make_home(root, db_url, args.log_level, {ANNA: PASSWORD})
        url = db_url or f"sqlite:///{home / 'bridge.sqlite3'}"
        t0 = time.monotonic()
        messages = make_messages(args.messages, args.size, args.seed)
        store = SqlStore(url, SystemClock())
        try:
            seed(store, home / "blobs", messages, args.select_messages)
        finally:
            store.close()
        print(f"seeded {args.messages} messages of {args.size} bytes (+ {args.select_messages} entries in "
              f"{BIG}) in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        proc = start_server(home)
        print(f"server pid {proc.pid}", file=sys.stderr)
        port = listen_port(home, "imap", "listen_implicit_tls")
        ctx = ssl.create_default_context(cafile=str(home / "certs" / "ca.pem"))

        def changes() -> None:
            store = SqlStore(url, SystemClock())
            try:
                change_flags(store, CHANGES, args.messages)
            finally:
                store.close()

        ours = measure(port, ctx, PASSWORD, proc.pid, args.select_messages, changes,
                       args.idle_connections, args.idle_mailbox)
        print(f"dp2bridge IMAP benchmark: {args.messages} messages of {args.size} bytes, implicit TLS, "
              f"{'PostgreSQL' if db_url else 'SQLite'}, {os.cpu_count()} CPUs")
        report("dp2bridge", ours, args.messages, args.size)
        stop_server(proc)
        proc = None
        try:
            theirs = run_dovecot(root, home / "certs", messages, args.select_messages, args, ctx)
        except (OSError, RuntimeError) as exc:         # written without a Dovecot to try it on
            theirs = f"dovecot run failed: {exc!r} (see {root / 'dovecot'}; --keep keeps it)"
        if isinstance(theirs, str):
            print(theirs)
        else:
            report("Dovecot", theirs, args.messages, args.size)
            for label, a, b in (("FETCH (FLAGS ENVELOPE)", ours.env_rate, theirs.env_rate),
                                ("FETCH BODY.PEEK[]", ours.body_rate, theirs.body_rate)):
                print(f"  ratio dp2bridge/Dovecot {label}: {a / b:.2f}")
        return 0
    finally:
        if proc is not None:
            stop_server(proc)
        if pg_name:
            drop_pg_database(args.database_url, pg_name)
        if args.keep:
            print(f"home kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=10_000, help="messages in the INBOX (default 10000)")
    p.add_argument("--size", type=int, default=20 * 1024, help="bytes per message (default 20480)")
    p.add_argument("--select-messages", type=int, default=100_000,
                   help=f"entries in the {BIG} folder for the SELECT target (default 100000; 0: none)")
    p.add_argument("--idle-connections", type=int, default=1000, help="idle IDLE connections (default 1000)")
    p.add_argument("--idle-mailbox", default="INBOX",
                   help="the mailbox the idle connections select (default INBOX; Drafts is empty)")
    p.add_argument("--database-url", help="a PostgreSQL URL; a fresh database is created on that server "
                                          "and dropped afterwards (default: SQLite)")
    p.add_argument("--log-level", default="info", help="the server's log level (default info)")
    p.add_argument("--seed", type=int, default=1, help="message content seed")
    p.add_argument("--keep", action="store_true", help="keep the temporary home (log, database)")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
