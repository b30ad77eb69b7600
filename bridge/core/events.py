"""The "mailbox changed" signals: the delivery worker and IMAP sessions publish, IMAP
sessions (IDLE) listen.

Two kinds of event reach a mailbox's subscribers through one queue: a `Filed`
(a new message, published by the delivery worker) and a `Changed` (flags changed
or messages expunged, published by the IMAP session that made the change, after
its write committed).  Neither carries the change itself: a listener re-reads
the mailbox state, so a lost or coalesced event costs only latency.
`MessageEvents` is the contract; `LocalEvents` is the in-process implementation
(one node).  A PostgreSQL LISTEN/NOTIFY implementation can replace it when
several nodes share a database (DESIGN.md section 11) without touching the
publishers or the listeners.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from dataclasses import dataclass

from bridge.core.messages import Filed


@dataclass(frozen=True)
class Changed:
    """Flags changed or messages were expunged in a mailbox (no detail: re-read the state)."""

    mailbox_id: int


Event = Filed | Changed


class MessageEvents(Protocol):
    def publish(self, filed: Filed) -> None:
        """Announce a filed message.  Safe to call from any thread; never blocks."""
        ...

    def publish_change(self, mailbox_id: int) -> None:
        """Announce that flags changed or messages were expunged in `mailbox_id`; call it
        after the change committed.  Safe to call from any thread; never blocks."""
        ...

    def subscribe(self, mailbox_id: int) -> asyncio.Queue[Event]:
        """A queue receiving every Filed and Changed for `mailbox_id` from now on."""
        ...

    def unsubscribe(self, mailbox_id: int, queue: asyncio.Queue[Event]) -> None:
        ...


class LocalEvents:
    """See `MessageEvents`.  Queues are bounded; a subscriber that never reads loses
    events rather than growing memory (an IDLE session re-reads the mailbox state anyway)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue_size: int = 1000) -> None:
        self._loop = loop
        self._size = queue_size
        self._subscribers: dict[int, set[asyncio.Queue[Event]]] = {}

    def publish(self, filed: Filed) -> None:
        self._loop.call_soon_threadsafe(self._deliver, filed)

    def publish_change(self, mailbox_id: int) -> None:
        self._loop.call_soon_threadsafe(self._deliver, Changed(mailbox_id))

    def _deliver(self, event: Event) -> None:
        for q in self._subscribers.get(event.mailbox_id, ()):
            if not q.full():
                q.put_nowait(event)

    def subscribe(self, mailbox_id: int) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(self._size)
        self._subscribers.setdefault(mailbox_id, set()).add(q)
        return q

    def unsubscribe(self, mailbox_id: int, queue: asyncio.Queue[Event]) -> None:
        subs = self._subscribers.get(mailbox_id)
        if subs:
            subs.discard(queue)
            if not subs:
                del self._subscribers[mailbox_id]
