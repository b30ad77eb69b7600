"""GET /v1/messages/{uuid}/memo: any message the caller sent or received, as MeMo XML.

A message that came in as mail (a lawyer's Outlook, a citizen's Thunderbird) and one a
system submitted as MeMo read out the same way (core/memoview.py): a MeMo that validates,
with Sender and Recipient as the caller may see them, and the thread as ReplyData naming
the stored messages' UUIDs.  The sender's side and each recipient's side may read it
(`reader_ends`); a MeMo has one Recipient, so a message to several needs `?recipient=`
when the caller may see more than one of them.  `?version=1.1` writes it as MeMo 1.1
(validated against the XSD), `1.2` as 1.2; the default is the version the message carried,
else 1.1.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any, Callable

from fastapi import Depends, FastAPI, Query
from fastapi.responses import Response

from bridge.core.identities import Principal
from bridge.digitalpost.xml import MemoInvalid
from bridge.httpapi.problems import Problem, problem_for

XML = "application/xml"


def add_memo_routes(app: FastAPI, ctx: Any, principal: Callable[..., Any],
                    responses: Callable[..., dict[int | str, dict[str, Any]]]) -> None:
    @app.get("/v1/messages/{uuid}/memo", operation_id="getMessageMemo", response_class=Response,
             summary="A message as MeMo XML, for its sender's or a recipient's system",
             responses={200: {"description": "the MeMo document", "content": {XML: {"schema": {"type": "string"}}}},
                        **responses(400, 401, 403, 404)})
    async def memo(uuid: str, who: Principal = Depends(principal),
                   recipient: str | None = Query(default=None, max_length=320,
                                                 description="which recipient's MeMo, when there are several"),
                   version: str | None = Query(default=None, pattern=r"^1\.[12]$",
                                               description="MeMo version to write: 1.1 or 1.2")) -> Response:
        body = await ctx.run_blocking(_memo_xml, ctx, uuid, who, recipient, version)
        return Response(body, media_type=XML)


def _memo_xml(ctx: Any, text: str, who: Principal, recipient: str | None, version: str | None) -> bytes:
    from bridge.core.memoview import memo_of, reader_ends, thread_scope
    from bridge.core.mimeinfo import analyze
    from bridge.store.memoviews import message_parties, uuids_by_message_id
    try:
        wanted = str(uuidlib.UUID(text))
    except ValueError:
        raise Problem(404, "no message with this UUID") from None
    view = message_parties(ctx.store, wanted)
    if view is None:
        raise Problem(404, "no message with this UUID")
    sender_side, mine = reader_ends(view, who)
    if not sender_side and not mine:
        raise Problem(403, "this message is neither from nor to your tenant (or, for a citizen, you)")
    candidates = list(view.recipients) if sender_side else mine
    if recipient is not None:
        wanted_rcpt = recipient.strip().lower()
        candidates = [(a, s) for a, s in candidates if wanted_rcpt in (a.lower(), s.address.lower())]
        if not candidates:
            raise Problem(404, "this message has no such recipient that you may see")
    if not candidates:
        raise Problem(404, "this message was delivered to no mailbox (e.g. a NemSMS), so it has no MeMo copy")
    if len(candidates) > 1:
        names = ", ".join(a for a, _ in candidates[:20])
        raise Problem(400, f"this message went to {len(candidates)} recipients; say which one with "
                           f"?recipient=ADDRESS ({names})")
    raw = ctx.blobs.get(view.sha256)
    info = analyze(raw)
    thread = uuids_by_message_id(ctx.store, info.in_reply_to + info.references,
                                 [thread_scope(e.tenant_id, e.account_id, e.tenant_kind)
                                  for e in (view.sender, candidates[0][1])])
    try:
        return memo_of(view, raw, reader=who, recipient=candidates[0],
                       directory_domain=ctx.service.settings.directory_domain, message_uuids=thread,
                       version=version)
    except MemoInvalid as exc:      # X-MeMo-* fields of a message accepted before they were checked
        raise problem_for(exc) from None
