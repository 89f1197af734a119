"""sessionquorum under test: a real 3-node LocalCluster, reached two ways.

- `sq-grpc`: the generated stubs on one grpc.aio channel per node, as the fastest possible
  client would call them (what the server can do, without client overhead): writes to the
  leader, linearizable reads to the leader or, with `--sq-reads any`, to each node in turn.
- `sq-client`: the public synchronous SessionClient, shared by a pool of threads, as a
  threaded web application uses it (what an application gets).
- `sq-async`: the public AsyncSessionClient, shared by asyncio tasks, as an ASGI
  application uses it; against `sq-grpc` it shows what the client's routing, retries,
  request ids and coalescing cost (or save) on the same event loop.

Both pay mutual TLS, as every sessionquorum client must.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

from sessionquorum.client import AsyncSessionClient, NotFound, SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from .workload import OP_TIMEOUT_S, SESSION_LIFETIME_S, SESSION_TTL_S

NODES = 3
LEADER_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 30.0
CONVERGE_POLL_S = 0.2
ATTRIBUTE = b"data"
TOKEN_HASH_BYTES = 32
CLIENT_ID_BYTES = 16


class SessionquorumServer:
    """The three node processes (LocalCluster) in `root/sessionquorum`."""

    name = "sessionquorum"

    def __init__(self, root: Path, *, atrest: bool = True) -> None:
        overrides = None if atrest else {"atrest": {"enabled": False}}
        self.cluster = LocalCluster(root / "sessionquorum", nodes=NODES, overrides=overrides)
        self.leader_id = ""

    def prepare(self) -> None:
        """Create the directory and its TLS material (the anchors' certificates come from it)."""
        self.cluster.prepare()

    def start(self) -> None:
        self.cluster.start()
        # leader_id() counts a leader only once it accepts writes (its limits are seeded).
        self.leader_id = self.cluster.wait_for_leader(LEADER_TIMEOUT_S)

    def pids(self) -> dict[str, int]:
        return {n: pid for n in self.cluster.node_ids if (pid := self.cluster.pid(n)) is not None}

    def leader_view(self) -> str:
        """The agreed leader and its term, e.g. "n2 (term 1)": a change during a run shows here."""
        leader = self.cluster.leader_id()
        status = None if leader is None else self.cluster.status(leader)
        return f"{leader or 'none'} (term {'?' if status is None else status.term})"

    def replicas(self) -> str:
        """Whether the nodes hold identical state once they applied the same log.

        Checked after the load because a benchmark is the heaviest replication traffic we run;
        anything but "identical" is a correctness bug, not a performance figure.
        """
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        seen = "no answer"
        while time.monotonic() < deadline:
            statuses = self.cluster.statuses(digest=True)
            answered = {n: s for n, s in statuses.items() if s is not None}
            if len(answered) == len(statuses):
                applied = {n: s.last_applied for n, s in answered.items()}
                digests = {n: s.state_digest[:12] for n, s in answered.items()}
                seen = f"last_applied {applied}, digests {digests}"
                if len(set(applied.values())) == 1:
                    return ("identical" if len(set(digests.values())) == 1 else "DIVERGED") + f": {seen}"
            time.sleep(CONVERGE_POLL_S)
        return f"UNKNOWN (no common last_applied within {CONVERGE_TIMEOUT_S:.0f} s): {seen}"

    def stop(self) -> dict[str, int]:
        return self.cluster.stop()

    def credentials(self) -> grpc.ChannelCredentials:
        tls = self.cluster.tls_files
        return grpc.ssl_channel_credentials(
            root_certificates=tls.ca.read_bytes(),
            private_key=tls.key.read_bytes(),
            certificate_chain=tls.cert.read_bytes(),
        )


@dataclass(slots=True)
class _Lane:
    """A request-id lane: one call in flight per client id (see client/_lanes.py for why)."""

    client_id: bytes
    next_sequence: int


class SqGrpcTarget:
    """Raw grpc.aio stubs on one channel per node; tasks share the channels."""

    name = "sq-grpc"
    server = SessionquorumServer.name

    def __init__(self, server: SessionquorumServer, reads: str = "leader") -> None:
        self._server = server
        self._reads_anywhere = reads == "any"
        self._channels: list[grpc.aio.Channel] = []
        self._stub: pb_grpc.SessionStoreAsyncStub | None = None
        self._read_stubs: list[pb_grpc.SessionStoreAsyncStub] = []
        self._turn = 0
        self._lanes: list[_Lane] = []
        self._epoch_ms = 0

    async def open(self) -> None:
        cluster = self._server.cluster
        for node in cluster.node_ids:
            channel = grpc.aio.secure_channel(cluster.grpc_address(node), self._server.credentials())
            self._channels.append(channel)
            stub = pb_grpc.SessionStoreStub(channel)
            if node == self._server.leader_id:
                self._stub = stub
            if self._reads_anywhere or node == self._server.leader_id:
                self._read_stubs.append(stub)
        assert self._stub is not None
        # A new client id must carry the cluster's time it learned first (the dedup rules in
        # proto/sessionquorum.proto); one Status call gives it for every lane.
        status = await self._stub.Status(pb.StatusRequest(), timeout=OP_TIMEOUT_S)
        self._epoch_ms = status.replicated_now_ms

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def _stub_or_fail(self) -> pb_grpc.SessionStoreAsyncStub:
        if self._stub is None:
            raise RuntimeError("open() first")
        return self._stub

    def _lease(self) -> _Lane:
        # One event loop, no await in between: a plain list is a safe free list here.
        return self._lanes.pop() if self._lanes else _Lane(secrets.token_bytes(CLIENT_ID_BYTES), 1)

    def _request_id(self, lane: _Lane) -> pb.RequestId:
        return pb.RequestId(
            client_id=lane.client_id, sequence=lane.next_sequence, client_epoch_ms=self._epoch_ms
        )

    def _release(self, lane: _Lane) -> None:
        lane.next_sequence += 1
        self._lanes.append(lane)

    async def create(self, value: bytes) -> bytes:
        # The server sees only token hashes: a random 32-byte hash stands for a token's SHA-256.
        token_hash = secrets.token_bytes(TOKEN_HASH_BYTES)
        lane = self._lease()
        request = pb.CreateRequest(
            request_id=self._request_id(lane),
            token_hash=token_hash,
            attributes=[pb.Attribute(name=ATTRIBUTE, value=value)],
            idle_timeout_ms=SESSION_TTL_S * 1000,
            absolute_timeout_ms=SESSION_LIFETIME_S * 1000,
        )
        # A failed call drops its lane: an attempt may still be in flight under that client id.
        await self._stub_or_fail().Create(request, timeout=OP_TIMEOUT_S)
        self._release(lane)
        return token_hash

    async def validate(self, key: bytes) -> None:
        request = pb.ValidateRequest(token_hash=key, touch=False, consistency=pb.LINEARIZABLE)
        self._stub_or_fail()
        self._turn = (self._turn + 1) % len(self._read_stubs)
        await self._read_stubs[self._turn].Validate(request, timeout=OP_TIMEOUT_S)

    async def update(self, key: bytes, value: bytes) -> None:
        lane = self._lease()
        request = pb.UpdateRequest(
            request_id=self._request_id(lane), token_hash=key, set=[pb.Attribute(name=ATTRIBUTE, value=value)]
        )
        await self._stub_or_fail().Update(request, timeout=OP_TIMEOUT_S)
        self._release(lane)


class SqClientTarget:
    """The public SessionClient, one per target, shared by the driver's threads."""

    name = "sq-client"
    server = SessionquorumServer.name

    def __init__(self, server: SessionquorumServer, reads: str = "leader") -> None:
        self._server = server
        self._reads = reads
        self._client: SessionClient | None = None

    def open(self) -> None:
        tls = self._server.cluster.tls_files
        self._client = SessionClient(
            self._server.cluster.endpoints,
            tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key),
            read_from=self._reads,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _client_or_fail(self) -> SessionClient:
        if self._client is None:
            raise RuntimeError("open() first")
        return self._client

    def create(self, value: bytes) -> bytes:
        created = self._client_or_fail().create(
            attributes={ATTRIBUTE.decode(): value},
            idle_timeout_s=SESSION_TTL_S,
            absolute_timeout_s=SESSION_LIFETIME_S,
            timeout_s=OP_TIMEOUT_S,
        )
        return created.token.encode()

    def validate(self, key: bytes) -> None:
        self._client_or_fail().validate(key.decode(), timeout_s=OP_TIMEOUT_S)

    def update(self, key: bytes, value: bytes) -> None:
        self._client_or_fail().update(key.decode(), set={ATTRIBUTE.decode(): value}, timeout_s=OP_TIMEOUT_S)


class SqAsyncClientTarget:
    """The public AsyncSessionClient, one per target, shared by the driver's tasks."""

    name = "sq-async"
    server = SessionquorumServer.name

    def __init__(self, server: SessionquorumServer, reads: str = "leader") -> None:
        tls = server.cluster.tls_files
        # Made outside the loop on purpose (as an application's start-up code does); it binds
        # to the loop of its first call.
        self._client = AsyncSessionClient(
            server.cluster.endpoints, tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key), read_from=reads
        )

    async def open(self) -> None:
        # The leader is the first endpoint's guess only by chance: one read settles it (a
        # session operation: the app-role certificate may not list a principal without one).
        with contextlib.suppress(NotFound):
            await self._client.validate(secrets.token_urlsafe(32), timeout_s=OP_TIMEOUT_S)

    async def close(self) -> None:
        await self._client.close()

    async def create(self, value: bytes) -> bytes:
        created = await self._client.create(
            attributes={ATTRIBUTE.decode(): value},
            idle_timeout_s=SESSION_TTL_S,
            absolute_timeout_s=SESSION_LIFETIME_S,
            timeout_s=OP_TIMEOUT_S,
        )
        return created.token.encode()

    async def validate(self, key: bytes) -> None:
        await self._client.validate(key.decode(), timeout_s=OP_TIMEOUT_S)

    async def update(self, key: bytes, value: bytes) -> None:
        await self._client.update(key.decode(), set={ATTRIBUTE.decode(): value}, timeout_s=OP_TIMEOUT_S)
