"""The API's JSON bodies as Pydantic models: they validate nothing on input (the only input
is MeMo XML) and exist so that the OpenAPI document describes every success response."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class AcceptedOut(BaseModel):
    uuid: str = Field(description="the message UUID (the MeMo messageUUID is kept inside the message)")
    duplicate: bool = Field(description="true when this MeMo was accepted before; the first UUID is returned")


class RecipientOut(BaseModel):
    recipient: str
    kind: str = Field(description="inbox (a recipient's copy) or sent (the sender's copy)")
    state: str = Field(description="queued, running, done, held or failed")
    attempts: int


class EventOut(BaseModel):
    time: str
    kind: str = Field(description="audit event kind, e.g. submit.accepted, delivered")
    result: str
    actor: str | None = None
    subject: str | None = None
    protocol: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class StatusOut(BaseModel):
    uuid: str
    state: str = Field(description="accepted, delivered or failed")
    message_id: str
    subject: str | None = None
    sender: str | None = Field(default=None, description="the submitting account")
    from_address: str
    origin: str = Field(description="how it came in: http, smtp, dropfolder, ...")
    submitted_at: str
    recipients: list[RecipientOut]
    trace: list[EventOut] = Field(description="the message's events in the sender tenant's audit chain")


class ReceiptOut(BaseModel):
    evidence_id: str
    event: str = Field(description="ETSI EN 319 522 evidence, e.g. SubmissionAcceptance, ContentConsignment")
    recipient: str
    time: str
    owner: str = Field(description="the account whose Receipts mailbox holds it")
    sha256: str = Field(description="SHA-256 of the receipt message (eml)")
    content_type: str = "message/rfc822"
    eml: str = Field(description="the signed receipt message (S/MIME multipart/signed), base64")


class EvidenceOut(BaseModel):
    uuid: str
    receipts: list[ReceiptOut] = Field(description="issued receipts, oldest first; queued ones are not listed yet")
