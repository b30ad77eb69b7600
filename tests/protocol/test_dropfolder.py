"""The MeMo drop folder: a system writes NAME.xml into <home>/dropfolders/<tenant>/incoming/ and
finds NAME.receipt.xml or NAME.error.xml, and the original, in processed/.

Driven through the real bridge (the drop folder manager is started by the App), as a system
would: files written under a temporary name and renamed.  The crash test runs the real
`python -m bridge serve` process, drops 200 files while it is SIGKILLed and restarted twice,
and checks each was processed exactly once (acceptance point 4 of the MeMo issue).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import stat
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest

from bridge.clock import SystemClock
from bridge.config import Config
from bridge.digitalpost.dropfolder import NS, TOO_LARGE
from bridge.store.sql import SqlStore
from tests.conftest import ANNA, RunningBridge, make_home
from tests.helpers.memo import example
from tests.helpers.smtp import wait_for
from tests.protocol.test_durability import Server, free_ports

SYSTEM = "system@kommune.dp2.test"
JOBCENTER = "jobcenter@kommune.dp2.test"
ANNA_CPR = b"0101701234"


def memo_for_anna() -> tuple[str, bytes]:
    """(messageUUID, the 1.2 minimum example addressed to Anna's CPR with a fresh messageUUID)."""
    memo_uuid = str(uuid.uuid4())
    data = example("example_v1.2_MeMo_Minimum_Example.xml")
    data = data.replace(b"<memo:recipientID>2211771212<", b"<memo:recipientID>" + ANNA_CPR + b"<")
    data = data.replace(b"8C2EA15D-61FB-4BA9-9366-42F8B194C114", memo_uuid.encode())
    assert ANNA_CPR in data and memo_uuid.encode() in data
    return memo_uuid, data


def add_system_account(config_path: Path) -> None:
    for args in (("account", "add", SYSTEM, "--system", "--name", "Sagssystem"),
                 ("contact-point", "grant", JOBCENTER, SYSTEM)):
        done = subprocess.run([sys.executable, "-m", "bridge.admin.cli", *args, "--config", str(config_path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def folder(config: Config, tenant: str = "kommune") -> Path:
    return config.resolve(config.dropfolder.base_dir) / tenant


def drop(root: Path, name: str, data: bytes) -> None:
    """Write as a system should: a temporary name, then a rename into incoming/."""
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, incoming / name)


def result(root: Path, name: str, timeout: float = 15) -> ET.Element:
    """processed/NAME.receipt.xml or NAME.error.xml, once the original is in processed/ too."""
    processed = root / "processed"

    def done() -> Path | None:
        found = [p for p in (processed / f"{name}.receipt.xml", processed / f"{name}.error.xml") if p.exists()]
        return found[0] if found and (processed / f"{name}.xml").exists() else None
    return ET.parse(wait_for(done, timeout=timeout)).getroot()


def text(el: ET.Element, tag: str) -> str:
    return el.findtext(f"{{{NS}}}{tag}") or ""


@pytest.fixture
def system(bridge: RunningBridge) -> RunningBridge:
    add_system_account(bridge.config.path)
    return bridge


def test_a_dropped_memo_gets_a_receipt_and_reaches_annas_inbox(system: RunningBridge) -> None:
    root = folder(system.config)
    memo_uuid, data = memo_for_anna()
    drop(root, "brev.xml", data)
    receipt = result(root, "brev")
    assert receipt.tag == f"{{{NS}}}receipt", ET.tostring(receipt)
    assert text(receipt, "status") == "accepted" and text(receipt, "tenant") == "kommune"
    message_uuid = text(receipt, "messageUUID")
    entries = wait_for(lambda: system.store.mailbox_entries(ANNA), timeout=10)
    assert [e["message_uuid"] for e in entries] == [message_uuid]
    assert memo_uuid in entries[0]["message_id"]
    assert (root / "processed" / "brev.xml").read_bytes() == data       # the original, kept
    assert os.listdir(root / "incoming") == [] and os.listdir(root / "processing") == []


def test_the_same_file_dropped_again_is_the_same_message_under_a_new_name(system: RunningBridge) -> None:
    root = folder(system.config)
    _, data = memo_for_anna()
    drop(root, "brev.xml", data)
    first = result(root, "brev")
    drop(root, "brev.xml", data)
    second = result(root, "brev-1")
    assert text(first, "status") == "accepted" and text(second, "status") == "duplicate"
    assert text(second, "messageUUID") == text(first, "messageUUID")
    assert (root / "processed" / "brev.xml").exists() and (root / "processed" / "brev-1.xml").exists()
    wait_for(lambda: system.store.mailbox_entries(ANNA), timeout=10)
    time.sleep(0.3)
    assert len(system.store.mailbox_entries(ANNA)) == 1


def test_a_file_left_in_processing_by_a_crash_is_finished_once(system: RunningBridge) -> None:
    """The states a crash leaves, made by hand: (1) the receipt written, the original not yet
    moved; (2) the message accepted, no receipt yet.  Neither gives a second message."""
    root = folder(system.config)
    _, data = memo_for_anna()
    drop(root, "brev.xml", data)
    receipt = ET.tostring(result(root, "brev"))
    processed, processing = root / "processed", root / "processing"
    os.rename(processed / "brev.xml", processing / "brev.xml")                    # (1)
    wait_for(lambda: (processed / "brev.xml").exists(), timeout=10)
    assert sorted(os.listdir(processed)) == ["brev.receipt.xml", "brev.xml"]
    assert ET.tostring(ET.parse(processed / "brev.receipt.xml").getroot()) == receipt

    os.unlink(processed / "brev.receipt.xml")                                       # (2)
    os.rename(processed / "brev.xml", processing / "brev.xml")
    again = result(root, "brev")
    assert text(again, "status") == "duplicate"
    assert text(again, "messageUUID") == text(ET.fromstring(receipt), "messageUUID")
    wait_for(lambda: (processed / "brev.xml").exists() and not os.listdir(processing), timeout=10)
    assert len(system.store.mailbox_entries(ANNA)) == 1


def test_an_invalid_memo_gets_an_error_file_naming_the_element(system: RunningBridge) -> None:
    root = folder(system.config)
    _, data = memo_for_anna()
    drop(root, "lang.xml", data.replace(b"<memo:label>", b"<memo:label>" + b"x" * 300, 1))
    drop(root, "skrald.xml", b"\x00not xml at all")
    error = result(root, "lang")
    assert error.tag == f"{{{NS}}}error" and text(error, "status") == "refused"
    paths = [text(p, "path") for p in error.iter(f"{{{NS}}}problem")]
    assert any(p.endswith("memo:label") for p in paths), ET.tostring(error)
    messages = {m.get("{http://www.w3.org/XML/1998/namespace}lang") for m in error.iter(f"{{{NS}}}message")}
    assert messages == {"en", "da"}
    garbage = result(root, "skrald")
    assert garbage.tag == f"{{{NS}}}error" and text(garbage, "reason")
    assert (root / "processed" / "skrald.xml").read_bytes() == b"\x00not xml at all"
    assert system.store.mailbox_entries(ANNA) == []


def test_a_file_name_xml_cannot_hold_still_gives_a_well_formed_receipt(system: RunningBridge) -> None:
    root = folder(system.config)
    name = os.fsdecode(b"br\xffev\x01")                   # not UTF-8, and a control character
    _, data = memo_for_anna()
    drop(root, f"{name}.xml", data)
    receipt = result(root, name)                            # ET.parse: well-formed
    assert text(receipt, "status") == "accepted" and text(receipt, "file") == "br\ufffdev\ufffd.xml"


def test_temporary_and_hidden_names_are_left_alone(system: RunningBridge) -> None:
    root = folder(system.config)
    _, data = memo_for_anna()
    (root / "incoming").mkdir(parents=True, exist_ok=True)
    for name in (".brev.xml", "brev.xml.part", ".brev.tmp"):
        (root / "incoming" / name).write_bytes(data)
    drop(root, "signal.xml", data)                      # processed, so a scan has passed
    result(root, "signal")
    assert sorted(os.listdir(root / "incoming")) == [".brev.tmp", ".brev.xml", "brev.xml.part"]


def test_files_wait_in_incoming_until_the_tenant_has_a_system_account(bridge: RunningBridge) -> None:
    root = folder(bridge.config)
    _, data = memo_for_anna()
    drop(root, "brev.xml", data)
    wait_for(lambda: (root / "processed").is_dir(), timeout=5)      # the manager has seen the tenant
    time.sleep(2.5 * bridge.config.dropfolder.poll_interval)
    assert os.listdir(root / "incoming") == ["brev.xml"] and os.listdir(root / "processed") == []
    add_system_account(bridge.config.path)
    assert text(result(root, "brev"), "status") == "accepted"


# --- what a folder may hold besides finished files -------------------------------------------

def signal_scan(root: Path, name: str = "signal") -> None:
    """Drops a valid MeMo and waits for its receipt: a scan has passed everything before it."""
    _, data = memo_for_anna()
    drop(root, f"{name}.xml", data)
    assert text(result(root, name), "status") == "accepted"


def anna_has(system: RunningBridge, count: int) -> None:
    """Anna's inbox reaches `count` messages (delivery is asynchronous) and stays there."""
    wait_for(lambda: len(system.store.mailbox_entries(ANNA)) >= count or None, timeout=10)
    time.sleep(0.3)
    assert len(system.store.mailbox_entries(ANNA)) == count


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_links_and_fifos_are_never_read_nor_submitted(system: RunningBridge, tmp_path: Path,
                                                      kind: str) -> None:
    """A symlink or hard link to a file outside (here a valid MeMo for Anna, so reading it would
    show as a message) and a FIFO (which would block a plain open or read) are left in
    incoming/ untouched: no message, no result file, and the scan goes on."""
    root = folder(system.config)
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "secret.xml"
    secret.write_bytes(memo_for_anna()[1])
    target = incoming / "brev.xml"
    {"symlink": lambda: os.symlink(secret, target), "hardlink": lambda: os.link(secret, target),
     "fifo": lambda: os.mkfifo(target)}[kind]()
    signal_scan(root)
    signal_scan(root, "signal-2")                       # a second scan: it is still not taken
    assert os.listdir(incoming) == ["brev.xml"]
    assert {"symlink": os.path.islink, "hardlink": lambda p: os.stat(p).st_nlink == 2,
            "fifo": lambda p: stat.S_ISFIFO(os.lstat(p).st_mode)}[kind](target)
    assert not [n for n in os.listdir(root / "processed") if n.startswith("brev")]
    assert not os.listdir(root / "processing")
    anna_has(system, 2)                                 # the two signals only


def test_a_file_over_the_size_limit_gets_an_error_file_without_being_read_whole(
        system: RunningBridge) -> None:
    root = folder(system.config)
    limit = system.config.smtp.max_message_size
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    with open(incoming / ".stor.tmp", "wb") as f:          # sparse: 4 x the limit, no disk used
        f.truncate(4 * limit)
    os.rename(incoming / ".stor.tmp", incoming / "stor.xml")
    error = result(root, "stor", timeout=30)
    assert error.tag == f"{{{NS}}}error" and text(error, "reason") == TOO_LARGE
    # the digest is of the first limit + 1 bytes: nothing beyond them was read
    assert text(error, "sha256") == hashlib.sha256(bytes(limit + 1)).hexdigest()
    assert os.path.getsize(root / "processed" / "stor.xml") == 4 * limit
    assert system.store.mailbox_entries(ANNA) == []


def test_names_with_spaces_unicode_and_newlines_get_receipts(system: RunningBridge,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    root = folder(system.config)
    names = ["brev med mellemrum", "brev æøå ✉", "brev\nlinje"]
    caplog.set_level("INFO", logger="bridge.dropfolder")
    for name in names:
        drop(root, f"{name}.xml", memo_for_anna()[1])
    for name in names:
        receipt = result(root, name)
        assert text(receipt, "status") == "accepted" and text(receipt, "file") == f"{name}.xml"
        assert (root / "processed" / f"{name}.xml").exists()
    anna_has(system, 3)
    logged = [r.getMessage() for r in caplog.records if r.name == "bridge.dropfolder"]
    assert any("brev\\x0alinje.xml" in line for line in logged), logged   # escaped, one line
    assert not any("\n" in line for line in logged), logged


def test_a_file_its_writer_holds_locked_is_not_read_until_released(system: RunningBridge) -> None:
    """The writer keeps NAME.xml open with an exclusive flock while writing it (no rename at
    the end): the bridge skips it until the lock goes, then submits the whole file."""
    root = folder(system.config)
    incoming = root / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    _, data = memo_for_anna()
    with open(incoming / ".skriv.tmp", "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        f.write(data[:len(data) // 2])
        f.flush()
        os.rename(incoming / ".skriv.tmp", incoming / "skriv.xml")   # visible, still being written
        signal_scan(root)
        assert os.listdir(incoming) == ["skriv.xml"]
        assert not [n for n in os.listdir(root / "processed") if n.startswith("skriv")]
        f.write(data[len(data) // 2:])
    assert text(result(root, "skriv"), "status") == "accepted"        # closed: lock released
    assert (root / "processed" / "skriv.xml").read_bytes() == data
    anna_has(system, 2)


# --- acceptance point 4: 200 files, SIGKILL and restart twice -------------------------------

FILES = 200
KILLS = 2


@pytest.fixture
def crash_home(tmp_path: Path) -> Config:
    smtp, smtps, imap, imaps = free_ports(4)
    config = make_home(tmp_path, smtp={"listen_starttls": [f"127.0.0.1:{smtp}"],
                                       "listen_implicit_tls": [f"127.0.0.1:{smtps}"]},
                       imap={"listen_starttls": [f"127.0.0.1:{imap}"],
                             "listen_implicit_tls": [f"127.0.0.1:{imaps}"]},
                       logging={"level": "info"}, dropfolder={"poll_interval": 0.05})
    add_system_account(config.path)
    return config


@pytest.fixture
def server(crash_home: Config, tmp_path: Path) -> Iterator[Server]:
    srv = Server(crash_home.path, tmp_path / "server.log")
    try:
        yield srv
    finally:
        srv.close()


def test_200_files_dropped_across_two_sigkills_are_each_processed_once(crash_home: Config,
                                                                       server: Server) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    root = folder(crash_home)
    memos = {f"brev-{n:03d}.xml": memo_for_anna() for n in range(FILES)}
    server.start()

    def dropper() -> None:
        for name, (_, data) in memos.items():
            drop(root, name, data)
            time.sleep(rng.uniform(0, 0.02))
    thread = threading.Thread(target=dropper, name="dropper", daemon=True)
    thread.start()
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.3, 1.2))
        server.kill()
        server.start()
    thread.join(30)
    where = f"(seed {seed})\n{server.log_tail()}"
    processed = root / "processed"
    try:
        wait_for(lambda: not os.listdir(root / "incoming") and not os.listdir(root / "processing")
                 and len(list(processed.glob("*.receipt.xml"))) >= FILES, timeout=30)
    except AssertionError:
        raise AssertionError(f"incoming {len(os.listdir(root / 'incoming'))}, processing "
                             f"{os.listdir(root / 'processing')}, receipts "
                             f"{len(list(processed.glob('*.receipt.xml')))} {where}") from None

    receipts = {p.name[:-len(".receipt.xml")]: ET.parse(p).getroot() for p in processed.glob("*.receipt.xml")}
    assert sorted(receipts) == sorted(n[:-len(".xml")] for n in memos), where
    assert not list(processed.glob("*.error.xml")), where
    assert sorted(p.name for p in processed.glob("*.xml") if p.name.count(".") == 1) == sorted(memos), where
    for name, (_, data) in memos.items():
        assert (processed / name).read_bytes() == data, name
    uuids = {text(r, "messageUUID") for r in receipts.values()}
    assert len(uuids) == FILES, f"two files got one message, or a file two receipts {where}"
    statuses = [text(r, "status") for r in receipts.values()]
    print(f"dropfolder: {server.starts} starts, {statuses.count('duplicate')} receipts written after a "
          f"crash between acceptance and receipt")

    store = SqlStore(crash_home.database_url, SystemClock())
    try:
        entries = wait_for(lambda: (lambda e: e if len(e) >= FILES else None)(store.mailbox_entries(ANNA)),
                           timeout=20)
        assert len(entries) == FILES, where
        assert {e["message_uuid"] for e in entries} == uuids, where
        assert {e["message_id"] for e in entries} == {f"<{u}@localhost>" for u, _ in memos.values()}, where
    finally:
        store.close()
