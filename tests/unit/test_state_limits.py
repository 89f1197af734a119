"""Every size and count limit of the state machine, at the limit and one past it.

Each limit is accepted at exactly its value and refused at one more, and a refused command
leaves the snapshot byte-identical (nothing half-applied). Commands here carry no client id
and reuse the previous timestamp, so a refusal has nothing legitimate to change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from sessionquorum.store.commands import Command, Create, Op, RevokePrincipal, Rotate, Update, encode
from sessionquorum.store.config import Limits
from sessionquorum.store.replies import Code, Reply
from sessionquorum.store.state import SessionMachine

IDLE_MS = 1_000
ABSOLUTE_MS = 10_000

MachineFactory = Callable[..., SessionMachine]
Attrs = tuple[tuple[str, bytes], ...]


def token_hash(n: int) -> bytes:
    return hashlib.sha256(f"token-{n}".encode()).digest()


def run(m: SessionMachine, op: Op, now_ms: int = 0) -> Reply:
    return m.apply(encode(Command(op, now_ms=now_ms)))


def create(
    n: int,
    *,
    handle: str | None = None,
    principal: str | None = None,
    attributes: Attrs = (),
    idle_ms: int = IDLE_MS,
    absolute_ms: int = ABSOLUTE_MS,
) -> Create:
    return Create(
        token_hash(n), f"h{n}" if handle is None else handle, principal, attributes, idle_ms, absolute_ms
    )


def update(n: int, set_: Attrs = (), delete: tuple[str, ...] = ()) -> Update:
    return Update(token_hash(n), set=set_, delete=delete, expected_version=None)


def attrs(count: int, value: bytes = b"v") -> Attrs:
    return tuple((f"a{i}", value) for i in range(count))


def refused(m: SessionMachine, op: Op, code: Code, now_ms: int = 0) -> Reply:
    """Apply `op`, expect `code`, and check that the state did not change at all."""
    before = m.snapshot()
    r = run(m, op, now_ms)
    assert r.code is code, r
    assert r.session is None
    assert r.handles == ()
    assert m.snapshot() == before
    return r


def accepted(m: SessionMachine, op: Op, now_ms: int = 0) -> Reply:
    r = run(m, op, now_ms)
    assert r.code is Code.OK, r
    return r


def attributes_of(m: SessionMachine, n: int) -> Attrs:
    got = m.read(token_hash(n), m.now_ms)
    assert got.session is not None
    return got.session.attributes


@pytest.fixture
def new_machine() -> MachineFactory:
    def make(**limits: Any) -> SessionMachine:
        return SessionMachine(Limits(**limits))

    return make


# ------------------------------------------------------------------------- attribute names


@pytest.mark.parametrize(
    ("at_limit", "over_limit"),
    [("n" * 8, "n" * 9), ("é" * 4, "é" * 4 + "n")],  # bytes of UTF-8, not characters
    ids=["ascii", "utf8"],
)
def test_attribute_name_at_limit_is_accepted_and_one_byte_more_is_quota_at_create(
    new_machine: MachineFactory, at_limit: str, over_limit: str
) -> None:
    m = new_machine(max_attribute_name_bytes=8)
    refused(m, create(1, attributes=((over_limit, b"v"),)), Code.QUOTA)
    accepted(m, create(1, attributes=((at_limit, b"v"),)))


def test_attribute_name_at_limit_is_accepted_and_one_byte_more_is_quota_at_update(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_attribute_name_bytes=8)
    accepted(m, create(1))
    refused(m, update(1, set_=(("n" * 9, b"v"),)), Code.QUOTA)
    refused(m, update(1, delete=("n" * 9,)), Code.QUOTA)
    accepted(m, update(1, set_=(("n" * 8, b"v"),)))
    accepted(m, update(1, delete=("n" * 8,)))


def test_empty_attribute_name_is_invalid(new_machine: MachineFactory) -> None:
    m = new_machine()
    refused(m, create(1, attributes=(("", b"v"),)), Code.INVALID)
    accepted(m, create(1))
    refused(m, update(1, set_=(("", b"v"),)), Code.INVALID)
    refused(m, update(1, delete=("",)), Code.INVALID)


# ------------------------------------------------------------------------ attribute values


def test_attribute_value_at_limit_is_accepted_and_one_byte_more_is_quota(new_machine: MachineFactory) -> None:
    m = new_machine(max_attribute_value_bytes=16)
    refused(m, create(1, attributes=(("a", b"x" * 17),)), Code.QUOTA)
    accepted(m, create(1, attributes=(("a", b"x" * 16),)))
    refused(m, update(1, set_=(("b", b"x" * 17),)), Code.QUOTA)
    accepted(m, update(1, set_=(("b", b"x" * 16),)))
    assert attributes_of(m, 1) == (("a", b"x" * 16), ("b", b"x" * 16))


# --------------------------------------------------------------- attributes per session


def test_attribute_count_at_limit_is_accepted_and_one_more_is_quota_at_create(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_attributes_per_session=3)
    refused(m, create(1, attributes=attrs(4)), Code.QUOTA)
    accepted(m, create(1, attributes=attrs(3)))


def test_attribute_count_at_limit_is_accepted_and_one_more_is_quota_via_update(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_attributes_per_session=3)
    accepted(m, create(1, attributes=attrs(2)))
    accepted(m, update(1, set_=(("a2", b"v"),)))  # exactly 3
    refused(m, update(1, set_=(("a3", b"v"),)), Code.QUOTA)
    # Replacing an existing name, or adding one while deleting one, stays at 3.
    accepted(m, update(1, set_=(("a0", b"new"),)))
    accepted(m, update(1, set_=(("b", b"v"),), delete=("a1",)))
    assert [name for name, _ in attributes_of(m, 1)] == ["a0", "a2", "b"]


def test_update_set_alone_over_attribute_count_is_quota(new_machine: MachineFactory) -> None:
    m = new_machine(max_attributes_per_session=3)
    accepted(m, create(1))
    refused(m, update(1, set_=attrs(4)), Code.QUOTA)
    accepted(m, update(1, set_=attrs(3)))


# --------------------------------------------------------------------- total session bytes


def test_session_bytes_at_limit_are_accepted_and_one_more_is_quota_at_create(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_session_bytes=20)
    # Names count too: 2 + 8 + 2 + 8 = 20.
    at_limit = (("a1", b"x" * 8), ("a2", b"x" * 8))
    refused(m, create(1, attributes=(("a1", b"x" * 8), ("a2", b"x" * 9))), Code.QUOTA)
    accepted(m, create(1, attributes=at_limit))


def test_session_bytes_at_limit_are_accepted_and_one_more_is_quota_via_update(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_session_bytes=20)
    accepted(m, create(1, attributes=(("a1", b"x" * 8),)))  # 10 bytes
    refused(m, update(1, set_=(("a2", b"x" * 9),)), Code.QUOTA)
    accepted(m, update(1, set_=(("a2", b"x" * 8),)))  # 20 bytes
    refused(m, update(1, set_=(("a1", b"x" * 9),)), Code.QUOTA)  # growing a value counts
    accepted(m, update(1, set_=(("a1", b"x" * 9),), delete=("a2",)))


# ---------------------------------------------------------------------------- principal


def test_principal_at_limit_is_accepted_and_one_byte_more_is_quota(new_machine: MachineFactory) -> None:
    m = new_machine(max_principal_bytes=8)
    refused(m, create(1, principal="p" * 9), Code.QUOTA)
    refused(m, create(1, principal="é" * 4 + "p"), Code.QUOTA)
    accepted(m, create(1, principal="p" * 8))
    accepted(m, create(2))
    refused(m, Rotate(token_hash(2), token_hash(3), "q" * 9), Code.QUOTA)
    accepted(m, Rotate(token_hash(2), token_hash(3), "é" * 4))
    refused(m, RevokePrincipal("p" * 9, None), Code.QUOTA)


def test_empty_principal_is_invalid(new_machine: MachineFactory) -> None:
    m = new_machine()
    refused(m, create(1, principal=""), Code.INVALID)
    accepted(m, create(1))
    refused(m, Rotate(token_hash(1), token_hash(2), ""), Code.INVALID)
    refused(m, RevokePrincipal("", None), Code.INVALID)


def test_handle_at_limit_is_accepted_and_one_byte_more_is_quota(new_machine: MachineFactory) -> None:
    m = new_machine(max_handle_bytes=8)
    refused(m, create(1, handle="h" * 9), Code.QUOTA)
    refused(m, create(1, handle=""), Code.INVALID)
    accepted(m, create(1, handle="h" * 8))


@pytest.mark.parametrize(
    "op",
    [
        Create(b"x" * 31, "h", None, (), IDLE_MS, ABSOLUTE_MS),
        Create(b"x" * 33, "h", None, (), IDLE_MS, ABSOLUTE_MS),
        Update(b"x" * 31, (), (), None),
        Rotate(token_hash(1), b"x" * 31, None),
        Rotate(b"x" * 33, token_hash(2), None),
    ],
    ids=["create-short", "create-long", "update", "rotate-new", "rotate-old"],
)
def test_token_hash_of_wrong_length_is_invalid(new_machine: MachineFactory, op: Op) -> None:
    m = new_machine()
    accepted(m, create(1))
    refused(m, op, Code.INVALID)


# ------------------------------------------------------------- sessions per principal


def test_principal_at_cap_with_evict_oldest_ends_oldest_session_in_the_same_command(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_sessions_per_principal=2, principal_cap_policy="evict_oldest")
    assert accepted(m, create(1, principal="alice"), 10).handles == ()
    assert accepted(m, create(2, principal="alice"), 20).handles == ()  # exactly at the cap
    r = accepted(m, create(3, principal="alice"), 30)
    assert r.handles == ("h1",)
    assert [v.handle for v in m.list_principal("alice", 30)] == ["h2", "h3"]
    assert m.read(token_hash(1), 30).code is Code.NOT_FOUND
    assert "h1" not in m.by_handle
    assert list(m.by_principal["alice"]) == [token_hash(2), token_hash(3)]
    assert len(m.sessions) == 2


def test_evict_oldest_breaks_creation_time_ties_by_handle(new_machine: MachineFactory) -> None:
    m = new_machine(max_sessions_per_principal=2)
    accepted(m, create(1, handle="hb", principal="alice"))
    accepted(m, create(2, handle="ha", principal="alice"))
    assert accepted(m, create(3, handle="hc", principal="alice")).handles == ("ha",)


def test_evict_oldest_does_not_touch_other_principals_or_anonymous_sessions(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_sessions_per_principal=1)
    accepted(m, create(1), 0)
    accepted(m, create(2, principal="bob"), 0)
    accepted(m, create(3, principal="alice"), 1)
    assert accepted(m, create(4, principal="alice"), 2).handles == ("h3",)
    assert sorted(m.by_handle) == ["h1", "h2", "h4"]


def test_expired_sessions_do_not_count_against_the_principal_cap(new_machine: MachineFactory) -> None:
    m = new_machine(max_sessions_per_principal=2, principal_cap_policy="reject")
    accepted(m, create(1, principal="alice", idle_ms=10, absolute_ms=10), 0)
    accepted(m, create(2, principal="alice"), 0)
    r = accepted(m, create(3, principal="alice"), 10)
    assert r.handles == ()
    assert [v.handle for v in m.list_principal("alice", 10)] == ["h2", "h3"]
    assert list(m.by_principal["alice"]) == [token_hash(2), token_hash(3)]


def test_login_rotate_into_principal_at_cap_with_evict_oldest_reports_evicted_handle(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_sessions_per_principal=2)
    accepted(m, create(1, principal="alice"), 1)
    accepted(m, create(2, principal="alice"), 2)
    accepted(m, create(3), 3)
    r = accepted(m, Rotate(token_hash(3), token_hash(4), "alice"), 4)
    assert r.handles == ("h1",)
    assert [v.handle for v in m.list_principal("alice", 4)] == ["h2", "h3"]
    assert sorted(m.by_handle) == ["h2", "h3"]


def test_rotate_within_the_same_principal_at_cap_evicts_nothing(new_machine: MachineFactory) -> None:
    m = new_machine(max_sessions_per_principal=2, principal_cap_policy="reject")
    accepted(m, create(1, principal="alice"), 1)
    accepted(m, create(2, principal="alice"), 2)
    assert accepted(m, Rotate(token_hash(1), token_hash(3), "alice"), 3).handles == ()
    assert accepted(m, Rotate(token_hash(3), token_hash(4), None), 3).handles == ()
    assert len(m.by_principal["alice"]) == 2


def test_principal_at_cap_with_reject_refuses_create_with_quota(new_machine: MachineFactory) -> None:
    m = new_machine(max_sessions_per_principal=2, principal_cap_policy="reject")
    accepted(m, create(1, principal="alice"))
    accepted(m, create(2, principal="alice"))  # exactly at the cap
    r = refused(m, create(3, principal="alice"), Code.QUOTA)
    assert "2" in r.message
    accepted(m, create(3, principal="bob"))


def test_principal_at_cap_with_reject_refuses_login_rotate_with_quota(new_machine: MachineFactory) -> None:
    m = new_machine(max_sessions_per_principal=1, principal_cap_policy="reject")
    accepted(m, create(1, principal="alice"))
    accepted(m, create(2))
    refused(m, Rotate(token_hash(2), token_hash(3), "alice"), Code.QUOTA)
    assert m.read(token_hash(2), 0).code is Code.OK


# -------------------------------------------------------------------------- max sessions


def test_max_sessions_at_limit_is_accepted_and_one_more_is_quota(new_machine: MachineFactory) -> None:
    m = new_machine(max_sessions=2)
    accepted(m, create(1))
    accepted(m, create(2))
    refused(m, create(3), Code.QUOTA)
    refused(m, create(3, principal="alice"), Code.QUOTA)
    # Rotation does not add a session, so it is allowed at the limit.
    accepted(m, Rotate(token_hash(1), token_hash(4), "alice"))


# ------------------------------------------------------------------------------ timeouts


@pytest.mark.parametrize(
    ("idle_ms", "absolute_ms"),
    [(0, 100), (-1, 100), (100, 0), (100, -5), (100, 99)],
    ids=["idle-zero", "idle-negative", "absolute-zero", "absolute-negative", "absolute-below-idle"],
)
def test_non_positive_timeouts_or_absolute_below_idle_are_invalid(
    new_machine: MachineFactory, idle_ms: int, absolute_ms: int
) -> None:
    m = new_machine()
    refused(m, create(1, idle_ms=idle_ms, absolute_ms=absolute_ms), Code.INVALID)


def test_absolute_equal_to_idle_is_accepted(new_machine: MachineFactory) -> None:
    m = new_machine()
    r = accepted(m, create(1, idle_ms=100, absolute_ms=100))
    assert r.session is not None
    assert r.session.absolute_deadline_ms == 100


def test_timeouts_at_configured_maximum_are_accepted_and_one_more_is_quota(
    new_machine: MachineFactory,
) -> None:
    m = new_machine(max_idle_timeout_ms=100, max_absolute_timeout_ms=1_000)
    refused(m, create(1, idle_ms=101, absolute_ms=1_000), Code.QUOTA)
    refused(m, create(1, idle_ms=100, absolute_ms=1_001), Code.QUOTA)
    accepted(m, create(1, idle_ms=100, absolute_ms=1_000))


# ------------------------------------------------------------------ refused means untouched


def test_refused_update_keeps_version_attributes_and_last_access(new_machine: MachineFactory) -> None:
    m = new_machine(max_attributes_per_session=2, max_session_bytes=10)
    accepted(m, create(1, attributes=(("a", b"1"),)), 0)
    accepted(m, update(1, set_=(("b", b"2"),)), 50)
    for op in (
        update(1, set_=(("c", b"3"),)),  # count
        update(1, set_=(("a", b"x" * 9),)),  # bytes
        update(1, set_=attrs(3)),  # count of the set alone
    ):
        refused(m, op, Code.QUOTA, now_ms=50)
    got = m.read(token_hash(1), 50)
    assert got.session is not None
    assert got.session.version == 2
    assert got.session.last_access_ms == 50
    assert got.session.attributes == (("a", b"1"), ("b", b"2"))


def test_max_sessions_does_not_count_expired_sessions_awaiting_a_sweep(new_machine: MachineFactory) -> None:
    m = new_machine(max_sessions=2)
    accepted(m, create(1, idle_ms=100, absolute_ms=100), 0)
    accepted(m, create(2, idle_ms=100, absolute_ms=100), 0)
    assert m.read(token_hash(1), 100).code is Code.NOT_FOUND
    accepted(m, create(3), 100)
