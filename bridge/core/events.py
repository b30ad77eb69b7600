"""The "new message" signal: the delivery worker publishes, IMAP IDLE sessions listen.

`MessageEvents` is the contract; `LocalEvents` is the in-process implementation
(one node).  A PostgreSQL LISTEN/NOTIFY implementation can replace it when
several nodes share a database (DESIGN.md section 11) without touching the
publishers or the listeners.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from bridge.core.messages import Filed


class MessageEvents(Protocol):
    def publish(self, filed: Filed) -> None:
        """Announce a filed message.  Safe to call from any thread; never blocks."""
        ...

    def subscribe(self, mailbox_id: int) -> asyncio.Queue[Filed]:
        """A queue receiving every Filed for `mailbox_id` from now on."""
        ...

    def unsubscribe(self, mailbox_id: int, queue: asyncio.Queue[Filed]) -> None:
        ...


class LocalEvents:
    """See `MessageEvents`.  Queues are bounded; a subscriber that never reads loses
    events rather than growing memory (an IDLE session re-reads the mailbox state anyway)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue_size: int = 1000) -> None:
        self._loop = loop
        self._size = queue_size
        self._subscribers: dict[int, set[asyncio.Queue[Filed]]] = {}

    def publish(self, filed: Filed) -> None:
        self._loop.call_soon_threadsafe(self._deliver, filed)

    def _deliver(self, filed: Filed) -> None:
        for q in self._subscribers.get(filed.mailbox_id, ()):
            if not q.full():
                q.put_nowait(filed)

    def subscribe(self, mailbox_id: int) -> asyncio.Queue[Filed]:
        q: asyncio.Queue[Filed] = asyncio.Queue(self._size)
        self._subscribers.setdefault(mailbox_id, set()).add(q)
        return q

    def unsubscribe(self, mailbox_id: int, queue: asyncio.Queue[Filed]) -> None:
        subs = self._subscribers.get(mailbox_id)
        if subs:
            subs.discard(queue)
            if not subs:
                del self._subscribers[mailbox_id]
