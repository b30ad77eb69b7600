"""`dp2bridge audit verify|export`: check the audit chains and archive them with a signed head.

`verify` re-walks each chain (DESIGN.md section 5) row by row in seq order,
streamed in pages by store.auditlog, and names the first broken link: a
changed event, a missing seq, a link that does not follow, a head that does
not match.  With `--head EXPORT.jsonl` it also checks the database still
holds the head an earlier export signed, which catches events deleted at the
end even when audit_heads was rewritten to match.  `export` writes one JSON
line per event and a final line with the chain's head signed (detached CMS)
by the tenant's evidence key.  Signing and signature checks are
crypto.evidence's; this module only reads the store.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from bridge.admin.context import Context
from bridge.clock import SystemClock
from bridge.core.audit import GENESIS, SYSTEM_CHAIN, event_from_row, link_hash
from bridge.errors import AdminError
from bridge.store import auditlog
from bridge.store.auditlog import ChainState

PROGRESS_EVERY = 10_000
EXIT_FAILED = 1
EXIT_USAGE = 2
DO_NOT_REPAIR = ("keep the database as it is for investigation (do not repair the chain), and "
                 "compare with your latest export: `dp2bridge audit verify --head EXPORT.jsonl`")

VERIFY_HELP = """\
Re-walk every audit chain (one per tenant, and _system) from its first event:
each event's hash must match its content and link to the one before, seq
must have no gaps, and the newest event must be the head stored in the
database.  Prints "ok: CHAIN: N events, head HASH" per chain; on a failure
it names the first broken link (chain, seq, row id, kind, time, what is
wrong) and exits 1.

With --head EXPORT.jsonl (made earlier by `dp2bridge audit export`) it first
checks the export's signed head against the tenant's evidence certificate
and CA, then that the database still holds that head (same hash at that
seq, at least as many events): this catches the newest events being
deleted even if the stored head was rewritten to match.

examples:
  dp2bridge audit verify
  dp2bridge audit verify --tenant kommune --head kommune-2026-11.jsonl
