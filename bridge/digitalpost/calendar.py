"""iCalendar invitations for MeMo Reservation actions (RFC 5545, iTIP RFC 5546, iMIP RFC 6047).

Owns `invitation()`, which turns one reservation into the bytes of a
`text/calendar; method=REQUEST` body that mail clients (Thunderbird, Outlook)
offer to add to the reader's calendar, and `read_invitations()`, which reads
the events of a submitted calendar part back.  Knows nothing of the MeMo
model: `digitalpost.mail` maps Reservation fields to `CalendarEvent`.
Pure; the only third-party import is `icalendar`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from icalendar import Calendar, Event, vCalAddress, vText

PRODID = "-//dp2bridge//MeMo Reservation//DA"


@dataclass(frozen=True)
class CalendarEvent:
    """One VEVENT as the bridge writes and reads it; date-times are aware UTC."""

    uid: str
    summary: str
    description: str
    location: str
    start: dt.datetime
    end: dt.datetime
    organizer_mail: str | None = None
    organizer_name: str | None = None


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def invitation(event: CalendarEvent, *, dtstamp: dt.datetime, attendee: str | None,
               fallback_organizer: str | None) -> bytes:
    """A VCALENDAR with METHOD:REQUEST and one VEVENT (iTIP: one UID per object).

    ORGANIZER is the event's organizer, else `fallback_organizer` (the From
    address); ATTENDEE is the reader's address with RSVP=FALSE (iTIP REQUEST
    requires one; the bridge does not ask for an answer by calendar reply).
    """
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("method", "REQUEST")
    ev = Event()
    ev.add("uid", event.uid)
    ev.add("dtstamp", _utc(dtstamp))
    ev.add("dtstart", _utc(event.start))
    ev.add("dtend", _utc(event.end))
    ev.add("summary", event.summary)
    ev.add("location", event.location)
    ev.add("description", event.description)
    ev.add("sequence", 0)
    ev.add("status", "CONFIRMED")
    organizer = event.organizer_mail or fallback_organizer
    if organizer:
        who = vCalAddress(f"mailto:{organizer}")
        if event.organizer_name:
            who.params["cn"] = vText(event.organizer_name)
        ev.add("organizer", who)
    if attendee:
        guest = vCalAddress(f"mailto:{attendee}")
        guest.params["role"] = vText("REQ-PARTICIPANT")
        guest.params["partstat"] = vText("NEEDS-ACTION")
        guest.params["rsvp"] = vText("FALSE")
        ev.add("attendee", guest)
    cal.add_component(ev)
    return cal.to_ical()


def _text(component: Event, name: str) -> str:
    value = component.get(name)
    return "" if value is None else str(value)


def _when(component: Event, name: str) -> dt.datetime | None:
    prop = component.get(name)
    if prop is None:
        return None
    value = prop.dt
    if isinstance(value, dt.datetime):
        return _utc(value)
    return dt.datetime.combine(value, dt.time(), tzinfo=dt.timezone.utc)


def read_invitations(data: bytes) -> list[CalendarEvent]:
    """The VEVENTs of a calendar body that have a UID, DTSTART and an end
    (DTEND, or DTSTART plus DURATION); others are skipped.  Raises ValueError
    when the body is not iCalendar."""
    events: list[CalendarEvent] = []
    for cal in Calendar.from_ical(data, multiple=True):
        for ev in cal.walk("VEVENT"):
            start = _when(ev, "dtstart")
            end = _when(ev, "dtend")
            if end is None and start is not None and ev.get("duration") is not None:
                end = start + ev.get("duration").dt
            uid = _text(ev, "uid")
            if not uid or start is None or end is None:
                continue
            organizer = ev.get("organizer")
            mail = None
            name = None
            if organizer is not None:
                mail = str(organizer).removeprefix("mailto:").removeprefix("MAILTO:") or None
                cn = organizer.params.get("cn") if hasattr(organizer, "params") else None
                name = str(cn) if cn else None
            events.append(CalendarEvent(uid=uid, summary=_text(ev, "summary"),
                                        description=_text(ev, "description"),
                                        location=_text(ev, "location"), start=start, end=end,
                                        organizer_mail=mail, organizer_name=name))
    return events
