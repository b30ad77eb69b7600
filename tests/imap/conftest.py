"""Fixtures of the IMAP tests: `transcript(bridge, user)` opens a raw Transcript (logged in
when `user` is given) that is closed when the test ends, whatever happens in it."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from tests.conftest import RunningBridge
from tests.helpers.imap import Transcript

Opener = Callable[..., Transcript]


@pytest.fixture
def transcript() -> Iterator[Opener]:
    opened: list[Transcript] = []

    def open_(bridge: RunningBridge, user: str | None = None) -> Transcript:
        t = Transcript(bridge, user)
        opened.append(t)
        return t

    yield open_
    for t in opened:
        t.close()
