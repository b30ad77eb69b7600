"""Issue 3, acceptance 3: mbsync (Debian isync) syncs Anna's account both ways.

mbsync syncs every mailbox of Anna's account over IMAPS on `localhost` into a
local Maildir; locally one letter is marked read (the S flag in its file name)
and another moved into Archive (its file moved to Archive/cur, without the
`,U=` UID of its old folder); the next sync sends both to the server, which then
shows \\Seen on the first and the second in Archive (gone from INBOX); a third
sync changes nothing: no message or flag is propagated either way, the local
Maildir and mbsync's sync state stay the same, and no mailbox's HIGHESTMODSEQ
moves.  mbsync 1.4 matches only DNS names in certificates: the demo certificate
carries `localhost`.  Skipped, saying why, when mbsync is not installed
(`make system-deps` installs it where it can).

The helpers here (delivering letters, running a client, editing a Maildir as a
mail reader does, reading the server's state) are shared with test_offlineimap.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, PASSWORDS, RunningBridge
from tests.helpers.imap import imap_client
from tests.helpers.smtp import login, message, wait_for

CLIENT_TIMEOUT = 120
MBSYNC = shutil.which("mbsync")


def deliver_letters(bridge: RunningBridge, subjects: list[str]) -> list[dict]:
    """The caseworker writes to Anna once per subject; returns Anna's INBOX entries."""
    with login(bridge, CASEWORKER) as c:
        for subject in subjects:
            body = f"Brev om {subject}\r\n"
            c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR, subject, body=body))
    return wait_for(lambda: (lambda e: e if len(e) >= len(subjects) else None)(
        bridge.store.mailbox_entries(ANNA)), timeout=10)


def server_state(bridge: RunningBridge) -> dict[str, tuple[int, int, int]]:
    """(MESSAGES, UIDNEXT, HIGHESTMODSEQ) of every mailbox Anna has, asked over IMAP."""
    client = imap_client(bridge, ANNA)
    try:
        typ, data = client.list('""', "*")
        assert typ == "OK", data
        names = [re.search(rb'"/" (.*)$', line).group(1).decode() for line in data]
        state = {}
        for name in names:
            typ, data = client.status(name, "(MESSAGES UIDNEXT HIGHESTMODSEQ)")
            assert typ == "OK", data
            values = dict(re.findall(rb"(MESSAGES|UIDNEXT|HIGHESTMODSEQ) (\d+)", data[0]))
            state[name.strip('"')] = (int(values[b"MESSAGES"]), int(values[b"UIDNEXT"]),
                                      int(values[b"HIGHESTMODSEQ"]))
        return state
    finally:
        client.logout()


def flags_by_subject(bridge: RunningBridge, mailbox: str) -> dict[str, str]:
    """{subject: flags} of the entries in Anna's `mailbox`, straight from the store."""
    out = {}
    for entry in bridge.store.mailbox_entries(ANNA, mailbox):
        msg = bridge.store.message(entry["message_uuid"])
        assert msg is not None
        out[msg["subject"]] = entry["flags"]
    return out


def letters_by_subject(bridge: RunningBridge, mailbox: str) -> dict[str, bytes]:
    """{subject: stored bytes} of the entries in Anna's `mailbox`."""
    return {bridge.store.message(e["message_uuid"])["subject"]: bridge.app.blobs.get(e["sha256"])  # type: ignore[index]
            for e in bridge.store.mailbox_entries(ANNA, mailbox)}


