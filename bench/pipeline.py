"""Pipeline benchmark: CPU per message of submission and delivery, without SMTP and TLS.

Calls the use cases in-process, as the server's threads do: --threads submitters run
`BridgeService.check_mail_from`, `check_rcpt` and `submit` (blob fsynced, acceptance in a shared
commit), then the delivery worker's `deliver_many` drains the queue in chunks on 8 threads
(copy rendered and fsynced, filings in shared commits).  Prints the process CPU (all threads)
per message for each phase.  Compare with `submit.py`'s server CPU to see what the SMTP and
TLS front end costs.  Under py-spy it shows where the store's time goes:

    .venv/bin/py-spy record --gil -o flame.svg -- .venv/bin/python bench/pipeline.py
    .venv/bin/python bench/pipeline.py [--messages 2000] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, drop_pg_database, fresh_pg_database, make_home,
                    make_messages)

from bridge.app import build_service, mime_limits
from bridge.clock import SystemClock
from bridge.config import load_config
from bridge.core.delivery import BATCH, CONCURRENCY, LEASE_SECONDS, DeliveryWorker, _chunks
from bridge.core.service import SessionInfo
from bridge.store.blobs import FileBlobStore
from bridge.store.sql import SqlStore


class NoEvents:
    def publish(self, filed: object) -> None:
        pass


def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="dp2pipeline-"))
    pg_name = None
    store = None
    try:
        db_url = None
        if args.database_url:
            db_url, pg_name = fresh_pg_database(args.database_url)
        home = make_home(root, db_url, "warning", {})
        config = load_config(home / "bridge.toml")
        clock = SystemClock()
        store = SqlStore(db_url or f"sqlite:///{home / 'bridge.sqlite3'}", clock)
        blobs = FileBlobStore(config.resolve(config.bridge.blob_dir))
        service = build_service(config, store, blobs, clock)
        worker = DeliveryWorker(store, blobs, clock, NoEvents(), hostname=config.bridge.hostname,
                                directory_domain=config.bridge.directory_domain, limits=mime_limits(config),
                                poll_interval=1.0, max_attempts=3, retry_delay=1.0, run_blocking=None)
        principal = store.principal(store.credentials(CASEWORKER)[0])
        ctx = SessionInfo("bench", "smtp", "127.0.0.1", True)
        messages = make_messages(args.messages, args.size, args.seed)

        def submit(i: int) -> None:
            sender = service.check_mail_from(principal, JOBCENTER, ctx)
            target = service.check_rcpt(principal, ANNA_CPR_ADDR, ctx)
            service.submit(principal, sender, [(ANNA_CPR_ADDR, target)], messages[i], ctx)

        t0, c0 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(submit, range(args.messages)))
        t1, c1 = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            while jobs := store.claim_jobs(BATCH, LEASE_SECONDS):
                list(pool.map(worker.deliver_many, _chunks(jobs)))
        t2, c2 = time.perf_counter(), time.process_time()
        n = args.messages
        print(f"dp2bridge pipeline benchmark: {n} messages of {args.size} bytes, {args.threads} submitters, "
              f"{'PostgreSQL' if db_url else 'SQLite'} (no SMTP, no TLS)")
        print(f"  submission  {(c1 - c0) * 1000 / n:6.2f} ms CPU/msg   {n / (t1 - t0):7.1f} msg/s")
        print(f"  delivery    {(c2 - c1) * 1000 / n:6.2f} ms CPU/msg   {n / (t2 - t1):7.1f} msg/s   (INBOX + Sent)")
        print(f"  total       {(c2 - c0) * 1000 / n:6.2f} ms CPU/msg")
    finally:
        if store is not None:
            store.close()
        if pg_name:
            drop_pg_database(args.database_url, pg_name)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=2000, help="messages to submit (default 2000)")
    p.add_argument("--size", type=int, default=20 * 1024, help="bytes per message (default 20480)")
    p.add_argument("--threads", type=int, default=10, help="concurrent submitters (default 10)")
    p.add_argument("--database-url", help="a PostgreSQL server URL; a fresh database is created and dropped")
    p.add_argument("--seed", type=int, default=1, help="message content seed")
    run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
