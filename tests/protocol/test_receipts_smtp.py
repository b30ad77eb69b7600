"""Receipts end to end (issue 4): a real bridge, real SMTP+TLS, the real openssl binary.

Runs on SQLite and PostgreSQL (the `db` fixture).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.smtp import login, message, send, wait_for

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl binary is needed (Debian package openssl)")


def receipts(bridge: RunningBridge, owner: str, count: int) -> list[tuple[str, bytes]]:
    """(X-DP2-Receipt, bytes) of the receipts in `owner`'s Receipts mailbox, once `count` are there."""
    entries = wait_for(lambda: (lambda e: e if len(e) >= count else None)(
        bridge.store.mailbox_entries(owner, "Receipts")), timeout=10)
    out = []
    for e in entries:
        raw = bridge.app.blobs.get(e["sha256"])
        out.append((email.message_from_bytes(raw, policy=email.policy.default)["X-DP2-Receipt"], raw))
    return out


def tenant_ca(bridge: RunningBridge, tenant: str) -> Path:
    return bridge.app.config.resolve("certs") / "tenants" / tenant / "ca.pem"


def openssl_verify(raw: bytes, ca: Path, tmp: Path) -> subprocess.CompletedProcess:
    path = tmp / "receipt.eml"
    path.write_bytes(raw)
    return subprocess.run(["openssl", "smime", "-verify", "-CAfile", str(ca), "-in", str(path),
                           "-out", str(tmp / "content.out")], capture_output=True)


def flip_inside_signed_part(raw: bytes) -> bytes:
    """One byte changed in the human text of the signed part."""
    at = raw.index(b"Kvittering", raw.index(b"\r\n\r\n") + 4)
    return raw[:at] + b"k" + raw[at + 1:]


@needs_openssl
def test_letter_yields_one_acceptance_and_one_consignment_receipt(bridge: RunningBridge, tmp_path: Path) -> None:
    with login(bridge, CASEWORKER) as c:
        uuid = send(c, JOBCENTER, ANNA_CPR_ADDR, message(JOBCENTER, ANNA_CPR_ADDR, "Indkaldelse"))
    got = receipts(bridge, CASEWORKER, 2)
    assert sorted(kind for kind, _ in got) == ["ContentConsignment", "SubmissionAcceptance"]
    ca = tenant_ca(bridge, "kommune")
    for kind, raw in got:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert msg.get_content_type() == "multipart/signed"
        assert msg["X-DP2-Ref-Message-ID"] and msg["To"] == CASEWORKER
        assert f"{uuid}".encode() in raw
        ok = openssl_verify(raw, ca, tmp_path)
        assert ok.returncode == 0, ok.stderr
        bad = openssl_verify(flip_inside_signed_part(raw), ca, tmp_path)
        assert bad.returncode != 0
        if kind == "ContentConsignment":
            reports = [p for p in msg.walk() if p.get_content_type() == "multipart/report"]
            assert len(reports) == 1 and b"Action: delivered" in raw
            # The caseworker addressed Anna by CPR; an authority may see her CPR in its evidence.
            assert ANNA_CPR_ADDR.encode() in raw
    # The citizen gets no receipts for a letter she received, and nothing about her CPR.
    assert bridge.store.mailbox_entries(ANNA, "Receipts") == []
    # A receipt is never issued twice: nothing more arrives.
    assert len(bridge.store.mailbox_entries(CASEWORKER, "Receipts")) == 2
    kinds = [e["kind"] for e in bridge.store.audit_events(message_uuid=uuid)]
    assert kinds.index("submitted") < kinds.index("submit.accepted") < kinds.index("delivered")
    assert kinds.count("receipt.issued") == 2


def test_partly_refused_recipients_get_a_submission_rejection_with_a_dsn(bridge: RunningBridge) -> None:
    with login(bridge, CASEWORKER) as c:
        c.mail(JOBCENTER)
        assert c.rcpt(ANNA_CPR_ADDR)[0] == 250
        assert c.rcpt("nobody@kommune.dp2.test")[0] == 550
        code, _ = c.data(message(JOBCENTER, ANNA_CPR_ADDR, "To two"))
        assert code == 250
    got = dict(receipts(bridge, CASEWORKER, 3))
    assert set(got) == {"SubmissionAcceptance", "SubmissionRejection", "ContentConsignment"}
    msg = email.message_from_bytes(got["SubmissionRejection"], policy=email.policy.default)
    report = next(p for p in msg.walk() if p.get_content_type() == "multipart/report")
    assert report.get_param("report-type") == "delivery-status"
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_bytes()
    assert b"Action: failed" in text and b"Status: 5.1.1" in text and b"nobody@kommune.dp2.test" in text


