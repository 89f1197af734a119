"""SnapshotSave on the node: one backup at a time, consistent at one log index, streamed.

How "consistent at one index" is guaranteed (store/DESIGN.md, "Backups"):
1. The service requires leadership, then a confirmed ReadIndex: the state about to be
   captured includes every write acknowledged before the save began (a deposed leader
   that still believes it leads cannot confirm, and the save fails UNAVAILABLE).
2. The capture is taken on the Raft tick thread after a tick's applies
   (`ReplicatedLog.capture_applied`), where the state holds exactly the entries up to
   pysyncobj's last-applied index: that index and the leader's term go into the meta.
3. The capture is a frozen shallow copy (immutable session records), serialized in pieces
   off the event loop while writes continue; later entries never reach it.

Bounded: one save per node (a second is refused RESOURCE_EXHAUSTED); pieces of about
1 MiB (snapshot_format.PIECE_BYTES) leave one at a time, each written to the stream before
the next is made (gRPC flow control), so a slow reader holds the node to one piece plus
the capture; a save that outlasts `SAVE_MAX_S` is ended.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator

from sessionquorum.proto import sessionquorum_pb2 as pb

from . import errors as e
from .backup import make_meta
from .clock import wall_ms
from .raft import ReplicatedLog
from .snapshot_format import Capture, serialize_in_pieces

log = logging.getLogger(__name__)

# One save may stream for at most this long (1 M sessions serialize in ~10 s).
SAVE_MAX_S = 600.0


class SnapshotSaves:
    """The node's save slot: at most one backup stream at a time."""

    def __init__(self, raft: ReplicatedLog, node_id: str, cluster_ca_sha256: str = "") -> None:
        self._raft = raft
        self._node_id = node_id
        self._cluster_ca = cluster_ca_sha256
        self._busy = False
        self.saves_refused = 0  # a test reads it: the second save met the slot taken

    async def begin(self) -> PreparedSave:
        """Take the slot, confirm the read index, capture; the caller checked leadership."""
        if self._busy:
            self.saves_refused += 1
            raise e.QuotaExceeded("a snapshot save is already running on this node (one at a time); retry")
        self._busy = True
        try:
            await self._raft.read_index()
            started = time.perf_counter()
            capture, index, term = await self._raft.capture_applied()
            meta = make_meta(
                capture,
                index=index,
                term=term,
                leader=self._node_id,
                saved_at_ms=wall_ms(),
                cluster_ca_sha256=self._cluster_ca,
            )
        except BaseException:
            self._busy = False
            raise
        log.info(
            "snapshot save: captured index %d (term %d, %d sessions) in %.3f s",
            index,
            term,
            len(capture.sessions),
            time.perf_counter() - started,
        )
        return PreparedSave(self, capture, meta, index)

    def release(self) -> None:
        self._busy = False


class PreparedSave:
    """A captured state, ready to stream; `chunks` releases the slot when it ends."""

    def __init__(self, owner: SnapshotSaves, capture: Capture, meta: bytes, index: int) -> None:
        self._owner = owner
        self._capture = capture
        self.meta = meta
        self.index = index

    async def chunks(self) -> AsyncIterator[pb.SnapshotChunk]:
        started = time.perf_counter()
        sent = 0
        try:
            async with asyncio.timeout(SAVE_MAX_S):
                yield pb.SnapshotChunk(meta=self.meta)
                sha = hashlib.sha256()
                pieces: Iterator[bytes] = serialize_in_pieces(self._capture)
                while True:
                    # Serialized in a worker thread: the event loop keeps serving requests.
                    piece = await asyncio.to_thread(next, pieces, None)
                    if piece is None:
                        break
                    sha.update(piece)
                    sent += len(piece)
                    yield pb.SnapshotChunk(data=piece)
                yield pb.SnapshotChunk(state_sha256=sha.digest(), state_bytes=sent)
            log.info(
                "snapshot save: index %d, %d state bytes streamed in %.3f s",
                self.index,
                sent,
                time.perf_counter() - started,
            )
        finally:
            self._capture = None  # type: ignore[assignment]  # free the copy even if the stream stalls
            self._owner.release()
