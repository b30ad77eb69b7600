"""A stored message as MeMo, for the systems on either end of it, and MeMo fields of a mail.

Any accepted message can be read as MeMo (DESIGN.md section 8): the message exactly as
accepted goes through `digitalpost.mail.mail_to_memo` with the identities the bridge
knows, so a mail from a lawyer's Outlook and a MeMo from an authority's system come out
the same way.  The MeMo is made when asked for, not stored: it is a function of the
accepted bytes, the two ends and the thread, all of which are kept.

Who may read which MeMo (`reader_ends`): the sender's side (the sending account's
tenant; in the citizens' tenant only the citizen herself) and each recipient's side
(the tenant of the contact point or account it reached; a citizen only her own).
Identities are shown as the reader may see them (`visible_id`): a CVR always; a CPR in
full to an authority, to its own citizen, and to a sender who addressed the citizen by
it; otherwise only its birth date part, as receipts show it.

`submitted_memo_fields` is the submission-time half: a mail that carries MeMo fields
(`X-MeMo-*` header fields or a memo.xml part) must make a valid MeMo, and what those
fields ask for (keywords, a later delivery date, NemSMS) is applied as for a MeMo
submitted by a system; `memo_rules` refuses what only an authority may send.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

from bridge.core.identities import Principal
from bridge.errors import MessageRejected, PolicyError

_HEADER_HINT = re.compile(rb"(?im)^x-memo-[!-9;-~]*[ \t]*:")
_UNSAFE = re.compile(r"[^ -~]+")


class AuthorityOnly(PolicyError):
    public = "only a public authority may send mandatory post, legal notices or NemSMS"


@dataclass(frozen=True)
class MemoFields:
    """What a submitted mail's MeMo fields ask for."""

    memo: dict[str, Any]                 # stored in messages.memo (keywords, messageType, ...)
    do_not_deliver_until: dt.date | None
    notification: str | None             # NemSMS text, when messageType is NEMSMS


# --- at submission ---------------------------------------------------------------------------

def carries_memo_fields(raw: bytes, header_size: int, body: dict[str, Any]) -> bool:
    """True if the mail has an X-MeMo-* header field or a memo.xml part (cheap: no parsing)."""
    from bridge.digitalpost.mail import MEMO_FILENAME
    if _HEADER_HINT.search(raw[:header_size]):
        return True
    stack = [body]
    while stack:
        node = stack.pop()
        names = [v for k, v in node.get("params") or [] if k == "name"]
        disposition = node.get("disposition")
        if disposition:
            names += [v for k, v in disposition[1] or [] if k == "filename"]
        if any(n.strip().lower() == MEMO_FILENAME for n in names):
            return True
        stack.extend(node.get("parts") or [])
    return False


def submitted_memo_fields(principal: Principal, raw: bytes, now: dt.datetime) -> MemoFields:
    """The MeMo fields of a submitted mail: refused (554 5.6.0, naming the element) when they
    do not make a valid MeMo, and by `memo_rules` when the sender may not use them."""
    from bridge.digitalpost import model as m
    from bridge.digitalpost.mail import mail_to_memo, memo_keywords
    from bridge.digitalpost.xml import MemoInvalid
    # The identities are the bridge's, filled in when the MeMo is read; placeholders here.
    sender = m.Sender(sender_id=principal.party_identifier, id_type=principal.party_kind.upper(),
                      label=principal.display_name or principal.login)
    recipient = m.Recipient(recipient_id="0", id_type="CVR")
    try:
        msg = mail_to_memo(raw, sender=sender, recipient=recipient, message_uuid=str(uuid.uuid4()), now=now)
    except MemoInvalid as exc:
        first = exc.errors[0] if exc.errors else None
        where = f"{first.path}: {first.message}" if first else str(exc)
        raise MessageRejected(str(exc), public=_reply_safe(
            f"the message's MeMo fields are not valid (X-MeMo-* header or memo.xml): {where}")) from None
    memo_rules(principal, msg)
    header = msg.message_header
    nemsms = header.message_type.upper() == m.NEMSMS
    return MemoFields(
        memo={"memoVersion": msg.memo_version, "messageType": header.message_type,
              "keywords": memo_keywords(msg), "fromMail": True},
        do_not_deliver_until=header.do_not_deliver_until_date,
        notification=(header.notification or header.label) if nemsms else None)


