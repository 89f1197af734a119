"""The node's report of a token reuse met by a read (store/_reuse_report.py): bounded."""

from __future__ import annotations

import asyncio
from typing import Any

from sessionquorum.store import _reuse_report
from sessionquorum.store import commands as c
from sessionquorum.store.errors import OutcomeUnknown
from sessionquorum.store.replies import Code, Reply


class HeldLog:
    """A stand-in for ReplicatedLog whose proposals wait until released."""

    def __init__(self) -> None:
        self.entries: list[c.Command] = []
        self.release = asyncio.Event()
        self.fail = False

    async def propose_anywhere(self, entry: bytes, timeout_s: float) -> Reply:
        self.entries.append(c.decode(entry))
        await self.release.wait()
        if self.fail:
            raise OutcomeUnknown("not applied")
        return Reply(Code.OK, count=1, handles=("h1",))


def reporter(log: HeldLog) -> _reuse_report.ReuseReporter:
    fake: Any = log
    return _reuse_report.ReuseReporter(fake, 1.0)


def test_reports_are_one_per_hash_and_at_most_max_in_flight() -> None:
    async def scenario() -> tuple[int, int, int]:
        log = HeldLog()
        r = reporter(log)
        tasks = [asyncio.create_task(r.report(bytes([1]) * 32, 5)) for _ in range(10)]
        tasks += [
            asyncio.create_task(r.report(n.to_bytes(32, "big"), 5))
            for n in range(2, _reuse_report.MAX_IN_FLIGHT + 50)
        ]
        for _ in range(5):
            await asyncio.sleep(0)  # let every report reach its proposal (no timing involved)
        proposed = len(log.entries)
        log.release.set()
        await asyncio.gather(*tasks)
        return proposed, r.dropped, len(r._pending)

    proposed, dropped, pending = asyncio.run(scenario())
    assert proposed == _reuse_report.MAX_IN_FLIGHT
    assert dropped == 49  # (MAX_IN_FLIGHT + 48 distinct hashes + 1) - MAX_IN_FLIGHT
    assert pending == 0


def test_an_unconfirmed_report_never_raises_and_frees_its_slot() -> None:
    async def scenario() -> tuple[list[c.Command], int]:
        log = HeldLog()
        log.fail = True
        log.release.set()
        r = reporter(log)
        await r.report(b"\x07" * 32, 9)
        await r.report(b"\x07" * 32, 10)
        return log.entries, len(r._pending)

    entries, pending = asyncio.run(scenario())
    assert [e.op for e in entries] == [c.ReuseDetected(b"\x07" * 32)] * 2
    assert [e.now_ms for e in entries] == [9, 10] and pending == 0
