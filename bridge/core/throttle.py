"""Slowing down failed logins without locking the rightful user out.

Failures are counted per IP, per (account, IP) and per account, inside a
sliding window.  A failed attempt is answered only after a delay that doubles
with the worst of those counts (the account-wide count weighs a third, so a
botnet guessing one user's password slows itself down, but the user, logging
in correctly from home, is never delayed: successes are never slowed and
never refused).  Per-connection counting lives in the protocol session.
In-process state: each node throttles on its own (DESIGN.md section 11 notes
what must be shared; this may stay per node).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable


class LoginThrottle:
    def __init__(self, base_delay: float, max_delay: float, window: float,
                 monotonic: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.base_delay, self.max_delay, self.window = base_delay, max_delay, window
        self._now = monotonic
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _count(self, key: str) -> int:
        q = self._failures.get(key)
        if not q:
            return 0
        horizon = self._now() - self.window
        while q and q[0] < horizon:
            q.popleft()
        return len(q)

    def _add(self, key: str) -> None:
        q = self._failures.get(key)
        if q is None:
            if len(self._failures) >= self._max_keys:  # bounded memory against floods:
                self._failures.pop(next(iter(self._failures)))   # forget the oldest key
            q = self._failures[key] = deque()
        q.append(self._now())

    def record_failure(self, ip: str, login: str, connection_failures: int) -> float:
        """Count a failure and return the seconds to wait before answering it."""
        login = login.lower()[:320]
        for key in (f"ip:{ip}", f"acct:{login}|{ip}", f"acct:{login}"):
            self._add(key)
        n = max(connection_failures, self._count(f"ip:{ip}"),
                self._count(f"acct:{login}|{ip}"), self._count(f"acct:{login}") // 3)
        return self.delay_for(n)

    def delay_for(self, failures: int) -> float:
        if failures <= 0 or self.base_delay <= 0:
            return 0.0
        return min(self.base_delay * 2 ** min(failures - 1, 30), self.max_delay)
