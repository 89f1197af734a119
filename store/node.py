"""One node process: configuration, the Raft log, the gRPC server, the expiry sweeper.

    python -m sessionquorum.store --config cluster.json --node n1 [--data-dir DIR] [--log-format json]

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

from . import authz, decoding, duties, logs
from .clock import ProposerClock
from .commands import BASE_LEVEL
from .config import LOG_FORMATS, Limits, NodeConfig, load_node_config, read_revoked
from .errors import ConfigError, StoreError
from .event_stream import EventFeed
from .keyfile import KeyRing
from .metrics import MetricsServer, NodeMetrics, ScrapeView
from .raft import ReplicatedLog
from .sealing import Sealing
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


class _Health:
    """What gRPC health says: SERVING only when ready (caught up) and a leader is heard."""

    def __init__(self, servicer: HealthServicer) -> None:
        self._servicer = servicer
        self.ready = False
        self.leader_heard = False

    @property
    def serving(self) -> bool:
        return self.ready and self.leader_heard

    async def publish(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in (SERVICE_NAME, ""):
            await self._servicer.set(name, status)


async def serve(config: NodeConfig, log_context: logs.NodeContext | None = None) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(config.data_dir, 0o700)
    # Read before anything starts: a node whose key file is unusable does not start.
    key_file = config.cluster.key_file_of(config.node)
    ring = KeyRing(key_file) if key_file is not None else None
    revoked_file = config.cluster.tls_revoked_file
    # Read before anything opens: a revocation list that does not parse stops the start.
    revoked = read_revoked(revoked_file) if revoked_file is not None else frozenset()
    # The code's default limits until the log configures them (never this node's file:
    # replicas must apply the same rules; duties.seed_limits).
    machine = SessionMachine(Limits(), supported_level=config.command_level)
    clock = ProposerClock(config.cluster.server.clock_drift_ms)
    feed = EventFeed(machine)
    feed.bind(asyncio.get_running_loop())

    def on_applied(now_ms: int) -> None:  # tick thread, after every apply
        clock.observe(now_ms)
        feed.poke()

    raft = ReplicatedLog(config, machine, on_applied=on_applied)
    if log_context is not None:
        log_context.term = raft.term
    health = HealthServicer()
    state = _Health(health)

    def scrape() -> ScrapeView:
        count, clients, events = raft.read(
            lambda m: (len(m.sessions), m.exactly_once_clients, m.event_counts())
        )
        return ScrapeView(
            raft=raft.status(),
            read_counts=raft.read_counts,
            sessions=count,
            exactly_once_clients=clients,
            events=events,
            ready=state.ready,
            serving=state.serving,
        )

    metrics = NodeMetrics(config.node.id, scrape)
    raft.observe_proposal, raft.observe_read_index = metrics.observe_proposal, metrics.observe_read_index
    service = SessionService(config, raft, clock, metrics, Sealing(ring), feed)

    def refused(method: str) -> None:
        metrics.permission_denied(method, "role")
        metrics.observe_request(method, "PERMISSION_DENIED", 0.0)

    # Every method of every service passes the role check first (store/authz.py).
    authorizer = authz.Authorizer(
        authz.roleless_roles(config.cluster.server.roleless_client_role),
        config.node.id,
        refused,
        enabled=not config.cluster.server.unsafe_skip_authorization,
    )
    authorizer.revoked = revoked
    limit = config.cluster.server.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    # Every servicer registers through it: each method handler is guarded (default deny).
    registry = authorizer.registry(server)
    metrics_server = None
    if config.node.metrics_address is not None:
        try:
            metrics_server = MetricsServer(metrics.registry, config.node.metrics_address)
        except OSError as exc:
            raft.close()
            raise ConfigError(f"cannot serve metrics on {config.node.metrics_address}: {exc}") from exc
        log.info("metrics on http://%s/metrics", metrics_server.address)
    # Every request decoded safely: bytes that are not the message get INVALID_ARGUMENT.
    decoding.add_servicer(
        pb_grpc.add_SessionStoreServicer_to_server, service, SERVICE, registry, service.refuse_undecodable
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, registry)
    creds = _server_credentials(config)
    address = config.node.grpc_address
    if creds is None:
        log.warning("serving gRPC WITHOUT TLS on %s (insecure_no_tls is set)", address)
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, creds)
    await state.publish()  # NOT_SERVING
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
    if config.cluster.server.unsafe_skip_authorization:
        log.warning(
            "UNSAFE: server.unsafe_skip_authorization is set: every client certificate may call every "
            "method (a test setting, never for production)"
        )
    if config.command_level < BASE_LEVEL + 1:
        log.warning("acting as an older release: command level %d", config.command_level)

    async def on_ready() -> None:
        service.ready = state.ready = True
        # Catching up meant hearing the leader: do not wait for watch_leader's next look.
        state.leader_heard |= raft.leader_heard_within(duties.leaderless_window_s(config))
        await state.publish()

    async def on_leader(heard: bool) -> None:
        state.leader_heard = heard
        feed.set_serving(heard)
        await state.publish()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(duties.become_ready(raft, stop, on_ready)),
        asyncio.create_task(duties.advertise_level(config, raft, stop)),
        asyncio.create_task(duties.seed_limits(config, raft, clock, stop)),
        asyncio.create_task(duties.enable_events(config, raft, clock, stop)),
        asyncio.create_task(duties.sweep_expired(config, raft, clock, stop)),
        asyncio.create_task(duties.switch_on_security_ops(config, raft, clock, stop)),
        asyncio.create_task(duties.watch_leader(config, raft, stop, on_leader)),
    ]
    if revoked_file is not None:
        tasks.append(asyncio.create_task(authz.watch_revocations(revoked_file, authorizer, stop)))
    await stop.wait()
    log.info("stopping node %s", config.node.id)
    await hand_over_before_stop(raft, config.cluster.raft.transfer_timeout_s)
    feed.close()  # event streams end cleanly now; their clients resume elsewhere
    await health.enter_graceful_shutdown()
    await server.stop(config.cluster.server.grace_shutdown_s)
    # A proposal in flight may wait for peers that are stopping too: do not wait for it.
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if metrics_server is not None:
        metrics_server.close()
    raft.close()
    log.info("node %s stopped", config.node.id)


async def hand_over_before_stop(raft: ReplicatedLog, timeout_s: float) -> None:
    """A leader asked to stop hands over first (bounded): its clients see one short pause
    instead of an election timeout. Failing is fine: the node stops anyway."""
    if not raft.is_leader():
        return
    try:
        leader = await raft.transfer_leadership(None, timeout_s)
    except StoreError as exc:
        log.warning("stopping without handing over leadership: %s", exc.message)
        return
    log.info("handed leadership over to %s before stopping", leader or "(not yet known)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sessionquorum.store", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="the shared cluster config (JSON)")
    parser.add_argument("--node", required=True, help="this node's id in the config")
    parser.add_argument("--data-dir", type=Path, help="default: <config dir>/<node id>")
    parser.add_argument("--log-level", default=os.environ.get("SESSIONQUORUM_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text or json (one object per line); default: server.log_format",
    )
    # For upgrade tests: apply only commands up to this level, as an older release would.
    parser.add_argument("--command-level", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    log_context = logs.configure(args.node, args.log_level, args.log_format or "text")
    os.umask(0o077)  # every file this process creates: 0600, every folder: 0700
    # Two busy threads share the GIL: the event loop (gRPC) and pysyncobj's tick thread. A
    # thread woken by a socket waits for the other to release the GIL, up to the switch
    # interval (5 ms by default), on every Raft hop of a busy node.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        config = load_node_config(args.config, args.node, args.data_dir, args.command_level)
        log_format = args.log_format or config.cluster.server.log_format
        if log_format != (args.log_format or "text"):
            log_context = logs.configure(args.node, args.log_level, log_format)
        asyncio.run(serve(config, log_context))
    except ConfigError as exc:
        print(f"sessionquorum node: {exc}", file=sys.stderr)
        return 2
    return 0
