"""Submission benchmark: accepted messages/s, submission-to-INBOX latency, server CPU and RSS.

Self-contained: makes a demo home in a temporary directory (SQLite, or a fresh database on the
PostgreSQL server given by --database-url, dropped afterwards), runs `python -m bridge serve`
as a subprocess on free ports, and submits --messages messages of --size bytes from
jobcenter@kommune.dp2.test (logged in as the caseworker) to Anna's CPR address over
--connections concurrent STARTTLS connections, each reused for many messages.

Latency: each client thread notes the time just before it sends DATA; a poller thread in
this process reads Anna's INBOX (entries with id above the last seen, joined to their message
UUID) every --poll-ms and notes when each UUID first becomes visible.  Latency = visible -
DATA sent, so it includes up to one poll interval.  The entries' internal_date (set by the
server when it files the copy, same clock) gives a second figure without the poll error.

Server CPU is utime+stime from /proc/<pid>/stat between the start of submission and the last
message being visible in the INBOX (so it includes delivery), divided by the messages.
Peak RSS is VmHWM from /proc/<pid>/status at the end.

    .venv/bin/python bench/submit.py [--messages 2000] [--size 20480] [--connections 10]
                                     [--database-url postgresql+psycopg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import queue
import shutil
import smtplib
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, cpu_seconds, drop_pg_database,
                    fresh_pg_database, listen_port, make_home, make_messages, proc_status_mb, start_server,
                    stop_server)
from sqlalchemy import select

from bridge.clock import SystemClock
from bridge.store import models as m
from bridge.store.sql import SqlStore

PASSWORD = "Bench-Caseworker-Secret-1"
TARGETS = {"rate": 300.0, "p99_ms": 250.0, "rss_mb": 250.0}
STALL_SECONDS = 30.0


# --- the clients -----------------------------------------------------------------------

class Client(threading.Thread):
    def __init__(self, port: int, ctx: ssl.SSLContext, work: queue.Queue[int], messages: list[bytes],
                 sent: dict[str, float], acked: dict[str, float], go: threading.Barrier) -> None:
        super().__init__(daemon=True)
        self.port, self.ctx, self.work, self.messages = port, ctx, work, messages
        self.sent, self.acked, self.go = sent, acked, go
        self.error: str | None = None

    def run(self) -> None:
        try:
            client = smtplib.SMTP("localhost", self.port, timeout=60)
            client.starttls(context=self.ctx)
            client.ehlo("bench.test")
            client.login(CASEWORKER, PASSWORD)
        except Exception as exc:
            self.error = f"connect: {exc!r}"
            self.go.abort()
            return
        try:
            self.go.wait()
            while True:
                try:
                    i = self.work.get_nowait()
                except queue.Empty:
                    break
                client.mail(JOBCENTER)
                code, reply = client.rcpt(ANNA_CPR_ADDR)
                if code != 250:
                    raise RuntimeError(f"RCPT {code} {reply!r}")
                t0 = time.time()
                code, reply = client.data(self.messages[i])
                t1 = time.time()
                if code != 250:
                    raise RuntimeError(f"DATA {code} {reply!r}")
                message_uuid = reply.decode().split()[2]
                self.sent[message_uuid], self.acked[message_uuid] = t0, t1
            client.quit()
        except Exception as exc:
            self.error = repr(exc)
            client.close()


class Poller(threading.Thread):
    """Notes when each message UUID first becomes visible in Anna's INBOX."""

    def __init__(self, store: SqlStore, interval: float) -> None:
        super().__init__(daemon=True)
        self.store, self.interval = store, interval
        self.visible: dict[str, float] = {}
        self.filed: dict[str, float] = {}
        self.stop = threading.Event()
        with store.ro() as s:
            account = s.scalar(select(m.Account.id).where(m.Account.login == ANNA))
            self.inbox = s.scalar(select(m.Mailbox.id).where(m.Mailbox.account_id == account,
                                                            m.Mailbox.name == "INBOX"))

    def run(self) -> None:
        last = 0
        q = select(m.MailboxEntry.id, m.Message.uuid, m.MailboxEntry.internal_date).join(
            m.Message, m.Message.id == m.MailboxEntry.message_id).where(
            m.MailboxEntry.mailbox_id == self.inbox)
        while not self.stop.is_set():
            with self.store.ro() as s:
                rows = s.execute(q.where(m.MailboxEntry.id > last).order_by(m.MailboxEntry.id)).all()
            now = time.time()
            for entry_id, message_uuid, filed in rows:
                last = max(last, entry_id)
                self.visible.setdefault(message_uuid, now)
                self.filed.setdefault(message_uuid, _epoch(filed))
            self.stop.wait(self.interval)