def memo_rules(principal: Principal, msg: Any) -> None:
    """Mandatory post, legal notices and NemSMS come from public authorities only."""
    header = msg.message_header
    if principal.tenant_kind != "authority" and (
            header.mandatory or header.legal_notification or header.message_type.upper() == "NEMSMS"):
        raise AuthorityOnly(f"{principal.login}: mandatory={header.mandatory} "
                            f"legal={header.legal_notification} type={header.message_type}")


def _reply_safe(text: str, limit: int = 400) -> str:
    """One line of printable ASCII for an SMTP reply (RFC 5321 4.5.3.1.5: 512 octets a line)."""
    text = _UNSAFE.sub("?", text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- reading a stored message as MeMo ----------------------------------------------------------

def reader_ends(view: Any, who: Principal) -> tuple[bool, list[tuple[str, Any]]]:
    """(is the reader on the sender's side, the recipients (address, Side) on the reader's side)."""
    def mine(side: Any) -> bool:
        if side.tenant != who.tenant_name:
            return False
        return side.tenant_kind != "citizens" or side.account_id == who.account_id
    return mine(view.sender), [(addr, side) for addr, side in view.recipients if mine(side)]


def thread_scope(tenant_id: int, account_id: int | None, tenant_kind: str) -> tuple[int, int | None]:
    """The stored messages an end may name in a thread (ReplyData <-> Message-ID): its
    tenant's; in the citizens' tenant only the citizen's own."""
    return (tenant_id, account_id if tenant_kind == "citizens" else None)


def visible_id(party: Any, *, reader: Principal, own: bool, addressed_by_it: bool) -> str:
    """`party.identifier` as `reader` may see it (see the module docstring); the masking is
    the receipts' (core.receipts.visible_party)."""
    from bridge.core.receipts import visible_party
    if own or addressed_by_it:
        return party.identifier
    shown = visible_party(f"{party.kind}:{party.identifier}", reader.tenant_kind)
    return shown.split(":", 1)[1] if shown else "xxxxxx-xxxx"


def memo_of(view: Any, raw: bytes, *, reader: Principal, recipient: tuple[str, Any],
            directory_domain: str, message_uuids: Mapping[str, str], version: str | None = None) -> bytes:
    """The MeMo XML of stored message `view` (raw: its accepted bytes) to `recipient`, as
    `reader` may see it."""
    from bridge.digitalpost import model as m
    from bridge.digitalpost.mail import mail_to_memo
    from bridge.digitalpost.xml import write_memo
    address, end = recipient
    sending_side = view.sender.tenant == reader.tenant_name
    cpr_addressed = address.lower().endswith(f"@cpr.{directory_domain}")

    def ident(side: Any, is_recipient: bool) -> tuple[str, str, str]:
        party = side.party
        if party is None:             # a party-less account: its address is all there is
            return side.address, "EMAIL", side.name or side.address
        own = side.tenant == reader.tenant_name and (side.tenant_kind != "citizens"
                                                      or side.account_id == reader.account_id)
        shown = visible_id(party, reader=reader, own=own,
                           addressed_by_it=is_recipient and sending_side and cpr_addressed)
        return shown, party.kind.upper(), party.name or side.name or side.address

    s_id, s_type, s_label = ident(view.sender, False)
    r_id, r_type, r_label = ident(end, True)
    sender = m.Sender(sender_id=s_id, id_type=s_type, label=s_label,
                      contact_point=_contact_point(m, view.sender))
    to = m.Recipient(recipient_id=r_id, id_type=r_type, label=r_label, contact_point=_contact_point(m, end))
    msg = mail_to_memo(raw, sender=sender, recipient=to, message_uuid=view.uuid, now=view.internal_date,
                       message_uuids=message_uuids)
    return write_memo(msg, version)


def _contact_point(m: Any, side: Any) -> Any:
    if side.contact_point is None:
        return None
    return m.ContactPoint(contact_point_id=side.contact_point, label=side.name or None)
