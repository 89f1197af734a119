"""Session tokens: made here, hashed here, and only the hash ever leaves the process.

The node stores SHA-256(token), never the token, so a leaked log, snapshot or replica
holds nothing that opens a session in the web application. The hash is still a credential
against the store's own API, which is why that API wants TLS with client certificates.

No salt or slow hash: the token is 256 uniformly random bits, so there is nothing to
brute-force, and the node must be able to find a session by hash in one lookup.
"""

from __future__ import annotations

import hashlib
import secrets

import grpc

from ._errors import InvalidArgument

# 32 random bytes = 256 bits from the OS CSPRNG (the reference asks for at least 128).
TOKEN_BYTES = 32
# token_urlsafe(32) is 43 characters; a few more leave room without admitting junk.
MAX_TOKEN_CHARS = 256
TOKEN_HASH_BYTES = 32


def new_token() -> str:
    """Return a fresh token: 256 bits from `secrets`, URL-safe base64 without padding."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    """Return SHA-256 of the token's ASCII bytes (32 bytes): what the wire carries.

    Tokens come back from cookies, i.e. from attackers too: a non-ASCII or oversized value
    is refused with InvalidArgument (a SessionQuorumError, so one `except` in the web app
    covers it) instead of escaping as a UnicodeEncodeError.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(
            f"token is {len(token)} characters, at most {MAX_TOKEN_CHARS} allowed",
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    # Checked up front rather than by catching UnicodeEncodeError, whose `.object` would
    # carry the whole value into tracebacks and error reports.
    if not token.isascii():
        raise InvalidArgument("token must be ASCII", grpc.StatusCode.INVALID_ARGUMENT)
    return hashlib.sha256(token.encode("ascii")).digest()


def hash_prefix(token_hash: bytes) -> str:
    """A short, non-secret label of a token hash for logs (never log the token itself)."""
    return token_hash[:4].hex()
