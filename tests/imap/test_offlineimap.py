"""Issue 3, acceptance 3: offlineimap syncs Anna's account both ways.

The same story as test_mbsync.py, with offlineimap (Debian offlineimap3, imaplib2)
over implicit TLS on `localhost` (its imaplib2 stalls now and then right after
STARTTLS): a first sync brings every mailbox into a local Maildir; locally one
letter is marked read and another moved into Archive (without the `,U=` UID of
its old folder, as a mail reader that moves files does); the next sync sends
both to the server, which then shows \\Seen on the first and the second in
Archive (gone from INBOX); a third sync copies, flags and deletes nothing, the
local Maildir stays the same and no mailbox's HIGHESTMODSEQ moves.  Skipped,
saying why, when offlineimap is not installed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import ANNA, PASSWORDS, RunningBridge
from tests.imap.test_mbsync import (deliver_letters, find_message, flags_by_subject, letters_by_subject, mark_read,
                                    move_to, run_client, server_state)

OFFLINEIMAP = shutil.which("offlineimap")

OFFLINEIMAPRC = """\
[general]
accounts = anna
metadata = {metadata}
ui = basic
maxsyncaccounts = 1
socktimeout = 60

[Account anna]
localrepository = anna-local
remoterepository = anna-remote

[Repository anna-local]
type = Maildir
localfolders = {maildir}

[Repository anna-remote]
type = IMAP
remotehost = localhost
remoteport = {port}
ssl = yes
starttls = no
sslcacertfile = {ca}
remoteuser = {user}
remotepass = {password}
maxconnections = 1
holdconnectionopen = no
"""

# What offlineimap's basic UI says when it propagates something (copies, flags, deletions).
CHANGES = re.compile(r"(?i)^\s*(copy message|adding flag|deleting flag|deleting \d+ message|"
                     r"adding labels|deleting labels|creating folder)", re.M)


def offlineimap(config: Path) -> str:
    return run_client([OFFLINEIMAP or "offlineimap", "-c", str(config), "-o", "-u", "basic", "-d", "imap"],
                      "offlineimap")


def local_tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.mark.skipif(OFFLINEIMAP is None, reason="offlineimap not installed (Debian: apt-get install "
                                                "offlineimap; `make system-deps` does it when run as root)")
def test_offlineimap_syncs_annas_account_both_ways(bridge: RunningBridge, tmp_path: Path) -> None:
    deliver_letters(bridge, ["Indkaldelse", "Afgoerelse", "Kvittering"])
    delivered = letters_by_subject(bridge, "INBOX")
    maildir, metadata = tmp_path / "Mail", tmp_path / "offlineimap"
    maildir.mkdir()
    config = tmp_path / "offlineimaprc"
    config.write_text(OFFLINEIMAPRC.format(metadata=metadata, maildir=maildir, port=bridge.port("imap-implicit-tls"),
                                           ca=bridge.ca_file, user=ANNA, password=PASSWORDS[ANNA]))

    # First sync: every mailbox arrives locally, the three letters in INBOX.
    output = offlineimap(config)
    assert "ERROR" not in output, output
    inbox = maildir / "INBOX"
    assert (maildir / "Archive" / "cur").is_dir() and (maildir / "Sent" / "cur").is_dir()
    assert len(list((inbox / "new").iterdir())) + len(list((inbox / "cur").iterdir())) == 3

    # Locally: read one letter, move another to Archive.
    mark_read(find_message(inbox, "Indkaldelse"))
    move_to(find_message(inbox, "Afgoerelse"), maildir / "Archive")

    output = offlineimap(config)
    assert "ERROR" not in output, output
    said = [line.strip().split(" (")[0] for line in output.splitlines() if CHANGES.match(line)]
    assert sorted(said) == ["Adding flag S to 1 messages on INBOX", "Copy message UID -1",
                            "Deleting 1 messages"], output
    assert flags_by_subject(bridge, "INBOX") == {"Indkaldelse": "\\Seen", "Kvittering": ""}
    archived = flags_by_subject(bridge, "Archive")
    assert list(archived) == ["Afgoerelse"]
    assert "\\Seen" not in archived["Afgoerelse"]
    moved = letters_by_subject(bridge, "Archive")["Afgoerelse"]
    assert moved == delivered["Afgoerelse"], moved

    # A further sync changes nothing, on either side.
    before_server, before_local = server_state(bridge), local_tree(maildir)
    output = offlineimap(config)
    assert "ERROR" not in output, output
    assert not CHANGES.findall(output), output
    assert server_state(bridge) == before_server
    assert local_tree(maildir) == before_local
