"""The at-rest cipher (store/atrest.py): what opens, what is refused, and keyed token hashes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from sessionquorum.store import atrest
from sessionquorum.store.atrest import Keys, Undecryptable, keyed_hash, open_value, seal

K1, K2, TOKEN_KEY = b"\x01" * 32, b"\x02" * 32, b"\x07" * 32
KEYS = Keys(((1, K1),), 1, TOKEN_KEY)
ROTATED = Keys(((1, K1), (2, K2)), 2, TOKEN_KEY)


def test_sealed_value_opens_where_it_was_sealed_and_hides_the_plaintext() -> None:
    sealed = seal(KEYS, "h1", "cart", b"secret value")
    assert b"secret value" not in sealed
    assert atrest.is_sealed(sealed) and atrest.key_id_of(sealed) == 1
    assert len(sealed) == len(b"secret value") + atrest.OVERHEAD_BYTES
    assert open_value(KEYS, "h1", "cart", sealed) == b"secret value"


def test_same_value_sealed_twice_differs_random_nonce() -> None:
    assert seal(KEYS, "h", "n", b"v") != seal(KEYS, "h", "n", b"v")


@pytest.mark.parametrize(("handle", "name"), [("h2", "cart"), ("h1", "other"), ("h1c", "art"), ("", "cart")])
def test_value_moved_to_another_session_or_attribute_is_refused(handle: str, name: str) -> None:
    sealed = seal(KEYS, "h1", "cart", b"secret")
    with pytest.raises(Undecryptable, match="does not authenticate"):
        open_value(KEYS, handle, name, sealed)


@pytest.mark.parametrize("index", [0, 5, atrest.HEADER_BYTES, atrest.HEADER_BYTES + atrest.NONCE_BYTES, -1])
def test_any_flipped_bit_is_refused(index: int) -> None:
    sealed = bytearray(seal(ROTATED, "h1", "cart", b"secret"))
    sealed[index] ^= 0x01
    with pytest.raises(Undecryptable):
        open_value(ROTATED, "h1", "cart", bytes(sealed))


def test_unknown_key_id_is_a_clear_error_naming_it() -> None:
    sealed = seal(ROTATED, "h1", "cart", b"secret")
    with pytest.raises(Undecryptable, match="key id 2, which this node's key file does not hold"):
        open_value(KEYS, "h1", "cart", sealed)


def test_wrong_key_under_the_right_id_is_refused() -> None:
    sealed = seal(KEYS, "h1", "cart", b"secret")
    impostor = Keys(((1, K2),), 1, TOKEN_KEY)
    with pytest.raises(Undecryptable, match="does not authenticate"):
        open_value(impostor, "h1", "cart", sealed)


def test_old_key_still_opens_after_rotation_and_new_values_use_the_new_key() -> None:
    old = seal(KEYS, "h", "n", b"one")
    new = seal(ROTATED, "h", "n", b"two")
    assert atrest.key_id_of(new) == 2
    assert (open_value(ROTATED, "h", "n", old), open_value(ROTATED, "h", "n", new)) == (b"one", b"two")


def test_keyed_hash_is_marked_same_length_and_not_the_raw_hash() -> None:
    raw = hashlib.sha256(b"token").digest()
    keyed = keyed_hash(KEYS, raw)
    assert len(keyed) == len(raw) and keyed != raw
    assert not atrest.may_be_raw(keyed) and atrest.may_be_raw(raw)
    assert keyed_hash(ROTATED, raw) == keyed  # the token key does not rotate with value keys
    assert keyed_hash(Keys(KEYS.keys, 1, b"\x08" * 32), raw) != keyed


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("data_len", [0, 32, 64, 1000])
def test_precomputed_hmac_gives_the_same_bytes_as_the_standard_library(key_len: int, data_len: int) -> None:
    # Stored keyed hashes must not change: the faster HMAC is the same function.
    key = bytes(range(256))[:key_len]
    data = hashlib.sha256(b"d").digest() * (data_len // 32) + b"x" * (data_len % 32)
    assert atrest.hmac_sha256(key, data) == hmac.digest(key, data, "sha256")
    assert atrest.hmac_sha256(key, data) == atrest.hmac_sha256(key, data)  # the pads are copied, not used up


def test_keyed_hash_is_the_stored_formula() -> None:
    raw = hashlib.sha256(b"token").digest()
    mac = hmac.digest(KEYS.token_key, raw, "sha256")
    assert keyed_hash(KEYS, raw) == atrest.KEYED_MARK + mac[: 32 - len(atrest.KEYED_MARK)]


def test_digest_of_values_is_order_free_and_keyed() -> None:
    pairs = (("a", b"1"), ("b", b"2"))
    assert atrest.digest_values(KEYS, pairs) == atrest.digest_values(KEYS, pairs[::-1])
    assert atrest.digest_values(KEYS, pairs) != atrest.digest_values(KEYS, (("a", b"1"), ("b", b"3")))
    assert atrest.digest_values(KEYS, pairs) != atrest.digest_values(Keys(KEYS.keys, 1, K2), pairs)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Keys(((1, K1), (1, K2)), 1, TOKEN_KEY),
        lambda: Keys(((1, K1),), 2, TOKEN_KEY),
        lambda: Keys(((0, K1),), 0, TOKEN_KEY),
        lambda: Keys(((1, b"short"),), 1, TOKEN_KEY),
        lambda: Keys(((1, K1),), 1, b"short"),
    ],
)
def test_malformed_key_sets_are_refused(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]
