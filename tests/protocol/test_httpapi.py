"""The HTTP API over real HTTPS against the real bridge (issue 6, acceptance 5): bearer tokens
made with the CLI, a MeMo POSTed by the kommune's system reaching Anna over IMAP, its signed
receipts as evidence, tenant isolation, RFC 9457 problem documents, the OpenAPI document, and
schemathesis run against that document (bounded) finding no server error."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import io
import json
import ssl
import uuid as uuidlib
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from bridge.admin.cli import main as cli_main
from bridge.digitalpost import write_memo
from tests.conftest import ANNA, LAWYER, RunningBridge, make_home, start_bridge
from tests.helpers.imap import imap_client
from tests.helpers.memo import example, full_memo
from tests.helpers.smtp import wait_for

SYSTEM = "system@kommune.dp2.test"
PROBLEM = "application/problem+json"


def cli(bridge: RunningBridge, *args: str) -> str:
    """Run `dp2bridge ARGS --config HOME` in-process; its stdout (exit code must be 0)."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli_main([*args, "--config", str(bridge.config.path)])
    assert code == 0, out.getvalue()
    return out.getvalue()


def add_token(bridge: RunningBridge, login: str, name: str = "tests") -> str:
    return json.loads(cli(bridge, "token", "add", login, "--name", name, "--json"))["token"]


def memo_for_anna(recipient: str = "0101701234") -> bytes:
    msg = full_memo()
    h = msg.message_header
    h = dataclasses.replace(h, recipient=dataclasses.replace(h.recipient, recipient_id=recipient, id_type="CPR"),
                            message_uuid=str(uuidlib.uuid4()), do_not_deliver_until_date=None)
    return write_memo(dataclasses.replace(msg, message_header=h), "1.2")


def api_url(bridge: RunningBridge) -> str:
    return f"https://localhost:{bridge.app.api.bound[0][1]}"


def client(bridge: RunningBridge, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api_url(bridge), headers=headers,
                        verify=ssl.create_default_context(cafile=bridge.ca_file), timeout=30)


def post_memo(c: httpx.Client, body: bytes, content_type: str = "application/xml") -> httpx.Response:
    return c.post("/v1/messages", content=body, headers={"Content-Type": content_type})


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    doc = r.json()
    assert doc["status"] == status and doc["title"] and doc["title_da"] and doc["ref"]
    assert "Traceback" not in r.text and "Error(" not in r.text
    return doc


@pytest.fixture
def system(bridge: RunningBridge) -> RunningBridge:
    cli(bridge, "account", "add", SYSTEM, "--system", "--name", "Sagssystem")
    return bridge


@pytest.fixture
def small_bridge(tmp_path: Path) -> Iterator[RunningBridge]:
    """SQLite, the API taking bodies up to 4 KiB, a system account."""
    running = start_bridge(make_home(tmp_path, api={"max_body_bytes": 4096}))
    try:
        cli(running, "account", "add", SYSTEM, "--system", "--name", "Sagssystem")
        yield running
    finally:
        running.stop()


