"""A deposed leader that still believes it leads must never answer a linearizable read.

pysyncobj's own reads are local and were measured stale on a resumed or isolated leader;
ReadIndex (store/_readindex.py: a confirmation round a majority must acknowledge in the
leader's term) is what prevents it here.

The scenario is built so the old leader cannot learn it was deposed: it is paused while the
others elect a new leader and delete a session, then the two others are paused and the old
leader resumed. It hears from nobody, and `raft.leader_fallback_s` is long, so it keeps
leading its old term for the whole read: its Status before and after the read says so, and
its local state (a STALE read) still holds the deleted session. Then:
- with ReadIndex, the linearizable read is refused with UNAVAILABLE by that node (nobody
  acknowledges its confirmation round; nothing was read, so the client may go elsewhere);
- the canary runs the same scenario with `server.unsafe_skip_read_barrier` set on the nodes
  and shows the deleted session IS served: without the barrier the first test fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest

from sessionquorum.client import NotFound, hash_token
from sessionquorum.cluster import LocalCluster

from .conftest import ClientFactory, ClusterFactory
from .helpers import local_read, pb, stub

pytestmark = pytest.mark.cluster

# Long enough that the isolated old leader does not step down on its own during the read
# (pysyncobj steps down after this long without answers from a majority).
LEADER_FALLBACK_S = 120.0
# The barrier's wait on the old leader; the refused read comes back after this long.
APPLY_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 4 * APPLY_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class StaleReadRun:
    """What the old leader did with a linearizable read after the others deposed it."""

    old: str
    new: str
    new_term: int
    before: pb.StatusResponse  # the old leader's own Status just before the read
    after: pb.StatusResponse  # ... and just after it answered
    answer: pb.ValidateResponse | None
    error: grpc.RpcError | None
    still_held_locally: bool  # a STALE read on the old leader still finds the deleted session
    cluster: LocalCluster
    token: str


def _run(make_cluster: ClusterFactory, make_client: ClientFactory, *, skip_barrier: bool) -> StaleReadRun:
    cluster = make_cluster(
        3,
        overrides={
            "raft": {"leader_fallback_s": LEADER_FALLBACK_S},
            "server": {"apply_timeout_s": APPLY_TIMEOUT_S, "unsafe_skip_read_barrier": skip_barrier},
        },
    )
    old = cluster.wait_for_leader()
    created = make_client(cluster).create(principal="carol")
    token_hash = hash_token(created.token)
    raw_old, channel = stub(cluster, old)
    raw_old.Status(pb.StatusRequest())  # connect now, so the read after SIGCONT goes out at once
    others = [n for n in cluster.node_ids if n != old]

    cluster.pause(old)
    try:
        new = cluster.wait_for_new_leader(old)
        new_status = _status(cluster, new)
        assert make_client(cluster, [cluster.grpc_address(n) for n in others]).delete(created.token) is True
        for node in others:
            cluster.pause(node)
    finally:
        cluster.resume(old)
    try:
        before = _status(cluster, old)
        answer: pb.ValidateResponse | None = None
        error: grpc.RpcError | None = None
        try:
            answer = raw_old.Validate(pb.ValidateRequest(token_hash=token_hash), timeout=READ_TIMEOUT_S)
        except grpc.RpcError as exc:
            error = exc
        after = _status(cluster, old)
        still_held = local_read(cluster, old, created.token) is not None
    finally:
        for node in others:
            cluster.resume(node)
    channel.close()
    return StaleReadRun(
        old, new, new_status.term, before, after, answer, error, still_held, cluster, created.token
    )


def _status(cluster: LocalCluster, node_id: str) -> pb.StatusResponse:
    status = cluster.status(node_id)
    assert status is not None, f"node {node_id} did not answer Status"
    return status


def _assert_old_leader_believed_it_led(run: StaleReadRun) -> None:
    """The read met a node that still led its old term, after a newer term had a leader."""
    for seen in (run.before, run.after):
        assert seen.is_leader, f"{run.old} had stepped down: {seen}"
        assert seen.term < run.new_term, (
            f"{run.old} at term {seen.term}, new leader {run.new} at {run.new_term}"
        )
    assert run.before.term == run.after.term
    assert run.still_held_locally, f"{run.old}'s own state no longer holds the session: nothing was stale"


def test_deposed_leader_unaware_of_new_term_refuses_linearizable_read_as_unavailable(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    run = _run(make_cluster, make_client, skip_barrier=False)

    _assert_old_leader_believed_it_led(run)
    assert run.answer is None, f"old leader {run.old} served a deleted session (new leader {run.new})"
    assert run.error is not None
    # UNAVAILABLE from the confirmation round no majority acknowledged, answered by the old
    # leader itself: not a deadline on our side, nor a redirect from a node that knew.
    assert run.error.code() == grpc.StatusCode.UNAVAILABLE, (run.error.code(), run.error.details())
    assert "no majority confirmed" in (run.error.details() or "")
    trailers = {str(item.key): str(item.value) for item in run.error.trailing_metadata() or ()}
    assert trailers.get("sq-node") == run.old, trailers
    # Once it hears from the others again, the client through its address only finds the logout.
    with pytest.raises(NotFound):
        make_client(run.cluster, [run.cluster.grpc_address(run.old)]).validate(run.token)


def test_deposed_leader_without_read_barrier_serves_the_deleted_session_canary(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    run = _run(make_cluster, make_client, skip_barrier=True)

    _assert_old_leader_believed_it_led(run)
    assert run.error is None, (run.error.code(), run.error.details())
    assert run.answer is not None and run.answer.session.principal == "carol"
    # The setting was in force on that node, and it said so loudly.
    lines = run.cluster.log_path(run.old).read_text(errors="replace").splitlines()
    assert any(" WARNING " in ln and "UNSAFE: server.unsafe_skip_read_barrier is set" in ln for ln in lines)
