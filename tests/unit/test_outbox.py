"""The outbox (store/_outbox.py): what waits leaves packed, and each proposer gets its own answer.

A fake `send` stands in for pysyncobj's queue and records the entries and callbacks; the
tests play the tick thread (flush, then the callback) and the event loop (the futures).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sessionquorum.store import _packing
from sessionquorum.store import commands as c
from sessionquorum.store._outbox import Outbox
from sessionquorum.store.errors import NoLeader, OutcomeUnknown, StoreError
from sessionquorum.store.replies import Code, Reply

SUCCESS, QUEUE_FULL, LEADER_CHANGED = 0, 1, 5


def failure(code: int) -> StoreError:
    return NoLeader(f"reason {code}") if code == QUEUE_FULL else OutcomeUnknown(f"reason {code}")


class Fake:
    def __init__(self, may_pack: bool = True, max_waiting: int = 100, **limits: int) -> None:
        self.sent: list[tuple[bytes, Callable[[Any, int], None]]] = []
        self.may_pack = may_pack
        self.outbox = Outbox(
            lambda entry, cb: self.sent.append((entry, cb)),
            success=SUCCESS,
            failure=failure,
            queue_full=QUEUE_FULL,
            may_pack=lambda: self.may_pack,
            max_waiting=max_waiting,
            limits=_packing.PackLimits(**limits),
        )


def entry(n: int) -> bytes:
    return c.encode(c.Command(c.Barrier(), now_ms=n))


async def settle() -> None:
    # The callbacks arrive through call_soon_threadsafe: one loop turn runs them.
    for _ in range(3):
        await asyncio.sleep(0)


def test_waiting_proposals_leave_as_one_packed_entry_and_each_gets_its_reply() -> None:
    async def main() -> None:
        fake = Fake()
        futures = [fake.outbox.put(entry(i)) for i in range(3)]
        fake.outbox.flush()
        assert len(fake.sent) == 1
        packed, callback = fake.sent[0]
        assert packed == _packing.pack([entry(0), entry(1), entry(2)])
        replies = [Reply(Code.OK, count=i) for i in range(3)]
        callback(replies, SUCCESS)
        await settle()
        assert [f.result() for f in futures] == replies
        assert (fake.outbox.packed_entries, fake.outbox.packed_commands) == (1, 3)

    asyncio.run(main())


def test_a_lone_proposal_stays_a_plain_entry() -> None:
    async def main() -> None:
        fake = Fake()
        future = fake.outbox.put(entry(1))
        fake.outbox.flush()
        assert [e for e, _ in fake.sent] == [entry(1)]
        fake.sent[0][1](Reply(Code.OK), SUCCESS)
        await settle()
        assert future.result() == Reply(Code.OK)
        assert fake.outbox.packed_entries == 0

    asyncio.run(main())


def test_nothing_is_packed_while_a_member_cannot_apply_packed_entries() -> None:
    async def main() -> None:
        fake = Fake(may_pack=False)
        futures = [fake.outbox.put(entry(i)) for i in range(3)]
        fake.outbox.flush()
        assert [e for e, _ in fake.sent] == [entry(0), entry(1), entry(2)]
        for i, (_, callback) in enumerate(fake.sent):
            callback(Reply(Code.OK, count=i), SUCCESS)
        await settle()
        assert [f.result().count for f in futures] == [0, 1, 2]
        assert fake.outbox.packed_entries == 0

    asyncio.run(main())


def test_a_failed_packed_entry_fails_every_proposer_in_it_with_its_own_error() -> None:
    async def main() -> None:
        fake = Fake()
        futures = [fake.outbox.put(entry(i)) for i in range(2)]
        fake.outbox.flush()
        fake.sent[0][1](None, LEADER_CHANGED)
        await settle()
        errors = [f.exception() for f in futures]
        assert all(isinstance(e, OutcomeUnknown) for e in errors)
        assert errors[0] is not errors[1]

    asyncio.run(main())


def test_a_malformed_answer_to_a_packed_entry_is_an_unknown_outcome_not_a_wrong_reply() -> None:
    async def main() -> None:
        fake = Fake()
        futures = [fake.outbox.put(entry(i)) for i in range(2)]
        fake.outbox.flush()
        fake.sent[0][1]([Reply(Code.OK)], SUCCESS)  # one reply for two proposals
        await settle()
        assert all(isinstance(f.exception(), OutcomeUnknown) for f in futures)

    asyncio.run(main())


def test_packs_are_cut_by_the_count_bound_in_arrival_order() -> None:
    async def main() -> None:
        fake = Fake(max_commands=2)
        for i in range(5):
            fake.outbox.put(entry(i))
        fake.outbox.flush()
        assert [e for e, _ in fake.sent] == [
            _packing.pack([entry(0), entry(1)]),
            _packing.pack([entry(2), entry(3)]),
            entry(4),
        ]

    asyncio.run(main())


def test_the_outbox_is_bounded_and_refuses_past_the_bound_as_not_appended() -> None:
    async def main() -> None:
        fake = Fake(max_waiting=2)
        kept = [fake.outbox.put(entry(i)) for i in range(2)]
        refused = fake.outbox.put(entry(2))
        assert len(fake.outbox) == 2
        assert isinstance(refused.exception(), NoLeader)
        assert not any(f.done() for f in kept)
        fake.outbox.flush()
        assert len(fake.outbox) == 0
        assert fake.outbox.put(entry(3)) is not None  # room again once the tick took them

    asyncio.run(main())


def test_answers_reach_proposers_when_the_callback_runs_on_another_thread() -> None:
    async def main() -> None:
        fake = Fake()
        futures = [fake.outbox.put(entry(i)) for i in range(4)]
        fake.outbox.flush()
        replies = [Reply(Code.OK, count=i) for i in range(4)]
        tick = threading.Thread(target=fake.sent[0][1], args=(replies, SUCCESS))
        tick.start()
        tick.join()
        results = await asyncio.wait_for(asyncio.gather(*futures), 5)
        assert list(results) == replies

    asyncio.run(main())


def test_a_closed_loop_does_not_make_the_callback_raise_into_pysyncobj() -> None:
    fake = Fake()

    async def propose() -> None:
        fake.outbox.put(entry(1))
        fake.outbox.put(entry(2))

    loop = asyncio.new_event_loop()
    loop.run_until_complete(propose())
    loop.close()
    fake.outbox.flush()
    fake.sent[0][1]([Reply(Code.OK), Reply(Code.OK)], SUCCESS)  # must not raise


@pytest.mark.parametrize("n", [2, 40])
def test_every_proposal_is_sent_exactly_once(n: int) -> None:
    async def main() -> None:
        fake = Fake(max_commands=7)
        for i in range(n):
            fake.outbox.put(entry(i))
        fake.outbox.flush()
        fake.outbox.flush()
        inner: list[bytes] = []
        for sent, _ in fake.sent:
            raw = c.unpack(sent)
            if raw["op"] == _packing.OP:
                inner.extend(c.encode(c.decode_map(m)) for m in raw["a"]["entries"])
            else:
                inner.append(sent)
        assert inner == [entry(i) for i in range(n)]

    asyncio.run(main())
