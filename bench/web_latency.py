"""Added latency per request of sessionquorum.web.asgi vs Starlette's built-in SessionMiddleware.

    .venv/bin/python bench/web_latency.py [--store cluster|inprocess] [--requests 2000]

One tiny Starlette app, two middlewares: Starlette's signed-cookie SessionMiddleware (the
data lives in the cookie; no I/O) and ours (the data lives in the store). Requests go
through httpx2's ASGITransport in one event loop (no sockets, no server), so the difference
is what the middleware adds: for ours, one linearizable validate per request carrying the
cookie, and one compare-and-set update when the request changed something. Two kinds of
request, timed one at a time after a warm-up: `read` (reads one attribute) and `write`
(increments a counter in the session). `--store cluster` (the default) starts a real 3-node
cluster with TLS (LocalCluster) and removes it after; `inprocess` uses the node's service
and state machine in this process (tests/web/inprocess_store.py), without Raft.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessions
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.web.inprocess_store

from sessionquorum.client import AsyncSessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster
from sessionquorum.web.asgi import SessionMiddleware as QuorumSessions
from tests.web.inprocess_store import InProcessStore

LEADER_TIMEOUT_S = 30.0
WARMUP = 200
COOKIE_NAMES = ("__Host-session", "session")


async def read(request: Request) -> Response:
    return PlainTextResponse(str(request.session.get("n", 0)))


async def write(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse(str(request.session["n"]))


def app_with(middleware: Middleware) -> Starlette:
    return Starlette(routes=[Route("/read", read), Route("/write", write)], middleware=[middleware])


async def timings(app: Starlette, requests: int) -> dict[str, list[float]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        await client.get("/write")  # the session exists from here on
        result: dict[str, list[float]] = {}
        for kind in ("read", "write"):
            for _ in range(WARMUP):
                await client.get(f"/{kind}")
            samples = []
            for _ in range(requests):
                start = time.perf_counter()
                response = await client.get(f"/{kind}")
                samples.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
            result[kind] = samples
    return result


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(client: AsyncSessionClient, requests: int) -> None:
    builtin = app_with(Middleware(StarletteSessions, secret_key="bench", https_only=True))
    ours = app_with(Middleware(QuorumSessions, client=client))
    base = await timings(builtin, requests)
    quorum = await timings(ours, requests)
    await client.close()
    print(f"{'request':8} {'middleware':28} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for kind in ("read", "write"):
        for name, samples in (
            ("starlette SessionMiddleware", base[kind]),
            ("sessionquorum.web.asgi", quorum[kind]),
        ):
            print(
                f"{kind:8} {name:28} {p(samples, 0.5):8.3f} {p(samples, 0.99):8.3f} "
                f"{statistics.fmean(samples):8.3f}"
            )
        added = p(quorum[kind], 0.5) - p(base[kind], 0.5)
        print(f"{kind:8} {'added (p50 difference)':28} {added:8.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=("cluster", "inprocess"), default="cluster")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per kind")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sq-web-bench-"))
    try:
        if args.store == "inprocess":
            store = InProcessStore(tmp)
            store.start()
            try:
                asyncio.run(measure(AsyncSessionClient([store.endpoint], insecure=True), args.requests))
            finally:
                store.stop()
        else:
            cluster = LocalCluster(tmp / "cluster", nodes=3)
            cluster.start()
            try:
                cluster.wait_for_leader(LEADER_TIMEOUT_S)
                files = cluster.tls_files
                tls = TLSConfig.from_files(files.ca, files.cert, files.key)
                asyncio.run(measure(AsyncSessionClient(list(cluster.endpoints), tls=tls), args.requests))
            finally:
                cluster.stop()
                cluster.close_channels()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
