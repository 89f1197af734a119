"""TLS settings and the client's gRPC channels: one per endpoint, made on first use.

`ChannelPool` holds grpc channels for SessionClient's threads; `AsyncChannelPool` holds
grpc.aio channels for AsyncSessionClient, with the same options and credentials. An aio
channel belongs to the event loop it was made in, so that pool opens each channel at the
first call, inside the loop, never at construction.

A gRPC channel already multiplexes any number of concurrent calls over one HTTP/2
connection and reconnects by itself, so the client keeps exactly one per node and lets
gRPC do connection management; it adds only leader routing on top (see _routing.py).

After a fork (_fork.py) a child drops its parent's channels without closing them and opens
its own on first use. Each channel keeps its connections in a subchannel pool of its own
(`grpc.use_local_subchannel_pool`): with gRPC's default global pool, a channel the child
opens to the same address would pick up the parent's connection, whose socket the parent
still uses (measured with grpcio 1.85: the child's call fails UNAVAILABLE "Wrong file
descriptor generation"). This needs no GRPC_ENABLE_FORK_SUPPORT (see client/DESIGN.md).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

from . import _fork

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# gRPC's default reconnect backoff grows to 120 s: a node that restarted (and may now be
# the leader) would be reported UNAVAILABLE for up to two minutes. Elections take about
# a second, so reconnecting at least once a second keeps the channel as fresh as the cluster.
_INITIAL_RECONNECT_BACKOFF_MS = 100
_MAX_RECONNECT_BACKOFF_MS = 1000


# Measured with grpcio 1.85: in a child forked after the parent made grpc.aio calls, the
# child's first grpc.aio call hangs (with GRPC_ENABLE_FORK_SUPPORT=1 it crashes, SIGSEGV),
# however new its channel. A child forked before any call works normally.
_AIO_AFTER_FORK = (
    "this AsyncSessionClient made calls before the process forked, and grpc.aio cannot be used "
    "in a child forked after it ran; make the client in the worker, or call it only after the fork"
)


class ClientClosedError(RuntimeError):
    """The client was closed; no new attempt may start."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """PEM bytes for mutual TLS: the cluster's CA, and this client's chain and key.

    The key is kept out of repr so that logging a configuration cannot leak it.
    `server_name_override` is for connecting by an address the node certificate does not
    name (node certificates carry IP 127.0.0.1 and DNS localhost).
    """

    root_certificates: bytes
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate chain and its private key go together")

    @classmethod
    def from_files(
        cls,
        ca: str | os.PathLike[str],
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        *,
        server_name_override: str | None = None,
    ) -> TLSConfig:
        """Read the PEM files once, at construction, so a missing file fails early."""
        return cls(
            root_certificates=Path(ca).read_bytes(),
            certificate_chain=None if cert is None else Path(cert).read_bytes(),
            private_key=None if key is None else Path(key).read_bytes(),
            server_name_override=server_name_override,
        )


def _channel_options(tls: TLSConfig | None, max_message_bytes: int) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", _INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
        # Never share a connection with another channel, or a forked child with its parent.
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if tls is not None and tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", tls.server_name_override))
    return options


def _credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.certificate_chain,
    )


class ChannelPool:
    """Thread-safe map endpoint -> (channel, stub), filled lazily, closed all at once."""

    def __init__(self, tls: TLSConfig | None, max_message_bytes: int) -> None:
        self._tls = tls
        self._options = _channel_options(tls, max_message_bytes)
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[grpc.Channel, pb_grpc.SessionStoreStub]] = {}
        self._closed = False

    def stub(self, endpoint: str) -> pb_grpc.SessionStoreStub:
        with self._lock:
            if self._closed:
                raise ClientClosedError("the SessionClient is closed")
            entry = self._channels.get(endpoint)
            if entry is None:
                channel = self._open(endpoint)
                entry = (channel, pb_grpc.SessionStoreStub(channel))
                self._channels[endpoint] = entry
            return entry[1]

    def _open(self, endpoint: str) -> grpc.Channel:
        logger.debug("opening %s channel to %s", "plaintext" if self._tls is None else "TLS", endpoint)
        if self._tls is None:
            return grpc.insecure_channel(endpoint, options=self._options)
        return grpc.secure_channel(endpoint, _credentials(self._tls), options=self._options)

    def close(self) -> None:
        """Close every channel; calls still running on them end with CANCELLED."""
        with self._lock:
            self._closed = True
            channels = [channel for channel, _ in self._channels.values()]
            self._channels.clear()
        for channel in channels:
            channel.close()

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's channels (never closed here); reopen lazily."""
        self._lock = threading.Lock()
        for channel, _ in self._channels.values():
            _fork.abandon(channel)
        self._channels = {}


class AsyncChannelPool:
    """Map endpoint -> (grpc.aio channel, stub) for one event loop; filled lazily, closed at once.

    No lock: every method runs on the loop's thread, and none awaits while it holds state.
    """

    def __init__(self, tls: TLSConfig | None, max_message_bytes: int) -> None:
        self._tls = tls
        self._options = _channel_options(tls, max_message_bytes)
        self._channels: dict[str, tuple[grpc.aio.Channel, pb_grpc.SessionStoreAsyncStub]] = {}
        self._closed = False
        self._forked_after_use = False

    def stub(self, endpoint: str) -> pb_grpc.SessionStoreAsyncStub:
        entry = self._channels.get(endpoint)
        if entry is None:
            if self._closed:
                raise ClientClosedError("the AsyncSessionClient is closed")
            if self._forked_after_use:
                raise RuntimeError(_AIO_AFTER_FORK)
            logger.debug(
                "opening %s aio channel to %s", "plaintext" if self._tls is None else "TLS", endpoint
            )
            if self._tls is None:
                channel = grpc.aio.insecure_channel(endpoint, options=self._options)
            else:
                channel = grpc.aio.secure_channel(endpoint, _credentials(self._tls), options=self._options)
            entry = self._channels[endpoint] = (channel, pb_grpc.SessionStoreStub(channel))
        return entry[1]

    async def close(self) -> None:
        """Close every channel; calls still running on them end with CANCELLED."""
        self._closed = True
        channels = [channel for channel, _ in self._channels.values()]
        self._channels.clear()
        for channel in channels:
            await channel.close()

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's channels (never closed here).

        They belong to the parent's event loop, which does not run in the child anyway. If
        the parent had opened any, grpc.aio itself is unusable here (see _AIO_AFTER_FORK),
        so every later call fails at once with that explanation instead of hanging.
        """
        for channel, _ in self._channels.values():
            _fork.abandon(channel)
            self._forked_after_use = True
        self._channels = {}
