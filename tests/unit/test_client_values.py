"""Pure units of the client: tokens, value types, TLS settings, the public surface."""

from __future__ import annotations

import base64
import hashlib
import inspect
from pathlib import Path

import pytest

import sessionquorum.client as client_pkg
from sessionquorum.client import Created, InvalidArgument, Session, SessionQuorumError, TLSConfig
from sessionquorum.client import _session as session_mod
from sessionquorum.client import _tokens as tokens
from sessionquorum.proto import sessionquorum_pb2 as pb


def test_new_token_carries_256_random_bits_urlsafe() -> None:
    token = tokens.new_token()
    assert len(token) == 43
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert len({tokens.new_token() for _ in range(1000)}) == 1000


def test_hash_token_is_sha256_of_ascii_bytes() -> None:
    token = tokens.new_token()
    digest = tokens.hash_token(token)
    assert len(digest) == 32
    assert digest == hashlib.sha256(token.encode("ascii")).digest()


@pytest.mark.parametrize("bad", ["caf\u00e9", "x" * 257])
def test_hash_token_refuses_non_ascii_or_oversized_token_with_invalid_argument(bad: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        tokens.hash_token(bad)
    assert isinstance(info.value, SessionQuorumError)
    assert bad not in str(info.value)


def test_hash_prefix_is_short_and_not_the_token() -> None:
    token = tokens.new_token()
    label = tokens.hash_prefix(tokens.hash_token(token))
    assert len(label) == 8
    assert label not in token


def test_session_from_wire_maps_empty_principal_to_none_and_decodes_names() -> None:
    message = pb.Session(
        handle="h1",
        principal="",
        attributes=[pb.Attribute(name="caf\u00e9".encode(), value=b"\x00\xff")],
        created_ms=1,
        last_access_ms=2,
        idle_timeout_ms=3,
        absolute_deadline_ms=4,
        version=5,
    )
    session = session_mod.session_from_pb(message)
    assert session.principal is None
    assert dict(session.attributes) == {"caf\u00e9": b"\x00\xff"}
    assert (session.created_ms, session.last_access_ms, session.version) == (1, 2, 5)
    with pytest.raises(TypeError):
        session.attributes["x"] = b"y"  # type: ignore[index]


def test_session_is_hashable_and_keeps_attributes_out_of_repr() -> None:
    session = session_mod.session_from_pb(
        pb.Session(handle="h", principal="alice", attributes=[pb.Attribute(name=b"csrf", value=b"s3cret")])
    )
    assert hash(session) == hash(session_mod.session_from_pb(pb.Session(handle="h", principal="alice")))
    assert "s3cret" not in repr(session)


def test_created_repr_does_not_show_the_token() -> None:
    session = Session("h", None, {}, 0, 0, 0, 0, 1)
    created = Created(token="tok-" + tokens.new_token(), session=session, evicted_handles=())
    assert created.token not in repr(created)


def test_attribute_names_that_are_not_unicode_still_reach_the_node() -> None:
    encoded = session_mod.attributes_to_pb({"\udcff": b"v"})
    assert encoded[0].name == b"\xed\xb3\xbf"


def test_delete_names_refuses_a_bare_string() -> None:
    with pytest.raises(InvalidArgument):
        session_mod.names_to_pb("abc")


@pytest.mark.parametrize(("seconds", "ms"), [(1800, 1_800_000), (0.0015, 2), (8 * 3600.0, 28_800_000)])
def test_seconds_convert_to_integer_milliseconds(seconds: float, ms: int) -> None:
    assert session_mod.seconds_to_ms("t", seconds) == ms


def test_non_finite_timeout_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        session_mod.seconds_to_ms("idle_timeout_s", float("inf"))


def test_tls_config_from_files_reads_pem_bytes_and_hides_key_in_repr(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"CA")
    (tmp_path / "c.pem").write_bytes(b"CERT")
    (tmp_path / "c.key").write_bytes(b"PRIVATE-KEY-BYTES")
    tls = TLSConfig.from_files(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "c.key")
    assert (tls.root_certificates, tls.certificate_chain, tls.private_key) == (
        b"CA",
        b"CERT",
        b"PRIVATE-KEY-BYTES",
    )
    assert "PRIVATE-KEY-BYTES" not in repr(tls)


def test_tls_config_refuses_certificate_without_key() -> None:
    with pytest.raises(ValueError, match="go together"):
        TLSConfig(root_certificates=b"CA", certificate_chain=b"CERT")


def test_public_all_is_sorted_and_complete() -> None:
    exported = {
        name
        for name, value in vars(client_pkg).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert client_pkg.__all__ == sorted(client_pkg.__all__)
    assert set(client_pkg.__all__) == exported
