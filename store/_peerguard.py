"""The Raft port before authentication: what a stranger who reaches it can cost a node.

pysyncobj 0.3.17 reads a 4-byte length prefix before it authenticates anything, buffers
that many bytes, and grows its read buffer by `bytes` concatenation (quadratic: measured
2/4/8/16 MiB frames took 0.01/0.07/0.43/1.40 s of CPU). It accepts any number of
connections from anywhere, and closes an idle one only when it next has an event.
Measured before: 32 connections announcing 16 MiB and sending 4 MiB each raised a node's
RSS by 127 MiB and stayed open; one complete 16 MiB garbage frame cost the leader 2 s of
CPU and, in 2 of 6 trials, its leadership. This module bounds each of those:

- connections are accepted only from the addresses of the configured peers;
- until a connection has authenticated (pysyncobj's handshake: an encrypted random key,
  then the peer's address, each a few hundred bytes), a frame may be at most
  `HANDSHAKE_MAX_BYTES`; after it, `MAX_PEER_MESSAGE_BYTES` (appends and snapshot chunks);
- the read buffer is a bytearray extended in place (linear time);
- at most `MAX_UNAUTHENTICATED` connections may be unauthenticated at once, each for at
  most `UNAUTHENTICATED_DEADLINE_S`, swept on the tick thread whether or not it has events.

The send side gets the same treatment for speed: a bytearray write buffer drained from the
front in place (pysyncobj copies the rest of the buffer after every partial send) and zlib
level 0 instead of 3 (any level decodes everywhere, so mixed releases still talk). Measured
with `python -m bench.compare --targets sq-client --mixes write --clients 64`, two
alternating pairs: the busiest node's CPU per write 0.383/0.369 -> 0.340/0.333 ms (level 1;
level 0 and the one-pass open below: store/DESIGN.md, "Peer traffic per entry").
The receive side opens a Fernet token in one pass (`_open`), not pysyncobj's two.

`install()` patches pysyncobj's `TcpConnection` (its transport and server construct it by
name); `PeerGuard` is what `raft._DurableTransport` calls. Everything runs on the tick thread.
"""

from __future__ import annotations

import errno
import logging
import pickle
import socket
import struct
import zlib
from collections.abc import Iterable
from typing import Any

from cryptography.fernet import Fernet
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.tcp_connection import TcpConnection

log = logging.getLogger(__name__)

MAX_PEER_MESSAGE_BYTES = 16 * 1024 * 1024
HANDSHAKE_MAX_BYTES = 4096
MAX_UNAUTHENTICATED = 16
UNAUTHENTICATED_DEADLINE_S = 2.0
# A refused address or frame is logged at most this often (a flood must not flood the log).
LOG_EVERY_S = 5.0

_LIMIT_ATTR = "_sq_frame_limit"


def _frame_limit(conn: Any) -> int:
    return int(getattr(conn, _LIMIT_ATTR, MAX_PEER_MESSAGE_BYTES))


def _read(self: Any) -> bool:
    """TcpConnection.__processRead, extending a bytearray in place (linear, not quadratic)."""
    try:
        incoming = self._TcpConnection__socket.recv(self._TcpConnection__recvBufferSize)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            self.disconnect()
        return False
    if self._TcpConnection__socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or not incoming:
        self.disconnect()
        return False
    buffer = self._TcpConnection__readBuffer
    if not isinstance(buffer, bytearray):  # pysyncobj resets it to bytes() on (dis)connect
        buffer = self._TcpConnection__readBuffer = bytearray(buffer)
    buffer += incoming
    # pysyncobj reads until the socket is empty before it parses: stop at the first frame
    # over the cap (the parser drops the connection), not after megabytes of it.
    if len(buffer) >= 4:
        (length,) = struct.unpack_from("i", buffer, 0)
        if not 0 <= length <= _frame_limit(self):
            return False
    return True


def _parse(self: Any) -> Any:
    """TcpConnection.__processParseMessage with the frame caps, on a bytearray buffer."""
    buffer = self._TcpConnection__readBuffer
    if len(buffer) < 4:
        return None
    (length,) = struct.unpack_from("i", buffer, 0)
    limit = _frame_limit(self)
    if not 0 <= length <= limit:
        _say(
            f"frame:{limit}",
            "dropping a Raft peer connection: frame of %d bytes, at most %d here",
            length,
            limit,
        )
        self.disconnect()
        return None
    if len(buffer) - 4 < length:
        return None
    with memoryview(buffer) as view:
        data = bytes(view[4 : 4 + length])  # one copy
    del buffer[: 4 + length]
    try:
        if self.encryptor:
            timestamp, data = _open(self.encryptor, data)
            if timestamp < self.recvLastTimestamp:
                raise ValueError("replayed timestamp")
            self.recvLastTimestamp = timestamp
        message = pickle.loads(zlib.decompress(data))  # noqa: S301 - authenticated above
        if self.recvRandKey:
            rand_key, message = message
            if rand_key != self.recvRandKey:
                raise ValueError("wrong session key")
    except Exception:
        # pysyncobj drops the connection silently; so do we (an authentication failure).
        self.disconnect()
        return None
    return message


def _open(encryptor: Any, token: bytes) -> tuple[int, bytes]:
    """A Fernet token's timestamp and plaintext, the signature checked before either is used.

    pysyncobj calls `extract_timestamp` and then `decrypt`: each base64-decodes the whole
    token and checks its HMAC, so a 25 KB append was decoded and authenticated twice
    (measured: ~100 us of the ~360 us a follower spent opening it). This does it once,
    with the steps `Fernet.decrypt` itself runs (`MultiFernet` calls the same two), so what
    is accepted or refused is unchanged: same format, same keys, same checks.
    """
    parse = getattr(Fernet, "_get_unverified_token_data", None)
    open_data = getattr(encryptor, "_decrypt_data", None)
    if parse is None or open_data is None:  # a cryptography release without them
        return int(encryptor.extract_timestamp(token)), bytes(encryptor.decrypt(token))
    timestamp, data = parse(token)
    return int(timestamp), bytes(open_data(data, timestamp, None))


