"""The at-rest key file: read, written and watched; never in the log.

One JSON object, 0600, next to the Raft password (secrets/atrest.keys in a local cluster):

    {"version": 1, "current": 2, "token_key": "<base64>",
     "keys": {"1": "<base64 32 bytes>", "2": "<base64 32 bytes>"}}

`current` seals new values; every listed key still opens what it sealed, so old values
stay readable until rewritten. `token_key` keys token hashes and never rotates: changing
it would end every session at once (store/DESIGN.md, "Encryption at rest").

A running node picks up a changed file without a restart (`KeyRing`): it looks at the
file's mtime and size at most once per `RELOAD_CHECK_S`, and at once (rate limited) when
it meets a key id it does not hold. A file that does not parse leaves the keys in force
and is logged once per change: a half-edited file never takes a node down.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from .atrest import KEY_BYTES, MAX_KEY_ID, Keys
from .errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RELOAD_CHECK_S = 1.0
# An unknown key id makes the node look at once, but not more often than this.
FORCED_CHECK_S = 0.05


def _b64(raw: Any, what: str) -> bytes:
    if not isinstance(raw, str):
        raise ConfigError(f"{what} must be a base64 string")
    try:
        value = base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"{what} is not base64: {exc}") from None
    if len(value) != KEY_BYTES:
        raise ConfigError(f"{what} must decode to {KEY_BYTES} bytes, got {len(value)}")
    return value


def parse_keys(text: str, source: Path) -> Keys:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"key file {source} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        raise ConfigError(f"key file {source} is not a version-{FORMAT_VERSION} key file")
    keys_raw, current = raw.get("keys"), raw.get("current")
    if not isinstance(keys_raw, dict) or not keys_raw or type(current) is not int:
        raise ConfigError(f"key file {source} needs 'keys' (id -> key) and an integer 'current'")
    pairs: list[tuple[int, bytes]] = []
    for kid, value in keys_raw.items():
        if not (isinstance(kid, str) and kid.isdigit() and 1 <= int(kid) <= MAX_KEY_ID):
            raise ConfigError(f"key file {source}: key id {kid!r} is not 1 to {MAX_KEY_ID}")
        pairs.append((int(kid), _b64(value, f"key {kid} in {source}")))
    try:
        return Keys(tuple(sorted(pairs)), current, _b64(raw.get("token_key"), f"token_key in {source}"))
    except ValueError as exc:
        raise ConfigError(f"key file {source}: {exc}") from None


def read_keys(path: Path) -> Keys:
    """Read a key file, refusing one that group or others can read."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"key file {path} must not be readable by group or others (chmod 600)")
    return parse_keys(text, path)


def render(keys: Keys) -> str:
    return json.dumps(
        {
            "version": FORMAT_VERSION,
            "current": keys.current,
            "token_key": base64.b64encode(keys.token_key).decode("ascii"),
            "keys": {str(k): base64.b64encode(v).decode("ascii") for k, v in keys.keys},
        },
        indent=2,
    )


def write_keys(path: Path, keys: Keys) -> None:
    """Atomically (0600 temp file, fsync, rename): a watching node never reads half a file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render(keys) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_keys() -> Keys:
    return Keys(((1, secrets.token_bytes(KEY_BYTES)),), 1, secrets.token_bytes(KEY_BYTES))


def with_new_key(keys: Keys, key_id: int) -> Keys:
    """`keys` plus a fresh key under `key_id` (not current yet: rotation's first phase)."""
    if keys.key(key_id) is not None:
        return keys
    return Keys(
        tuple(sorted((*keys.keys, (key_id, secrets.token_bytes(KEY_BYTES))))), keys.current, keys.token_key
    )


def with_current(keys: Keys, key_id: int) -> Keys:
    return Keys(keys.keys, key_id, keys.token_key)


class KeyRing:
    """The keys of one node's key file, reloaded when the file changes (thread-safe)."""

    def __init__(self, path: Path, *, clock: Any = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._keys = read_keys(path)  # a node with an unreadable key file does not start
        self._seen = self._stamp()
        self._checked = clock()
        self._bad_stamp: tuple[int, int] | None = None
        self.reloads = 0

    @property
    def path(self) -> Path:
        return self._path

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def keys(self, *, force: bool = False) -> Keys:
        """The keys in force; looks at the file if due (or `force`, rate limited)."""
        now = self._clock()
        due = now - self._checked >= (FORCED_CHECK_S if force else RELOAD_CHECK_S)
        if due:
            with self._lock:
                self._checked = now
                stamp = self._stamp()
                if stamp is not None and stamp != self._seen and stamp != self._bad_stamp:
                    self._reload(stamp)
        return self._keys

    def _reload(self, stamp: tuple[int, int]) -> None:
        try:
            keys = read_keys(self._path)
        except ConfigError as exc:
            self._bad_stamp = stamp
            log.warning("key file changed but cannot be used; keeping the keys in force: %s", exc)
            return
        missing = sorted({k for k, _ in self._keys.keys} - {k for k, _ in keys.keys})
        if missing:
            log.warning(
                "key file no longer holds key id(s) %s: values sealed under them will not open", missing
            )
        if keys.token_key != self._keys.token_key:
            self._bad_stamp = stamp
            log.warning(
                "key file changed its token_key; refused (it would end every session): keeping the old"
            )
            return
        self._keys, self._seen = keys, stamp
        self.reloads += 1
        log.info("key file reloaded: key ids %s, current %d", [k for k, _ in keys.keys], keys.current)
