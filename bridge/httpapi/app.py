"""The HTTP API as a FastAPI application: MeMo in, status, trail and signed evidence out.

  POST /v1/messages                 MeMo XML (Content-Type: application/xml) -> 201 {uuid, duplicate}
                                    (200 when the same MeMo was accepted before: the first UUID)
  GET  /v1/messages/{uuid}          state, recipients and the sender tenant's audit events
  GET  /v1/messages/{uuid}/evidence the signed receipts issued for it, as JSON with each receipt
                                    message (S/MIME multipart/signed, message/rfc822) in base64
  GET  /v1/messages/{uuid}/memo     the message as MeMo XML, for its sender's or a recipient's
                                    side (memoroutes.py)
  GET  /openapi.json                this API described (OpenAPI 3.1, bearer and mutualTLS schemes)

Every request needs `Authorization: Bearer TOKEN` (`dp2bridge token add LOGIN`)
or, without one, a TLS client certificate recorded for an account (`dp2bridge
cert issue|import LOGIN`; the listeners ask for one, tls.py); a token wins when
both are given.  It acts as that account, under the same identity and sending
rules as SMTP (core.service).  A message's status and evidence are visible to the accounts
of the tenant it belongs to (in the citizens' tenant: only to its sender); anyone else gets
403, an unknown UUID 404.  Errors are RFC 9457
problem documents (problems.py); a failure that is not a BridgeError is logged
with its traceback and answered 500 "internal error" with the request's
reference, never with exception text.  Blocking work (SQL, fsync, signing
checks) runs in the bridge's thread pool (`run_blocking`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import ssl
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.core.identities import Principal
from bridge.core.service import SessionInfo
from bridge.errors import BridgeError
from bridge.httpapi import problems
from bridge.httpapi.memoroutes import add_memo_routes
from bridge.httpapi.models import AcceptedOut, EvidenceOut, StatusOut
from bridge.httpapi.problems import MEDIA_TYPE, Problem, problem_for, unauthorized
from bridge.logs import session_id as session_var

log = logging.getLogger("bridge.http")

XML_TYPES = ("application/xml", "text/xml")
# A request body that sends nothing for this long is refused (408).
BODY_IDLE_SECONDS = 30.0
# Audit details that may carry internal error text; the trace leaves them out.
PRIVATE_DETAILS = ("reason", "error", "last_error")


@dataclass(frozen=True)
class ApiContext:
    """What the API needs from the running bridge (bridge.app builds it)."""

    service: Any                                  # core.service.BridgeService
    store: Any                                    # store.sql.SqlStore
    blobs: Any                                    # store.blobs.FileBlobStore
    run_blocking: Callable[..., Awaitable[Any]]
    max_body_bytes: int


def create_app(ctx: ApiContext) -> FastAPI:
    from bridge.store.certificates import CertificateRepository
    from bridge.store.tokens import TokenRepository
    app = FastAPI(title="dp2bridge HTTP API", version="1",
                  description="Submit Digital Post (MeMo) messages as a tenant's system and follow "
                              "them: status, audit trail and signed receipts. / Indsend Digital "
                              "Post (MeMo) som system og følg meddelelsen.",
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.add_middleware(RequestSession)
    _handlers(app)
    tokens = TokenRepository(ctx.store)
    certificates = CertificateRepository(ctx.store)
    bearer = HTTPBearer(auto_error=False, scheme_name="bearerToken",
                        description="A token made with `dp2bridge token add LOGIN`.")

    async def principal(request: Request,
                        creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        if creds is None:                        # no token: a client certificate, if any
            return await _certificate_principal(ctx, certificates, request)
        owner = await ctx.run_blocking(tokens.account_for, creds.credentials)
        if owner is None:
            log.info("API token refused (ip=%s)", _ip(request))
            raise unauthorized("the token is not valid (unknown, revoked, or its account is disabled)", True)
        return await ctx.run_blocking(ctx.store.principal, owner.account_id)

    @app.post("/v1/messages", status_code=201, response_model=AcceptedOut, operation_id="submitMessage",
              summary="Submit a MeMo message", responses=_responses(200, 401, 413, 415, 422, 403, 503),
              openapi_extra={"requestBody": {"required": True, "content": {"application/xml": {
                  "schema": {"type": "string", "description": "a MeMo 1.1 or 1.2 document"}}}}})
    async def submit(request: Request, who: Principal = Depends(principal)) -> JSONResponse:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in XML_TYPES:
            raise Problem(415, "send the MeMo XML with Content-Type: application/xml",
                          headers={"Accept-Post": "application/xml"})
        body = await _read_body(request, ctx.max_body_bytes)
        session = SessionInfo(session_id=session_var.get(), protocol="http", ip=_ip(request), tls=True)
        try:
            accepted = await ctx.run_blocking(ctx.service.submit_memo, who, body, session)
        except BridgeError as exc:
            log.info("MeMo from %s refused: %s", who.login, exc)
            raise problem_for(exc) from None
        log.info("MeMo from %s accepted as %s%s", who.login, accepted.uuid,
                 " (duplicate)" if accepted.duplicate else "")
        return JSONResponse({"uuid": accepted.uuid, "duplicate": accepted.duplicate},
                            status_code=200 if accepted.duplicate else 201,
                            headers={"Location": f"/v1/messages/{accepted.uuid}"})

    @app.get("/v1/messages/{uuid}", response_model=StatusOut, operation_id="getMessage",
             summary="A message's status and trail", responses=_responses(401, 403, 404))
    async def status(uuid: str, who: Principal = Depends(principal)) -> JSONResponse:
        msg = await _owned(ctx, uuid, who)
        events = await ctx.run_blocking(_trail, ctx.store, msg["uuid"], who.tenant_name)
        return JSONResponse({
            "uuid": msg["uuid"], "state": msg["state"], "message_id": msg["message_id"],
            "subject": msg["subject"], "sender": msg["sender_login"], "from_address": msg["from_address"],
            "origin": msg["origin"], "submitted_at": msg["internal_date"].isoformat(),
            "recipients": msg["recipients"], "trace": events})

    @app.get("/v1/messages/{uuid}/evidence", response_model=EvidenceOut, operation_id="getEvidence",
             summary="The signed receipts issued for a message", responses=_responses(401, 403, 404))
    async def evidence(uuid: str, who: Principal = Depends(principal)) -> JSONResponse:
        msg = await _owned(ctx, uuid, who)
        receipts = await ctx.run_blocking(_receipts, ctx, msg["uuid"], who.tenant_name)
        return JSONResponse({"uuid": msg["uuid"], "receipts": receipts})

    add_memo_routes(app, ctx, principal, _responses)
    app.openapi = lambda: _openapi(app)          # type: ignore[method-assign]
    return app


async def _certificate_principal(ctx: ApiContext, certificates: Any, request: Request) -> Principal:
    """The account whose recorded, valid certificate the client presented in the TLS
    handshake (ASGI TLS extension, httpapi.tls); 401 without one or for one not recorded."""
    chain = request.scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or ()
    if not chain:
        raise unauthorized("a bearer token (Authorization: Bearer TOKEN) or a registered client "
                           "certificate is required", False)
    fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(chain[0])).hexdigest()
    account_id = await ctx.run_blocking(certificates.account_for_fingerprint, fp)
    if account_id is None:
        log.info("API client certificate refused (sha256=%s, ip=%s)", fp, _ip(request))
        raise unauthorized("this client certificate is not registered for an account, or it is "
                           "revoked or expired, or its account is disabled: issue one with "
                           "`dp2bridge cert issue LOGIN` or register it with `dp2bridge cert "
                           "import LOGIN FILE`", False)
    return await ctx.run_blocking(ctx.store.principal, account_id)


# --- handlers ---------------------------------------------------------------------------

async def _owned(ctx: ApiContext, text: str, who: Principal) -> dict[str, Any]:
    """The message with UUID `text` if it belongs to the caller's tenant; 404 / 403 otherwise."""
    from bridge.store.auditlog import find_messages
    try:
        wanted = str(uuidlib.UUID(text))
    except ValueError:
        raise Problem(404, "no message with this UUID") from None
    found = [m for m in await ctx.run_blocking(find_messages, ctx.store, wanted) if m["uuid"] == wanted]
    if not found:
        raise Problem(404, "no message with this UUID")
    if found[0]["tenant"] != who.tenant_name:
        raise Problem(403, "this message belongs to another tenant")
    if who.tenant_kind == "citizens" and found[0]["sender_account_id"] != who.account_id:
        raise Problem(403, "this message is another citizen's")       # one tenant holds every citizen
    return found[0]


