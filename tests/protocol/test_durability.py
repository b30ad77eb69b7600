"""Durability under SIGKILL (acceptance point 8 of the foundation issue).

The real server runs as a subprocess (`python -m bridge serve`) on fixed ports.
A client thread keeps submitting distinct messages over STARTTLS while the
test SIGKILLs the server at random moments and starts it again.  A message
whose reply the client did not get is retried with the same bytes and
Message-ID (the bridge's dedup answers with the first acceptance's UUID).
Afterwards every message that got `250` must be stored intact (SHA-256 of the
row and of the blob file), filed exactly once in Anna's INBOX and in the
caseworker's Sent, and no blob name may hold torn bytes.  Runs on SQLite and
on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import selectors
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from bridge.clock import SystemClock
from bridge.config import Config
from bridge.store.blobs import FileBlobStore
from bridge.store.sql import SqlStore
from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, PASSWORDS, make_home

pytestmark = pytest.mark.slow

KILLS = 6
READY_TIMEOUT = 20.0
ACCEPTED = re.compile(r"^2\.0\.0 OK ([0-9a-f-]{36})( \(already accepted earlier\))?$")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Server:
    """`python -m bridge serve` as a subprocess; stderr (the log) goes to a file."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path, self.log_path = config_path, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "serve", "--config", str(self.config_path)],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                cwd=self.config_path.parent)
        self.starts += 1
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"ready\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"server start {self.starts} not ready within "
                                         f"{READY_TIMEOUT}s; stdout {buf!r}\n{self.log_tail()}")
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        raise AssertionError(f"server start {self.starts} exited with "
                                             f"{self.proc.wait()} before ready\n{self.log_tail()}")
                    buf += chunk

    def kill(self) -> None:
        """SIGKILL, reap and close the pipe."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def terminate(self, timeout: float) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "server log (tail):\n" + "\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@dataclass
class Ack:
    uuid: str
    message_id: str
    sha256: str
    duplicate: bool


@dataclass
class Submitter:
    """Submits distinct messages until stopped; retries an unanswered one unchanged."""

    port: int
    ca_file: str
    seed: int
    acks: list[Ack] = field(default_factory=list)
    attempts: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.ctx = ssl.create_default_context(cafile=self.ca_file)
        self.thread = threading.Thread(target=self.run, name="submitter", daemon=True)

    def new_message(self, n: int) -> tuple[str, bytes]:
        mid = f"<durability-{n}-{uuid.uuid4()}@client.test>"
        body = "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") if (i + 1) % 77 else "\r\n"
                       for i in range(self.rng.randint(2000, 8000)))
        raw = (f"From: Jobcenter <{JOBCENTER}>\r\nTo: <{ANNA_CPR_ADDR}>\r\nSubject: Brev {n}\r\n"
               f"Message-ID: {mid}\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n").encode()
        return mid, raw

    def connect(self) -> smtplib.SMTP:
        client = smtplib.SMTP("localhost", self.port, timeout=10)
        try:
            client.starttls(context=self.ctx)
            client.ehlo("client.test")
            client.login(CASEWORKER, PASSWORDS[CASEWORKER])
        except BaseException:
            client.close()
            raise
        return client

    def run(self) -> None:
        client: smtplib.SMTP | None = None
        pending: tuple[str, bytes] | None = None
        tried: set[str] = set()
        n = 0
        try:
            while not (self.stop.is_set() and pending is None):
                try:
                    if client is None:
                        client = self.connect()
                    if pending is None:
                        n += 1
                        pending = self.new_message(n)
                    mid, raw = pending
                    self.attempts += 1
                    self.retries += mid in tried
                    tried.add(mid)
                    code, reply = client.mail(JOBCENTER)
                    if code == 250:
                        code, reply = client.rcpt(ANNA_CPR_ADDR)
                    if code == 250:
                        code, reply = client.data(raw)
                    else:
                        client.rset()
                except (OSError, smtplib.SMTPException):   # killed server: reconnect and retry
                    if client is not None:
                        client.close()
                    client = None
                    time.sleep(0.02)
                    continue
                if code == 250:
                    match = ACCEPTED.match(reply.decode())
                    if match is None:
                        self.errors.append(f"unexpected 250 text {reply!r}")
                        return
                    self.acks.append(Ack(match[1], mid, hashlib.sha256(raw).hexdigest(),
                                         bool(match[2])))
                    pending = None
                elif 400 <= code < 500:                 # temporary: try the same message again
                    time.sleep(0.02)
                else:
                    self.errors.append(f"permanent refusal {code} {reply!r} of {mid}")
                    return
        except Exception as exc:                        # surfaced by the test, not lost in a thread
            self.errors.append(repr(exc))
        finally:
            if client is not None:
                try:
                    client.quit()
                except (OSError, smtplib.SMTPException):
                    client.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def durable_home(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    db = "sqlite" if request.param == "sqlite" else request.getfixturevalue("pg_database")
    smtp, smtps, imap, imaps = free_ports(4)
    return make_home(tmp_path, db,
                     smtp={"listen_starttls": [f"127.0.0.1:{smtp}"],
                           "listen_implicit_tls": [f"127.0.0.1:{smtps}"]},
                     imap={"listen_starttls": [f"127.0.0.1:{imap}"],
                           "listen_implicit_tls": [f"127.0.0.1:{imaps}"]},
                     logging={"level": "info"}, delivery={"poll_interval": 0.2})


@pytest.fixture
def server(durable_home: Config, tmp_path: Path) -> Iterator[Server]:
    srv = Server(durable_home.path, tmp_path / "server.log")
    try:
        yield srv
    finally:
        srv.close()


def wait_until_delivered(store: SqlStore, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while store.pending_jobs():
        if time.monotonic() > deadline:
            raise AssertionError(f"{store.pending_jobs()} delivery jobs still pending after {timeout}s")
        time.sleep(0.1)


def test_every_acknowledged_message_survives_sigkill_intact_and_is_delivered_once(
        durable_home: Config, server: Server) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    config = durable_home
    port = int(config.smtp.listen_starttls[0].rsplit(":", 1)[1])
    submitter = Submitter(port, str(config.resolve(config.tls.ca_file)), seed)
    server.start()
    submitter.thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 0.8))
            server.kill()
            server.start()
        time.sleep(0.5)                                   # some acceptances on the last run
    finally:
        submitter.stop.set()
        submitter.thread.join(20)
    print(f"durability: {len(submitter.acks)} acks, {submitter.retries} retries, "
          f"{sum(a.duplicate for a in submitter.acks)} answered as duplicates, {server.starts} starts")
    where = f"(seed {seed}, {len(submitter.acks)} acks, {submitter.retries} retries)\n{server.log_tail()}"
    assert not submitter.thread.is_alive(), f"the client did not finish {where}"
    assert not submitter.errors, f"{submitter.errors} {where}"
    assert len(submitter.acks) >= 10, f"too few acceptances to say anything {where}"

    store = SqlStore(config.database_url, SystemClock())
    blobs = FileBlobStore(config.resolve(config.bridge.blob_dir))
    try:
        wait_until_delivered(store, timeout=20)
        acked = {a.uuid: a for a in submitter.acks}
        assert len(acked) == len(submitter.acks), f"one UUID acknowledged for two messages {where}"
        assert len({a.message_id for a in submitter.acks}) == len(submitter.acks), where

        for ack in submitter.acks:
            row = store.message(ack.uuid)
            assert row is not None, f"acknowledged {ack.uuid} ({ack.message_id}) is missing {where}"
            assert row["sha256"] == ack.sha256 and row["message_id"] == ack.message_id, where
            assert row["state"] == "delivered", f"{ack.uuid} is {row['state']} {where}"
            assert hashlib.sha256(blobs.path(ack.sha256).read_bytes()).hexdigest() == ack.sha256

        for owner, mailbox in ((ANNA, "INBOX"), (CASEWORKER, "Sent")):
            entries = store.mailbox_entries(owner, mailbox)
            uuids = [e["message_uuid"] for e in entries]
            assert len(uuids) == len(set(uuids)), f"a message filed twice in {owner} {mailbox} {where}"
            assert len({e["message_id"] for e in entries}) == len(entries), \
                f"a retry was stored as a second message in {owner} {mailbox} {where}"
            assert set(uuids) == set(acked), \
                f"{owner} {mailbox}: missing {set(acked) - set(uuids)}, extra {set(uuids) - set(acked)} {where}"
            for e in entries:
                assert hashlib.sha256(blobs.get(e["sha256"])).hexdigest() == e["sha256"], where
            assert [e["uid"] for e in entries] == sorted({e["uid"] for e in entries}), where

        for path in blobs.root.rglob("*"):
            if path.is_file() and not path.name.endswith(".tmp"):
                assert re.fullmatch(r"[0-9a-f]{64}", path.name), f"stray blob name {path}"
                assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"torn blob {path}"

        events = store.audit_events(chain="kommune")
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "audit chain has gaps"
        assert all(e["prev_hash"] == p["hash"] for p, e in zip(events, events[1:])), "audit chain broken"
        for ack in submitter.acks:
            kinds = [e["kind"] for e in events if e["message_uuid"] == ack.uuid]
            assert kinds.count("submit.accepted") == 1 and kinds.count("delivered") == 2, (ack, kinds)
    finally:
        store.close()

    # A clean stop with a session open: SIGTERM, exit status 0 within 10 s.
    idle = submitter.connect()
    try:
        assert server.terminate(10) == 0, server.log_tail()
    finally:
        idle.close()
