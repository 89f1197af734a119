"""keep_matching_entries: a follower truncates only on a conflict and rejects towards its commit index."""

from __future__ import annotations

from typing import Any

from sessionquorum.store.raft import keep_matching_entries


def log_of(*terms: int, first: int = 1) -> list[tuple[bytes, int, int]]:
    return [(b"e%d" % i, i, t) for i, t in enumerate(terms, start=first)]


def append(prev: int, prev_term: int, entries: list[tuple[bytes, int, int]], term: int) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": term,
        "prevLogIdx": prev,
        "prevLogTerm": prev_term,
        "entries": entries,
    }


def test_repeated_batch_already_present_is_dropped_and_tail_kept() -> None:
    log = log_of(1, 2, 2, 2, 2)  # indexes 1..5
    message = append(1, 1, log[1:3], term=2)  # resend of 2..3 while 4..5 are here
    assert keep_matching_entries(log, message, commit_index=1) == 4  # 2..5 would have gone
    assert message["entries"] == []
    assert (message["prevLogIdx"], message["prevLogTerm"]) == (5, 2)  # whole log acknowledged


def test_heartbeat_behind_our_end_does_not_truncate_current_term_entries() -> None:
    log = log_of(1, 3, 3, 3)
    message = append(2, 3, [], term=3)
    assert keep_matching_entries(log, message, commit_index=1) == 2
    assert (message["prevLogIdx"], message["entries"]) == (4, [])


def test_older_term_tail_past_the_matched_prefix_is_left_to_truncate() -> None:
    log = log_of(1, 1, 1, 1)  # last entry is term 1, the leader is in term 2
    message = append(1, 1, log[1:2], term=2)
    assert keep_matching_entries(log, message, commit_index=1) == 1  # 2 kept; 3..4 go
    assert (message["prevLogIdx"], message["prevLogTerm"], message["entries"]) == (2, 1, [])


def test_new_entries_after_a_matching_prefix_keep_only_the_new_part() -> None:
    log = log_of(1, 2, 2)
    new = [(b"n4", 4, 2), (b"n5", 5, 2)]
    message = append(1, 1, [*log[1:3], *new], term=2)
    keep_matching_entries(log, message, commit_index=1)
    assert (message["prevLogIdx"], message["prevLogTerm"], message["entries"]) == (3, 2, new)


def test_conflicting_entry_stays_so_pysyncobj_truncates_from_it() -> None:
    log = log_of(1, 1, 1)
    conflicting = [(b"x2", 2, 2), (b"x3", 3, 2)]
    message = append(1, 1, conflicting, term=2)
    assert keep_matching_entries(log, message, commit_index=1) == 0
    assert (message["prevLogIdx"], message["entries"]) == (1, conflicting)


def test_conflict_after_a_matching_entry_truncates_from_the_conflict() -> None:
    log = log_of(1, 2, 2)
    sent = [(b"e2", 2, 2), (b"x3", 3, 3)]
    message = append(1, 1, sent, term=3)
    keep_matching_entries(log, message, commit_index=1)
    assert (message["prevLogIdx"], message["prevLogTerm"], message["entries"]) == (2, 2, sent[1:])


def test_mismatched_prev_entry_is_rejected_with_next_index_after_our_commit_index() -> None:
    # A deposed leader's uncommitted tail (3..5, term 1) against the new leader's term 2.
    log = log_of(1, 1, 1, 1, 1)
    message = append(4, 2, [(b"x", 5, 2)], term=2)
    assert keep_matching_entries(log, message, commit_index=2) == 0
    # pysyncobj answers a mismatch with "next index = prevLogIdx": here 3, after the commit index.
    assert (message["prevLogIdx"], message["prevLogTerm"], message["entries"]) == (3, -1, [])


def test_prev_index_beyond_our_log_is_rejected_with_next_index_after_our_commit_index() -> None:
    log = log_of(1, 1, 1, 1)
    message = append(9, 2, [(b"x", 10, 2)], term=2)
    keep_matching_entries(log, message, commit_index=3)
    assert (message["prevLogIdx"], message["prevLogTerm"], message["entries"]) == (4, -1, [])


def test_reject_never_points_past_the_mismatched_entry() -> None:
    log = log_of(1, 1, 1, 1)
    message = append(2, 7, [], term=7)
    keep_matching_entries(log, message, commit_index=3)  # a commit index past it cannot happen; be safe
    assert message["prevLogIdx"] == 2


def test_compacted_log_with_offset_indexes() -> None:
    log = log_of(4, 4, 4, first=100)  # indexes 100..102 after compaction
    message = append(100, 4, log[1:2], term=4)
    keep_matching_entries(log, message, commit_index=1)
    assert (message["prevLogIdx"], message["entries"]) == (102, [])
