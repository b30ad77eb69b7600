"""What a signature check found, as `Authentication-Results` states it (RFC 8601 style).

Shared by the S/MIME (crypto/smime.py) and OpenPGP (crypto/pgp.py) checks, the
submission path that writes the bridge's own Authentication-Results header, and
receipts' evidence.  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SigResult:
    method: str                    # "smime" | "pgp"
    status: str                    # "pass" | "fail" | "none"
    signer: str | None = None      # the signer's address (pass) or what it claimed (fail)
    reason: str | None = None      # why it failed, in plain English words (no secrets)

    def header_part(self) -> str:
        """e.g. `smime=pass header.s=anna@borger.dp2.test` or `smime=fail reason="..."`."""
        text = f"{self.method}={self.status}"
        if self.signer:
            text += f" header.s={self.signer}"
        if self.reason:
            text += ' reason="' + self.reason.replace("\\", "").replace('"', "'")[:200] + '"'
        return text
