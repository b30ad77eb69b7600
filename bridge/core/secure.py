"""S/MIME and OpenPGP on the way in and out (issue 5, DESIGN.md section 7).

On submission (`inbound`): a message encrypted to the bridge (S/MIME to the
tenant's bridge certificate, PGP/MIME to its bridge key) is decrypted, so it
is stored and delivered readable; one encrypted only to its recipients passes
through as it is.  Then its S/MIME or PGP/MIME signature is verified against
the sender's tenant (trust anchors, revocations, pinned keys) and the result
is returned for the bridge's own Authentication-Results and the receipts.
Refusals (EFAIL shapes, no MDC, algorithms we do not accept) are BridgeErrors
with a 554 5.6.x/5.7.x reply.

On delivery (`for_reader`): the recipient's copy is S/MIME-encrypted (AES-256)
to the certificates of its owner, or PGP/MIME-encrypted to its pinned OpenPGP
keys when it has no certificate, as the owner tenant's policy `encrypt_at_rest`
("never" | "when-possible" | "required") says.

Blocking (gpg processes, RSA): the front ends call it in a worker thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bridge.clock import Clock
from bridge.crypto.results import SigResult
from bridge.errors import PolicyError

POLICY_CACHE_SECONDS = 2.0


class EncryptionRequired(PolicyError):
    """The recipient's tenant requires encryption at rest and the recipient has no usable
    certificate: the copy is not filed (a ContentConsignmentFailure receipt says why)."""

    public = "the recipient's organisation requires encrypted mail and the recipient has no certificate"
    enhanced = "5.7.10"


class MessageSecurity:
    def __init__(self, store: Any, certs_dir: Path, gnupg_dir: Path, clock: Clock) -> None:
        from bridge.store.certificates import CertificateRepository
        self.store, self.certs_dir, self.gnupg_dir, self.clock = store, certs_dir, gnupg_dir, clock
        self.certificates = CertificateRepository(store)
        self._keyrings: dict[str, Any] = {}
        self._policies: dict[str, tuple[float, dict]] = {}

    # --- submission ------------------------------------------------------------------

    def inbound(self, raw: bytes, tenant: str, from_address: str) -> tuple[bytes, list[SigResult]]:
        """(the message to accept, its signature results)."""
        from bridge.crypto import smime
        if smime.is_encrypted(raw):
            raw = self._decrypt_smime(raw, tenant)
        elif b"application/pgp-encrypted" in raw[:65536]:
            raw = self._keyring(tenant).decrypt_pgp_mime(raw) or raw
        results = []
        if smime.is_signed(raw):
            from bridge.crypto.usercerts import tenant_trust_pems
            revoked = self.certificates.revoked_serials(tenant)
            result = smime.verify_smime(raw, from_address=from_address,
                                        trust_pems=tenant_trust_pems(self.certs_dir, tenant),
                                        is_revoked=lambda issuer, serial: (issuer, serial) in revoked,
                                        now=self.clock.now())
            if result is not None:
                results.append(result)
        elif b"application/pgp-signature" in raw[:65536]:
            result = self._keyring(tenant).verify_pgp_mime(raw, from_address)
            if result is not None:
                results.append(result)
        return raw, results or [SigResult("smime", "none")]     # unsigned, and said so

    def _decrypt_smime(self, raw: bytes, tenant: str) -> bytes:
        from bridge.crypto import smime
        from bridge.crypto.usercerts import load_bridge_identity
        cert, key = load_bridge_identity(self.certs_dir, tenant)
        # EFAIL: CBC has no integrity; a tenant may release plaintext only when a signature
        # inside the encryption shows it unchanged.
        signed_only = bool(self._policy(tenant).get("require_signed_encryption"))
        try:
            return smime.decrypt_smime(raw, cert, key, require_signature=signed_only)
        except smime.SmimeRefused as exc:
            if exc.enhanced == "5.7.5":     # encrypted to its recipients only: end to end, passed on
                return raw
            raise

    def _keyring(self, tenant: str) -> Any:
        ring = self._keyrings.get(tenant)
        if ring is None:
            from bridge.crypto.pgp import TenantKeyring
            ring = self._keyrings[tenant] = TenantKeyring(self.gnupg_dir / tenant)
        return ring

    # --- delivery --------------------------------------------------------------------

    def for_reader(self, copy: bytes, owner_kind: str, owner_address: str, owner_tenant: str) -> bytes:
        """The copy as it is filed for its owner: encrypted to the owner's certificates when the
        owner's tenant asks for it.  A contact point's shared mailbox has no one owner: never."""
        mode = self._policy(owner_tenant).get("encrypt_at_rest", "never")
        if mode == "never" or owner_kind != "account":
            return copy
        from bridge.crypto import smime
        if smime.is_encrypted(copy):
            return copy                     # end to end already
        pems = self.certificates.valid_for_encryption(owner_address, self.clock.now())
        if pems:
            return smime.encrypt_smime(copy, pems)
        if b"application/pgp-encrypted" not in copy[:65536]:
            keys = self._keyring(owner_tenant).pins().get(owner_address.lower())
            if keys:                        # no certificate, but an OpenPGP key: PGP/MIME
                return self._keyring(owner_tenant).encrypt_pgp_mime(copy, keys)
        if mode == "required":
            raise EncryptionRequired(owner_address)
        return copy

    def _policy(self, tenant: str) -> dict:
        now = time.monotonic()
        hit = self._policies.get(tenant)
        if hit and hit[0] > now:
            return hit[1]
        policy = dict(self.store.tenant(tenant).get("policy") or {})
        self._policies[tenant] = (now + POLICY_CACHE_SECONDS, policy)
        return policy