"""

EXPORT_HELP = """\
Write the tenant's audit chain as JSON lines, one event per line (chain,
seq, time, kind, result, actor, subject, message_uuid, protocol,
session_id, details, prev_hash, hash), then one final line:
  {"signed_head": {"chain", "seq", "hash", "count", "exported_at"},
   "signature": base64 DER CMS detached signature over the signed_head as
                JSON with sorted keys and no spaces,
   "certificate": PEM of the tenant's evidence certificate}
The signed head is the whole chain's head even with --since; "count" is
the number of events in the chain up to that head.  Keep exports outside
this server: `dp2bridge audit verify --head FILE` later proves that nothing
up to that head was removed.  Without dp2bridge, an auditor checks the head
with openssl: write the signed_head (sorted keys, no spaces) to head.json and
the decoded signature to head.sig, then run
  openssl cms -verify -binary -inform DER -in head.sig -content head.json \\
      -CAfile <home>/certs/tenants/<tenant>/ca.pem

examples:
  dp2bridge audit export --tenant kommune --output kommune.jsonl
  dp2bridge audit export --tenant kommune --since 2026-11-01T00:00:00Z > nov.jsonl
"""


# --- walking a chain ----------------------------------------------------------------

@dataclass(frozen=True)
class Break:
    """The first broken link of a chain: where, what is wrong, and the row nearest to it."""

    chain: str
    seq: int
    problem: str
    row: dict[str, Any] | None = None

    def describe(self) -> str:
        where = f"seq {self.seq}"
        if self.row is not None:
            r = self.row
            near = "" if r["seq"] == self.seq else f"nearest event seq {r['seq']}: "
            where += f" ({near}row id {r['id']}, kind {r['kind']}, time {_iso_ms(r['time'])})"
        return f"FAIL: {self.chain}: first broken link at {where}: {self.problem}"


Progress = Callable[[str, int], None]


def walk(state: ChainState, rows: Iterable[dict[str, Any]], progress: Progress) -> tuple[int, Break | None]:
    """(events that hold, first break or None) for `rows` of one chain in seq order, up
    to its stored head, then the head itself."""
    prev, expected, last = GENESIS, 1, None
    for row in rows:
        problem = _link_problem(row, expected, prev)
        if problem:
            return expected - 1, Break(state.chain, expected, problem, row)
        prev, last, expected = row["hash"], row, expected + 1
        if (expected - 1) % PROGRESS_EVERY == 0:
            progress(state.chain, expected - 1)
    return expected - 1, _check_head(state, expected - 1, prev, last)


def _link_problem(row: dict[str, Any], expected: int, prev: str) -> str | None:
    """What is wrong with `row` as link number `expected` after hash `prev`, else None."""
    if row["seq"] != expected:
        return (f"missing: seq {_span(expected, row['seq'] - 1)} not in the database (deleted); "
                f"the chain jumps to seq {row['seq']}")
    if row["prev_hash"] != prev:
        return (f"broken link: its prev_hash is not the hash of seq {expected - 1} (an event before "
                f"it was rewritten or this one was replaced)")
    if link_hash(prev, event_from_row(row)) != row["hash"]:
        return "changed: its content does not match its hash (the event was altered after it was written)"
    return None


def _check_head(state: ChainState, count: int, prev: str, last: dict[str, Any] | None) -> Break | None:
    head = state.head
    if head is None:
        return Break(state.chain, count + 1, "no head: audit_heads has no row for this chain (deleted?), "
                     "so events missing at its end cannot be ruled out", last)
    if head[0] > count:
        return Break(state.chain, count + 1, f"missing: seq {_span(count + 1, head[0])} not in the database "
                     f"(deleted at the end); the stored head is seq {head[0]}", last)
    if head[1] != prev:
        return Break(state.chain, count, "head mismatch: the newest event's hash is not the one the "
                     "stored head recorded (the event was replaced)", last)
    if state.max_seq > head[0]:
        return Break(state.chain, head[0] + 1, f"unrecorded: seq {_span(head[0] + 1, state.max_seq)} beyond "
                     "the stored head (inserted behind the bridge's back)", None)
    return None


def _span(first: int, last: int) -> str:
    return f"{first} is" if first == last else f"{first}..{last} are"


# --- verify ----------------------------------------------------------------------

def cmd_verify(ctx: Context) -> int:
    a = ctx.args
    export = _read_export_head(Path(a.head)) if a.head else None
    if export is not None:
        code = _check_export_signature(ctx, export)
        if code:
            return code
    signed: dict[str, Any] | None = export["signed_head"] if export else None
    tenant = signed["chain"] if signed else a.tenant
    states = auditlog.chains(ctx.store, tenant)
    if tenant and not states:
        raise AdminError(f"there is no audit chain {tenant!r}; its tenant has recorded no events, or the "
                         f"name is wrong (see `dp2bridge tenant list`)")
    if not states:
        print("audit verify: no audit events yet: nothing to verify", file=sys.stderr)
    failed = False
    for state in states:
        failed |= not _verify_chain(ctx.store, state)
    if signed is not None:
        failed |= not _verify_against_export(ctx.store, signed, a.head)
    if failed:
        print(f"audit verify: FAILED; {DO_NOT_REPAIR}", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def _check_export_signature(ctx: Context, export: dict[str, Any]) -> int:
    """0 if the export's head is signed by its tenant's evidence key, else the exit code."""
    a, chain = ctx.args, export["signed_head"]["chain"]
    if a.tenant and a.tenant != chain:
        print(f"dp2bridge: {a.head} is an export of chain {chain!r}, not of --tenant {a.tenant!r}; "
              f"leave out --tenant or give the matching export", file=sys.stderr)
        return EXIT_USAGE
    problem = _signature_problem(ctx, export)
    if problem:
        print(f"FAIL: {chain}: the signed head in {a.head} does not verify: {problem}")
        return EXIT_FAILED
    head = export["signed_head"]
    print(f"ok: {a.head}: head seq {head['seq']} of {chain}, exported at {head['exported_at']}, "
          f"signed by its evidence certificate")
    return 0


def _verify_chain(store: Any, state: ChainState) -> bool:
    long = False

    def progress(chain: str, n: int) -> None:
        nonlocal long
        long = True
        print(f"audit verify: {chain}: {n} events checked...", file=sys.stderr, flush=True)
    upto = state.head[0] if state.head else None
    count, broken = walk(state, auditlog.chain_rows(store, state.chain, upto=upto), progress)
    if long:
        print(f"audit verify: {state.chain}: {count} events checked", file=sys.stderr, flush=True)
    if broken is not None:
        print(broken.describe())
        return False
    digest = state.head[1] if state.head else GENESIS
    print(f"ok: {state.chain}: {count} events, head {digest[:16]}")
    return True


def _verify_against_export(store: Any, signed: dict[str, Any], source: str) -> bool:
    chain, seq = signed["chain"], signed["seq"]
    row = auditlog.event_at(store, chain, seq) if seq else None
    when = f"the export of {signed['exported_at']} ({source})"
    problem = None
    if seq and row is None:
        top = max((s.max_seq for s in auditlog.chains(store, chain)), default=0)
        problem = (f"seq {seq} is missing: {when} signed head seq {seq}, the database chain now ends "
                   f"at seq {top} (events deleted)")
    elif seq and row["hash"] != signed["hash"]:
        problem = f"seq {seq} changed: its hash is not the one {when} signed (the event was replaced)"
    else:
        have = auditlog.count_upto(store, chain, seq)
        if have < signed["count"]:
            problem = (f"events missing: {when} counted {signed['count']} events up to seq {seq}, "
                       f"the database has {have}")
    if problem:
        print(f"FAIL: {chain}: {problem}")
        return False
    print(f"ok: {chain}: still holds the exported head seq {seq} ({signed['hash'][:16]}, "
          f"{signed['count']} events)")
    return True


def _read_export_head(path: Path) -> dict[str, Any]:
    """The final line of an export, checked for shape (not yet for its signature)."""
    last = ""
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    last = line
    except OSError as exc:
        raise AdminError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AdminError(f"{path} is not an audit export (not UTF-8 text)") from None
    try:
        doc = json.loads(last)
        head = doc["signed_head"]
        types = {"chain": str, "seq": int, "hash": str, "count": int, "exported_at": str}
        ok = (isinstance(head, dict) and set(head) == set(types) and isinstance(doc["signature"], str)
              and all(type(head[k]) is t for k, t in types.items()))
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise AdminError(f"{path} is not an audit export: its last line is not a signed head "
                         f"(was it cut short? make one with `dp2bridge audit export`)")
    return doc


def _signature_problem(ctx: Context, doc: dict[str, Any]) -> str | None:
    """None if the export's head is signed by its tenant's evidence certificate (issued by
    the tenant CA), else what is wrong.  Another certificate of the same CA (a user's
    S/MIME certificate, say) does not do."""
    from bridge.crypto.evidence import SignatureInvalid, verify_detached
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError):
        return "the signature is not base64"
    pki = _tenant_pki(ctx, doc["signed_head"]["chain"])
    try:
        verified = verify_detached(head_bytes(doc["signed_head"]), signature, [pki.ca_pem()])
    except SignatureInvalid as exc:
        return f"{exc.reason} (the file was changed after export, or another key signed it)"
    if _der(verified.signer_cert_pem) != _der(pki.cert_pem()):
        return (f"signed by {verified.signer_subject}, which is not the evidence certificate of "
                f"{pki.tenant} ({pki.cert_path})")
    return None


# --- export ----------------------------------------------------------------------

def cmd_export(ctx: Context) -> int:
    a = ctx.args
    pki = _tenant_pki(ctx, a.tenant)
    head = auditlog.head_with_count(ctx.store, a.tenant)
    if head is None:
        raise AdminError(f"there is no audit chain {a.tenant!r}; its tenant has recorded no events, or the "
                         f"name is wrong (see `dp2bridge tenant list`)")
    seq, digest, count = head
    signed = {"chain": a.tenant, "seq": seq, "hash": digest, "count": count,
              "exported_at": SystemClock().now().astimezone(dt.timezone.utc).isoformat(timespec="seconds")}
    final = {"signed_head": signed, "signature": base64.b64encode(pki.sign(head_bytes(signed))).decode(),
             "certificate": _text(pki.cert_pem())}
    if a.output:
        written = _write_atomically(Path(a.output), lambda f: _export(ctx.store, a, seq, final, f))
    else:
        written = _export(ctx.store, a, seq, final, sys.stdout)
    print(f"audit export: {a.tenant}: {written} events written{' to ' + a.output if a.output else ''}; "
          f"signed head seq {seq} ({digest[:16]})", file=sys.stderr)
    return 0


def _export(store: Any, a: argparse.Namespace, upto: int, final: dict[str, Any], out: TextIO) -> int:
    n = 0
    for row in auditlog.chain_rows(store, a.tenant, upto=upto, since=a.since):
        out.write(json.dumps(export_doc(row), ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
        if n % PROGRESS_EVERY == 0:
            print(f"audit export: {a.tenant}: {n} events...", file=sys.stderr, flush=True)
    out.write(json.dumps(final, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()
    return n


def export_doc(row: dict[str, Any]) -> dict[str, Any]:
    """One event as exported: every column but the row id, time as in the hashed form."""
    time = row["time"].astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    return {"chain": row["chain"], "seq": row["seq"], "time": time, "kind": row["kind"],
            "result": row["result"], "actor": row["actor"], "subject": row["subject"],
            "message_uuid": row["message_uuid"], "protocol": row["protocol"],
            "session_id": row["session_id"], "details": row["details"] or {},
            "prev_hash": row["prev_hash"], "hash": row["hash"]}


def head_bytes(signed_head: dict[str, Any]) -> bytes:
    """The bytes an export's signature covers: the head as JSON, sorted keys, no spaces."""
    return json.dumps(signed_head, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _write_atomically(path: Path, write: Callable[[TextIO], int]) -> int:
    """Write `path` through a temporary file beside it: a failed export leaves no half file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            n = write(f)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AdminError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


# --- shared ----------------------------------------------------------------------

def _tenant_pki(ctx: Context, chain: str) -> Any:
    """The evidence PKI of the tenant whose chain this is (files under <home>/certs)."""
    from bridge.crypto.evidence import load_tenant_pki
    if chain == SYSTEM_CHAIN:
        raise AdminError(f"the {SYSTEM_CHAIN} chain (events of no tenant, e.g. logins of unknown "
                         f"users) has no evidence key, so it has no signed export; verify it with "
                         f"`dp2bridge audit verify --tenant {SYSTEM_CHAIN}`")
    try:
        return load_tenant_pki(ctx.config.home / "certs", chain)
    except (FileNotFoundError, ValueError) as exc:
        raise AdminError(f"{exc} (is the tenant name right? see `dp2bridge tenant list`)") from None


def _der(pem: bytes) -> bytes:
    """The DER bytes of a PEM certificate, to compare certificates whatever their line ends."""
    body = b"".join(line for line in pem.strip().splitlines() if not line.startswith(b"-----"))
    return base64.b64decode(body)


def _text(pem: bytes | str) -> str:
    return pem.decode("ascii") if isinstance(pem, bytes) else pem


def _iso_ms(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _since(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time; write e.g. 2026-11-01 or 2026-11-01T08:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    v = sub.add_parser("audit", help="audit trail: verify the hash chains, export with a signed head",
                       description="The audit trail: one hash chain of events per tenant.")
    verbs = v.add_subparsers(dest="verb", metavar="VERB", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    verify = verbs.add_parser("verify", parents=[parents["config"]], help="re-walk the chains",
                              description=VERIFY_HELP, formatter_class=raw)
    verify.add_argument("--tenant", metavar="T", help="only this tenant's chain (default: every chain)")
    verify.add_argument("--head", metavar="EXPORT.jsonl",
                        help="also check the database still holds the head this earlier export signed")
    verify.set_defaults(func=cmd_verify)
    export = verbs.add_parser("export", parents=[parents["config"]], help="export a chain with a signed head",
                              description=EXPORT_HELP, formatter_class=raw)
    export.add_argument("--tenant", metavar="T", required=True, help="the tenant whose chain to export")
    export.add_argument("--since", metavar="ISO-TIME", type=_since,
                        help="only events at or after this time (UTC unless it says otherwise)")
    export.add_argument("--format", choices=["jsonl"], default="jsonl",
                        help="jsonl: one JSON object per line (the only format)")
    export.add_argument("--output", metavar="FILE", help="write to FILE (default: standard output)")
    export.set_defaults(func=cmd_export)
