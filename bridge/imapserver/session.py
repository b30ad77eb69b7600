"""One IMAP session: its state, the command loop, error mapping, and the selected mailbox view.

The loop reads a command (server.Connection), tokenizes it (parser), finds the
handler in the registry for the current state, and turns the outcome into the
tagged reply in exactly one place: OK, BAD for syntax, NO [CODE] for the rest,
`NO [SERVERBUG] internal error (ref S)` for anything unexpected (logged with
its traceback, never sent).  Every NO and BAD ends with `(ref S)`.
Untagged EXISTS/EXPUNGE/FETCH updates are sent by `sync()` only where RFC 9051
section 7 allows them (never during FETCH, STORE or SEARCH by sequence number).
"""

from __future__ import annotations

import logging
import secrets
import ssl
from dataclasses import dataclass, field
from typing import Any

from bridge.core.identities import Principal
from bridge.core.service import BridgeService, SessionInfo
from bridge.errors import BridgeError
from bridge.imapserver import mutf7, registry
from bridge.imapserver.errors import Bad, ImapError, No, from_bridge_error
from bridge.imapserver.parser import Atom, ParseError, Reader, tokenize
from bridge.imapserver.responses import mailbox_name
from bridge.imapserver.registry import AUTHENTICATED, COMMANDS, NOT_AUTHENTICATED, SELECTED
from bridge.imapserver.server import (MAX_LITERAL, MAX_LITERAL_UNAUTH, Connection, IdleTimeout,
                                      LineTooLong, LiteralRefused)
from bridge.imapserver.uidmap import UidMap
from bridge.logs import session_id as session_var
from bridge.store.mailboxes import EntryState, MailboxRepository, MailboxView

log = logging.getLogger("bridge.imap")

MAX_BAD_COMMANDS = 20
APPENDLIMIT = 32 * 1024 * 1024
UTF8_NAMES = frozenset({"IMAP4REV2", "UTF8=ACCEPT"})     # names on the wire in UTF-8 (mutf7.py)


@dataclass
class Context:
    """What every session shares: the use cases, the store's mailbox view, TLS, limits."""

    service: BridgeService
    mailboxes: MailboxRepository
    blobs: Any
    run_blocking: Any
    events: Any
    tls_context: ssl.SSLContext
    max_failures: int
    appendlimit: int = APPENDLIMIT


@dataclass
class Selected:
    """The selected mailbox as this session last told the client about it.  Only UIDs are
    kept (as runs, uidmap.py), not flags: FETCH and the updates read those from the store,
    so a session costs little however large its mailbox."""

    mailbox: MailboxView
    read_only: bool
    uids: UidMap                                   # sequence number n = the n-th UID
    highestmodseq: int
    uidnext: int
    queue: Any = None                              # Filed/Changed events (core/events.py) for IDLE
    synced: int = 0                                # MODSEQ up to which changes were read (sync)
    gone: set[int] = field(default_factory=set)    # expunged, EXPUNGE not sent yet
    # UID -> MODSEQ of flags the client got (FETCH, STORE) after `synced`: sync does not repeat them.
    told: dict[int, int] = field(default_factory=dict)
    search_saved: list[int] = field(default_factory=list)   # RFC 5182 "$"

    def seq_of(self, uid: int) -> int | None:
        return self.uids.seq_of(uid)

    def tell(self, uid: int, modseq: int) -> None:
        """The client got this entry's flags as of `modseq` (FETCH, STORE): sync need not repeat them."""
        if modseq > self.synced:
            self.told[uid] = max(modseq, self.told.get(uid, 0))


