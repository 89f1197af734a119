"""TLS settings and the client's gRPC channels: one per endpoint, made on first use.

A gRPC channel already multiplexes any number of concurrent calls over one HTTP/2
connection and reconnects by itself, so the client keeps exactly one per node and lets
gRPC do connection management; it adds only leader routing on top (see _routing.py).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# gRPC's default reconnect backoff grows to 120 s: a node that restarted (and may now be
# the leader) would be reported UNAVAILABLE for up to two minutes. Elections take about
# a second, so reconnecting at least once a second keeps the channel as fresh as the cluster.
_INITIAL_RECONNECT_BACKOFF_MS = 100
_MAX_RECONNECT_BACKOFF_MS = 1000


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


class ChannelPool:
    """Thread-safe map endpoint -> (channel, stub), filled lazily, closed all at once."""

    def __init__(self, tls: TLSConfig | None, max_message_bytes: int) -> None:
        self._tls = tls
        self._options = self._channel_options(tls, max_message_bytes)
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[grpc.Channel, pb_grpc.SessionStoreStub]] = {}
        self._closed = False

    @staticmethod
    def _channel_options(tls: TLSConfig | None, max_message_bytes: int) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", _INITIAL_RECONNECT_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
        ]
        if tls is not None and tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", tls.server_name_override))
        return options

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
        if self._tls is None:
            logger.debug("opening plaintext channel to %s", endpoint)
            return grpc.insecure_channel(endpoint, options=self._options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self._tls.root_certificates,
            private_key=self._tls.private_key,
            certificate_chain=self._tls.certificate_chain,
        )
        logger.debug("opening TLS channel to %s", endpoint)
        return grpc.secure_channel(endpoint, credentials, options=self._options)

    def close(self) -> None:
        """Close every channel; calls still running on them end with CANCELLED."""
        with self._lock:
            self._closed = True
            channels = [channel for channel, _ in self._channels.values()]
            self._channels.clear()
        for channel in channels:
            channel.close()
