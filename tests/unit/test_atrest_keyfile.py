"""The key file (store/keyfile.py): 0600 or refused, reloaded on change, never crashing a node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sessionquorum.store import keyfile
from sessionquorum.store.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_written_key_file_is_0600_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "atrest.keys"
    keys = keyfile.new_keys()
    keyfile.write_keys(path, keys)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keyfile.read_keys(path) == keys


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "atrest.keys"
    keyfile.write_keys(path, keyfile.new_keys())
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        keyfile.read_keys(path)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        '{"version": 1, "current": 1, "keys": {}}',
        '{"version": 1, "current": 1, "keys": {"1": "AA=="}}',
    ],
)
def test_malformed_key_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        keyfile.parse_keys(text, tmp_path / "k")


def test_ring_reloads_a_rotated_file_once_the_check_is_due(tmp_path: Path) -> None:
    path, clock = tmp_path / "atrest.keys", Clock()
    keys = keyfile.new_keys()
    keyfile.write_keys(path, keys)
    ring = keyfile.KeyRing(path, clock=clock)
    rotated = keyfile.with_current(keyfile.with_new_key(keys, 2), 2)
    keyfile.write_keys(path, rotated)
    _touch_later(path)
    assert ring.keys().current == 1  # not due yet
    assert ring.keys(force=True).current == 1  # forced looks are rate limited too
    clock.now += keyfile.FORCED_CHECK_S
    assert ring.keys(force=True) == rotated
    assert ring.reloads == 1


def test_ring_keeps_its_keys_when_the_file_breaks_or_changes_its_token_key(tmp_path: Path) -> None:
    path, clock = tmp_path / "atrest.keys", Clock()
    keys = keyfile.new_keys()
    keyfile.write_keys(path, keys)
    ring = keyfile.KeyRing(path, clock=clock)
    path.write_text("{half a file")
    _touch_later(path)
    clock.now += keyfile.RELOAD_CHECK_S
    assert ring.keys() == keys
    keyfile.write_keys(path, keyfile.new_keys())  # another token key would end every session
    _touch_later(path)
    clock.now += keyfile.RELOAD_CHECK_S
    assert ring.keys() == keys
    assert ring.reloads == 0
