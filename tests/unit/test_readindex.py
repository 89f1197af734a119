"""ReadIndex's rules (store/_readindex.py), on a simulated network of three nodes.

Each node is a `ReadIndex` plus a `RaftView` the test sets by hand; messages go into a
queue the test delivers (or drops) explicitly, so every interleaving is chosen, not timed.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace

from sessionquorum.store._readindex import (
    ACK,
    GRANT,
    MAX_ROUNDS_IN_FLIGHT,
    NO_LEADER,
    NOT_LEADER,
    RESEND_S,
    ROUND,
    TIMED_OUT,
    RaftView,
    ReadIndex,
    Send,
)

TIMEOUT_S = 2.0
NODES = ("a", "b", "c")


@dataclass
class Outcome:
    results: list[tuple[int | None, str | None]] = field(default_factory=list)

    def __call__(self, index: int | None, reason: str | None) -> None:
        self.results.append((index, reason))


class Net:
    """Three ReadIndex nodes; `a` leads term 5 with commit index 10 unless a test changes it."""

    def __init__(self, nodes: tuple[str, ...] = NODES) -> None:
        self.now = 100.0
        self.reads = {n: ReadIndex(TIMEOUT_S) for n in nodes}
        self.views = {
            n: RaftView(
                is_leader=n == "a",
                term=5,
                commit_index=10,
                last_applied=10,
                leader_ready=n == "a",
                leader="a",
                peers=tuple(p for p in nodes if p != n),
            )
            for n in nodes
        }
        self.wire: list[tuple[str, str, dict[str, object]]] = []  # (from, to, message)

    def sender(self, src: str) -> Send:
        def send(dst: Hashable, message: dict[str, object]) -> None:
            self.wire.append((src, str(dst), message))

        return send

    def tick(self, node: str, *waiters: Outcome) -> None:
        self.reads[node].tick(self.now, self.views[node], list(waiters), self.sender(node))

    def hop(self) -> None:
        """Deliver what is on the wire now; the replies it causes stay queued."""
        queued, self.wire = self.wire, []
        for src, dst, message in queued:
            assert self.reads[dst].on_message(src, message, self.views[dst], self.sender(dst))

    def deliver(self, only: set[str] | None = None, drop: set[str] | None = None) -> int:
        """Deliver queued messages (to `only`, dropping those to `drop`), replies included."""
        delivered = 0
        while self.wire:
            src, dst, message = self.wire.pop(0)
            if (only is not None and dst not in only) or (drop is not None and dst in drop):
                continue
            assert self.reads[dst].on_message(src, message, self.views[dst], self.sender(dst))
            delivered += 1
        return delivered


def test_leader_read_is_confirmed_only_after_a_majority_acknowledged_its_round() -> None:
    net = Net()
    read = Outcome()
    net.tick("a", read)
    assert [m["type"] for _, _, m in net.wire] == [ROUND, ROUND]
    assert read.results == []  # nothing before an acknowledgement
    net.views["a"] = replace(net.views["a"], commit_index=12, last_applied=12)  # later commits
    net.deliver(drop={"c"})  # b acknowledges; c's round is lost
    # a + b are a majority of 3; the index is the commit index when the round started.
    assert read.results == [(10, None)]


def test_reads_arriving_before_a_round_share_it() -> None:
    net = Net()
    reads = [Outcome() for _ in range(20)]
    net.tick("a", *reads)
    net.deliver()
    assert all(r.results == [(10, None)] for r in reads)
    assert net.reads["a"].rounds_sent == 1
    assert net.reads["a"].reads_confirmed == 20


def test_follower_in_a_newer_term_does_not_acknowledge_and_the_read_times_out() -> None:
    net = Net()
    for follower in ("b", "c"):  # both already voted in a newer term: a is deposed
        net.views[follower] = replace(net.views[follower], term=6, leader=None)
    read = Outcome()
    net.tick("a", read)
    net.deliver()
    assert read.results == []
    net.now += TIMEOUT_S + 0.01
    net.tick("a")
    assert read.results == [(None, TIMED_OUT)]


def test_unsafe_path_canary_one_stale_acknowledgement_is_not_a_majority_of_five() -> None:
    # Five nodes: a and b still in term 5, c, d, e elected a new leader in term 6.
    net = Net(("a", "b", "c", "d", "e"))
    for n in ("c", "d", "e"):
        net.views[n] = replace(net.views[n], term=6, leader="c")
    read = Outcome()
    net.tick("a", read)
    net.hop()  # the rounds; the replies stay queued
    assert sorted((src, m["ok"]) for src, _, m in net.wire) == [
        ("b", True),
        ("c", False),
        ("d", False),
        ("e", False),
    ]
    net.deliver()
    assert read.results == []  # 2 of 5 acknowledged: a deposed leader cannot confirm


def test_a_new_leader_sends_no_round_before_its_election_entry_commits() -> None:
    net = Net()
    net.views["a"] = replace(net.views["a"], leader_ready=False)
    read = Outcome()
    net.tick("a", read)
    assert net.wire == []
    net.views["a"] = replace(net.views["a"], leader_ready=True, commit_index=11, last_applied=11)
    net.tick("a")
    net.deliver()
    assert read.results == [(11, None)]


def test_follower_read_asks_the_leader_and_waits_until_it_applied_the_index() -> None:
    net = Net()
    net.views["a"] = replace(net.views["a"], commit_index=14, last_applied=14)
    read = Outcome()
    net.tick("b", read)  # b asks a
    net.deliver()  # a queues the ask for its next round
    net.tick("a")  # a sends the round
    net.deliver()  # acks come back, a grants index 14 to b
    assert read.results == []  # b has applied only 10
    net.views["b"] = replace(net.views["b"], commit_index=14, last_applied=14)
    net.tick("b")
    assert read.results == [(14, None)]
    assert [m["type"] for _, _, m in net.wire] == []
    assert net.reads["b"].reads_confirmed == 1


def test_follower_without_a_leader_refuses_at_once() -> None:
    net = Net()
    net.views["b"] = replace(net.views["b"], leader=None)
    read = Outcome()
    net.tick("b", read)
    assert read.results == [(None, NO_LEADER)]


def test_asking_a_node_that_is_no_longer_leader_is_refused() -> None:
    net = Net()
    read = Outcome()
    net.tick("b", read)
    net.views["a"] = replace(net.views["a"], is_leader=False, leader_ready=False, leader=None, term=6)
    net.deliver()
    assert read.results == [(None, NOT_LEADER)]


def test_losing_leadership_fails_the_rounds_in_flight() -> None:
    net = Net()
    read = Outcome()
    net.tick("a", read)
    net.views["a"] = replace(net.views["a"], is_leader=False, leader_ready=False, leader="b", term=6)
    net.tick("a")
    assert read.results == [(None, NOT_LEADER)]
    net.deliver()  # the acks to the old round change nothing
    assert read.results == [(None, NOT_LEADER)]


def test_an_acknowledgement_of_a_later_round_confirms_the_earlier_ones() -> None:
    net = Net()
    first, second = Outcome(), Outcome()
    net.tick("a", first)
    net.wire.clear()  # the first round is lost on the wire
    net.now += RESEND_S * 1.1
    net.views["a"] = replace(net.views["a"], commit_index=11, last_applied=11)
    net.tick("a", second)
    net.deliver()
    # Both confirmed by round 2's acknowledgements; the first keeps its own (earlier) index.
    assert first.results == [(10, None)]
    assert second.results == [(11, None)]


def test_a_lost_round_is_followed_by_a_new_one_after_the_resend_interval() -> None:
    net = Net()
    read = Outcome()
    net.tick("a", read)
    net.wire.clear()
    net.tick("a")
    assert net.wire == []  # not yet
    net.now += RESEND_S * 1.1
    net.tick("a")
    assert len(net.wire) == 2
    net.deliver()
    assert read.results == [(10, None)]


def test_rounds_in_flight_are_bounded() -> None:
    net = Net()
    for _ in range(MAX_ROUNDS_IN_FLIGHT + 3):
        net.tick("a", Outcome())
    assert net.reads["a"].rounds_sent == MAX_ROUNDS_IN_FLIGHT
    net.deliver()
    net.tick("a")  # the reads held back go out together
    assert net.reads["a"].rounds_sent == MAX_ROUNDS_IN_FLIGHT + 1


def test_single_node_cluster_confirms_at_once() -> None:
    net = Net(("a",))
    read = Outcome()
    net.tick("a", read)
    assert read.results == [(10, None)]


def test_acknowledgements_from_an_earlier_term_do_not_count() -> None:
    net = Net()
    read = Outcome()
    net.tick("a", read)
    (_, _, round_msg), _ = net.wire
    net.wire.clear()
    # A reply carrying term 4 (sent before b learned of term 5) is not an acknowledgement.
    net.reads["a"].on_message(
        "b",
        {"type": ACK, "round": round_msg["round"], "term": 4, "ok": True},
        net.views["a"],
        net.sender("a"),
    )
    assert read.results == []


def test_a_grant_for_an_unknown_ask_is_ignored() -> None:
    net = Net()
    assert net.reads["b"].on_message(
        "a", {"type": GRANT, "ask": 77, "index": 3}, net.views["b"], net.sender("b")
    )
    assert not net.reads["b"].on_message("a", {"type": "append_entries"}, net.views["b"], net.sender("b"))


# ----------------------------------------------------------------------- leases

LEASE_S = 0.3


def _leased(net: Net) -> None:
    net.views["a"] = replace(net.views["a"], lease_s=LEASE_S)


def test_a_confirmed_round_lets_the_leader_answer_reads_without_one_until_the_lease_ends() -> None:
    net = Net()
    _leased(net)
    first = Outcome()
    net.tick("a", first)
    net.deliver()
    assert first.results == [(10, None)] and net.reads["a"].rounds_sent == 1
    net.now += LEASE_S / 4
    net.views["a"] = replace(net.views["a"], commit_index=12, last_applied=12)
    second = Outcome()
    net.tick("a", second)
    assert second.results == [(12, None)]  # at once, at the commit index: no round
    assert net.wire == [] and net.reads["a"].reads_by_lease == 1
    net.now += LEASE_S  # past the lease: a read needs a round again
    third = Outcome()
    net.tick("a", third)
    assert third.results == [] and net.reads["a"].rounds_sent == 2


def test_a_lease_past_its_half_is_renewed_by_an_empty_round() -> None:
    net = Net()
    _leased(net)
    net.tick("a", Outcome())
    net.deliver()
    net.now += LEASE_S * 0.6
    served = Outcome()
    net.tick("a", served)
    assert served.results == [(10, None)]
    assert net.reads["a"].rounds_sent == 2  # the renewal went out with no reader waiting on it
    net.deliver()
    net.now += LEASE_S * 0.6  # beyond the first lease, within the renewed one
    later = Outcome()
    net.tick("a", later)
    assert later.results == [(10, None)]


def test_no_lease_without_lease_s_or_in_a_later_term() -> None:
    net = Net()
    net.tick("a", Outcome())
    net.deliver()
    unleased = Outcome()
    net.tick("a", unleased)
    assert unleased.results == []  # lease_s 0: every read waits for a round
    net = Net()
    _leased(net)
    net.tick("a", Outcome())
    net.deliver()
    net.views["a"] = replace(net.views["a"], term=6)  # leader again, in a new term
    later_term = Outcome()
    net.tick("a", later_term)
    assert later_term.results == []


def test_a_follower_read_is_granted_at_once_under_the_leaders_lease() -> None:
    net = Net()
    _leased(net)
    net.tick("a", Outcome())
    net.deliver()
    read = Outcome()
    net.tick("b", read)
    net.deliver()  # the ask reaches a
    rounds = net.reads["a"].rounds_sent
    net.tick("a")  # granted from the lease, no round
    net.deliver()
    assert read.results == [(10, None)] and net.reads["a"].rounds_sent == rounds