def test_a_system_memo_reaches_anna_with_signed_evidence_and_stays_in_its_tenant(
        system: RunningBridge, tmp_path: Path) -> None:
    token = add_token(system, SYSTEM)
    memo = memo_for_anna()
    with client(system, token) as c:
        r = post_memo(c, memo)
        assert r.status_code == 201, r.text
        accepted = r.json()
        assert accepted["duplicate"] is False and str(uuidlib.UUID(accepted["uuid"])) == accepted["uuid"]
        assert r.headers["location"] == f"/v1/messages/{accepted['uuid']}"
        again = post_memo(c, memo)                       # same messageUUID: the first acceptance
        assert again.status_code == 200 and again.json() == {"uuid": accepted["uuid"], "duplicate": True}

        wait_for(lambda: system.store.mailbox_entries(ANNA), timeout=10)
        imap = imap_client(system, ANNA)
        try:
            imap.select("INBOX")
            typ, data = imap.fetch("1", "(BODY.PEEK[])")
        finally:
            imap.logout()
        assert typ == "OK"
        seen = email.message_from_bytes(data[0][1], policy=email.policy.default)
        assert seen["Subject"] == full_memo().message_header.label
        assert any(p.get_content_type() == "application/xml" for p in seen.walk())   # memo.xml kept

        status = c.get(r.headers["location"]).json()
        assert status["uuid"] == accepted["uuid"] and status["sender"] == SYSTEM and status["origin"] == "http"
        assert "submit.accepted" in [e["kind"] for e in status["trace"]]

        def issued() -> dict[str, Any] | None:
            doc = c.get(f"/v1/messages/{accepted['uuid']}/evidence").json()
            events = {x["event"] for x in doc["receipts"]}
            return doc if {"SubmissionAcceptance", "ContentConsignment"} <= events else None
        evidence = wait_for(issued, timeout=20, interval=0.2)
    for receipt in evidence["receipts"]:
        eml = base64.b64decode(receipt["eml"])
        assert email.message_from_bytes(eml).get_content_type() == "multipart/signed"
        path = tmp_path / f"{receipt['evidence_id']}.eml"
        path.write_bytes(eml)
        cli(system, "verify", str(path))                 # signature, audit link: exit 0

    lawyer = add_token(system, LAWYER)
    with client(system, lawyer) as other:
        assert_problem(other.get(f"/v1/messages/{accepted['uuid']}"), 403)
        assert_problem(other.get(f"/v1/messages/{accepted['uuid']}/evidence"), 403)
    with client(system) as anonymous:
        r = anonymous.get(f"/v1/messages/{accepted['uuid']}")
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_tokens_are_printed_once_listed_without_secret_and_revoked_at_once(sqlite_bridge: RunningBridge) -> None:
    token = add_token(sqlite_bridge, LAWYER, "script")
    assert token.startswith("dp2_") and len(token) > 40
    listing = cli(sqlite_bridge, "token", "list", LAWYER, "--json")
    assert json.loads(listing)[0]["name"] == "script" and token not in listing
    missing = f"/v1/messages/{uuidlib.uuid4()}"
    with client(sqlite_bridge, token) as c:
        assert_problem(c.get(missing), 404)
        cli(sqlite_bridge, "token", "revoke", LAWYER, "script")
        r = c.get(missing)
        assert_problem(r, 401)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    kinds = [e["kind"] for e in sqlite_bridge.store.audit_events("advokat")]
    assert "api-token.added" in kinds and "api-token.revoked" in kinds
    with client(sqlite_bridge, "dp2_" + "A" * 43) as forged:
        assert_problem(forged.get(missing), 401)


def test_refusals_are_problem_documents_with_their_reason(small_bridge: RunningBridge) -> None:
    token = add_token(small_bridge, SYSTEM)
    with client(small_bridge, token) as c:
        memo = example("example_v1.2_MeMo_Minimum_Example.xml")
        broken = memo.replace(b"<memo:label>Pladsanvisning</memo:label>", b"")
        doc = assert_problem(post_memo(c, broken), 422)
        first = doc["errors"][0]                         # where the missing label was due
        assert first["path"] == "/memo:Message/memo:MessageHeader/memo:Sender"
        assert "memo:label" in first["message"] and first["message_da"]
        assert_problem(post_memo(c, memo, "text/plain"), 415)
        assert_problem(post_memo(c, b"<x>" + b"a" * 5000 + b"</x>"), 413)
        unknown = assert_problem(post_memo(c, memo.replace(b"2211771212", b"0202020202")), 422)
        assert unknown["enhanced"] == "5.1.1"
        assert_problem(c.get("/v1/messages/not-a-uuid"), 404)
        assert_problem(c.get("/v1/nothing-here"), 404)
    with client(small_bridge, add_token(small_bridge, LAWYER)) as lawyer:
        refused = assert_problem(post_memo(lawyer, memo), 403)      # a firm may not address a CPR
        assert refused["enhanced"].startswith("5.7.")


def test_openapi_document_passes_schemathesis(sqlite_bridge: RunningBridge) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                     response_schema_conformance, status_code_conformance)
    cli(sqlite_bridge, "account", "add", SYSTEM, "--system", "--name", "Sagssystem")
    token = add_token(sqlite_bridge, SYSTEM)
    base = api_url(sqlite_bridge)
    with client(sqlite_bridge) as c:
        doc = c.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http", "scheme": "bearer", "description": "A token made with `dp2bridge token add LOGIN`."}
    assert set(doc["paths"]) == {"/v1/messages", "/v1/messages/{uuid}", "/v1/messages/{uuid}/evidence",
                                 "/v1/messages/{uuid}/memo"}
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", verify=sqlite_bridge.ca_file)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 4
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case: Any) -> None:
            response = case.call(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                 verify=sqlite_bridge.ca_file)
            case.validate_response(response, checks=checks)
        exercise()