def _trail(store: Any, message_uuid: str, tenant: str) -> list[dict[str, Any]]:
    from bridge.store.auditlog import message_events
    return [{"time": e["time"].isoformat(), "kind": e["kind"], "result": e["result"], "actor": e["actor"],
             "subject": e["subject"], "protocol": e["protocol"],
             "details": {k: v for k, v in (e["details"] or {}).items() if k not in PRIVATE_DETAILS}}
            for e in message_events(store, message_uuid) if e["chain"] == tenant]


def _receipts(ctx: ApiContext, message_uuid: str, tenant: str) -> list[dict[str, Any]]:
    from bridge.store.apiviews import issued_receipts
    return [{"evidence_id": r.evidence_id, "event": r.event, "recipient": r.recipient,
             "time": r.time.isoformat(), "owner": r.owner, "sha256": r.sha256,
             "content_type": "message/rfc822", "eml": base64.b64encode(ctx.blobs.get(r.sha256)).decode()}
            for r in issued_receipts(ctx.store, message_uuid, tenant)]


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass `limit`, and with
    408 when it stops arriving for `BODY_IDLE_SECONDS` (a trickling client holds nothing)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"the request body is larger than {limit} bytes")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), BODY_IDLE_SECONDS)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise Problem(408, f"the request body stopped arriving (nothing for {BODY_IDLE_SECONDS:g} s); "
                               "send it again", headers={"Connection": "close"}) from None
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _ip(request: Request) -> str:
    return request.client.host if request.client else ""


