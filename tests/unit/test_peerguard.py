"""The Raft port's guard (store/_peerguard.py) on fake sockets: caps, linear reads, admission."""

from __future__ import annotations

import pickle
import struct
import zlib
from typing import Any

from cryptography.fernet import Fernet
from pysyncobj.poller import createPoller
from pysyncobj.tcp_connection import TcpConnection

from sessionquorum.store import _peerguard as guard


class FakeSocket:
    def __init__(self, chunks: list[bytes], peer: str = "127.0.0.1") -> None:
        self.chunks, self.peer = chunks, peer

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError(11, "again")
        return self.chunks.pop(0)

    def getsockopt(self, *args: Any) -> int:
        return 0

    def getpeername(self) -> tuple[str, int]:
        return (self.peer, 5555)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def _conn(chunks: list[bytes], peer: str = "127.0.0.1") -> Any:
    conn = TcpConnection(
        createPoller("auto"), socket=None, timeout=10.0, sendBufferSize=8192, recvBufferSize=8192
    )
    conn._TcpConnection__socket = FakeSocket(chunks, peer)
    conn.disconnected = 0

    def disconnect() -> None:
        conn.disconnected += 1

    conn.disconnect = disconnect
    return conn


def _announce(length: int, data: int) -> list[bytes]:
    body = struct.pack("i", length) + b"g" * data
    return [body[i : i + 8192] for i in range(0, len(body), 8192)]


def test_pysyncobj_buffers_a_16_mib_announcement_from_a_stranger_canary() -> None:
    conn = _conn(_announce(16 * 1024 * 1024, 64 * 1024))
    while guard.ORIGINAL_READ(conn):
        pass
    assert guard.ORIGINAL_PARSE(conn) is None  # waiting for the rest: it would buffer 16 MiB
    assert conn.disconnected == 0


def test_an_unauthenticated_connection_is_dropped_at_a_prefix_over_the_handshake_size() -> None:
    guard.install()
    conn = _conn(_announce(16 * 1024 * 1024, 64 * 1024))
    guard.PeerGuard(frozenset({"127.0.0.1"})).admit(conn, 0)
    conn._TcpConnection__processRead()
    assert conn._TcpConnection__processParseMessage() is None
    assert conn.disconnected == 1


def test_an_authenticated_peer_may_send_frames_up_to_the_peer_cap() -> None:
    guard.install()
    conn = _conn(_announce(8 * 1024 * 1024, 8192))
    peers = guard.PeerGuard(frozenset({"127.0.0.1"}))
    peers.admit(conn, 0)
    peers.authenticated(conn)
    conn._TcpConnection__processRead()
    assert conn._TcpConnection__processParseMessage() is None and conn.disconnected == 0  # waits


def test_reads_extend_one_buffer_in_place() -> None:
    # pysyncobj's `bytes +=` copies the whole buffer on every read: quadratic in the frame.
    guard.install()
    conn = _conn(_announce(1024 * 1024, 512 * 1024))
    conn._TcpConnection__processRead()
    first = conn._TcpConnection__readBuffer
    while conn._TcpConnection__processRead():
        pass
    assert conn._TcpConnection__readBuffer is first and isinstance(first, bytearray)
    assert len(first) == 4 + 512 * 1024


def test_admission_refuses_strangers_and_too_many_handshakes_at_once() -> None:
    peers = guard.PeerGuard(frozenset({"10.0.0.2"}))
    stranger = _conn([], peer="10.0.0.9")
    assert not peers.admit(stranger, 0) and stranger.disconnected == 1
    crowd = _conn([], peer="10.0.0.2")
    assert not peers.admit(crowd, guard.MAX_UNAUTHENTICATED) and crowd.disconnected == 1
    assert peers.refused == {"address": 1, "too_many": 1, "deadline": 0}


def test_a_handshake_that_takes_too_long_is_closed_by_the_sweep(monkeypatch: Any) -> None:
    peers = guard.PeerGuard(frozenset({"127.0.0.1"}))
    now = [100.0]
    monkeypatch.setattr(guard, "raft_clock", lambda: now[0])
    slow, quick = _conn([]), _conn([])
    peers.admit(slow, 0)
    peers.admit(quick, 1)
    peers.authenticated(quick)
    now[0] += guard.UNAUTHENTICATED_DEADLINE_S + 0.1
    peers.sweep([slow, quick])
    assert slow.disconnected == 1 and quick.disconnected == 0
    assert peers.refused["deadline"] == 1


