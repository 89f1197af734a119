"""Redis as an anchor: one server on 127.0.0.1, the speed of a single unreplicated node.

create = SET key value EX ttl NX; validate = GET; update = SET key value EX ttl XX. Called
through redis-py's asyncio client (with the hiredis parser) and its connection pool: Redis
answers one request at a time per connection, so N concurrent tasks use up to N connections.
The server appends every write to its AOF without fsync, the durability class of
sessionquorum's journal (which pysyncobj does not fsync either).
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import redis
import redis.asyncio

from .procs import HOST, ServerProcess, free_ports, wait_until
from .tls import AnchorTLS
from .workload import OP_TIMEOUT_S, SESSION_TTL_S, MissingSession

START_TIMEOUT_S = 15.0
PING_TIMEOUT_S = 1.0
KEY_PREFIX = b"s/"
KEY_BYTES = 32


def redis_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """One redis-server in `root/redis`, configured by arguments only (no system config file)."""

    name = "redis"

    def __init__(self, root: Path, tls: AnchorTLS | None) -> None:
        self._dir = root / "redis"
        self._tls = tls
        self._proc: ServerProcess | None = None
        self.port = 0

    def start(self) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._dir.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)
        argv = [binary, "--bind", HOST, "--dir", str(self._dir), "--daemonize", "no",
                "--save", "", "--appendonly", "yes", "--appendfsync", "no"]  # fmt: skip
        if self._tls is None:
            argv += ["--port", str(self.port)]
        else:
            cert, key = (str(p) for p in self._tls.servers[0])
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert,
                     "--tls-key-file", key, "--tls-ca-cert-file", str(self._tls.ca),
                     "--tls-auth-clients", "yes"]  # fmt: skip
        self._proc = ServerProcess("redis", argv, self._dir / "redis.log")
        wait_until(self._answers, START_TIMEOUT_S, "redis to answer PING", self._proc.log)

    def client_kwargs(self) -> dict[str, object]:
        """Connection settings shared by the readiness probe and the target."""
        kwargs: dict[str, object] = {"host": HOST, "port": self.port, "socket_timeout": OP_TIMEOUT_S}
        if self._tls is not None:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=str(self._tls.ca),
                ssl_certfile=str(self._tls.client_cert),
                ssl_keyfile=str(self._tls.client_key),
            )
        return kwargs

    def _answers(self) -> bool:
        if self._proc is not None:
            self._proc.check_running()
        probe = redis.Redis(**{**self.client_kwargs(), "socket_timeout": PING_TIMEOUT_S})  # type: ignore[arg-type]
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False
        finally:
            probe.close()

    def leader_view(self) -> str:
        return "single server"

    def pids(self) -> dict[str, int]:
        return {"redis": self._proc.pid} if self._proc is not None and self._proc.running() else {}

    def stop(self) -> dict[str, int]:
        proc, self._proc = self._proc, None
        return {} if proc is None else {"redis": proc.stop()}


class RedisTarget:
    """redis.asyncio with its connection pool; tasks take a connection per call."""

    name = "redis"
    server = RedisServer.name

    def __init__(self, server: RedisServer, connections: int) -> None:
        self._server = server
        self._connections = connections
        self._redis: redis.asyncio.Redis | None = None

    async def open(self) -> None:
        """Connect, and fill the pool with as many connections as the most clients of any cell.

        redis-py builds a fresh SSLContext for each new connection (the system CA store and
        our certificates loaded again): ~0.1 s of CPU per connection here, 6.5 s for 64 at once.
        An application pays that once per connection at start-up, so it belongs here, before
        any cell, and not in the first cell that needs more connections than the pool holds.
        """
        self._redis = redis.asyncio.Redis(**self._server.client_kwargs())  # type: ignore[arg-type]
        pool = self._redis.connection_pool
        opened = [await pool.get_connection() for _ in range(self._connections)]  # type: ignore[no-untyped-call]
        for connection in opened:
            await pool.release(connection)
        await self._redis.ping()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _client(self) -> redis.asyncio.Redis:
        if self._redis is None:
            raise RuntimeError("open() first")
        return self._redis

    async def create(self, value: bytes) -> bytes:
        key = KEY_PREFIX + secrets.token_hex(KEY_BYTES).encode()
        if not await self._client().set(key, value, ex=SESSION_TTL_S, nx=True):
            raise RuntimeError(f"key collision on {key.decode()}")
        return key

    async def validate(self, key: bytes) -> None:
        if await self._client().get(key) is None:
            raise MissingSession(key.decode())

    async def update(self, key: bytes, value: bytes) -> None:
        if not await self._client().set(key, value, ex=SESSION_TTL_S, xx=True):
            raise MissingSession(key.decode())
