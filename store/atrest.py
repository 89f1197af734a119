"""Encryption at rest: attribute values sealed with AES-256-GCM, token hashes keyed.

The proposing node seals every attribute value before it enters the log; apply stores the
ciphertext as it is, and the service opens it again for replies (store/DESIGN.md,
"Encryption at rest"). A sealed value is

    MAGIC (4) | key id (2, big-endian) | nonce (12, random) | ciphertext | GCM tag (16)

and its associated data binds it to where it belongs: the header, the session handle and
the attribute name. A value copied to another session or another attribute, or changed by
one bit, does not open (`Undecryptable`); the nonce is drawn by the proposer, so apply
stays deterministic (the command carries the ciphertext, never the plaintext).

Token hashes are keyed: the state holds `KEYED_MARK | HMAC-SHA256(token key, hash)[:28]`,
never what clients send, so a journal or snapshot read by an attacker holds nothing the
API would accept. The mark tells keyed hashes from the raw hashes older sessions were
stored under: a presented hash that carries the mark is never looked up raw, which is what
stops a keyed hash from the journal being replayed through the raw fallback.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\xa5sq\x01"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">4sH")
HEADER_BYTES = _HEADER.size
# What sealing adds to every value; the service states limits net of it.
OVERHEAD_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES
MAX_KEY_ID = 0xFFFF
KEYED_MARK = b"\xffKH\x01"
_AAD_DOMAIN = b"sessionquorum/atrest/1\x00"


class Undecryptable(Exception):
    """A sealed value that does not open: unknown key id, or not authentic where it is."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys of one key file: id -> 32-byte key, the current id, the token-hash key."""

    keys: tuple[tuple[int, bytes], ...]
    current: int
    token_key: bytes

    def __post_init__(self) -> None:
        ids = [k for k, _ in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("key ids must be unique")
        if any(not 1 <= k <= MAX_KEY_ID or len(v) != KEY_BYTES for k, v in self.keys):
            raise ValueError(f"key ids are 1 to {MAX_KEY_ID}, keys {KEY_BYTES} bytes")
        if self.current not in ids:
            raise ValueError(f"the current key id {self.current} is not among the keys")
        if len(self.token_key) != KEY_BYTES:
            raise ValueError(f"the token key must be {KEY_BYTES} bytes")

    def key(self, key_id: int) -> bytes | None:
        for k, v in self.keys:
            if k == key_id:
                return v
        return None


@functools.lru_cache(maxsize=64)
def _aead(key: bytes) -> AESGCM:
    """One cipher object per key (building one costs about as much as sealing 300 bytes)."""
    return AESGCM(key)


def is_sealed(value: bytes) -> bool:
    return len(value) >= OVERHEAD_BYTES and value.startswith(MAGIC)


def key_id_of(value: bytes) -> int:
    return int(_HEADER.unpack_from(value)[1])


def _aad(header: bytes, handle: str, name: str) -> bytes:
    h = handle.encode("utf-8")
    # Length-prefixed, so ("ab", "c") and ("a", "bc") are different bindings.
    return _AAD_DOMAIN + header + struct.pack(">H", len(h)) + h + name.encode("utf-8")


def seal(keys: Keys, handle: str, name: str, value: bytes) -> bytes:
    """The value sealed under the current key, bound to (handle, name)."""
    key = keys.key(keys.current)
    assert key is not None  # Keys checks the current id is present
    header = _HEADER.pack(MAGIC, keys.current)
    nonce = os.urandom(NONCE_BYTES)  # 96 random bits per value: the proposer's fresh value
    return header + nonce + _aead(key).encrypt(nonce, value, _aad(header, handle, name))


def open_value(keys: Keys, handle: str, name: str, value: bytes) -> bytes:
    """The plaintext of a sealed value; Undecryptable if it does not open here."""
    key_id = key_id_of(value)
    key = keys.key(key_id)
    if key is None:
        known = ", ".join(str(k) for k, _ in keys.keys)
        raise Undecryptable(
            f"attribute {name!r} is encrypted under key id {key_id}, which this node's key file "
            f"does not hold (it holds {known}); copy the key file from a node that has it"
        )
    header = value[:HEADER_BYTES]
    nonce = value[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    try:
        return _aead(key).decrypt(nonce, value[HEADER_BYTES + NONCE_BYTES :], _aad(header, handle, name))
    except InvalidTag:
        raise Undecryptable(
            f"attribute {name!r} does not authenticate under key id {key_id}: changed, or bound to "
            "another session or attribute"
        ) from None


_SHA256_BLOCK = 64


@functools.lru_cache(maxsize=8)
def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hash states after the padded key block (RFC 2104).

    Computed once per key: `hmac.digest` does this for every call and, on OpenSSL 3, also
    looks the algorithm up each time; measured 2.5x slower than copying these two states
    (it ran on every Validate, under the state lock: 8 % of a loaded leader's CPU).
    """
    block = hashlib.sha256(key).digest() if len(key) > _SHA256_BLOCK else key
    block = block.ljust(_SHA256_BLOCK, b"\0")
    return hashlib.sha256(bytes(b ^ 0x36 for b in block)), hashlib.sha256(bytes(b ^ 0x5C for b in block))


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256(key, data), the same bytes as `hmac.digest(key, data, "sha256")`, faster."""
    inner_pad, outer_pad = _hmac_pads(key)
    inner = inner_pad.copy()
    inner.update(data)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return bytes(outer.digest())


def keyed_hash(keys: Keys, token_hash: bytes) -> bytes:
    """What the log and state hold for a client's token hash (same length: 32 bytes)."""
    mac = hmac_sha256(keys.token_key, token_hash)
    return KEYED_MARK + mac[: len(token_hash) - len(KEYED_MARK)]


def may_be_raw(token_hash: bytes) -> bool:
    """Whether a presented hash may name a session stored unkeyed (before keying began)."""
    return not token_hash.startswith(KEYED_MARK)


def digest_values(keys: Keys, pairs: tuple[tuple[str, bytes], ...]) -> bytes:
    """A keyed digest of plaintext values: what makes a retry of a sealed request the same.

    The exactly-once fingerprint cannot cover ciphertext (every retry seals with a new
    nonce), and must not be a plain hash of the values (a journal reader could test
    guesses of a low-entropy value against it).
    """
    parts = [b"values\x00"]
    for name, value in sorted(pairs):
        n = name.encode("utf-8")
        parts += (struct.pack(">II", len(n), len(value)), n, value)
    return hmac_sha256(keys.token_key, b"".join(parts))[:16]
