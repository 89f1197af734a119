"""Random command sequences: determinism, snapshot/restore equivalence and index invariants.

Commands are drawn over small pools (hashes, handles, principals, client ids) so that they
collide often: creates hit existing hashes and principal caps, updates race deletes,
retries reuse sequences, and timestamps sometimes step backwards (the machine clamps them).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionquorum.store.commands import (
    Barrier,
    Command,
    Create,
    Delete,
    Expire,
    Op,
    RevokePrincipal,
    Rotate,
    Touch,
    Update,
    decode,
    encode,
)
from sessionquorum.store.config import Limits
from sessionquorum.store.replies import Code
from sessionquorum.store.state import SessionMachine

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)

HASHES = [hashlib.sha256(f"token-{i}".encode()).digest() for i in range(6)]
HANDLES = [f"h{i}" for i in range(8)]
PRINCIPALS = ["alice", "bob", "carol"]
NAMES = ["a", "b", "c", "d"]
CLIENTS = [b"c1", b"c2", b"c3"]


def small_limits(policy: str) -> Limits:
    return Limits(
        max_attributes_per_session=3,
        max_session_bytes=16,
        max_attribute_value_bytes=8,
        max_sessions_per_principal=2,
        principal_cap_policy=policy,
        max_sessions=4,
        max_idle_timeout_ms=400,
        max_absolute_timeout_ms=800,
        dedup_ttl_ms=300,
        max_dedup_clients=2,
    )


# Most commands name one of a few hashes so that they meet; rotation may also reach the rest.
hashes = st.sampled_from(HASHES[:4])
any_hashes = st.sampled_from(HASHES)
handles = st.sampled_from(HANDLES)
principals = st.sampled_from(PRINCIPALS)
attribute_sets = st.lists(
    st.tuples(st.sampled_from(NAMES), st.binary(max_size=5)), max_size=3, unique_by=lambda p: p[0]
).map(tuple)
# Mostly valid timeouts, with some that break a rule or a limit.
idle_timeouts = st.sampled_from([60, 200, 300, 400, 200, 300, 400, 0, 401])
absolute_timeouts = st.sampled_from([400, 600, 800, 400, 600, 800, 100, 801])

creates = st.builds(
    Create,
    token_hash=hashes,
    handle=handles,
    principal=st.none() | principals,
    attributes=attribute_sets,
    idle_timeout_ms=idle_timeouts,
    absolute_timeout_ms=absolute_timeouts,
)
touches = st.builds(Touch, token_hash=hashes, with_attributes=st.booleans())
updates = st.builds(
    Update,
    token_hash=hashes,
    set=attribute_sets,
    delete=st.lists(st.sampled_from(NAMES), max_size=2).map(tuple),
    expected_version=st.none() | st.integers(1, 4),
)
rotates = st.builds(Rotate, token_hash=hashes, new_token_hash=any_hashes, principal=st.none() | principals)
deletes = st.one_of(
    st.builds(Delete, token_hash=hashes, handle=st.none()),
    st.builds(Delete, token_hash=st.none(), handle=handles),
    st.builds(Delete, token_hash=st.none() | hashes, handle=st.none() | handles),
)
revokes = st.builds(RevokePrincipal, principal=principals, except_handle=st.none() | handles)
expires = st.builds(Expire, limit=st.integers(1, 3))
# Listed more than once to be drawn more often: sessions must exist for the rest to bite.
ops: st.SearchStrategy[Op] = st.sampled_from(
    [creates] * 4 + [touches] * 2 + [updates] * 2 + [rotates] * 2
    + [deletes, revokes, expires, st.just(Barrier())]
).flatmap(lambda strategy: strategy)  # fmt: skip


@st.composite
def command_logs(draw: st.DrawFn) -> list[bytes]:
    """Encoded entries with a mostly increasing, sometimes backward, leader clock."""
    steps = draw(
        st.lists(
            st.tuples(ops, st.integers(-20, 60), st.none() | st.sampled_from(CLIENTS), st.integers(0, 4)),
            min_size=10,
            max_size=40,
        )
    )
    entries = []
    now = 0
    for op, delta, cid, seq in steps:
        now = max(0, now + delta)
        entries.append(encode(Command(op, now_ms=now, client_id=cid, sequence=seq)))
    return entries


policies = st.sampled_from(["evict_oldest", "reject"])


def check_invariants(m: SessionMachine) -> None:
    """The indexes agree with the sessions, and nothing expired is ever served."""
    assert len(m.by_handle) == len(m.sessions)
    for key, s in m.sessions.items():
        assert s.token_hash == key
        assert m.by_handle[s.handle] == key
        if s.principal is not None:
            assert key in m.by_principal[s.principal]
        assert s.absolute_deadline_ms - s.created_ms <= m.limits.max_absolute_timeout_ms
    for principal, index in m.by_principal.items():
        assert index
        for key in index:
            assert m.sessions[key].principal == principal
        assert len(index) <= m.limits.max_sessions_per_principal
    assert len(m.sessions) <= m.limits.max_sessions
    for h in HASHES:
        r = m.read(h, m.now_ms)
        if r.code is Code.OK:
            assert r.session is not None
            assert m.now_ms < r.session.absolute_deadline_ms
            assert m.now_ms < r.session.last_access_ms + r.session.idle_timeout_ms
        else:
            assert r.code is Code.NOT_FOUND
    for principal in PRINCIPALS:
        for view in m.list_principal(principal, m.now_ms):
            assert m.now_ms < view.absolute_deadline_ms
            assert view.attributes == ()


@PROPERTY_SETTINGS
@given(log=command_logs(), policy=policies)
def test_same_log_on_two_fresh_machines_gives_identical_replies_and_snapshots(
    log: list[bytes], policy: str
) -> None:
    a = SessionMachine(small_limits(policy))
    b = SessionMachine(small_limits(policy))
    for entry in log:
        assert a.apply(entry) == b.apply(entry)
        assert a.snapshot() == b.snapshot()


@PROPERTY_SETTINGS
@given(log=command_logs(), policy=policies, data=st.data())
def test_machine_restored_midway_gives_same_replies_and_snapshot_as_one_that_applied_all(
    log: list[bytes], policy: str, data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(log)), label="split")
    full = SessionMachine(small_limits(policy))
    full_replies = [full.apply(entry) for entry in log]

    prefix = SessionMachine(small_limits(policy))
    for entry in log[:split]:
        prefix.apply(entry)
    restored = SessionMachine(small_limits(policy))
    restored.restore(prefix.snapshot())
    assert restored.snapshot() == prefix.snapshot()
    rest_replies = [restored.apply(entry) for entry in log[split:]]

    assert rest_replies == full_replies[split:]
    assert restored.snapshot() == full.snapshot()


@PROPERTY_SETTINGS
@given(log=command_logs(), policy=policies)
def test_invariants_hold_after_every_command(log: list[bytes], policy: str) -> None:
    m = SessionMachine(small_limits(policy))
    for entry in log:
        # Keyed by identity: a rotate keeps the Session object, a create makes a new one
        # (possibly with the handle and hash of an expired one it replaces).
        before = {
            id(s): (s, s.created_ms, s.absolute_deadline_ms, s.last_access_ms, s.version)
            for s in m.sessions.values()
        }
        reply = m.apply(entry)
        check_invariants(m)
        for s in m.sessions.values():
            if id(s) not in before:
                continue
            _, created, absolute, last_access, version = before[id(s)]
            # Nothing extends a session's lifetime or moves its clock backwards.
            assert s.created_ms == created
            assert s.absolute_deadline_ms == absolute
            assert s.last_access_ms >= last_access
            assert s.version >= version
        cmd = decode(entry)
        if isinstance(cmd.op, Expire) and cmd.client_id is None and reply.count < cmd.op.limit:
            # A sweep that removed fewer than its limit left nothing due behind. (With a
            # client id the reply may be a retry's remembered answer, not this sweep's.)
            assert all(s.deadline_ms > m.now_ms for s in m.sessions.values())


# A snapshot must not depend on str hashing (set iteration order differs per process).
_REPLAY = """
import sys
from pathlib import Path
import msgpack
from sessionquorum.store.config import Limits
from sessionquorum.store.state import SessionMachine

