"""Acceptance 7 of the IMAP issue: flags, keywords, UIDs and MODSEQs survive a restart, and
UIDVALIDITY never changes for a mailbox that was not deleted.  Both engines."""

from __future__ import annotations

import re

from bridge.config import Config
from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, start_bridge
from tests.helpers.imap import Transcript
from tests.helpers.smtp import login, message, wait_for


def snapshot(t: Transcript) -> tuple[bytes, list[bytes]]:
    select = t.transact("OK", "SELECT INBOX (CONDSTORE)")
    validity = next(line for line in select if b"[UIDVALIDITY" in line)
    fetched = [line for line in t.transact("OK", "UID FETCH 1:* (FLAGS MODSEQ)") if line.startswith(b"* ")]
    return re.search(rb"UIDVALIDITY (\d+)", validity).group(1), sorted(fetched)


def test_state_survives_a_restart(home: Config) -> None:
    running = start_bridge(home)
    try:
        with login(running, CASEWORKER) as c:
            for i in range(3):
                c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR, f"letter {i}"))
        wait_for(lambda: len(running.store.mailbox_entries(ANNA)) == 3, timeout=5)
        t = Transcript(running, ANNA)
        t.transact("OK", "SELECT INBOX")
        t.transact("OK", "UID STORE 1 +FLAGS.SILENT (\\Seen $Handling)")
        t.transact("OK", "UID STORE 2 +FLAGS.SILENT (\\Flagged)")
        t.transact("OK", "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
        t.transact("OK", "EXPUNGE")
        t.transact("OK", "CREATE Sager")
        before = snapshot(t)
        sager_before = t.transact("OK", "STATUS Sager (UIDVALIDITY UIDNEXT)")[0]
        t.close()
    finally:
        running.stop()
    running = start_bridge(home)
    try:
        t = Transcript(running, ANNA)
        after = snapshot(t)
        assert after == before
        assert b"$Handling" in after[1][0] and b"\\Seen" in after[1][0] and b"\\Flagged" in after[1][1]
        assert len(after[1]) == 2                                   # the expunged one stays gone
        assert t.transact("OK", "STATUS Sager (UIDVALIDITY UIDNEXT)")[0] == sager_before
        t.close()
    finally:
        running.stop()