def _epoch(when: dt.datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# --- main ------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="dp2bench-"))
    pg_name = None
    proc = None
    store = None
    try:
        db_url = None
        if args.database_url:
            db_url, pg_name = fresh_pg_database(args.database_url)
        home = make_home(root, db_url, args.log_level, {CASEWORKER: PASSWORD})
        messages = make_messages(args.messages, args.size, args.seed)
        proc = start_server(home)
        print(f"server pid {proc.pid} (e.g. `py-spy record --gil -p {proc.pid}`)", file=sys.stderr)
        port = listen_port(home, "smtp", "listen_starttls")
        store = SqlStore(db_url or f"sqlite:///{home / 'bridge.sqlite3'}", SystemClock())
        poller = Poller(store, args.poll_ms / 1000)
        ctx = ssl.create_default_context(cafile=str(home / "certs" / "ca.pem"))
        work: queue.Queue[int] = queue.Queue()
        for i in range(args.messages):
            work.put(i)
        sent: dict[str, float] = {}
        acked: dict[str, float] = {}
        go = threading.Barrier(args.connections + 1)
        clients = [Client(port, ctx, work, messages, sent, acked, go) for _ in range(args.connections)]
        for c in clients:
            c.start()
        go.wait(timeout=120)                       # every connection logged in
        poller.start()
        cpu0, t_start = cpu_seconds(proc.pid), time.time()
        for c in clients:
            c.join()
        t_accepted = time.time()
        errors = [c.error for c in clients if c.error]
        if errors:
            raise SystemExit(f"client errors: {errors[:3]}")
        seen, last_progress = 0, time.monotonic()     # wait while delivery makes progress
        while seen < len(sent) and time.monotonic() - last_progress < STALL_SECONDS:
            time.sleep(0.01)
            now_seen = len(poller.visible.keys() & sent.keys())
            if now_seen > seen:
                seen, last_progress = now_seen, time.monotonic()
        cpu1 = cpu_seconds(proc.pid)
        poller.stop.set()
        poller.join()
        issued, last_progress = 0, time.monotonic()   # each message owes 2 receipts (accepted, delivered)
        while issued < 2 * len(sent) and time.monotonic() - last_progress < STALL_SECONDS:
            time.sleep(0.05)
            now_issued = receipts_done(store)
            if now_issued > issued:
                issued, last_progress = now_issued, time.monotonic()
        t_receipts, cpu2 = time.time(), cpu_seconds(proc.pid)
        rss = proc_status_mb(proc.pid, "VmHWM")
        missing = len(sent.keys() - poller.visible.keys())

        n = len(acked)
        rate = n / (t_accepted - t_start)
        ack_ms = [(acked[u] - sent[u]) * 1000 for u in sent]
        visible_ms = [(poller.visible[u] - sent[u]) * 1000 for u in sent if u in poller.visible]
        filed_ms = [(poller.filed[u] - sent[u]) * 1000 for u in sent if u in poller.filed]
        user_ms, sys_ms = ((b - a) * 1000 / max(n, 1) for a, b in zip(cpu0, cpu1))
        cpu_ms = user_ms + sys_ms
        ok = lambda good: "ok  " if good else "MISS"           # noqa: E731
        p99 = pct(visible_ms, 99)
        print(f"dp2bridge submission benchmark: {n} messages of {args.size} bytes over "
              f"{args.connections} TLS connections, {'PostgreSQL' if db_url else 'SQLite'}, "
              f"{os.cpu_count()} CPUs")
        print(f"  accepted              {rate:8.1f} msg/s      target >= {TARGETS['rate']:.0f}   "
              f"{ok(rate >= TARGETS['rate'])}")
        print(f"  DATA -> 250           p50 {pct(ack_ms, 50):6.1f} ms  p99 {pct(ack_ms, 99):6.1f} ms")
        print(f"  DATA -> INBOX visible p50 {pct(visible_ms, 50):6.1f} ms  p99 {p99:6.1f} ms   "
              f"target p99 < {TARGETS['p99_ms']:.0f} ms  {ok(p99 < TARGETS['p99_ms'])}"
              f"   (poll every {args.poll_ms} ms)")
        print(f"  DATA -> INBOX filed   p50 {pct(filed_ms, 50):6.1f} ms  p99 {pct(filed_ms, 99):6.1f} ms"
              f"   (entry internal_date)")
        print(f"  server CPU            {cpu_ms:8.2f} ms/msg     (user {user_ms:.2f}, system {sys_ms:.2f}; "
              f"submission + delivery)")
        receipt_ms = sum(b - a for a, b in zip(cpu1, cpu2)) * 1000 / max(issued, 1)
        print(f"  receipts              {issued} signed and filed, all {t_receipts - t_start:6.1f} s after the "
              f"first DATA; {receipt_ms:.2f} ms server CPU per receipt after delivery ended")
        total_ms = sum(b - a for a, b in zip(cpu0, cpu2)) * 1000 / max(n, 1)
        print(f"  server CPU, all in    {total_ms:8.2f} ms/msg     (submission, delivery and its "
              f"{issued / max(n, 1):.0f} receipts, to the last receipt filed)")
        print(f"  server peak RSS       {rss:8.1f} MB         target < {TARGETS['rss_mb']:.0f}    "
              f"{ok(rss < TARGETS['rss_mb'])}")
        if missing:
            print(f"  WARNING: {missing} accepted messages not in the INBOX "
                  f"({STALL_SECONDS:.0f} s without progress)")
        return 1 if missing else 0
    finally:
        if store is not None:
            store.close()
        if proc is not None:
            stop_server(proc, root / "home" / "server.log")
        if pg_name:
            drop_pg_database(args.database_url, pg_name)
        if args.keep:
            print(f"  home kept in {root / 'home'}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def receipts_done(store: SqlStore) -> int:
    from sqlalchemy import func, select

    from bridge.store import models as m
    with store.ro() as s:
        return s.scalar(select(func.count()).select_from(m.Receipt).where(m.Receipt.state == "done")) or 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=2000, help="messages to submit (default 2000)")
    p.add_argument("--size", type=int, default=20 * 1024, help="bytes per message (default 20480)")
    p.add_argument("--connections", type=int, default=10, help="concurrent connections (default 10)")
    p.add_argument("--database-url", help="a PostgreSQL database URL; a fresh database is created "
                                          "on that server and dropped afterwards (default: SQLite)")
    p.add_argument("--poll-ms", type=float, default=2.0, help="INBOX poll interval (default 2 ms)")
    p.add_argument("--log-level", default="info", help="the server's log level (default info)")
    p.add_argument("--seed", type=int, default=1, help="message content seed")
    p.add_argument("--keep", action="store_true", help="keep the temporary home (log, database)")
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