def test_recipient_disabled_before_filing_gets_a_consignment_failure(bridge: RunningBridge) -> None:
    from bridge.core.admin import Admin
    stop_delivery_worker(bridge)
    with login(bridge, CASEWORKER) as c:
        send(c, JOBCENTER, ANNA_CPR_ADDR, message(JOBCENTER, ANNA_CPR_ADDR, "Too late"))
    Admin(bridge.store, bridge.app.clock, "test").set_disabled(ANNA, True)
    bridge.app.worker.deliver_many(bridge.store.claim_jobs(64, 120))     # the worker's own pass
    got = dict(receipts(bridge, CASEWORKER, 2))
    assert set(got) == {"SubmissionAcceptance", "ContentConsignmentFailure"}
    msg = email.message_from_bytes(got["ContentConsignmentFailure"], policy=email.policy.default)
    assert any(p.get_content_type() == "multipart/report" for p in msg.walk())
    raw = got["ContentConsignmentFailure"]
    assert b"Action: failed" in raw and b"Status: 5.2.1" in raw
    assert bridge.store.mailbox_entries(ANNA) == []
    assert bridge.store.message(bridge.store.mailbox_entries(CASEWORKER, "Sent")[0]["message_uuid"])[
        "state"] == "failed"


def stop_delivery_worker(bridge: RunningBridge) -> None:
    """Stop the delivery loop (idle right after start), so a test runs its pass by hand."""
    async def stop() -> None:
        task = bridge.app._worker_task
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        bridge.app._worker_task = None
    bridge.call(stop())


def run_cli(bridge: RunningBridge, *args: str) -> subprocess.CompletedProcess:
    import sys
    return subprocess.run([sys.executable, "-m", "bridge.admin.cli", *args, "--config",
                           str(bridge.app.config.path)], capture_output=True, text=True, timeout=60)


def test_dp2bridge_verify_checks_signature_trail_and_original(bridge: RunningBridge, tmp_path: Path) -> None:
    with login(bridge, CASEWORKER) as c:
        uuid = send(c, JOBCENTER, ANNA_CPR_ADDR, message(JOBCENTER, ANNA_CPR_ADDR, "Afgørelse"))
    got = dict(receipts(bridge, CASEWORKER, 2))
    delivered = wait_for(lambda: bridge.store.mailbox_entries("anna@borger.dp2.test"))[0]
    accepted = bridge.store.mailbox_entries(CASEWORKER, "Sent")[0]
    assert accepted["message_uuid"] == uuid
    originals = {"delivered.eml": bridge.app.blobs.get(delivered["sha256"]),
                 "accepted.eml": bridge.app.blobs.get(accepted["sha256"])}
    for name, raw in originals.items():
        (tmp_path / name).write_bytes(raw)
    (tmp_path / "changed.eml").write_bytes(originals["accepted.eml"].replace(b"Afg", b"afg", 1))
    for kind, raw in got.items():
        path = tmp_path / f"{kind}.eml"
        path.write_bytes(raw)
        ok = run_cli(bridge, "verify", str(path))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "VALID" in ok.stdout and "FAILED" not in ok.stdout
        bad = tmp_path / f"{kind}-changed.eml"
        bad.write_bytes(flip_inside_signed_part(raw))
        no = run_cli(bridge, "verify", str(bad))
        assert no.returncode == 1 and "NOT VALID" in no.stdout and "changed" in no.stdout, no.stdout
    consignment = tmp_path / "ContentConsignment.eml"
    for name in ("delivered.eml", "accepted.eml"):
        ok = run_cli(bridge, "verify", str(consignment), "--message", str(tmp_path / name))
        assert ok.returncode == 0, ok.stdout
    no = run_cli(bridge, "verify", str(consignment), "--message", str(tmp_path / "changed.eml"))
    assert no.returncode == 1 and "not the message" in no.stdout
    # Offline, with only the tenant's published CA: signature and digest, the trail skipped.
    offline = subprocess.run([__import__("sys").executable, "-m", "bridge.admin.cli", "verify",
                              str(consignment), "--ca", str(tenant_ca(bridge, "kommune")),
                              "--message", str(tmp_path / "accepted.eml")], capture_output=True, text=True)
    assert offline.returncode == 0 and "skipped" in offline.stdout, offline.stdout + offline.stderr
    wrong_ca = run_cli(bridge, "verify", str(consignment), "--ca", str(tenant_ca(bridge, "borger")))
    assert wrong_ca.returncode == 1


