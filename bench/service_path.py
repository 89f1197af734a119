"""CPU per request of the node's own Python request path, in process: no network, no Raft.

    python -m bench.service_path [--calls 3000] [--repeat 7] [--atrest on|off] [--authz on|off]

What one Validate, Create and Update cost in the service (store/service.py), with the role
check in front (store/authz.py, as registered on the node) and, when on, encryption at rest
(store/sealing.py): the stand-in log applies each proposal at once (so apply's cost is in
the figure, as on the leader) and confirms reads at once. gRPC, TLS and Raft are left out:
they are the same code in two trees being compared, while this part is ours. The figure is
thread CPU time per call, the minimum over `--repeat` runs of `--calls` calls: the least
disturbed by the machine's other load, so two trees (or two variants) compare on a busy
machine where end-to-end throughput does not (bench/README.md). Runs on older trees too:
what a tree lacks (sealing, roles, events, security operations) is left out there.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.store import commands as c
from sessionquorum.store.config import ClusterConfig, Limits, NodeConfig, NodeSpec, limits_to_pairs
from sessionquorum.store.service import SessionService
from sessionquorum.store.state import SessionMachine

_T = TypeVar("_T")
NOW_MS = 1_000_000_000
POOL = 1000
VALUE = b"v" * 300
TTL_MS = 3_600_000


class _Log:
    """Applies each proposal at once; every read index is confirmed at once."""

    def __init__(self) -> None:
        self.machine = SessionMachine(Limits())
        self._lock = threading.Lock()
        configure = getattr(c, "limits_to_wire", None) or limits_to_pairs
        self.apply(c.Configure(configure(Limits()), seed=True))
        self.apply(c.MemberLevel("n1", c.SUPPORTED_LEVEL))
        if hasattr(c, "EnableEvents"):  # what the node's duties switch on (store/duties.py)
            self.apply(c.EnableEvents(100_000, 64 * 1024 * 1024))
        if hasattr(c, "SecurityOn"):
            self.apply(c.SecurityOn())

    def apply(self, op: Any, **fields: Any) -> Any:
        with self._lock:
            return self.machine.apply(c.encode(c.Command(op, now_ms=NOW_MS, **fields)))

    async def propose(self, entry: bytes, timeout_s: float) -> Any:
        with self._lock:
            apply = getattr(self.machine, "apply_entry", self.machine.apply)
            return apply(entry)

    async def read_index(self) -> int:
        return 0

    def read(self, fn: Callable[[SessionMachine], _T]) -> _T:
        with self._lock:
            return fn(self.machine)

    def is_leader(self) -> bool:
        return True

    def term(self) -> int:
        return 1

    member_addresses = ("127.0.0.1:1",)  # n1's Raft address in this service's config

    def member_ids(self) -> list[str]:
        return ["n1"]

    def names(self) -> dict[str, Any]:
        return {}

    def grpc_address_of(self, raft_address: str | None) -> str | None:
        return None


class _Clock:
    def stamp(self, term: int) -> int:
        return NOW_MS


class _Context:
    """A grpc.aio context as far as the service and the role check read it."""

    def __init__(self, pem: bytes | None) -> None:
        self._auth = {"x509_pem_cert": [pem]} if pem is not None else {}

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    async def abort(self, code: Any, message: str) -> NoReturn:
        raise RuntimeError(f"{code}: {message}")


def _service(tmp: Path, atrest: bool) -> tuple[SessionService, _Log]:
    spec = NodeSpec("n1", "127.0.0.1:1", "127.0.0.1:0")
    cluster = ClusterConfig(nodes=(spec,), raft_password_file=tmp / "unused", tls_ca=None)
    config = NodeConfig(cluster=cluster, node=spec, data_dir=tmp)
    log = _Log()
    extra: dict[str, Any] = {}
    if "sealing" in inspect.signature(SessionService).parameters:
        from sessionquorum.store.keyfile import KeyRing, new_keys, write_keys
        from sessionquorum.store.sealing import Sealing

        ring = None
        if atrest:
            write_keys(tmp / "atrest.keys", new_keys())
            ring = KeyRing(tmp / "atrest.keys")
        extra["sealing"] = Sealing(ring)
    return SessionService(config, log, _Clock(), **extra), log  # type: ignore[arg-type]


def _guarded(service: SessionService, use_authz: bool) -> tuple[Callable[[str], Any], bytes | None]:
    """name -> the behaviour the node runs for it (with the role check when there is one)."""
    try:
        from sessionquorum.store import authz
    except ImportError:
        authz = None  # type: ignore[assignment]
    if authz is None or not use_authz:
        return (lambda name: getattr(service, name)), None
    from sessionquorum.cluster import _tls as tls_material

    ca = tls_material.create_ca()
    leaf = tls_material.issue_leaf(ca, "app", ("app",), server=False, role=authz.Role.APP)
    from cryptography.hazmat.primitives import serialization

    pem = leaf.cert.public_bytes(serialization.Encoding.PEM)
    authorizer = authz.Authorizer(frozenset({authz.Role.APP}), "n1", lambda method: None)
    import grpc

    def behaviour(name: str) -> Any:
        handler: Any = grpc.unary_unary_rpc_method_handler(getattr(service, name))
        if hasattr(authorizer, "guard"):
            return authorizer.guard(authz.SERVICE + name, handler).unary_unary
        return _through_interceptor(authorizer, authz.SERVICE + name, handler)

    return behaviour, pem


def _through_interceptor(interceptor: Any, method: str, handler: Any) -> Any:
    """What grpc.aio runs per call when a server interceptor is installed (grpc's
    _run_interceptor: a continuation partial and two coroutines), then the wrapped handler."""
    import functools

    async def query(details: Any) -> Any:
        return handler

    async def run_interceptor(interceptors: Any, details: Any) -> Any:
        nxt = next(interceptors, None)
        if nxt is not None:
            return await nxt.intercept_service(functools.partial(run_interceptor, interceptors), details)
        return await query(details)

    class Details:
        def __init__(self) -> None:
            self.method = method
            self.invocation_metadata = ()

    async def behaviour(request: Any, context: Any) -> Any:
        wrapped = await run_interceptor(iter((interceptor,)), Details())
        return await wrapped.unary_unary(request, context)

    return behaviour


async def _measure(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    service, _ = _service(tmp, args.atrest == "on")
    behaviour, pem = _guarded(service, args.authz == "on")
    context = _Context(pem)
    create, validate, update = behaviour("Create"), behaviour("Validate"), behaviour("Update")
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(POOL)]
    sequence = 0

    def create_request(token_hash: bytes) -> pb.CreateRequest:
        nonlocal sequence
        sequence += 1
        r = pb.CreateRequest(
            token_hash=token_hash,
            attributes=[pb.Attribute(name=b"data", value=VALUE)],
            idle_timeout_ms=TTL_MS,
            absolute_timeout_ms=TTL_MS,
        )
        r.request_id.client_id, r.request_id.sequence = b"bench", sequence
        return r

    for h in hashes:
        await create(create_request(h), context)
    results: dict[str, float] = {}
    fresh = 0

    async def one_create(i: int) -> None:
        nonlocal fresh
        fresh += 1
        await create(create_request(hashlib.sha256(b"new" + fresh.to_bytes(8, "big")).digest()), context)

    async def one_validate(i: int) -> None:
        await validate(pb.ValidateRequest(token_hash=hashes[i % POOL], consistency=pb.LINEARIZABLE), context)

    async def one_update(i: int) -> None:
        nonlocal sequence
        sequence += 1
        r = pb.UpdateRequest(token_hash=hashes[i % POOL], set=[pb.Attribute(name=b"data", value=VALUE)])
        r.request_id.client_id, r.request_id.sequence = b"bench", sequence
        await update(r, context)

    for name, one in (("validate", one_validate), ("create", one_create), ("update", one_update)):
        best = float("inf")
        for _ in range(args.repeat):
            started = time.thread_time()
            for i in range(args.calls):
                await one(i)
            best = min(best, (time.thread_time() - started) / args.calls)
        results[name] = best * 1e6
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.service_path", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--atrest", choices=("on", "off"), default="on")
    parser.add_argument("--authz", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sq-service-path-") as tmp:
        results = asyncio.run(_measure(args, Path(tmp)))
    print(
        f"atrest={args.atrest} authz={args.authz}: "
        + ", ".join(f"{name} {us:.1f} us" for name, us in results.items())
        + f" (CPU per call, min of {args.repeat} x {args.calls})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