# --- errors and the request reference ----------------------------------------------------

def _problem_response(problem: Problem) -> JSONResponse:
    return JSONResponse(problem.document(session_var.get()), status_code=problem.status,
                        media_type=MEDIA_TYPE, headers=problem.headers)


def _handlers(app: FastAPI) -> None:
    async def on_problem(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return _problem_response(exc)

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = {404: "no such resource", 405: "method not allowed here"}.get(exc.status_code, "request refused")
        return _problem_response(Problem(exc.status_code, detail, headers=dict(exc.headers or {})))

    async def on_invalid(_request: Request, _exc: Exception) -> JSONResponse:
        return _problem_response(Problem(400, "the request is not valid"))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)


class RequestSession:
    """ASGI middleware: a session id per request (logs, audit events, `ref` of problems), and
    the one place where an unexpected exception becomes a logged 500 without its text."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = session_var.set(secrets.token_hex(6))
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                log.debug("%s %s -> %d", scope.get("method"), scope.get("path"), message["status"])
            await send(message)
        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("API request %s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                response = _problem_response(Problem(500, "internal error"))
                await response(scope, receive, send)
        finally:
            session_var.reset(token)


# --- the OpenAPI document ----------------------------------------------------------------

def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {200: "accepted before: the first acceptance's UUID",
            400: "the request is not usable as given (e.g. several recipients: say which with ?recipient=)",
            401: "no token or client certificate, or not a valid one",
            403: "not allowed: another tenant's message, or the sending rules refuse it (5.7.x)",
            404: "no message with this UUID", 413: "the body is larger than max_body_bytes",
            415: "the body is not application/xml",
            422: "the MeMo is not valid (errors name each element path) or cannot be delivered "
                 "(unknown recipient: enhanced 5.1.1)", 503: "temporarily unavailable; try again"}
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status == 200:
            out[200] = {"description": text[200], "model": AcceptedOut}
        else:
            out[status] = {"description": text[status], "content": {MEDIA_TYPE: {"schema": _PROBLEM_REF}}}
    out["default"] = {"description": "another error (RFC 9457 problem document)",
                      "content": {MEDIA_TYPE: {"schema": _PROBLEM_REF}}}
    return out


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        doc.setdefault("components", {}).setdefault("schemas", {})["Problem"] = problems.SCHEMA
        _add_mutual_tls(doc)
        app.openapi_schema = doc
    return app.openapi_schema


def _add_mutual_tls(doc: dict[str, Any]) -> None:
    """OpenAPI 3.1 `mutualTLS` beside `bearerToken`: an operation takes either (the
    `principal` dependency only declares the bearer scheme to FastAPI)."""
    doc["components"].setdefault("securitySchemes", {})["mutualTLS"] = {
        "type": "mutualTLS",
        "description": "A client certificate recorded for the account: issued with `dp2bridge cert "
                       "issue LOGIN` or registered with `dp2bridge cert import LOGIN FILE`. Used "
                       "when no bearer token is sent."}
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            security = operation.get("security")
            if security and {"mutualTLS": []} not in security:
                security.append({"mutualTLS": []})
