"""One node process: configuration, the Raft log, the gRPC server, the expiry sweeper.

    python -m sessionquorum.store --config cluster.json --node n1 [--data-dir DIR]

Runs in the foreground, logs to stderr, stops cleanly on SIGTERM or SIGINT (in-flight
calls get `server.grace_shutdown_s`, then Raft is shut down). Files it creates are 0600
in a 0700 data directory: pysyncobj's journal and dump hold pickle, so whoever can write
them runs code at the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from . import decoding, duties
from .clock import ProposerClock
from .commands import BASE_LEVEL
from .config import Limits, NodeConfig, load_node_config
from .errors import ConfigError
from .raft import ReplicatedLog
from .service import SessionService
from .state import SessionMachine

log = logging.getLogger("sessionquorum.node")

SERVICE = pb.DESCRIPTOR.services_by_name["SessionStore"]
SERVICE_NAME = SERVICE.full_name
GIL_SWITCH_INTERVAL_S = 0.0005


def _server_credentials(config: NodeConfig) -> grpc.ServerCredentials | None:
    cluster, node = config.cluster, config.node
    if cluster.tls_ca is None:
        return None
    assert node.tls_cert is not None and node.tls_key is not None
    try:
        return grpc.ssl_server_credentials(
            [(node.tls_key.read_bytes(), node.tls_cert.read_bytes())],
            root_certificates=cluster.tls_ca.read_bytes(),
            require_client_auth=cluster.tls_client_auth,
        )
    except OSError as exc:
        raise ConfigError(f"cannot read TLS material: {exc}") from exc


async def serve(config: NodeConfig) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(config.data_dir, 0o700)
    # The code's default limits until the log configures them (never this node's file:
    # replicas must apply the same rules; duties.seed_limits).
    machine = SessionMachine(Limits(), supported_level=config.command_level)
    clock = ProposerClock(config.cluster.server.clock_drift_ms)
    raft = ReplicatedLog(config, machine, on_applied=clock.observe)
    limit = config.cluster.server.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    service = SessionService(config, raft, clock)
    # Every request decoded safely: bytes that are not the message get INVALID_ARGUMENT.
    decoding.add_servicer(
        pb_grpc.add_SessionStoreServicer_to_server, service, SERVICE, server, service.refuse_undecodable
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    creds = _server_credentials(config)
    address = config.node.grpc_address
    if creds is None:
        log.warning("serving gRPC WITHOUT TLS on %s (insecure_no_tls is set)", address)
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, creds)
    for name in (SERVICE_NAME, ""):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    log.info(
        "node %s serving gRPC on %s, raft on %s (command level %d)",
        config.node.id,
        address,
        config.node.raft_address,
        config.command_level,
    )
    if config.cluster.server.unsafe_skip_read_barrier:
        log.warning(
            "UNSAFE: server.unsafe_skip_read_barrier is set: linearizable reads skip the read barrier "
            "and a deposed leader may serve stale data (a test setting, never for production)"
        )
    if config.command_level < BASE_LEVEL + 1:
        log.warning("acting as an older release: command level %d", config.command_level)

    async def on_ready() -> None:
        service.ready = True
        for name in (SERVICE_NAME, ""):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(duties.become_ready(raft, stop, on_ready)),
        asyncio.create_task(duties.advertise_level(config, raft, stop)),
        asyncio.create_task(duties.seed_limits(config, raft, clock, stop)),
        asyncio.create_task(duties.sweep_expired(config, raft, clock, stop)),
    ]
    await stop.wait()
    log.info("stopping node %s", config.node.id)
    await health.enter_graceful_shutdown()
    await server.stop(config.cluster.server.grace_shutdown_s)
    # A proposal in flight may wait for peers that are stopping too: do not wait for it.
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    raft.close()
    log.info("node %s stopped", config.node.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sessionquorum.store", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="the shared cluster config (JSON)")
    parser.add_argument("--node", required=True, help="this node's id in the config")
    parser.add_argument("--data-dir", type=Path, help="default: <config dir>/<node id>")
    parser.add_argument("--log-level", default=os.environ.get("SESSIONQUORUM_LOG_LEVEL", "INFO"))
    # For upgrade tests: apply only commands up to this level, as an older release would.
    parser.add_argument("--command-level", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {args.node} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.umask(0o077)  # every file this process creates: 0600, every folder: 0700
    # Two busy threads share the GIL: the event loop (gRPC) and pysyncobj's tick thread. A
    # thread woken by a socket waits for the other to release the GIL, up to the switch
    # interval (5 ms by default), on every Raft hop of a busy node.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        config = load_node_config(args.config, args.node, args.data_dir, args.command_level)
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"sessionquorum node: {exc}", file=sys.stderr)
        return 2
    return 0