def mdn(original_id: str, disposition: str = "manual-action/MDN-sent-manually; displayed") -> bytes:
    """An MDN as Thunderbird sends it (RFC 8098) when Anna agrees to send a return receipt."""
    return (f"From: {ANNA}\r\nTo: {JOBCENTER}\r\nSubject: Return Receipt (displayed) - Indkaldelse\r\n"
            f"Message-ID: <mdn-{abs(hash(disposition))}@borger.test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification;\r\n"
            " boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
            "This is a Return Receipt for the mail that you sent.\r\n\r\n--b1\r\n"
            "Content-Type: message/disposition-notification; name=\"MDNPart2.txt\"\r\n"
            "Content-Disposition: inline\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            "Reporting-UA: borger.test; Thunderbird 128.5.0\r\n"
            f"Final-Recipient: rfc822;{ANNA}\r\nOriginal-Message-ID: {original_id}\r\n"
            f"Disposition: {disposition}\r\n\r\n--b1--\r\n").encode()


def test_an_mdn_from_annas_client_becomes_signed_read_evidence(bridge: RunningBridge, tmp_path: Path) -> None:
    letter_id = "<letter-mdn@kommune.test>"
    with login(bridge, CASEWORKER) as c:
        uuid = send(c, JOBCENTER, ANNA_CPR_ADDR, message(
            JOBCENTER, ANNA_CPR_ADDR, "Indkaldelse", message_id=letter_id,
            extra=f"Disposition-Notification-To: {JOBCENTER}\r\n"))
    wait_for(lambda: bridge.store.mailbox_entries(ANNA))
    receipts(bridge, CASEWORKER, 2)
    with login(bridge, ANNA) as c:
        assert send(c, ANNA, JOBCENTER, mdn(letter_id)) == uuid         # the 250 names the letter read
        other = send(c, ANNA, JOBCENTER, mdn(letter_id, "manual-action/MDN-sent-manually; deleted"))
    got = dict(receipts(bridge, CASEWORKER, 3))
    assert set(got) == {"SubmissionAcceptance", "ContentConsignment", "ContentAccessTracking"}
    assert len(bridge.store.mailbox_entries(CASEWORKER, "Receipts")) == 3
    raw = got["ContentAccessTracking"]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    report = next(p for p in msg.walk() if p.get_content_type() == "multipart/report")
    assert report.get_param("report-type") == "disposition-notification"
    assert b"manual-action/MDN-sent-manually; displayed" in raw
    path = tmp_path / "read.eml"
    path.write_bytes(raw)
    assert run_cli(bridge, "verify", str(path)).returncode == 0
    # The displayed MDN was turned into evidence, not passed on; an MDN saying "deleted" is mail.
    shared = wait_for(lambda: bridge.store.mailbox_entries(JOBCENTER))
    assert [e["message_uuid"] for e in shared] == [other]
    kinds = [e["kind"] for e in bridge.store.audit_events(message_uuid=uuid)]
    assert kinds.count("read") == 1


def test_resubmitting_the_same_message_creates_nothing_new(bridge: RunningBridge) -> None:
    raw = message(JOBCENTER, ANNA_CPR_ADDR, "Samme brev", message_id="<once@kommune.test>")
    with login(bridge, CASEWORKER) as c:
        first = send(c, JOBCENTER, ANNA_CPR_ADDR, raw)
    receipts(bridge, CASEWORKER, 2)
    with login(bridge, CASEWORKER) as c:          # e.g. a client that retries after a timeout
        again = send(c, JOBCENTER, ANNA_CPR_ADDR, raw)
        third = send(c, JOBCENTER, ANNA_CPR_ADDR, raw)
    assert first == again == third
    wait_for(lambda: bridge.store.pending_jobs() == 0)
    from bridge.store.receipts import ReceiptRepository
    wait_for(lambda: all(r["state"] == "done" for r in ReceiptRepository(bridge.store).receipts()), timeout=10)
    assert len(bridge.store.mailbox_entries(ANNA)) == 1
    assert len(bridge.store.mailbox_entries(CASEWORKER, "Sent")) == 1
    assert len(bridge.store.mailbox_entries(CASEWORKER, "Receipts")) == 2
    assert [e["kind"] for e in bridge.store.audit_events(message_uuid=first)].count("submit.accepted") == 1