class ImapSession:
    def __init__(self, conn: Connection, ctx: Context) -> None:
        self.conn, self.ctx = conn, ctx
        self.id = secrets.token_hex(6)
        self.state = NOT_AUTHENTICATED
        self.principal: Principal | None = None
        self.selected: Selected | None = None
        self.enabled: set[str] = set()
        self.auth_failures = 0
        self.bad_commands = 0
        self.logout = False

    # --- the loop ------------------------------------------------------------------

    def info(self) -> SessionInfo:
        return SessionInfo(self.id, "imap", self.conn.ip, self.conn.tls)

    async def run(self) -> None:
        session_var.set(self.id)
        log.info("connection from %s%s", self.conn.ip, " (TLS)" if self.conn.tls else "")
        await self.conn.send(b"* OK [CAPABILITY " + self.capabilities().encode() + b"] dp2bridge ready")
        try:
            while not self.logout:
                if not await self._one_command():
                    break
        except (ConnectionError, ssl.SSLError) as exc:
            log.info("connection closed: %s", type(exc).__name__)
        except LineTooLong:
            await self._bye("command line too long")
            await self.conn.discard_input()
        except IdleTimeout:
            log.info("autologout after %.0f s without a command", self.conn.idle_limit)
            await self._bye("Autologout; idle for too long")

    async def _bye(self, text: str) -> None:
        try:
            await self.conn.send(b"* BYE " + text.encode() + b" (ref " + self.id.encode() + b")")
        except (ConnectionError, ssl.SSLError):
            pass

    async def _one_command(self) -> bool:
        try:
            segments = await self.conn.read_command(self._literal_limit)
        except LiteralRefused as exc:
            return await self._literal_refused(exc)
        tag = _raw_tag(segments[0])
        try:
            tokens = tokenize(segments)
            parsed_tag, name, args, uid = self._parse_head(tokens)
            if parsed_tag != tag:                 # e.g. "a\ NOOP": the tag is not the first word
                raise ParseError("invalid tag")
            await self._dispatch(tag, name, args, uid)
        except ImapError as exc:
            await self._reply_error(tag, exc)
        except ParseError as exc:
            await self._reply_error(tag, Bad(str(exc)))
        except BridgeError as exc:
            await self._reply_error(tag, from_bridge_error(exc))
        except (ConnectionError, ssl.SSLError, LineTooLong, IdleTimeout):
            raise
        except Exception:
            log.exception("internal error in IMAP command")
            await self._reply_error(tag, No("internal error", "SERVERBUG"))
        await self.conn.drain()
        if self.bad_commands >= MAX_BAD_COMMANDS:
            await self._bye("too many bad commands")
            await self.conn.discard_input()
            return False
        return True

    def _literal_limit(self, segments: list[bytes]) -> int:
        if self.state == NOT_AUTHENTICATED:
            return MAX_LITERAL_UNAUTH
        words = segments[0].split(b" ", 2)
        if len(words) > 1 and words[1].upper() == b"APPEND":
            return self.ctx.appendlimit
        return MAX_LITERAL

    async def _literal_refused(self, exc: LiteralRefused) -> bool:
        code = "TOOBIG" if self.state != NOT_AUTHENTICATED else "LIMIT"
        text = b"NO [" + code.encode() + b"] literal too large (ref " + self.id.encode() + b")"
        if exc.synchronizing:
            await self.conn.send(exc.tag + b" " + text)
            return True
        # RFC 7888 section 4: the client is already sending the bytes; we cannot resync.
        await self.conn.send(b"* BYE [" + code.encode() + b"] literal too large")
        await self.conn.discard_input()
        return False

    def _parse_head(self, tokens: list[Any]) -> tuple[bytes, str, Reader, bool]:
        if not tokens or not isinstance(tokens[0], Atom):
            raise ParseError("missing tag")
        tag = tokens[0].value.encode()
        if not tag or len(tag) > 64 or any(c in b"+(){%*\"\\" or not 0x21 <= c <= 0x7E for c in tag):
            raise ParseError("invalid tag")
        if len(tokens) < 2 or not isinstance(tokens[1], Atom):
            raise _TaggedBad(tag, "missing command")
        name, rest, uid = tokens[1].value.upper(), tokens[2:], False
        if name == "UID":
            if not rest or not isinstance(rest[0], Atom):
                raise _TaggedBad(tag, "UID needs a command")
            name, rest, uid = rest[0].value.upper(), rest[1:], True
        return tag, name, Reader(rest), uid

    async def _dispatch(self, tag: bytes, name: str, args: Reader, uid: bool) -> None:
        cmd = COMMANDS.get(name)
        if cmd is None or (uid and not cmd.uid):
            raise Bad("unknown command")                 # counted in _reply_error, like every BAD
        if self.selected is not None:       # a grant may have been revoked, a mailbox deleted
            await mailboxes.recheck_selected(self, cmd.states)
        if self.state not in cmd.states:
            raise Bad(_state_text(self.state))
        ok = await cmd.handler(self, tag, args, uid)
        self.bad_commands = 0
        if ok is registry.ANSWERED:
            return
        text = ok if isinstance(ok, bytes) else (ok or cmd.ok_text).encode()
        self.conn.write(tag + b" OK " + text)

    async def _reply_error(self, tag: bytes, exc: ImapError) -> None:
        if isinstance(exc, _TaggedBad):
            tag = exc.tag
        if isinstance(exc, Bad):
            self.bad_commands += 1
            log.debug("BAD %s", exc.text)
        else:
            log.info("NO [%s] %s", exc.code, exc.text)
        code = f"[{exc.code}] " if exc.code else ""
        self.conn.write(tag + f" {exc.status} {code}{exc.text} (ref {self.id})".encode())

    # --- shared helpers for command modules ----------------------------------------

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "ENABLE", "ID", "IDLE", "NAMESPACE", "UNSELECT",
                "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS",
                "CONDSTORE", "QRESYNC", f"APPENDLIMIT={self.ctx.appendlimit}", "SASL-IR", "ESEARCH",
                "SEARCHRES"]
        if self.state == NOT_AUTHENTICATED:
            if self.conn.tls:
                caps.append("AUTH=PLAIN")
            else:
                caps += ["STARTTLS", "LOGINDISABLED"]
        return " ".join(caps)

    def untagged(self, line: bytes) -> None:
        self.conn.write(b"* " + line)

    def name_in(self, text: str) -> str:
        """The stored mailbox name the client means (modified UTF-7 unless UTF-8 is enabled)."""
        return mutf7.name_in(text, bool(self.enabled & UTF8_NAMES))

    def name_out(self, name: str) -> bytes:
        """A stored mailbox name as this client reads it, quoted or as a literal."""
        return mailbox_name(mutf7.name_out(name, bool(self.enabled & UTF8_NAMES)))

    async def blocking(self, fn: Any, *args: Any) -> Any:
        return await self.ctx.run_blocking(fn, *args)

    def account_id(self) -> int:
        assert self.principal is not None
        return self.principal.account_id

    async def select_mailbox(self, box: MailboxView, read_only: bool) -> tuple[Selected, list[str]]:
        """Select `box`: the new Selected and the keywords its messages carry."""
        view, runs, keywords = await self.blocking(self.ctx.mailboxes.select_state, box.id)
        if view is None:
            raise No("no such mailbox", "NONEXISTENT")
        self.unselect()
        sel = Selected(box, read_only, UidMap(runs), view.highestmodseq, view.uidnext, synced=view.highestmodseq)
        sel.queue = self.ctx.events.subscribe(box.id)
        self.selected, self.state = sel, SELECTED
        return sel, keywords

    def notify_changed(self, mailbox_id: int | None = None) -> None:
        """Tell other sessions (IDLE) that flags changed or messages were expunged in
        `mailbox_id` (default: the selected mailbox).  Call after the write committed."""
        if mailbox_id is None:
            if self.selected is None:
                return
            mailbox_id = self.selected.mailbox.id
        self.ctx.events.publish_change(mailbox_id)

    def unselect(self) -> None:
        if self.selected is not None and self.selected.queue is not None:
            self.ctx.events.unsubscribe(self.selected.mailbox.id, self.selected.queue)
        self.selected, self.state = None, AUTHENTICATED if self.principal else NOT_AUTHENTICATED

    async def sync(self, expunges: bool = True) -> None:
        """Tell the client what changed in the selected mailbox since it last heard:
        EXPUNGE (or VANISHED with QRESYNC) when `expunges`, new EXISTS, changed FLAGS.

        Reads only what changed after `sel.synced` (every change raises the MODSEQ and
        expunges leave a tombstone), so a NOOP costs the changes, not the mailbox size.
        UIDs expunged while EXPUNGE may not be sent (RFC 9051 section 7.5.1: during FETCH,
        STORE, SEARCH by number, so `expunges` is False there) wait in `sel.gone`."""
        sel = self.selected
        if sel is None:
            return
        while sel.queue is not None and not sel.queue.empty():
            sel.queue.get_nowait()                 # events up to now are covered by this read
        view, changed, gone = await self.blocking(self.ctx.mailboxes.changes, sel.mailbox.id, sel.synced)
        if view is None:                           # deleted by another session (DELETE)
            self.unselect()
            self.untagged(b"OK [CLOSED] mailbox deleted")
            return
        sel.gone.update(uid for uid in gone if uid in sel.uids)
        if expunges and sel.gone:
            self._send_expunges(sel)
        last = sel.uids.last
        new = [e for e in changed if e.uid > last]
        if new:
            for e in new:
                sel.uids.append(e.uid)
            self.untagged(b"%d EXISTS" % len(sel.uids))
        self._send_flag_changes(sel, [e for e in changed if e.uid <= last])
        sel.synced = max(sel.synced, view.highestmodseq)
        sel.told = {uid: modseq for uid, modseq in sel.told.items() if modseq > sel.synced}
        sel.highestmodseq, sel.uidnext = max(sel.highestmodseq, view.highestmodseq), view.uidnext

    def _send_expunges(self, sel: Selected) -> None:
        gone = sorted(sel.gone)
        sel.gone.clear()
        if "QRESYNC" in self.enabled:
            from bridge.imapserver.sequences import uid_set_text
            self.untagged(b"VANISHED " + uid_set_text(gone).encode())   # RFC 7162 section 3.2.10
        else:
            seqs = [sel.seq_of(uid) for uid in gone]
            for seq in reversed(seqs):             # highest first: lower numbers stay valid
                if seq is not None:
                    self.untagged(b"%d EXPUNGE" % seq)
        sel.uids.remove(gone)

    def _send_flag_changes(self, sel: Selected, changed: list[EntryState]) -> None:
        """FETCH FLAGS for entries the client knows whose MODSEQ rose since it was told."""
        for e in changed:
            if e.uid in sel.gone or e.modseq <= sel.told.get(e.uid, 0) or e.uid not in sel.uids:
                continue
            sel.told[e.uid] = e.modseq
            self.untagged(self.fetch_flags_line(sel, e))

    def fetch_flags_line(self, sel: Selected, e: EntryState) -> bytes:
        from bridge.imapserver.responses import flag_list
        parts = [b"UID %d" % e.uid, b"FLAGS " + flag_list(e.flags)]
        if self.enabled & {"CONDSTORE", "QRESYNC"}:
            parts.append(b"MODSEQ (%d)" % e.modseq)
        return b"%d FETCH (" % (sel.seq_of(e.uid) or 0) + b" ".join(parts) + b")"


class _TaggedBad(Bad):
    def __init__(self, tag: bytes, text: str) -> None:
        super().__init__(text)
        self.tag = tag


def _raw_tag(line: bytes) -> bytes:
    """The tag as written, for answering a command that does not parse; "*" if there is none."""
    word = line.split(b" ", 1)[0]
    ok = word and len(word) <= 64 and all(0x21 <= c <= 0x7E and c not in b'+(){%*"\\' for c in word)
    return word if ok else b"*"


def _state_text(state: str) -> str:
    return {NOT_AUTHENTICATED: "log in first", AUTHENTICATED: "select a mailbox first",
            SELECTED: "not allowed in this state"}[state]


# Command modules register themselves in the registry when imported.
from bridge.imapserver import commands_any, fetch, idle, mailboxes, search, store_cmds  # noqa: E402,F401,I001

__all__ = ["ImapSession", "Context", "Selected", "registry"]