_said: dict[str, float] = {}
# Keys include refused addresses: a bound, so many sources cannot grow it for months.
_SAID_MAX = 1024


def _say(key: str, text: str, *args: object) -> None:
    now = raft_clock()
    if len(_said) >= _SAID_MAX:
        _said.clear()
    if now - _said.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
        _said[key] = now
        log.warning(text, *args)


# zlib level for what this node sends: any level is valid zlib for every peer's decoder.
# pysyncobj's 3 cost the leader more CPU than the bytes it saved on a LAN, and so does 1:
# session values are sealed at rest (ciphertext does not compress), and level 1 spent
# 266 us on a 25 KB append that level 0 (stored blocks) frames in 51 us, per follower.
SEND_ZLIB_LEVEL = 0


def _send(self: Any, message: Any) -> None:
    """TcpConnection.send with a bytearray write buffer (pysyncobj's `bytes +=` copies it)."""
    if self.sendRandKey:
        message = (self.sendRandKey, message)
    data = zlib.compress(pickle.dumps(message), SEND_ZLIB_LEVEL)
    if self.encryptor:
        data = self.encryptor.encrypt_at_time(data, int(raft_clock()))
    buffer = self._TcpConnection__writeBuffer
    if not isinstance(buffer, bytearray):
        buffer = self._TcpConnection__writeBuffer = bytearray(buffer)
    buffer += struct.pack("i", len(data))
    buffer += data
    self._TcpConnection__trySendBuffer()


def _write(self: Any) -> bool:
    """TcpConnection.__processSend, dropping what was sent from the front in place."""
    buffer = self._TcpConnection__writeBuffer
    if not buffer:
        return False
    try:
        sent = self._TcpConnection__socket.send(buffer)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            self.disconnect()
        return False
    if sent < 0:
        self.disconnect()
        return False
    if sent == 0:
        return False
    if isinstance(buffer, bytearray):
        del buffer[:sent]
    else:
        self._TcpConnection__writeBuffer = buffer[sent:]
    return True


# pysyncobj's own, kept for the canary in tests/unit/test_peerguard.py.
ORIGINAL_PARSE = TcpConnection._TcpConnection__processParseMessage
ORIGINAL_READ = TcpConnection._TcpConnection__processRead


def install() -> None:
    """Patch TcpConnection once per process (pysyncobj 0.3.17's private names)."""
    if getattr(TcpConnection, "_sq_guarded", False):
        return
    TcpConnection._TcpConnection__processRead = _read
    TcpConnection._TcpConnection__processParseMessage = _parse
    TcpConnection.send = _send
    TcpConnection._TcpConnection__processSend = _write
    TcpConnection._sq_guarded = True


def resolve(addresses: Iterable[str]) -> frozenset[str]:
    """The IP addresses of "host:port" peers (a host may be a name)."""
    found: set[str] = set()
    for address in addresses:
        host = address.rsplit(":", 1)[0].strip("[]")
        try:
            found.update(str(info[4][0]) for info in socket.getaddrinfo(host, None))
        except OSError:
            log.warning("cannot resolve Raft peer host %s; connections from it are refused", host)
    return frozenset(found)


class PeerGuard:
    """Admission and deadlines for incoming Raft connections (called by the transport)."""

    def __init__(self, allowed_ips: frozenset[str]) -> None:
        self._allowed = allowed_ips
        self._accepted_at: dict[Any, float] = {}
        self.refused = {"address": 0, "too_many": 0, "deadline": 0}

    def allow_only(self, allowed_ips: frozenset[str]) -> None:
        """The members changed (a membership change, or a snapshot's members loaded)."""
        self._allowed = allowed_ips

    def admit(self, conn: Any, unauthenticated: int) -> bool:
        """A new incoming connection: False means it was closed at once."""
        try:
            ip = str(conn._TcpConnection__socket.getpeername()[0])
        except OSError:
            conn.disconnect()
            return False
        if ip not in self._allowed:
            self.refused["address"] += 1
            _say(f"address:{ip}", "refusing a Raft connection from %s: not a configured peer", ip)
            conn.disconnect()
            return False
        if unauthenticated >= MAX_UNAUTHENTICATED:
            self.refused["too_many"] += 1
            _say("too_many", "refusing a Raft connection: %d unauthenticated already", unauthenticated)
            conn.disconnect()
            return False
        setattr(conn, _LIMIT_ATTR, HANDSHAKE_MAX_BYTES)
        self._accepted_at[conn] = raft_clock()
        return True

    def authenticated(self, conn: Any) -> None:
        """The handshake completed: peer-sized frames from now on."""
        setattr(conn, _LIMIT_ATTR, MAX_PEER_MESSAGE_BYTES)
        self._accepted_at.pop(conn, None)

    def forget(self, conn: Any) -> None:
        self._accepted_at.pop(conn, None)

    def sweep(self, unauthenticated: Iterable[Any]) -> None:
        """Close connections that did not authenticate in time (events or not)."""
        now = raft_clock()
        for conn in list(unauthenticated):
            since = self._accepted_at.get(conn)
            if since is not None and now - since > UNAUTHENTICATED_DEADLINE_S:
                self.refused["deadline"] += 1
                _say(
                    "deadline",
                    "closing a Raft connection that did not authenticate within %.1f s",
                    UNAUTHENTICATED_DEADLINE_S,
                )
                self._accepted_at.pop(conn, None)
                conn.disconnect()
