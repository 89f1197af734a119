"""The role certificates `init` issues, and the upgrade of a directory made before roles."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from sessionquorum.cluster import TLSFiles, open_cluster_dir, prepare_cluster_dir
from sessionquorum.store.authz import Role, roles_of


def _roles(path: Path) -> frozenset[Role] | None:
    return roles_of(x509.load_pem_x509_certificate(path.read_bytes()))


def test_init_issues_an_app_and_an_admin_certificate_with_private_keys(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path / "c", 3)
    assert _roles(prepared.tls.cert) == frozenset({Role.APP})
    assert _roles(prepared.admin.cert) == frozenset({Role.ADMIN})
    assert prepared.admin.cert.name == "admin.pem" and prepared.tls.cert.name == "client.pem"
    assert stat.S_IMODE(prepared.admin.key.stat().st_mode) == 0o600
    assert open_cluster_dir(tmp_path / "c").admin == prepared.admin
    for node in prepared.config.nodes:  # node certificates carry no role
        assert node.tls_cert is not None and _roles(node.tls_cert) is None


def test_a_directory_made_before_roles_gets_its_admin_certificate_on_init_and_falls_back_until_then(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "old"
    prepare_cluster_dir(data_dir, 3)
    admin = TLSFiles.admin_in_dir(data_dir)
    admin.cert.unlink()
    admin.key.unlink()
    before = open_cluster_dir(data_dir)
    assert before.admin_tls is None and before.admin == before.tls  # role-less or app: the nodes decide
    again = prepare_cluster_dir(data_dir, 3)  # `init` / `up` on the old directory
    assert not again.created and again.admin == admin
    assert _roles(admin.cert) == frozenset({Role.ADMIN})
    ca = x509.load_pem_x509_certificate(again.tls.ca.read_bytes())
    x509.load_pem_x509_certificate(admin.cert.read_bytes()).verify_directly_issued_by(ca)