entries = msgpack.unpackb(Path(sys.argv[1]).read_bytes())
m = SessionMachine(Limits(**__import__("json").loads(sys.argv[2])))
for e in entries:
    m.apply(e)
print(m.digest())
"""


def test_same_log_in_processes_with_different_hash_seeds_gives_identical_digest(tmp_path: Path) -> None:
    rng = random.Random(20240611)
    now = 0
    entries = []
    for _ in range(600):
        now = max(0, now + rng.randint(-40, 150))
        n = rng.randrange(len(HASHES))
        kind = rng.randrange(7)
        op: Op
        if kind == 0:
            op = Create(
                HASHES[n],
                rng.choice(HANDLES),
                rng.choice([None, *PRINCIPALS]),
                tuple((name, b"v") for name in rng.sample(NAMES, rng.randint(0, 3))),
                rng.randint(200, 2_000),
                rng.randint(2_000, 6_000),
            )
        elif kind == 1:
            op = Touch(HASHES[n])
        elif kind == 2:
            op = Update(HASHES[n], ((rng.choice(NAMES), b"x"),), (rng.choice(NAMES),), None)
        elif kind == 3:
            op = Rotate(HASHES[n], rng.choice(HASHES), rng.choice([None, *PRINCIPALS]))
        elif kind == 4:
            op = Delete(None, rng.choice(HANDLES))
        elif kind == 5:
            op = RevokePrincipal(rng.choice(PRINCIPALS), rng.choice([None, *HANDLES]))
        else:
            op = Expire(rng.randint(1, 3))
        cid = rng.choice([None, *CLIENTS])
        entries.append(encode(Command(op, now_ms=now, client_id=cid, sequence=rng.randint(0, 6))))
    # End with a session that is certain to be live, so there is state to compare.
    final = Create(b"\x99" * 32, "final-handle", "final", (("k", b"v"),), 10_000, 10_000)
    entries.append(encode(Command(final, now_ms=now)))
    log_file = tmp_path / "log.msgpack"
    log_file.write_bytes(msgpack.packb(entries, use_bin_type=True))
    limits = {"max_sessions_per_principal": 2, "max_sessions": 4, "max_dedup_clients": 2}

    local = SessionMachine(Limits(**limits))  # type: ignore[arg-type]
    for e in entries:
        local.apply(e)
    assert local.sessions, "the log should leave some sessions to compare"
    digests = set()
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", _REPLAY, str(log_file), json.dumps(limits)],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        digests.add(out.stdout.strip())
    assert digests == {local.digest()}
