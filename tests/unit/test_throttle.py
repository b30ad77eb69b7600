"""Failed-login throttling: delays double and cap, counts expire, successes are never slowed."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.clock import FixedClock
from bridge.core.identities import Principal
from bridge.core.mimeinfo import MimeLimits
from bridge.core.service import BridgeService, SessionInfo, SubmitSettings
from bridge.core.throttle import LoginThrottle
from bridge.crypto.passwords import hash_password
from bridge.errors import AuthenticationFailed


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def now() -> FakeMonotonic:
    return FakeMonotonic()


def throttle(now: FakeMonotonic, base: float = 1.0, cap: float = 16.0, window: float = 600.0,
             **kw: Any) -> LoginThrottle:
    return LoginThrottle(base, cap, window, monotonic=now, **kw)


def test_delays_double_and_are_capped(now: FakeMonotonic) -> None:
    t = throttle(now)
    assert [t.delay_for(n) for n in range(0, 8)] == [0, 1, 2, 4, 8, 16, 16, 16]
    assert t.delay_for(10_000) == 16


def test_each_failure_from_one_ip_waits_longer(now: FakeMonotonic) -> None:
    t = throttle(now)
    delays = [t.record_failure("192.0.2.1", f"guess{i}@kommune.dp2.test", 1) for i in range(7)]
    assert delays == [1, 2, 4, 8, 16, 16, 16]


def test_zero_base_delay_disables_throttling(now: FakeMonotonic) -> None:
    t = throttle(now, base=0)
    assert {t.record_failure("192.0.2.1", "x@y", n) for n in range(1, 20)} == {0.0}


def test_connection_failures_count_even_on_a_fresh_throttle(now: FakeMonotonic) -> None:
    assert throttle(now).record_failure("192.0.2.1", "x@y", connection_failures=4) == 8


def test_failures_expire_after_the_window(now: FakeMonotonic) -> None:
    t = throttle(now, window=600)
    for _ in range(4):
        t.record_failure("192.0.2.1", "anna@borger.dp2.test", 1)
        now.t += 10
    assert t.record_failure("192.0.2.1", "anna@borger.dp2.test", 1) == 16
    now.t += 595                   # the first four (t0 .. t0+30) have left the window, the fifth not
    assert t.record_failure("192.0.2.1", "anna@borger.dp2.test", 1) == 2
    now.t += 601
    assert t.record_failure("192.0.2.1", "anna@borger.dp2.test", 1) == 1


def test_logins_are_counted_case_insensitively(now: FakeMonotonic) -> None:
    t = throttle(now)
    t.record_failure("192.0.2.1", "Anna@Borger.dp2.test", 1)
    assert t.record_failure("192.0.2.1", "anna@borger.dp2.test", 1) == 2


def test_botnet_on_one_account_weighs_a_third_on_other_ips(now: FakeMonotonic) -> None:
    t = throttle(now, cap=1024)
    for i in range(9):      # each bot IP fails once; only the account-wide count grows
        account_wide = (i + 1) // 3
        assert t.record_failure(f"198.51.100.{i}", "anna@borger.dp2.test", 1) == \
            2 ** (max(1, account_wide) - 1)
    # The rightful user mistyping from home: the account-wide count (10) weighs a third.
    assert t.record_failure("192.0.2.1", "anna@borger.dp2.test", 1) == 4
    # Another account from that home IP is not affected by the attack on anna.
    fresh = throttle(now, cap=1024)
    fresh.record_failure("192.0.2.1", "anna@borger.dp2.test", 1)
    assert t.record_failure("192.0.2.1", "bo@borger.dp2.test", 1) == \
        fresh.record_failure("192.0.2.1", "bo@borger.dp2.test", 1)


def test_memory_is_bounded(now: FakeMonotonic) -> None:
    t = throttle(now, max_keys=30)
    for i in range(1000):
        t.record_failure(f"203.0.113.{i % 250}", f"user{i}@example.org", 1)
    assert len(t._failures) <= 30


# --- through the service: the throttle only ever delays failures --------------------

class FakeStore:
    """Enough of the store for BridgeService.authenticate."""

    def __init__(self, login: str, password_hash: str) -> None:
        self.login, self.hash = login, password_hash
        self.events: list[Any] = []

    def credentials(self, login: str) -> Any:
        return (7, "borger", [(None, self.hash)]) if login == self.login else None

    def append_audit(self, ev: Any) -> None:
        self.events.append(ev)

    def record_login(self, app_password_id: Any, ev: Any) -> None:
        self.events.append(ev)

    def principal(self, account_id: int) -> Principal:
        return Principal(account_id, self.login, "Anna", "citizen", 3, "borger", "citizens", 50,
                         "cpr", "0101701234", False, frozenset())


class SpyThrottle(LoginThrottle):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.asked: list[tuple[str, str]] = []

    def record_failure(self, ip: str, login: str, connection_failures: int) -> float:
        self.asked.append((ip, login))
        return super().record_failure(ip, login, connection_failures)


def test_success_from_another_ip_is_never_delayed_or_refused(now: FakeMonotonic) -> None:
    login, password = "anna@borger.dp2.test", "Anna-Secret-3-aeoa"
    spy = SpyThrottle(1.0, 16.0, 600.0, monotonic=now)
    settings = SubmitSettings("localhost", "dp2.test", 1 << 20, MimeLimits(), 0)
    service = BridgeService(FakeStore(login, hash_password(password)), None, FixedClock(), settings, spy)
    attacker = SessionInfo("s1", "smtp", "198.51.100.7", True)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            service.authenticate(login, "wrong-guess-123", attacker)
        assert service.failure_delay(attacker.ip, login, 1) > 0
    assert spy.delay_for(len(spy.asked)) == 4           # the attacker is being slowed

    home = SessionInfo("s2", "smtp", "192.0.2.1", True)
    asked = len(spy.asked)
    assert service.authenticate(login, password, home).login == login
    assert len(spy.asked) == asked                      # a success never consults the throttle
    assert [e.result for e in service.store.events] == ["fail", "fail", "fail", "ok"]


def test_a_full_table_does_not_forget_keys_it_already_counts(now: FakeMonotonic) -> None:
    t = throttle(now, max_keys=3)       # exactly the three keys of one (ip, login)
    delays = [t.record_failure("198.51.100.7", "anna@borger.dp2.test", 1) for _ in range(5)]
    assert delays == [1, 2, 4, 8, 16]
