"""`dp2bridge audit verify|export` over events made by the real bridge, on SQLite and PostgreSQL.

Traffic goes through SMTP (smtplib against the running bridge) and the
admin commands; tampering goes straight at the database, as an intruder
with SQL access would.  Exports are checked with crypto.evidence, the same
verifier `audit verify --head` uses, and their events by recomputing hashes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
import smtplib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import delete, insert, update

from bridge.admin import audit
from bridge.core.audit import GENESIS, event_from_row, link_hash
from bridge.crypto.evidence import ensure_tenant_pki, load_tenant_pki, verify_detached
from bridge.store import auditlog
from bridge.store import models as m
from tests.conftest import ANNA, ANNA_CPR_ADDR, CASEWORKER, JOBCENTER, RunningBridge
from tests.helpers.smtp import connect, login, message, settled

if TYPE_CHECKING:
    from tests.admin.conftest import Cli

EV = m.AuditEvent.__table__
HEADS = m.AuditHead.__table__


@pytest.fixture
def traffic(bridge: RunningBridge, cli: Cli) -> RunningBridge:
    """A letter to Anna, her reply to Jobcenter, a refused recipient, a failed login and an
    admin change, all delivered (no job pending)."""
    with login(bridge, CASEWORKER) as c:
        c.sendmail(JOBCENTER, [ANNA_CPR_ADDR], message(JOBCENTER, ANNA_CPR_ADDR, "Brev"))
        c.mail(JOBCENTER)
        assert c.rcpt("nobody@kommune.dp2.test")[0] == 550
        c.rset()
    with connect(bridge) as c, pytest.raises(smtplib.SMTPAuthenticationError):
        c.login("nobody@nowhere.test", "wrong")           # an event in the _system chain
    with login(bridge, ANNA) as c:
        c.sendmail(ANNA, [JOBCENTER], message(ANNA, JOBCENTER, "Svar"))
    assert cli("account", "app-password", "add", ANNA, "phone").code == 0
    settled(bridge)
    return bridge


def heads(bridge: RunningBridge) -> dict[str, tuple[int, str]]:
    return bridge.store.audit_heads()


def kommune_event(bridge: RunningBridge, kind: str) -> dict[str, Any]:
    return next(e for e in bridge.store.audit_events("kommune") if e["kind"] == kind)


def tamper(bridge: RunningBridge, stmt: Any) -> None:
    with bridge.store.write_engine.begin() as conn:
        conn.execute(stmt)


def delete_newest(bridge: RunningBridge, chain: str) -> int:
    """Delete the chain's newest event and rewrite audit_heads to the one before: an
    attacker covering their tracks.  The deleted seq."""
    seq = heads(bridge)[chain][0]
    before = next(e for e in bridge.store.audit_events(chain) if e["seq"] == seq - 1)
    tamper(bridge, delete(EV).where(EV.c.chain == chain, EV.c.seq == seq))
    tamper(bridge, update(HEADS).where(HEADS.c.chain == chain).values(seq=seq - 1, hash=before["hash"]))
    return seq


def export(cli: Cli, tmp_path: Path, *args: str) -> tuple[Path, list[dict[str, Any]]]:
    path = tmp_path / "kommune.jsonl"
    r = cli("audit", "export", "--tenant", "kommune", "--output", path, *args)
    assert r.code == 0, r.err
    assert r.out == ""
    return path, [json.loads(line) for line in path.read_text().splitlines()]


# --- verify --------------------------------------------------------------------

def test_verify_passes_and_names_every_chain_with_its_head(traffic: RunningBridge, cli: Cli) -> None:
    r = cli("audit", "verify")
    assert r.code == 0, r.out + r.err
    expected = [f"ok: {chain}: {seq} events, head {digest[:16]}"
                for chain, (seq, digest) in sorted(heads(traffic).items())]
    assert r.out.splitlines() == expected
    assert {"kommune", "borger", "_system"} <= set(heads(traffic))
    one = cli("audit", "verify", "--tenant", "borger")
    assert one.code == 0 and one.out.splitlines() == [l for l in expected if l.startswith("ok: borger:")]


@pytest.mark.parametrize("column", ["actor", "details"])
def test_one_changed_byte_fails_and_names_that_event(traffic: RunningBridge, cli: Cli, column: str) -> None:
    ev = kommune_event(traffic, "delivered")
    if column == "actor":
        change = {"actor": ev["actor"][:-1] + chr(ord(ev["actor"][-1]) ^ 1)}
    else:
        change = {"details": {**ev["details"], "mailbox": ev["details"]["mailbox"][:-1] + "Y"}}
    tamper(traffic, update(EV).where(EV.c.id == ev["id"]).values(**change))
    r = cli("audit", "verify")
    assert r.code == 1
    fail = [line for line in r.out.splitlines() if line.startswith("FAIL:")]
    assert fail == [f"FAIL: kommune: first broken link at seq {ev['seq']} (row id {ev['id']}, "
                    f"kind delivered, "
                    f"time {audit._iso_ms(ev['time'])}): changed: its content does not match its hash "
                    f"(the event was altered after it was written)"]
    assert any(line.startswith("ok: borger:") for line in r.out.splitlines())   # other chains still checked
    assert "do not repair" in r.err


def test_a_missing_event_in_the_middle_is_named(traffic: RunningBridge, cli: Cli) -> None:
    ev = kommune_event(traffic, "submit.accepted")
    tamper(traffic, delete(EV).where(EV.c.id == ev["id"]))
    r = cli("audit", "verify", "--tenant", "kommune")
    assert r.code == 1
    assert f"FAIL: kommune: first broken link at seq {ev['seq']} (nearest event seq {ev['seq'] + 1}:" in r.out
    assert f"missing: seq {ev['seq']} is not in the database (deleted)" in r.out


def test_a_rewritten_event_with_recomputed_hash_breaks_the_next_link(traffic: RunningBridge,
                                                                    cli: Cli) -> None:
    ev = kommune_event(traffic, "submit.accepted")
    forged = {**ev, "actor": "mallory@kommune.dp2.test"}
    tamper(traffic, update(EV).where(EV.c.id == ev["id"]).values(
        actor=forged["actor"], hash=link_hash(ev["prev_hash"], event_from_row(forged))))
    r = cli("audit", "verify", "--tenant", "kommune")
    assert r.code == 1
    assert f"first broken link at seq {ev['seq'] + 1} " in r.out
    assert f"broken link: its prev_hash is not the hash of seq {ev['seq']}" in r.out


def test_deleting_the_newest_event_is_caught_by_the_stored_head(traffic: RunningBridge, cli: Cli) -> None:
    seq, _ = heads(traffic)["kommune"]
    tamper(traffic, delete(EV).where(EV.c.chain == "kommune", EV.c.seq == seq))
    r = cli("audit", "verify", "--tenant", "kommune")
    assert r.code == 1
    assert f"FAIL: kommune: first broken link at seq {seq} " in r.out
    assert f"missing: seq {seq} is not in the database (deleted at the end)" in r.out


def test_an_event_beyond_the_head_and_a_deleted_head_are_named(bridge: RunningBridge, cli: Cli) -> None:
    seq, digest = heads(bridge)["kommune"]
    last = next(e for e in bridge.store.audit_events("kommune") if e["seq"] == seq)
    forged = {**{k: v for k, v in last.items() if k != "id"}, "seq": seq + 1, "prev_hash": digest,
              "kind": "login", "details": {}}
    forged["hash"] = link_hash(digest, event_from_row(forged))     # a well-formed link, but unrecorded
    tamper(bridge, insert(EV).values(**forged))
    tamper(bridge, delete(HEADS).where(HEADS.c.chain == "borger"))
    r = cli("audit", "verify")
    assert r.code == 1
    fail = sorted(line for line in r.out.splitlines() if line.startswith("FAIL:"))
    n = len(bridge.store.audit_events("borger"))
    assert fail[0].startswith(f"FAIL: borger: first broken link at seq {n + 1} (nearest event seq {n}:")
    assert fail[0].endswith("no head: audit_heads has no row for this chain (deleted?), so events missing "
                            "at its end cannot be ruled out")
    assert fail[1] == (f"FAIL: kommune: first broken link at seq {seq + 1}: unrecorded: seq {seq + 1} "
                       f"is beyond the stored head (inserted behind the bridge's back)")


def test_long_chains_are_walked_in_pages_with_progress(traffic: RunningBridge, cli: Cli,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auditlog, "PAGE", 2)
    monkeypatch.setattr(audit, "PROGRESS_EVERY", 3)
    seq, digest = heads(traffic)["kommune"]
    assert seq > 6
    r = cli("audit", "verify", "--tenant", "kommune")
    assert r.code == 0, r.out
    assert r.out == f"ok: kommune: {seq} events, head {digest[:16]}\n"
    progress = r.err.splitlines()
    assert progress[:2] == ["audit verify: kommune: 3 events checked...",
                            "audit verify: kommune: 6 events checked..."]
    assert progress[-1] == f"audit verify: kommune: {seq} events checked"
    last = [e for e in traffic.store.audit_events("kommune") if e["seq"] == seq][0]
    tamper(traffic, update(EV).where(EV.c.id == last["id"]).values(result="fail"))
    r = cli("audit", "verify", "--tenant", "kommune")
    assert r.code == 1 and f"first broken link at seq {seq} (row id {last['id']}" in r.out


def test_unknown_tenant_is_refused(bridge: RunningBridge, cli: Cli) -> None:
    r = cli("audit", "verify", "--tenant", "nosuch")
    assert r.code == 1 and "there is no audit chain 'nosuch'" in r.err and r.out == ""


# --- export and the signed head ------------------------------------------------------

def test_export_has_every_event_and_a_signed_whole_head(traffic: RunningBridge, cli: Cli,
                                                        tmp_path: Path) -> None:
    _, lines = export(cli, tmp_path)
    *events, final = lines
    seq, digest = heads(traffic)["kommune"]
    assert [e["seq"] for e in events] == list(range(1, seq + 1))
    prev = GENESIS
    for e in events:                          # an auditor can recompute every link from the file
        row = {**e, "time": dt.datetime.fromisoformat(e["time"])}
        assert e["prev_hash"] == prev and link_hash(prev, event_from_row(row)) == e["hash"]
        prev = e["hash"]
    head = final["signed_head"]
    assert (head["chain"], head["seq"], head["hash"], head["count"]) == ("kommune", seq, digest, seq)
    pki = load_tenant_pki(traffic.config.home / "certs", "kommune")
    signed = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
    verified = verify_detached(signed, base64.b64decode(final["signature"]), [pki.ca_pem()])
    assert verified.signer_cert_pem.strip() == pki.cert_pem().strip() == final["certificate"].encode().strip()


def test_export_since_limits_events_not_the_head(traffic: RunningBridge, cli: Cli, tmp_path: Path) -> None:
    accepted = kommune_event(traffic, "submit.accepted")
    r = cli("audit", "export", "--tenant", "kommune", "--since", accepted["time"].isoformat())
    assert r.code == 0, r.err
    *events, final = [json.loads(line) for line in r.out.splitlines()]
    assert events[0]["seq"] == accepted["seq"] and events[-1]["seq"] == heads(traffic)["kommune"][0]
    assert final["signed_head"]["seq"] == heads(traffic)["kommune"][0]
    assert f"audit export: kommune: {len(events)} events written" in r.err


def test_export_refuses_bad_arguments(bridge: RunningBridge, cli: Cli) -> None:
    r = cli("audit", "export", "--tenant", "kommune", "--format", "csv")
    assert r.code == 2 and "invalid choice: 'csv'" in r.err and r.out == ""
    r = cli("audit", "export", "--tenant", "kommune", "--since", "yesterday")
    assert r.code == 2 and "'yesterday' is not an ISO time" in r.err
    r = cli("audit", "export", "--tenant", "nosuch")
    assert r.code == 1 and "tenant 'nosuch' has no evidence certificate" in r.err and r.out == ""


def test_deleting_the_newest_event_and_fixing_the_head_is_caught_by_an_export(
        traffic: RunningBridge, cli: Cli, tmp_path: Path) -> None:
    path, _ = export(cli, tmp_path)
    ok = cli("audit", "verify", "--head", path)
    assert ok.code == 0, ok.out
    assert ok.out.splitlines()[-1].startswith("ok: kommune: still holds the exported head seq ")
    seq = delete_newest(traffic, "kommune")
    assert cli("audit", "verify").code == 0                  # the chain itself looks whole now
    r = cli("audit", "verify", "--head", path)
    assert r.code == 1
    assert f"FAIL: kommune: seq {seq} is missing: the export of " in r.out
    assert f"the database chain now ends at seq {seq - 1} (events deleted)" in r.out


def test_a_replaced_newest_event_is_caught_by_an_export(traffic: RunningBridge, cli: Cli,
                                                        tmp_path: Path) -> None:
    path, _ = export(cli, tmp_path)
    seq = delete_newest(traffic, "kommune")
    assert cli("account", "app-password", "add", CASEWORKER, "laptop").code == 0   # a new seq
    assert heads(traffic)["kommune"][0] == seq
    r = cli("audit", "verify", "--head", path)
    assert r.code == 1 and f"FAIL: kommune: seq {seq} changed: its hash is not the one the export" in r.out


def test_a_forged_export_fails_its_signature(bridge: RunningBridge, cli: Cli, tmp_path: Path) -> None:
    path, lines = export(cli, tmp_path)
    for forge in ("seq", "hash", "count", "exported_at", "signature"):
        final = json.loads(json.dumps(lines[-1]))
        if forge == "signature":
            sig = bytearray(base64.b64decode(final["signature"]))
            sig[-5] ^= 1
            final["signature"] = base64.b64encode(bytes(sig)).decode()
        elif forge == "hash":
            final["signed_head"]["hash"] = GENESIS
        elif forge == "exported_at":
            final["signed_head"]["exported_at"] = "2030-01-01T00:00:00+00:00"
        else:
            final["signed_head"][forge] -= 1
        path.write_text("".join(json.dumps(line) + "\n" for line in [*lines[:-1], final]))
        r = cli("audit", "verify", "--head", path)
        assert r.code == 1, forge
        assert r.out.startswith(f"FAIL: kommune: the signed head in {path} does not verify: "), forge
        assert "ok: kommune:" not in r.out


def resign(path: Path, lines: list[dict[str, Any]], pki: Any) -> None:
    lines[-1]["signature"] = base64.b64encode(pki.sign(audit.head_bytes(lines[-1]["signed_head"]))).decode()
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_an_export_signed_by_another_tenant_does_not_count(bridge: RunningBridge, cli: Cli,
                                                           tmp_path: Path) -> None:
    path, lines = export(cli, tmp_path)
    resign(path, lines, load_tenant_pki(bridge.config.home / "certs", "borger"))
    r = cli("audit", "verify", "--head", path)
    assert r.code == 1 and "does not verify: signed by a certificate not issued by" in r.out


def test_only_the_evidence_certificate_may_sign_not_another_of_the_tenant_ca(
        bridge: RunningBridge, cli: Cli, tmp_path: Path) -> None:
    path, lines = export(cli, tmp_path)
    ours = bridge.config.home / "certs" / "tenants" / "kommune"
    theirs = tmp_path / "certs" / "tenants" / "kommune"          # the same CA, a key of someone else's
    theirs.mkdir(parents=True)
    for name in ("ca.pem", "ca.key"):
        shutil.copy(ours / name, theirs / name)
    other = ensure_tenant_pki(tmp_path / "certs", "kommune", "Mallory", "mallory@kommune.dp2.test")
    assert other.cert_pem() != load_tenant_pki(bridge.config.home / "certs", "kommune").cert_pem()
    resign(path, lines, other)
    r = cli("audit", "verify", "--head", path)
    assert r.code == 1
    assert "does not verify: signed by CN=Mallory evidence (dp2bridge), which is not the evidence " \
           "certificate of kommune" in r.out


def test_a_cut_or_foreign_export_is_refused(bridge: RunningBridge, cli: Cli, tmp_path: Path) -> None:
    path, lines = export(cli, tmp_path)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines[:-1]))
    r = cli("audit", "verify", "--head", path)
    assert r.code == 1 and "is not an audit export: its last line is not a signed head" in r.err
    path2, _ = export(cli, tmp_path)
    r = cli("audit", "verify", "--head", path2, "--tenant", "borger")
    assert r.code == 2 and "is an export of chain 'kommune', not of --tenant 'borger'" in r.err
