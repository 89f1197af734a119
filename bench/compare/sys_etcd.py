"""etcd as an anchor: 3 members on 127.0.0.1, sessions as keys bound to a lease.

create = LeaseGrant(TTL) then Put with that lease (two Raft entries: what a session with an
expiry costs in etcd); validate = a linearizable Range; update = Put with ignore_lease, which
keeps the key's lease. Called through etcd's own gRPC API with the generated stubs that the
`aetcd` package ships, on ONE grpc.aio channel to the leader: the same client stack as
`sq-grpc`, so neither side is favoured by its client library.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import grpc
import grpc.aio
from aetcd.rpc import rpc_pb2, rpc_pb2_grpc  # type: ignore[import-untyped]

from .procs import HOST, ServerProcess, free_ports, wait_until
from .tls import AnchorTLS
from .workload import OP_TIMEOUT_S, SESSION_TTL_S, MissingSession

MEMBERS = 3
START_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 1.0
KEY_PREFIX = b"s/"
KEY_BYTES = 32


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def _credentials(tls: AnchorTLS) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.client_key.read_bytes(),
        certificate_chain=tls.client_cert.read_bytes(),
    )


class EtcdServer:
    """Three etcd members in `root/etcd/<member>`, each logging to its own file there."""

    name = "etcd"

    def __init__(self, root: Path, tls: AnchorTLS | None) -> None:
        self._root = root / "etcd"
        self._tls = tls
        self._procs: dict[str, ServerProcess] = {}
        self.client_addresses: dict[str, str] = {}
        self.leader_address = ""

    def start(self) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        ports = free_ports(2 * MEMBERS)
        scheme = "https" if self._tls is not None else "http"
        names = [f"e{i + 1}" for i in range(MEMBERS)]
        peer_urls = {n: f"{scheme}://{HOST}:{ports[MEMBERS + i]}" for i, n in enumerate(names)}
        initial = ",".join(f"{n}={url}" for n, url in peer_urls.items())
        token = f"sq-bench-{secrets.token_hex(4)}"  # members of another run can never join this one
        for i, name in enumerate(names):
            self.client_addresses[name] = f"{HOST}:{ports[i]}"
            client_url = f"{scheme}://{self.client_addresses[name]}"
            data_dir = self._root / name
            data_dir.mkdir(parents=True, exist_ok=True)
            argv = [binary, "--name", name, "--data-dir", str(data_dir / "data"),
                    "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                    "--listen-peer-urls", peer_urls[name], "--initial-advertise-peer-urls", peer_urls[name],
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token,
                    "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]  # fmt: skip
            if self._tls is not None:
                cert, key = (str(p) for p in self._tls.servers[i])
                ca = str(self._tls.ca)
                argv += ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
                         "--client-cert-auth", "--peer-cert-file", cert, "--peer-key-file", key,
                         "--peer-trusted-ca-file", ca, "--peer-client-cert-auth"]  # fmt: skip
            self._procs[name] = ServerProcess(f"etcd {name}", argv, data_dir / "etcd.log")
        wait_until(self._find_leader, START_TIMEOUT_S, "an etcd leader", self._procs[names[0]].log)

    def _channel(self, address: str) -> grpc.Channel:
        if self._tls is None:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, _credentials(self._tls))

    def _find_leader(self) -> bool:
        """True once every member answers Status and they name one leader (set leader_address)."""
        for proc in self._procs.values():
            proc.check_running()
        leaders: set[int] = set()
        member_address: dict[int, str] = {}
        for address in self.client_addresses.values():
            with self._channel(address) as channel:
                try:
                    status = rpc_pb2_grpc.MaintenanceStub(channel).Status(
                        rpc_pb2.StatusRequest(), timeout=STATUS_TIMEOUT_S
                    )
                except grpc.RpcError:
                    return False
            leaders.add(status.leader)
            member_address[status.header.member_id] = address
        if len(leaders) != 1 or (leader := leaders.pop()) not in member_address:
            return False
        self.leader_address = member_address[leader]
        return True

    def leader_view(self) -> str:
        if not self._find_leader():
            return "no agreed leader"
        name = next(n for n, a in self.client_addresses.items() if a == self.leader_address)
        return name

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self._procs.items() if p.running()}

    def stop(self) -> dict[str, int]:
        procs, self._procs = self._procs, {}
        return {name: proc.stop() for name, proc in procs.items()}

    def credentials(self) -> grpc.ChannelCredentials | None:
        return None if self._tls is None else _credentials(self._tls)


class EtcdTarget:
    """etcd's KV and Lease services through grpc.aio stubs on one channel to the leader."""

    name = "etcd"
    server = EtcdServer.name

    def __init__(self, server: EtcdServer) -> None:
        self._server = server
        self._channel: grpc.aio.Channel | None = None
        self._kv: rpc_pb2_grpc.KVStub | None = None
        self._lease: rpc_pb2_grpc.LeaseStub | None = None

    async def open(self) -> None:
        # The leader, as for sq-grpc: a follower would forward every write and read index to it.
        address = self._server.leader_address
        credentials = self._server.credentials()
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials)
        self._kv = rpc_pb2_grpc.KVStub(self._channel)
        self._lease = rpc_pb2_grpc.LeaseStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def _stubs(self) -> tuple[rpc_pb2_grpc.KVStub, rpc_pb2_grpc.LeaseStub]:
        if self._kv is None or self._lease is None:
            raise RuntimeError("open() first")
        return self._kv, self._lease

    async def create(self, value: bytes) -> bytes:
        kv, lease = self._stubs()
        key = KEY_PREFIX + secrets.token_hex(KEY_BYTES).encode()
        grant = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=SESSION_TTL_S), timeout=OP_TIMEOUT_S)
        await kv.Put(rpc_pb2.PutRequest(key=key, value=value, lease=grant.ID), timeout=OP_TIMEOUT_S)
        return key

    async def validate(self, key: bytes) -> None:
        kv, _ = self._stubs()
        # serializable=False (the default) is etcd's linearizable read: a ReadIndex round.
        response = await kv.Range(rpc_pb2.RangeRequest(key=key), timeout=OP_TIMEOUT_S)
        if not response.kvs:
            raise MissingSession(key.decode())

    async def update(self, key: bytes, value: bytes) -> None:
        kv, _ = self._stubs()
        await kv.Put(rpc_pb2.PutRequest(key=key, value=value, ignore_lease=True), timeout=OP_TIMEOUT_S)
