"""SMTP AUTH over real TLS: mechanisms, app passwords, indistinguishable failures, throttling,
and no password in any log or audit event.  Acceptance point 11 (second half).

The test home delays failed logins by 0.05 s, doubling up to 0.2 s, and closes a
connection after auth.max_failures_per_connection failures (5 by default).
"""

from __future__ import annotations

import logging
import smtplib
import time
from base64 import b64encode

import pytest

from bridge.clock import SystemClock
from bridge.core.admin import Admin
from bridge.logs import TRACE
from tests.conftest import ANNA, CASEWORKER, JOBCENTER, LAWYER, PASSWORDS, RunningBridge
from tests.helpers.smtp import assert_no_secret_in_logs, connect, expect, login

WRONG = "Wrong-Secret-9-guess"


def without_ref(text: str) -> str:
    return text.split(" (ref ")[0]


def b64(text: str) -> str:
    return b64encode(text.encode()).decode()


def auth_plain(client: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    return client.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{password}"))


def auth_login(client: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    """AUTH LOGIN the way most clients do it: no initial response, two challenges."""
    code, challenge = client.docmd("AUTH", "LOGIN")
    assert (code, challenge) == (334, b64("Username:").encode())
    code, challenge = client.docmd(b64(user))
    assert (code, challenge) == (334, b64("Password:").encode())
    return client.docmd(b64(password))


def logins(bridge: RunningBridge) -> list[dict]:
    return [e for e in bridge.store.audit_events() if e["kind"] == "login"]


def test_unknown_user_and_wrong_password_look_the_same(bridge: RunningBridge) -> None:
    texts = []
    with connect(bridge) as c:
        texts.append(expect(auth_plain(c, "nobody@borger.dp2.test", WRONG), 535, "5.7.8"))
        texts.append(expect(auth_plain(c, ANNA, WRONG), 535, "5.7.8"))
        texts.append(expect(auth_login(c, "nobody@borger.dp2.test", WRONG), 535, "5.7.8"))
    with connect(bridge, implicit=True) as c:
        texts.append(expect(auth_login(c, ANNA, WRONG), 535, "5.7.8"))
    assert len({without_ref(t) for t in texts}) == 1, texts
    assert texts[0] != texts[3]                     # only the session reference differs
    # The audit trail keeps the real reason, and never the password.
    events = logins(bridge)
    # (Events sort by chain: unknown users go to the system chain, Anna's to her tenant's.)
    assert [(e["chain"], e["result"], e["details"]["reason"]) for e in events] == [
        ("_system", "fail", "unknown user"), ("_system", "fail", "unknown user"),
        ("borger", "fail", "wrong password"), ("borger", "fail", "wrong password")]
    assert WRONG not in repr(events) and b64(WRONG) not in repr(events)


def test_auth_plain_and_auth_login_both_work(sqlite_bridge: RunningBridge) -> None:
    password = PASSWORDS[LAWYER]
    ways = ["plain-initial", "plain-challenge", "login-challenge", "login-initial", "smtplib"]
    for how in ways:
        with connect(sqlite_bridge, implicit=how.startswith("login")) as c:
            if how == "plain-initial":
                reply = auth_plain(c, LAWYER, password)
            elif how == "plain-challenge":
                assert c.docmd("AUTH", "PLAIN") == (334, b"")
                reply = c.docmd(b64(f"\0{LAWYER}\0{password}"))
            elif how == "login-challenge":
                reply = auth_login(c, LAWYER, password)
            elif how == "login-initial":
                assert c.docmd("AUTH", "LOGIN " + b64(LAWYER)) == (334, b64("Password:").encode())
                reply = c.docmd(b64(password))
            else:
                reply = c.login(LAWYER.upper(), password)  # logins are case-insensitive
            expect(reply, 235, "2.7.0")
            expect(c.docmd("AUTH", "PLAIN"), 503, "5.5.1")  # once is enough
            expect(c.mail(LAWYER), 250, "2.1.0")
    events = logins(sqlite_bridge)
    assert [(e["result"], e["actor"], e["details"]["credential"]) for e in events] == \
        [("ok", LAWYER, "password")] * len(ways)


def test_app_password_works_and_revoked_one_does_not(bridge: RunningBridge) -> None:
    admin = Admin(bridge.store, SystemClock(), "tests")
    secret = admin.add_app_password(CASEWORKER, "thunderbird")
    with connect(bridge) as c:
        expect(auth_plain(c, CASEWORKER, secret), 235, "2.7.0")
        expect(c.mail(JOBCENTER), 250, "2.1.0")
    [entry] = bridge.store.app_passwords(CASEWORKER)
    assert entry["last_used_at"] is not None
    admin.revoke_app_password(CASEWORKER, "thunderbird")
    with connect(bridge) as c:
        expect(auth_login(c, CASEWORKER, secret), 535, "5.7.8")
        expect(c.mail(JOBCENTER), 530, "5.7.0")
    with login(bridge, CASEWORKER) as c:                # the main password is untouched
        expect(c.mail(JOBCENTER), 250, "2.1.0")
    events = logins(bridge)
    assert [(e["result"], e["details"].get("credential")) for e in events] == [
        ("ok", "app-password"), ("fail", None), ("ok", "password")]
    assert secret not in repr(events)


def test_failed_logins_are_delayed_then_the_connection_is_closed(sqlite_bridge: RunningBridge,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    service = sqlite_bridge.app.service
    limit = sqlite_bridge.config.auth.max_failures_per_connection
    delays: list[float] = []
    compute = service.failure_delay

    def spy(ip: str, login: str, connection_failures: int) -> float:
        delays.append(compute(ip, login, connection_failures))
        return delays[-1]

    monkeypatch.setattr(service, "failure_delay", spy)
    success = []
    for _ in range(2):
        with connect(sqlite_bridge) as c:
            started = time.monotonic()
            expect(auth_plain(c, ANNA, PASSWORDS[ANNA]), 235, "2.7.0")
            success.append(time.monotonic() - started)
    assert delays == []                                 # a success is never slowed down

    with connect(sqlite_bridge) as attacker:
        elapsed = []
        for _ in range(limit - 1):
            started = time.monotonic()
            expect(auth_plain(attacker, ANNA, WRONG), 535, "5.7.8")
            elapsed.append(time.monotonic() - started)
        # The delay doubles per failure (0.05, 0.1, 0.2, capped at 0.2 in the test home) ...
        assert delays == [service.throttle.delay_for(n) for n in range(1, limit)]
        assert delays[1] == pytest.approx(2 * delays[0])
        assert delays[-1] == sqlite_bridge.config.auth.failure_delay_max
        # ... and is really waited for: never shorter than computed, longer than a success.
        assert all(e >= d for e, d in zip(elapsed, delays))
        assert elapsed[1] > min(success)
        text = expect(auth_plain(attacker, ANNA, WRONG), 421, "4.7.0")
        assert "Too many failed logins" in text
        with pytest.raises(smtplib.SMTPServerDisconnected):
            attacker.noop()
    # Anna herself, right after, from another connection: not locked out.
    with connect(sqlite_bridge) as c:
        expect(auth_plain(c, ANNA, PASSWORDS[ANNA]), 235, "2.7.0")
    assert len(delays) == limit
    assert [e["result"] for e in logins(sqlite_bridge)] == ["ok", "ok"] + ["fail"] * limit + ["ok"]


def test_no_password_reaches_any_log(bridge: RunningBridge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(TRACE)                                          # every logger, at TRACE
    for name in ["bridge", "mail.log", *logging.root.manager.loggerDict]:
        caplog.set_level(TRACE, logger=name)
    admin = Admin(bridge.store, SystemClock(), "tests")
    app_secret = admin.add_app_password(LAWYER, "phone")
    with connect(bridge) as c:
        expect(auth_plain(c, ANNA, WRONG), 535, "5.7.8")
        expect(auth_login(c, ANNA, PASSWORDS[LAWYER]), 535, "5.7.8")   # someone else's password
        expect(c.docmd("AUTH", "PLAIN " + b64(f"{CASEWORKER}\0{ANNA}\0{PASSWORDS[ANNA]}")), 535, "5.7.1")
        expect(auth_plain(c, ANNA, PASSWORDS[ANNA]), 235, "2.7.0")
    with connect(bridge, implicit=True) as c:
        expect(auth_login(c, CASEWORKER, PASSWORDS[CASEWORKER]), 235, "2.7.0")
    with connect(bridge) as c:
        expect(auth_plain(c, LAWYER, app_secret), 235, "2.7.0")
    with connect(bridge) as c:
        c.login(LAWYER, PASSWORDS[LAWYER])                            # smtplib's own choice
    secrets = [*PASSWORDS.values(), WRONG, app_secret]
    assert any(r.name.startswith("bridge") and r.levelno == logging.INFO for r in caplog.records)
    assert_no_secret_in_logs(secrets, caplog.records, caplog.text)
    audit = repr(bridge.store.audit_events())
    assert not [s for s in secrets if s in audit or b64(s) in audit]


def test_password_sent_as_a_command_is_not_logged(sqlite_bridge: RunningBridge,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A client out of step (AUTH LOGIN answered late) sends its base64 password as a command
    line; the server says it does not know that command and logs only its length."""
    caplog.set_level(TRACE)
    for name in ["bridge", "mail.log"]:
        caplog.set_level(TRACE, logger=name)
    with connect(sqlite_bridge) as c:
        code, _ = c.docmd(b64(PASSWORDS[ANNA]))
        assert code == 500
        c.docmd(PASSWORDS[ANNA])
    assert any("unrecognised" in r.getMessage() for r in caplog.records)
    assert_no_secret_in_logs([PASSWORDS[ANNA]], caplog.records, caplog.text)


def test_store_failure_during_auth_is_a_temporary_454(sqlite_bridge: RunningBridge,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(login: str) -> None:
        raise RuntimeError("secret-internal-detail")
    monkeypatch.setattr(sqlite_bridge.store, "credentials", broken)
    with connect(sqlite_bridge) as c:
        text = expect(auth_plain(c, ANNA, PASSWORDS[ANNA]), 454, "4.7.0")
        assert "secret-internal-detail" not in text
        monkeypatch.undo()
        expect(auth_plain(c, ANNA, PASSWORDS[ANNA]), 235, "2.7.0")