class SendSocket(FakeSocket):
    """Accepts at most `step` bytes per send, like a socket whose buffer is nearly full."""

    def __init__(self, step: int) -> None:
        super().__init__([])
        self.step, self.wire = step, bytearray()

    def send(self, data: Any) -> int:
        taken = bytes(data[: self.step])
        self.wire += taken
        return len(taken)


def test_sent_frames_decode_with_pysyncobjs_own_reader_and_leave_in_place() -> None:
    guard.install()
    conn = _conn([])
    sock = SendSocket(step=1000)
    conn._TcpConnection__socket = sock
    messages = [{"type": "append_entries", "entries": [("x" * 5000, i, 1)]} for i in range(3)]
    for message in messages:
        conn.send(message)
    buffer = conn._TcpConnection__writeBuffer
    assert isinstance(buffer, bytearray)
    while conn._TcpConnection__processSend():
        pass
    assert conn._TcpConnection__writeBuffer is buffer and not buffer  # drained in place
    reader = _conn([bytes(sock.wire)])
    guard.ORIGINAL_READ(reader)
    decoded = []
    while (message := guard.ORIGINAL_PARSE(reader)) is not None:
        decoded.append(message)
    assert decoded == messages  # any zlib level is valid for an older peer's decoder


def _sealed_frames(encryptor: Any, messages: list[Any], at: list[int]) -> bytes:
    """Frames as pysyncobj's own sender writes them: pickle, zlib, Fernet at a timestamp."""
    wire = b""
    for message, timestamp in zip(messages, at, strict=True):
        token = encryptor.encrypt_at_time(zlib.compress(pickle.dumps(message), 3), timestamp)
        wire += struct.pack("i", len(token)) + token
    return wire


def _opened(conn: Any) -> list[Any]:
    while conn._TcpConnection__processRead():
        pass
    out = []
    while (message := conn._TcpConnection__processParseMessage()) is not None:
        out.append(message)
    return out


def test_encrypted_frames_open_in_one_pass_and_a_replayed_or_forged_one_drops_the_connection() -> None:
    # _parse decodes and authenticates a token once (pysyncobj did both twice); what it
    # accepts and refuses must stay what Fernet's extract_timestamp + decrypt did.
    guard.install()
    key = Fernet(Fernet.generate_key())
    messages = [{"type": "append_entries", "entries": [(bytes(range(256)) * 20, i, 1)]} for i in range(3)]
    conn = _conn([_sealed_frames(key, messages, [10, 11, 11])])
    conn.encryptor, conn.recvLastTimestamp = key, 0
    assert _opened(conn) == messages and conn.disconnected == 0 and conn.recvLastTimestamp == 11

    replay = _conn([_sealed_frames(key, messages[:2], [11, 10])])  # the second goes back in time
    replay.encryptor, replay.recvLastTimestamp = key, 0
    assert _opened(replay) == messages[:1] and replay.disconnected == 1

    token = bytearray(_sealed_frames(key, messages[:1], [12])[4:])
    token[40] ^= 1  # still base64 (the flip keeps it in the alphabet or breaks decoding): refused
    forged = _conn([struct.pack("i", len(token)) + bytes(token)])
    forged.encryptor, forged.recvLastTimestamp = key, 0
    assert _opened(forged) == [] and forged.disconnected == 1

    stranger = _conn([_sealed_frames(Fernet(Fernet.generate_key()), messages[:1], [12])])
    stranger.encryptor, stranger.recvLastTimestamp = key, 0
    assert _opened(stranger) == [] and stranger.disconnected == 1


def test_the_one_pass_opener_agrees_with_fernets_public_calls() -> None:
    key = Fernet(Fernet.generate_key())
    for size in (0, 1, 15, 16, 17, 25_000):
        token = key.encrypt_at_time(b"p" * size, 1234)
        assert guard._open(key, token) == (key.extract_timestamp(token), key.decrypt(token))
