"""What the lifecycle event ring costs `SessionMachine.apply` (the write path's pure part).

    .venv/bin/python bench/bench_apply_events.py [--ops 20000] [--rounds 7]

Applies the same pre-encoded entries (create with a principal and one 300-byte attribute,
update, rotate, delete: one event each) to a fresh machine, with the event ring off and on,
and prints the best round's microseconds per apply. Runs on a release without the ring too
(then only "off" is measured), so the figure before the change can be taken from main.
"""

from __future__ import annotations

import argparse
import hashlib
import time

from sessionquorum.store import commands as c
from sessionquorum.store.config import Limits
from sessionquorum.store.state import SessionMachine


def _entries(ops: int) -> list[bytes]:
    out: list[bytes] = []
    now = 1_000
    for i in range(ops // 4):
        old, new = hashlib.sha256(b"a%d" % i).digest(), hashlib.sha256(b"b%d" % i).digest()
        steps: list[c.Op] = [
            c.Create(old, f"h{i}", f"user{i % 500}", (("cart", b"x" * 300),), 1_800_000, 28_800_000),
            c.Update(old, (("cart", b"y" * 300),), (), None),
            c.Rotate(old, new, None),
            c.Delete(new, None),
        ]
        for op in steps:
            now += 1
            out.append(c.encode(c.Command(op, now_ms=now)))
    return out


def _round(entries: list[bytes], ring: bool) -> float:
    m = SessionMachine(Limits())
    if ring:
        m.apply(c.encode(c.Command(c.EnableEvents(65_536, 4 * 1024 * 1024), now_ms=1)))
    started = time.perf_counter()
    for entry in entries:
        m.apply(entry)
    return (time.perf_counter() - started) / len(entries) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    entries = _entries(args.ops)
    modes = [False, True] if hasattr(c, "EnableEvents") else [False]
    # Rounds interleave the modes, so a busy neighbour on a shared machine slows both alike.
    rounds: dict[bool, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            rounds[mode].append(_round(entries, mode))
    best = {mode: min(times) for mode, times in rounds.items()}
    for mode, us in best.items():
        print(
            f"ring {'on ' if mode else 'off'}: {us:.2f} us per apply "
            f"({len(entries)} applies, best of {args.rounds})"
        )
    if len(best) == 2:
        print(
            f"ring cost: {best[True] - best[False]:+.2f} us per apply ({best[True] / best[False] - 1:+.1%})"
        )


if __name__ == "__main__":
    main()
