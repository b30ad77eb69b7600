"""Receipts: signed, ordinary mail messages that prove what happened to a message.

Pure (no I/O, no database, no `cryptography`): `evidence` is the machine-readable
evidence document (`evidence.xml`), `compose` builds a receipt message around it
(signing through a callable the caller supplies), `parse` takes one apart again
for `dp2bridge verify`, and `texts` holds the Danish and English words a person
reads.  DESIGN.md section 5.
"""

from bridge.receipts.compose import build_receipt
from bridge.receipts.evidence import EVENTS, Evidence, EvidenceError, PartyRef, from_xml, to_xml
from bridge.receipts.parse import ParsedReceipt, ReceiptFormatError, parse_receipt

__all__ = [
    "EVENTS", "Evidence", "EvidenceError", "PartyRef", "ParsedReceipt", "ReceiptFormatError",
    "build_receipt", "from_xml", "parse_receipt", "to_xml",
]
