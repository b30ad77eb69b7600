"""`dp2bridge trace <message-uuid | Message-ID>`: a message's whole story from the audit trail.

Finds the message(s) (by UUID, or by Message-ID with or without its angle
brackets; several messages may share a Message-ID and each is shown), then
every audit event about each one across all chains, in time order, as a
table or with --json as one document.  Details are shortened and keys that
could hold secrets are never shown.  Reads through store.auditlog only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from typing import Any

from bridge.admin.context import Context, record, table, wants_json
from bridge.errors import NotFound
from bridge.store import auditlog

LABELS = {
    "submitted": "submitted",
    "submit.accepted": "accepted",
    "submit.rejected": "rejected",
    "delivery.deferred": "delivery deferred",
    "delivery.failed": "delivery failed",
    "read": "read",
    "handling": "handling started",
    "receipt.issued": "receipt issued",
}
SECRET_WORDS = {"password", "passwd", "passphrase", "secret", "token", "key", "credentials"}
HIDDEN_DETAILS = {"mailbox", "recipient_chain", "sha256", "header_from", "mail_from", "message_id"}
READ_CONSENT = {"consent": "standing consent: the sender is told",
                "mdn": "the reader's own MDN: the sender is told",
                "none": "no consent: the sender is not told"}
MAX_VALUE, MAX_DETAILS = 60, 120
COLUMNS = (("time", "TIME (UTC)"), ("event", "EVENT"), ("result", "RESULT"), ("actor", "ACTOR"),
           ("where", "WHERE"), ("summary", "DETAILS"))
MESSAGE_FIELDS = ("uuid", "message_id", "tenant", "sender_login", "from_address", "subject",
                  "internal_date", "state", "size", "sha256", "origin", "session_id", "thread_id",
                  "in_reply_to")

TRACE_HELP = """\
Print a message's whole story: every audit event about it (submitted,
accepted, delivered to each inbox and to the sender's Sent, deferred or
failed deliveries, read, handling started, receipts issued) across all
tenants' chains, in time order, with times (UTC), actors and where it
happened.  Give the message UUID (from the `250 2.0.0 OK <uuid>` reply) or
the Message-ID, with or without <>; every message with that Message-ID is
shown.

examples:
  dp2bridge trace 2f1c9a8e-4b7d-4e61-9a0b-2d6f3c1e5a77
  dp2bridge trace '<20261127100000.1234@client.example>' --json
"""


def cmd_trace(ctx: Context) -> int:
    ident = ctx.args.id.strip()
    messages = auditlog.find_messages(ctx.store, ident)
    if not messages:
        raise NotFound(f"no message has the UUID or Message-ID {ident!r}; give the UUID from the "
                       f"submission's `250 2.0.0 OK <uuid>` reply or the Message-ID as in the header, "
                       f"e.g. <abc@host>")
    stories = [story(msg, auditlog.message_events(ctx.store, msg["uuid"])) for msg in messages]
    if wants_json(ctx.args):
        print(json.dumps({"query": ident, "messages": stories}, indent=2, ensure_ascii=False))
        return 0
    for i, one in enumerate(stories):
        if i:
            print()
        _print_story(ctx.args, one)
    return 0


def story(msg: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """A message's fields, its recipients and its events, as --json prints them."""
    out = {k: _json_value(msg.get(k)) for k in MESSAGE_FIELDS}
    out["recipients"] = msg["recipients"]
    out["events"] = [_event(e) for e in events]
    return out


def _event(e: dict[str, Any]) -> dict[str, Any]:
    details = {k: v for k, v in (e["details"] or {}).items() if not _secret(k)}
    return {"time": _json_value(e["time"]), "event": label(e["kind"], details), "kind": e["kind"],
            "result": e["result"], "actor": e["actor"], "subject": e["subject"],
            "mailbox": details.get("mailbox"), "protocol": e["protocol"], "session_id": e["session_id"],
            "chain": e["chain"], "seq": e["seq"], "details": details}


def label(kind: str, details: dict[str, Any]) -> str:
    """The readable name of an event kind; unknown kinds as they are."""
    if kind == "delivered":
        return "delivered: Sent copy" if details.get("mailbox") == "Sent" else "delivered: inbox"
    if kind == "submit.accepted" and details.get("release_at"):
        return f"accepted, scheduled for {details['release_at']}"
    return LABELS.get(kind, kind)


def _print_story(args: argparse.Namespace, one: dict[str, Any]) -> None:
    rcpts = ", ".join(f"{r['recipient']} ({r['kind']}: {r['state']})" for r in one["recipients"])
    record(args, {"message": one["uuid"], "Message-ID": one["message_id"], "tenant": one["tenant"],
                  "from": f"{one['from_address']} (login {one['sender_login'] or '-'})",
                  "subject": one["subject"], "accepted": _when(one["internal_date"]),
                  "state": one["state"], "recipients": rcpts or None})
    print()
    rows = [{"time": _when(e["time"]), "event": e["event"], "result": e["result"], "actor": e["actor"],
             "where": _where(e), "summary": summary(e["kind"], e["details"])} for e in one["events"]]
    table(args, rows, COLUMNS, f"no audit events about message {one['uuid']}")


def _where(e: dict[str, Any]) -> str:
    parts = [p for p in (e["subject"], e["mailbox"]) if p]
    if e["protocol"]:
        parts.append(f"({e['protocol']})")
    return " ".join(parts) or "-"


def summary(kind: str, details: dict[str, Any]) -> str:
    """The details of an event in one short line, secrets left out."""
    if kind == "read" and details.get("consent") in READ_CONSENT:
        return READ_CONSENT[details["consent"]]
    if kind == "receipt.issued":
        shown = {k: details.get(k) for k in ("event", "evidence_id", "to")}
    elif kind in ("delivery.deferred", "delivery.failed"):
        shown = {k: details.get(k) for k in ("attempts", "error")}
    else:
        shown = {k: v for k, v in details.items() if k not in HIDDEN_DETAILS}
    text = " ".join(f"{k}={_short(v)}" for k, v in shown.items() if v is not None and not _secret(k))
    return text if len(text) <= MAX_DETAILS else text[:MAX_DETAILS - 3] + "..."


def _secret(key: str) -> bool:
    """A details key whose value may be a secret: a word of it (split at _, -, .) is one of
    SECRET_WORDS, e.g. "password", "api_key", "session-token"."""
    return not SECRET_WORDS.isdisjoint(re.split(r"[^a-z0-9]+", key.lower()))


def _short(value: Any) -> str:
    text = _plain(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 3] + "..."


def _plain(value: Any) -> str:
    """A details value as text: lists comma-separated, dicts (also inside lists) as JSON without
    secret keys or empty values; never a Python repr."""
    if isinstance(value, list):
        return ",".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return json.dumps({k: v for k, v in value.items() if not _secret(k) and v is not None},
                          ensure_ascii=False, default=str)
    return str(value)


def _when(value: str | None) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS.mmmZ` (UTC)."""
    if not value:
        return "-"
    t = dt.datetime.fromisoformat(value).astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    return value


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    t = sub.add_parser("trace", parents=[parents["store"]],
                       help="a message's whole story from the audit trail",
                       description=TRACE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("id", metavar="MESSAGE-UUID|MESSAGE-ID", help="the message UUID, or its Message-ID")
    t.set_defaults(func=cmd_trace)
