"""store.certificates: users' certificates recorded, listed, revoked at once, audited; on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from bridge.core.audit import verify_chain
from bridge.crypto.evidence import ensure_tenant_pki
from bridge.crypto.usercerts import CertFacts, issue_user_cert
from bridge.errors import AlreadyExists, NotFound
from bridge.store.certificates import CertificateRepository
from tests.store.conftest import ANNA, CASEWORKER, Demo

PW = b"pw-for-tests"


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFacts]:
    """Certificates made once per module: two RSA and one P-256 for Anna, one for the caseworker."""
    d = tmp_path_factory.mktemp("certs")
    ensure_tenant_pki(d, "borger", "Borgere", "receipts@borger.dp2.test")
    ensure_tenant_pki(d, "kommune", "Demo Kommune", "receipts@kommune.dp2.test")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return {
        "a1": issue_user_cert(d, "borger", ANNA, "Anna", PW, now=now).facts,
        "a2": issue_user_cert(d, "borger", ANNA, "Anna", PW, now=now, days=10).facts,
        "ec": issue_user_cert(d, "borger", ANNA, "Anna", PW, now=now, key_kind="p256").facts,
        "sb": issue_user_cert(d, "kommune", CASEWORKER, "SB", PW, now=now).facts,
    }


def add(repo: CertificateRepository, login: str, f: CertFacts, source: str = "issued"):
    return repo.add(login, serial=f.serial, issuer_fingerprint=f.issuer_fingerprint,
                    fingerprint=f.fingerprint, pem=f.pem, not_before=f.not_before,
                    not_after=f.not_after, source=source, actor="tests")


def test_added_certificates_are_listed_and_audited(demo: Demo, issued) -> None:
    repo = CertificateRepository(demo.store)
    add(repo, ANNA, issued["a1"])
    add(repo, ANNA.upper(), issued["a2"], "imported")
    listed = repo.list_for(ANNA)
    assert [(c.serial, c.source, c.revoked_at) for c in listed] == [
        (issued["a1"].serial, "issued", None), (issued["a2"].serial, "imported", None)]
    assert listed[0].pem == issued["a1"].pem and listed[0].not_after == issued["a1"].not_after
    events = [e for e in demo.store.audit_events("borger") if e["kind"].startswith("cert.")]
    assert [(e["kind"], e["subject"], e["details"]["serial"]) for e in events] == [
        ("cert.issued", ANNA, issued["a1"].serial), ("cert.imported", ANNA, issued["a2"].serial)]
    assert verify_chain(demo.store.audit_events("borger")) is None
    assert repo.list_for(CASEWORKER) == []


def test_the_same_certificate_is_not_recorded_twice(demo: Demo, issued) -> None:
    repo = CertificateRepository(demo.store)
    add(repo, ANNA, issued["a1"])
    with pytest.raises(AlreadyExists, match="cert list anna@borger.dp2.test"):
        add(repo, ANNA, issued["a1"])
    with pytest.raises(NotFound, match="account list"):
        add(repo, "nobody@borger.dp2.test", issued["a2"])
    assert len(repo.list_for(ANNA)) == 1


def test_revoke_takes_effect_at_once(demo: Demo, issued) -> None:
    repo = CertificateRepository(demo.store)
    for key in ("a1", "a2"):
        add(repo, ANNA, issued[key])
    add(repo, CASEWORKER, issued["sb"])
    done = repo.revoke(ANNA, issued["a1"].serial, "keyCompromise", "tests")
    assert [c.serial for c in done] == [issued["a1"].serial]
    assert done[0].revoked_at == demo.clock.now() and done[0].revocation_reason == "keyCompromise"
    ca = issued["a1"].issuer_fingerprint
    assert repo.revoked_serials("borger") == {(ca, issued["a1"].serial)}
    assert repo.revoked_fingerprints("borger") == {issued["a1"].fingerprint}
    assert repo.revoked_serials("kommune") == set()
    assert repo.revocations("borger", ca) == [(issued["a1"].serial, demo.clock.now(), "keyCompromise")]
    assert repo.revoke(ANNA, issued["a1"].serial, None, "tests") == []     # already revoked
    rest = repo.revoke(ANNA, None, None, "tests")                          # all the others
    assert [c.serial for c in rest] == [issued["a2"].serial]
    assert len(repo.revoked_serials("borger")) == 2
    with pytest.raises(NotFound, match="no certificate with serial abc"):
        repo.revoke(ANNA, "abc", None, "tests")
    kinds = [e["kind"] for e in demo.store.audit_events("borger") if e["kind"] == "cert.revoked"]
    assert len(kinds) == 2


def test_only_current_unrevoked_rsa_certificates_are_for_encryption(demo: Demo, issued) -> None:
    repo = CertificateRepository(demo.store)
    for key in ("a1", "a2", "ec"):
        add(repo, ANNA, issued[key])
    start = issued["a1"].not_before
    soon, later = start + dt.timedelta(days=5), start + dt.timedelta(days=20)
    assert repo.valid_for_encryption(ANNA, soon) == [issued["a2"].pem.encode(),
                                                     issued["a1"].pem.encode()]
    assert repo.valid_for_encryption(ANNA, later) == [issued["a1"].pem.encode()]  # a2 expired
    assert repo.valid_for_encryption(ANNA, start - dt.timedelta(days=1)) == []
    repo.revoke(ANNA, issued["a1"].serial, None, "tests")
    assert repo.valid_for_encryption(ANNA, later) == []
    assert repo.valid_for_encryption("nobody@borger.dp2.test", soon) == []


def test_owner_names_the_tenant(demo: Demo) -> None:
    owner = CertificateRepository(demo.store).owner(" Anna@Borger.dp2.test ")
    assert (owner.login, owner.display_name, owner.tenant) == (ANNA, "Anna", "borger")
