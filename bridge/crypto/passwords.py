"""Password and app-password hashing with argon2id (RFC 9106).

Parameters follow OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane):
strong enough for random app passwords and cheap enough in memory that ten
concurrent logins do not cost a gigabyte.  `verify_any` always does at least
one full verification, also for unknown users, so timing does not tell whether
an account exists.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# A hash of a random secret, verified against when the user does not exist.
_DUMMY = _HASHER.hash(secrets.token_urlsafe(24))

# Unambiguous characters for generated passwords (no 0/O, 1/l/I).
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_any(password: str, hashes: list[str]) -> int | None:
    """Index of the first hash `password` matches, or None.  Always verifies at least once."""
    for index, stored in enumerate(hashes or [_DUMMY]):
        try:
            if _HASHER.verify(stored, password) and hashes:
                return index
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            continue
    return None


def generate_password(groups: int = 4, size: int = 4) -> str:
    """A random password like "abcd-efgh-jkmn-pqrs" (about 95 bits)."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(size)) for _ in range(groups))
