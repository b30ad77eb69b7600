"""Server-side failures during a transaction: a full disk, a bug in the store, a failure at
RCPT.  The client gets `451 4.3.0 ... (ref S)` and nothing more (no exception text, class,
errno or path), nothing is stored, the error is logged once with the same reference, and the
next transaction on the SAME connection works.  Runs on SQLite and PostgreSQL.
Acceptance point 10.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import smtplib
import stat
from typing import Any, Callable

import pytest

from bridge.logs import SessionFilter
from tests.conftest import ANNA, JOBCENTER, RunningBridge
from tests.helpers.smtp import data_reply, login, message
from tests.helpers.smtp import expect as expect_reply

_INTERNALS = re.compile(r"Traceback|Errno|ENOSPC|No space|secret-internal-detail|/|\.py\b"
                        r"|\b[A-Za-z_]\w*(?:Error|Exception)\b")



def expect(reply: tuple[int, bytes], code: int, enhanced: str) -> str:
    return expect_reply(reply, code, enhanced, _INTERNALS)


def transaction(client: smtplib.SMTP, raw: bytes) -> tuple[int, bytes]:
    expect(client.mail(ANNA), 250, "2.1.0")
    expect(client.rcpt(JOBCENTER), 250, "2.1.5")
    return data_reply(client, raw)


def once(original: Callable[..., Any], error: BaseException,
         when: Callable[..., bool] = lambda *a: True) -> Callable[..., Any]:
    """`original`, except that its first call for which `when` holds raises `error`."""
    state = {"raised": False}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not state["raised"] and when(*args):
            state["raised"] = True
            raise error
        return original(*args, **kwargs)
    return wrapper


def accepted(bridge: RunningBridge) -> list[dict]:
    return [e for e in bridge.store.audit_events() if e["kind"] == "submit.accepted"]


def stored_messages(bridge: RunningBridge) -> int:
    from sqlalchemy import func, select

    from bridge.store import models as m
    with bridge.store.ro() as s:
        return s.scalar(select(func.count()).select_from(m.Message).where(m.Message.origin != "receipt"))


def blob_files(bridge: RunningBridge) -> list[str]:
    return [name for _, _, names in os.walk(bridge.app.blobs.root) for name in names]


def errors_logged(caplog: pytest.LogCaptureFixture, ref: str) -> list[logging.LogRecord]:
    """The bridge's error records; each must carry the session id the client was given."""
    records = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("bridge")]
    assert [getattr(r, "session", None) for r in records] == [ref] * len(records)
    return records


def ref_of(text: str) -> str:
    return text.rsplit("(ref ", 1)[1].rstrip(")")


def test_disk_full_gives_451_stores_nothing_and_the_connection_goes_on(
        bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import bridge.store.blobs as blobs

    def is_file(fd: int) -> bool:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    caplog.handler.addFilter(SessionFilter())
    disk_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(blobs.os, "fsync", once(os.fsync, disk_full, is_file))
    with login(bridge, ANNA) as c:
        text = expect(transaction(c, message(ANNA, JOBCENTER, "Full disk")), 451, "4.3.0")
        assert "try again later" in text
        assert accepted(bridge) == [] and stored_messages(bridge) == 0
        assert blob_files(bridge) == []                 # not even a temporary file is left behind
        expect(transaction(c, message(ANNA, JOBCENTER, "After the disk was freed")), 250, "2.0.0")
    assert len(accepted(bridge)) == 1 and stored_messages(bridge) == 1
    [record] = errors_logged(caplog, ref_of(text))
    assert "No space left on device" in record.getMessage()


def test_unexpected_store_failure_gives_451_without_its_text(
        bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(SessionFilter())
    store = bridge.app.service.store
    monkeypatch.setattr(store, "accept", once(store.accept, RuntimeError("secret-internal-detail")))
    with login(bridge, ANNA) as c:
        text = expect(transaction(c, message(ANNA, JOBCENTER, "Store bug")), 451, "4.3.0")
        assert "nothing was accepted" in text
        assert accepted(bridge) == [] and stored_messages(bridge) == 0
        expect(transaction(c, message(ANNA, JOBCENTER, "Store fixed")), 250, "2.0.0")
    assert len(accepted(bridge)) == 1 and stored_messages(bridge) == 1
    # Logged once, as an internal error, with the traceback for whoever reads the logs.
    [record] = errors_logged(caplog, ref_of(text))
    assert record.exc_info and "secret-internal-detail" in str(record.exc_info[1])


def test_failure_at_rcpt_gives_451_and_a_fresh_transaction_works(
        bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch) -> None:
    store = bridge.app.service.store
    monkeypatch.setattr(store, "resolve", once(store.resolve, RuntimeError("secret-internal-detail")))
    with login(bridge, ANNA) as c:
        expect(c.mail(ANNA), 250, "2.1.0")
        expect(c.rcpt(JOBCENTER), 451, "4.3.0")
        expect(c.rcpt(JOBCENTER), 503, "5.5.1")        # the transaction was reset: MAIL again
        expect(transaction(c, message(ANNA, JOBCENTER)), 250, "2.0.0")
    assert len(accepted(bridge)) == 1
