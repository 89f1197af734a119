"""Revoking client certificates: the list's format, the role check, `certs rotate`/`revoke`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sessionquorum.cluster import _certs, prepare_cluster_dir
from sessionquorum.cluster import _tls as tls_material
from sessionquorum.cluster._cli import main
from sessionquorum.store import authz
from sessionquorum.store.authz import SERVICE, Identity, Role, refusal
from sessionquorum.store.config import REVOKED_MAX_BYTES, load_cluster_config, read_revoked
from sessionquorum.store.errors import ConfigError

PRINT = bytes(range(32))


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_revocation_list_reads_fingerprints_with_comments_and_colons_and_none_when_absent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "revoked.txt"
    assert read_revoked(path) == frozenset()
    colons = ":".join(f"{b:02X}" for b in PRINT[::-1])
    path.write_text(f"# a comment\n{PRINT.hex()}  # the app cert\n\n{colons}\n")
    assert read_revoked(path) == frozenset({PRINT, PRINT[::-1]})


@pytest.mark.parametrize("line", ["abc", "z" * 64, "00" * 33])
def test_revocation_list_with_a_line_that_is_no_fingerprint_is_refused_naming_the_line(
    tmp_path: Path, line: str
) -> None:
    path = tmp_path / "revoked.txt"
    path.write_text(f"{PRINT.hex()}\n{line}\n")
    with pytest.raises(ConfigError, match=r"revoked.txt:2: not a SHA-256 fingerprint"):
        read_revoked(path)


def test_revocation_list_over_its_bound_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    path.write_bytes(b"#" * (REVOKED_MAX_BYTES + 1))
    with pytest.raises(ConfigError, match="is over"):
        read_revoked(path)


def test_a_revoked_certificate_is_refused_whatever_its_role() -> None:
    admin = Identity("ops", frozenset({Role.ADMIN}), fingerprint=PRINT)
    assert refusal(admin, SERVICE + "Configure", object()) is None
    assert (
        refusal(admin, SERVICE + "Validate", object(), frozenset({PRINT}))
        == "the certificate of 'ops' is revoked"
    )


def test_the_revocation_list_defaults_to_beside_the_ca_file(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path / "c", 1)
    assert prepared.config.tls_revoked_file == tmp_path / "c" / "tls" / "revoked.txt"


def test_certs_rotate_replaces_the_role_certificate_and_revokes_the_old_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "c"
    prepared = prepare_cluster_dir(data_dir, 1)
    old = _cert(prepared.tls.cert)
    admin_before = prepared.admin.cert.read_bytes()
    assert main(["certs", "rotate", "--role", "app", "--data-dir", str(data_dir)]) == 0
    new = _cert(prepared.tls.cert)
    assert new != old and authz.roles_of(new) == frozenset({Role.APP})
    new.verify_directly_issued_by(_cert(prepared.tls.ca))
    assert prepared.tls.key.stat().st_mode & 0o777 == tls_material.KEY_FILE_MODE
    revoked = read_revoked(load_cluster_config(data_dir / "cluster.json").tls_revoked_file or Path())
    assert revoked == frozenset({old.fingerprint(hashes.SHA256())})
    assert prepared.admin.cert.read_bytes() == admin_before
    # Revoking again is a no-op; another certificate is added.
    assert _certs.revoke(data_dir, old, "again") == old.fingerprint(hashes.SHA256()).hex()
    assert main(["certs", "revoke", str(prepared.admin.cert), "--data-dir", str(data_dir)]) == 0
    assert len(read_revoked(data_dir / "tls" / "revoked.txt")) == 2


def test_a_running_node_picks_up_a_changed_list_and_keeps_the_old_one_when_the_new_does_not_parse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(authz, "REVOCATION_POLL_S", 0.01)
    path = tmp_path / "revoked.txt"
    authorizer = authz.Authorizer(frozenset({Role.APP}), "n1", lambda method: None)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(authz.watch_revocations(path, authorizer, stop))
        path.write_text(PRINT.hex() + "\n")
        for _ in range(500):
            if authorizer.revoked:
                break
            await asyncio.sleep(0.01)
        assert authorizer.revoked == frozenset({PRINT})
        path.write_text("not a fingerprint\n")
        for _ in range(500):
            if "keeping the previous revocation list" in caplog.text:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task

    with caplog.at_level(logging.INFO, logger="sessionquorum.store.authz"):
        asyncio.run(scenario())
    assert authorizer.revoked == frozenset({PRINT})
    assert "keeping the previous revocation list (1 revoked)" in caplog.text
