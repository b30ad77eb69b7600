"""The command table: each command module registers its handlers with `@command`.

A handler is `async def handler(session, tag: bytes, args: Reader, uid: bool) -> None`; it
writes untagged responses through the session and returns normally for OK, or raises
errors.Bad / errors.No.  `states` says in which session states the command is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED = "not-authenticated", "authenticated", "selected"
ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
AUTH = frozenset({AUTHENTICATED, SELECTED})
SEL = frozenset({SELECTED})

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    states: frozenset[str]
    uid: bool                      # may be prefixed by UID
    ok_text: str


COMMANDS: dict[str, Command] = {}

# Returned by a handler that has already sent its tagged reply (STARTTLS).
ANSWERED = object()


def command(name: str, states: frozenset[str], uid: bool = False, ok: str = "") -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, handler, states, uid, ok or f"{name} completed")
        return handler
    return register
