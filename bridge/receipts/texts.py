"""The words a person reads in a receipt: its subject and its human text.

Danish first, then English, in plain words for a citizen: what happened, when
(Danish local time and UTC), which message (subject, Message-ID), who (sender
and recipient as the evidence gives them), the reason of a failure, and how to
check the receipt.  Never any of the message's content.  Pure; imports only
`bridge.receipts.evidence`.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bridge.receipts.evidence import Evidence, PartyRef

DANISH_TIME = ZoneInfo("Europe/Copenhagen")

# event -> (Danish label, English label), as in the subject "Kvittering: X / Receipt: Y".
LABELS = {
    "SubmissionAcceptance": ("Modtaget", "Accepted"),
    "SubmissionRejection": ("Afvist", "Rejected"),
    "ContentConsignment": ("Leveret", "Delivered"),
    "ContentConsignmentFailure": ("Ikke leveret", "Not delivered"),
    "ContentAccessTracking": ("Læst", "Read"),
    "HandlingStarted": ("Under behandling", "Being handled"),
}
_MONTHS_DA = ("januar", "februar", "marts", "april", "maj", "juni", "juli", "august",
              "september", "oktober", "november", "december")
# Not %B: that follows the process locale.
_MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")


def subject_line(ev: Evidence) -> str:
    """E.g. "Kvittering: Modtaget / Receipt: Accepted – <original subject>"."""
    da, en = LABELS[ev.event]
    line = f"Kvittering: {da} / Receipt: {en}"
    return f"{line} \u2013 {ev.subject}" if ev.subject else line


def human_text(ev: Evidence) -> str:
    """The receipt's text/plain body, Danish then English, lines ending in LF."""
    return "\n".join([*_danish(ev), "", "-" * 40, "", *_english(ev)]) + "\n"


def _danish(ev: Evidence) -> list[str]:
    local = ev.time.astimezone(DANISH_TIME)
    when = (f"{local.day}. {_MONTHS_DA[local.month - 1]} {local.year} kl. {local:%H:%M:%S} dansk tid"
            f" ({ev.time:%H:%M:%S} UTC)")
    lines = [f"Kvittering fra {ev.issuer_name}", "", *_what_da(ev), "",
             f"Tidspunkt:  {when}",
             f"Emne:       {ev.subject or '(intet emne)'}",
             f"Message-ID: {ev.message_id}",
             f"Afsender:   {_who(ev.sender)}"]
    if ev.recipient is not None:
        lines.append(f"Modtager:   {_who(ev.recipient)}")
    if ev.status:
        lines.append(f"Status:     {ev.status}")
    if ev.signature:
        lines.append(f"Signatur:   {ev.signature}")
    lines += [f"SHA-256:    {ev.sha256}", "",
              "Sådan kontrollerer du kvitteringen:",
              f"Den er signeret digitalt (S/MIME) af {ev.issuer_name}.",
              "Dit mailprogram kan vise signaturen. Enhver kan også kontrollere den",
              "med et S/MIME-program eller med: dp2bridge verify kvittering.eml",
              "Beviset er vedhæftet som evidence.xml.",
              "Indholdet af din meddelelse er ikke med i kvitteringen."]
    return lines


def _english(ev: Evidence) -> list[str]:
    local = ev.time.astimezone(DANISH_TIME)
    when = (f"{ev.time.day} {_MONTHS_EN[ev.time.month - 1]} {ev.time.year}, {ev.time:%H:%M:%S} UTC"
            f" ({local:%H:%M:%S} Danish time)")
    lines = [f"Receipt from {ev.issuer_name}", "", *_what_en(ev), "",
             f"Time:       {when}",
             f"Subject:    {ev.subject or '(no subject)'}",
             f"Message-ID: {ev.message_id}",
             f"Sender:     {_who(ev.sender)}"]
    if ev.recipient is not None:
        lines.append(f"Recipient:  {_who(ev.recipient)}")
    if ev.status:
        lines.append(f"Status:     {ev.status}")
    if ev.signature:
        lines.append(f"Signature:  {ev.signature}")
    lines += [f"SHA-256:    {ev.sha256}", "",
              "How to check this receipt:",
              f"It is digitally signed (S/MIME) by {ev.issuer_name}.",
              "Your mail program can show the signature. Anyone can also check it",
              "with any S/MIME program or with: dp2bridge verify receipt.eml",
              "The evidence is attached as evidence.xml.",
              "The content of your message is not included in this receipt."]
    return lines


def _what_da(ev: Evidence) -> list[str]:
    reason = [f"Årsag (på engelsk): {ev.reason or 'ikke oplyst'}"]
    match ev.event:
        case "SubmissionAcceptance":
            return ["Din meddelelse er modtaget og gemt uændret. Den bliver nu leveret."]
        case "SubmissionRejection":
            return ["Din meddelelse blev afvist og er ikke sendt.", *reason]
        case "ContentConsignment":
            return ["Din meddelelse er leveret i modtagerens postkasse."]
        case "ContentConsignmentFailure":
            return ["Din meddelelse kunne ikke leveres til modtageren.", *reason]
        case "ContentAccessTracking":
            how = ("Modtageren har givet samtykke til, at du får besked, når en meddelelse åbnes."
                   if ev.read_mode == "consent" else
                   "Modtagerens mailprogram har sendt en læsebekræftelse.")
            return ["Modtageren har åbnet din meddelelse.", how]
    person = f" (sagsbehandler: {ev.handler_person})" if ev.handler_person else ""
    return [f"Din henvendelse behandles nu af {ev.handler}{person}."]


def _what_en(ev: Evidence) -> list[str]:
    reason = [f"Reason: {ev.reason or 'not given'}"]
    match ev.event:
        case "SubmissionAcceptance":
            return ["Your message was accepted and stored unchanged. It will now be delivered."]
        case "SubmissionRejection":
            return ["Your message was rejected and has not been sent.", *reason]
        case "ContentConsignment":
            return ["Your message was delivered to the recipient's mailbox."]
        case "ContentConsignmentFailure":
            return ["Your message could not be delivered to the recipient.", *reason]
        case "ContentAccessTracking":
            how = ("The recipient has agreed that you are told when a message is opened."
                   if ev.read_mode == "consent" else
                   "The recipient's mail program sent a read confirmation.")
            return ["The recipient has opened your message.", how]
    person = f" (caseworker: {ev.handler_person})" if ev.handler_person else ""
    return [f"Your request is now being handled by {ev.handler}{person}."]


def _who(party: PartyRef) -> str:
    who = f"{party.name} <{party.address}>" if party.name else party.address
    return f"{who} ({party.party})" if party.party else who

