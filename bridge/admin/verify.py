"""`dp2bridge verify RECEIPT.eml [--message ORIGINAL.eml]`: is this receipt genuine?

Three checks, each reported in plain words, then one verdict (exit 0 valid, 1 not):
  1. signature: the S/MIME signature covers the receipt's signed part and was made
     by the evidence certificate of the tenant named in the evidence, issued by that
     tenant's CA (`<home>/certs/tenants/<tenant>/ca.pem`, or `--ca FILE`);
  2. audit trail: the evidence's audit event exists at that place of the tenant's
     chain, its link holds, and it concerns the same message (needs the home's
     database; with `--ca` and no home this check is skipped and says so);
  3. message (with --message): the file's SHA-256 equals the message as accepted,
     or the copy delivered to the recipient the receipt names.
Signature work is in crypto/evidence.py, receipt parsing in receipts/parse.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.admin.context import Context
from bridge.errors import AdminError

HELP = """\
Check a receipt (an .eml file saved from the Receipts mailbox): its signature
against the tenant's CA, its evidence against the audit trail, and, with
--message, that ORIGINAL.eml is the message it is about.  Exit 0 when valid.

examples:
  dp2bridge verify receipt.eml
  dp2bridge verify receipt.eml --message original.eml
  dp2bridge verify receipt.eml --ca kommune-ca.pem     (signature and digest only, no home)
"""


@dataclass
class Report:
    checks: list[tuple[str, bool | None, str]] = field(default_factory=list)   # (name, ok/None=skipped, text)

    def add(self, name: str, ok: bool | None, text: str) -> None:
        self.checks.append((name, ok, text))

    @property
    def valid(self) -> bool:
        return bool(self.checks) and all(ok is not False for _, ok, _ in self.checks)


def cmd_verify(ctx: Context) -> int:
    from bridge.receipts.parse import ReceiptFormatError, parse_receipt
    a = ctx.args
    raw = _read(a.receipt, "receipt")
    original = _read(a.message, "message") if a.message else None
    report = Report()
    try:
        parsed = parse_receipt(raw)
    except ReceiptFormatError as exc:
        report.add("format", False, f"not a dp2bridge receipt: {exc}")
        return _finish(a, report, None)
    ev = parsed.evidence
    report.add("format", True, f"{ev.event} receipt {ev.evidence_id} from {ev.issuer_name} ({ev.issuer})")
    _signature(ctx, report, parsed)
    _audit(ctx, report, ev)
    if original is not None:
        _digest(report, ev, original)
    return _finish(a, report, ev)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AdminError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def _signature(ctx: Context, report: Report, parsed: Any) -> None:
    from bridge.crypto.evidence import SignatureInvalid, verify_detached
    ev = parsed.evidence
    if ctx.args.ca:
        ca_path = Path(ctx.args.ca)
    else:
        ca_path = ctx.config.resolve("certs") / "tenants" / ev.issuer / "ca.pem"
    try:
        trust = ca_path.read_bytes()
    except (OSError, ValueError):
        report.add("signature", False, f"no CA certificate for tenant {ev.issuer!r} at {ca_path} "
                                       f"(give the tenant's CA with --ca FILE)")
        return
    try:
        v = verify_detached(parsed.signed_bytes, parsed.signature_der, [trust])
    except SignatureInvalid as exc:
        report.add("signature", False, exc.public)
        return
    note = " (the file had lost its CR line endings; checked as sent)" if v.canonicalised else ""
    when = f"{v.signing_time:%Y-%m-%d %H:%M:%S} UTC" if v.signing_time else "(no signing time)"
    report.add("signature", True, f"signed {when} by {v.signer_subject}"
                                  f"{f' <{v.signer_email}>' if v.signer_email else ''}, "
                                  f"issued by {v.ca_subject}{note}")


def _audit(ctx: Context, report: Report, ev: Any) -> None:
    from bridge.core.audit import event_from_row, link_hash
    from bridge.store.auditlog import event_at
    if ctx.args.ca and not ctx.args.config:
        report.add("audit trail", None, "not checked: no home given (--config); the signature and "
                                        "digest were checked")
        return
    row = event_at(ctx.store, ev.audit_chain, ev.audit_seq)
    where = f"chain {ev.audit_chain} event {ev.audit_seq}"
    if row is None:
        report.add("audit trail", False, f"{where} does not exist in this bridge's audit trail")
    elif row["hash"] != ev.audit_hash:
        report.add("audit trail", False, f"{where} has hash {row['hash'][:16]}..., the evidence says "
                                         f"{ev.audit_hash[:16]}...")
    elif link_hash(row["prev_hash"], event_from_row(row)) != row["hash"]:
        report.add("audit trail", False, f"{where} was changed after it was written "
                                         f"(run `dp2bridge audit verify`)")
    elif row["message_uuid"] != ev.message_uuid:
        report.add("audit trail", False, f"{where} is about message {row['message_uuid']}, "
                                         f"not {ev.message_uuid}")
    else:
        report.add("audit trail", True, f"{where} ({row['kind']}, {row['time']:%Y-%m-%d %H:%M:%S} UTC) "
                                        f"matches")


def _digest(report: Report, ev: Any, original: bytes) -> None:
    candidates = [original]
    if b"\r\n" not in original and b"\n" in original:
        candidates.append(original.replace(b"\n", b"\r\n"))     # saved with LF line endings
    digests = {hashlib.sha256(c).hexdigest() for c in candidates}
    if ev.sha256 in digests:
        report.add("message", True, "the file is the message exactly as it was accepted")
    elif ev.delivered_sha256 and ev.delivered_sha256 in digests:
        report.add("message", True, "the file is the message exactly as it was delivered to the recipient")
    else:
        report.add("message", False, "the file is not the message this receipt is about "
                                     "(its SHA-256 differs: it was changed, or it is another message)")


def _finish(args: argparse.Namespace, report: Report, ev: Any) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"valid": report.valid, "checks": [
            {"check": n, "result": {True: "ok", False: "failed", None: "skipped"}[ok], "text": t}
            for n, ok, t in report.checks],
            "evidence": None if ev is None else {"id": ev.evidence_id, "event": ev.event,
                                                 "message_uuid": ev.message_uuid, "issuer": ev.issuer}},
            indent=2))
    else:
        for name, ok, text in report.checks:
            print(f"{ {True: 'ok', False: 'FAILED', None: 'skipped'}[ok]:8} {name}: {text}")
        print("VALID: the receipt is genuine" + (" and matches the message" if args.message else "")
              if report.valid else "NOT VALID: see the FAILED line(s) above")
    return 0 if report.valid else 1


def register(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    v = sub.add_parser("verify", parents=[parents["store"]], help="check a receipt (signature, audit trail, digest)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("receipt", metavar="RECEIPT.eml", help="the receipt as a file")
    v.add_argument("--message", metavar="ORIGINAL.eml", help="the message the receipt is about")
    v.add_argument("--ca", metavar="FILE", help="the tenant CA certificate (PEM) to trust, instead "
                                                "of the home's")
    v.set_defaults(func=cmd_verify)