def run_client(argv: list[str], what: str) -> str:
    """Run a sync client; on failure (or timeout) fail the test with its whole output."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CLIENT_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out, err = (x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (exc.stdout, exc.stderr))
        pytest.fail(f"{what} timed out after {CLIENT_TIMEOUT}s\n--- stdout\n{out}\n--- stderr\n{err}")
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    if done.returncode != 0:
        pytest.fail(f"{what} exited {done.returncode}\n{output}")
    print(f"{what}:\n{output}")                  # shown by pytest when a later assert fails
    return done.stdout + done.stderr


def strip_uid(name: str) -> str:
    """A Maildir file name without the `,U=<uid>` a sync client put in it for its old folder."""
    return re.sub(r",U=\d+", "", name)


def find_message(folder: Path, subject: str) -> Path:
    """The file in a Maildir folder (cur/ or new/) whose Subject is `subject`."""
    for sub in ("cur", "new"):
        for path in sorted((folder / sub).iterdir()):
            if re.search(rb"^Subject: " + re.escape(subject.encode()) + rb"\r?$", path.read_bytes(), re.M):
                return path
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    raise AssertionError(f"no message {subject!r} in {folder}: {files}")


def mark_read(path: Path) -> Path:
    """Add the Maildir S flag to a message file (moving it to cur/ if it is in new/)."""
    base, _, info = path.name.partition(":2,")
    flags = "".join(sorted(set(info) | {"S"}))
    target = path.parent.parent / "cur" / f"{base}:2,{flags}"
    path.rename(target)
    return target


def move_to(path: Path, folder: Path) -> Path:
    """Move a message file into another Maildir folder's cur/, as a mail reader does."""
    name = strip_uid(path.name)
    if ":2," not in name:
        name += ":2,"
    target = folder / "cur" / name
    path.rename(target)
    return target


MBSYNCRC = """\
IMAPAccount anna
Host localhost
Port {port}
User {user}
Pass "{password}"
SSLType IMAPS
CertificateFile {ca}
Timeout 60
PipelineDepth 10

IMAPStore bridge
Account anna

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel anna
Far :bridge:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""


def mbsync(config: Path) -> str:
    """One sync, verbose, with mbsync's sync debugging (-Ds): it logs each change it makes to its
    journal as a "-> log:" line ("pushed flags", "pushed deletion", "pushed message" ...)."""
    return run_client([MBSYNC or "mbsync", "-c", str(config), "-V", "-Ds", "anna"], "mbsync")


def propagated(output: str) -> list[str]:
    """What a sync changed, on either side, from its -Ds output."""
    return [line for line in output.splitlines()
            if line.startswith("-> log:") or re.match(r"\s*(pushing|new message)", line)]


def local_state(root: Path) -> dict[str, str]:
    """Every file under `root`: mbsync's sync state files by content, messages by size."""
    return {str(p.relative_to(root)): p.read_text(errors="replace") if p.name.startswith(".mbsync")
            else str(p.stat().st_size) for p in root.rglob("*") if p.is_file()}


@pytest.mark.skipif(MBSYNC is None, reason="mbsync not installed (Debian: apt-get install isync; "
                                           "`make system-deps` does it when run as root)")
def test_mbsync_syncs_annas_account_both_ways(bridge: RunningBridge, tmp_path: Path) -> None:
    deliver_letters(bridge, ["Indkaldelse", "Afgoerelse", "Kvittering"])
    delivered = letters_by_subject(bridge, "INBOX")
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(MBSYNCRC.format(port=bridge.port("imap-implicit-tls"), user=ANNA,
                                      password=PASSWORDS[ANNA], ca=bridge.ca_file, maildir=maildir))

    # First sync: the server's mailboxes arrive locally, with every letter in INBOX.
    mbsync(config)
    assert (maildir / "Archive" / "cur").is_dir() and (maildir / "Sent" / "cur").is_dir()
    inbox = maildir / "INBOX"
    assert len(list((inbox / "new").iterdir())) + len(list((inbox / "cur").iterdir())) == 3

    # Locally: read one letter, move another to Archive; the third stays as it is.
    mark_read(find_message(inbox, "Indkaldelse"))
    move_to(find_message(inbox, "Afgoerelse"), maildir / "Archive")

    changes = propagated(mbsync(config))
    assert any("pushed flags" in line for line in changes) and any("pushed message" in line for line in changes)
    inbox_flags = flags_by_subject(bridge, "INBOX")
    assert inbox_flags == {"Indkaldelse": "\\Seen", "Kvittering": ""}
    archived = flags_by_subject(bridge, "Archive")
    assert list(archived) == ["Afgoerelse"]
    assert "\\Seen" not in archived["Afgoerelse"]
    moved = letters_by_subject(bridge, "Archive")["Afgoerelse"]
    assert re.sub(rb"X-TUID: \S+\r\n", b"", moved) == delivered["Afgoerelse"]   # but for mbsync's X-TUID

    # A further sync changes nothing, on either side.
    before_server, before_local = server_state(bridge), local_state(maildir)
    output = mbsync(config)
    assert server_state(bridge) == before_server
    assert local_state(maildir) == before_local
    assert propagated(output) == [], output
