"""ReplicatedLog.propose's wait: the reply, or OutcomeUnknown on a timeout or a lost leadership."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessionquorum.store import raft
from sessionquorum.store.errors import OutcomeUnknown


class FakeLog:
    """What `propose` uses of its ReplicatedLog: submit, is_leader, observe_proposal."""

    def __init__(self) -> None:
        self.leader = True
        self.leader_checks = 0
        self.futures: list[asyncio.Future[Any]] = []
        self.observed: list[float] = []

    def submit(self, entry: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def is_leader(self) -> bool:
        self.leader_checks += 1
        return self.leader

    def observe_proposal(self, seconds: float) -> None:
        self.observed.append(seconds)


def _propose(log: FakeLog, timeout_s: float) -> Any:
    return raft.ReplicatedLog.propose(log, b"entry", timeout_s)  # type: ignore[arg-type]


def test_the_reply_is_returned_after_several_leadership_checks_and_no_check_stays_armed() -> None:
    async def main() -> None:
        log = FakeLog()
        task = asyncio.create_task(_propose(log, 10.0))
        await asyncio.sleep(raft.LEADERSHIP_CHECK_S * 2.5)
        assert log.leader_checks >= 2 and not task.done()
        log.futures[0].set_result("reply")
        assert await task == "reply" and len(log.observed) == 1
        checks = log.leader_checks
        await asyncio.sleep(raft.LEADERSHIP_CHECK_S * 2)
        assert log.leader_checks == checks  # the timer was cancelled with the wait

    asyncio.run(main())


def test_a_lost_leadership_ends_the_wait_with_outcome_unknown_and_the_late_reply_is_ignored() -> None:
    async def main() -> None:
        log = FakeLog()
        task = asyncio.create_task(_propose(log, 10.0))
        await asyncio.sleep(raft.LEADERSHIP_CHECK_S / 2)
        log.leader = False
        with pytest.raises(OutcomeUnknown, match="lost leadership"):
            await asyncio.wait_for(task, raft.LEADERSHIP_CHECK_S * 20)
        assert log.futures[0].done() and not log.observed  # the outbox skips a done future

    asyncio.run(main())


def test_a_proposal_not_applied_in_time_ends_with_outcome_unknown() -> None:
    async def main() -> None:
        log = FakeLog()
        with pytest.raises(OutcomeUnknown, match="not applied within"):
            await asyncio.wait_for(_propose(log, raft.LEADERSHIP_CHECK_S * 1.5), 5.0)

    asyncio.run(main())
