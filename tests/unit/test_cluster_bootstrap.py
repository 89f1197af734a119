"""The cluster directory: a config the node accepts, private files, distinct ports, a working PKI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from sessionquorum.cluster import ClusterError, prepare_cluster_dir
from sessionquorum.store.config import load_cluster_config, read_secret


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_prepare_fresh_dir_writes_config_the_loader_accepts(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path / "c", 3, overrides={"raft": {"election_min_s": 0.3}})

    config = load_cluster_config(tmp_path / "c" / "cluster.json")
    assert prepared.created
    assert config == prepared.config
    assert [n.id for n in config.nodes] == ["n1", "n2", "n3"]
    assert config.tls_client_auth
    assert config.raft.election_min_s == 0.3
    assert config.tls_ca == tmp_path / "c" / "tls" / "ca.pem"
    assert len(read_secret(config.raft_password_file)) >= 40
    for node in config.nodes:
        assert node.raft_address.startswith("127.0.0.1:")
        assert node.grpc_address.startswith("127.0.0.1:")


def test_prepare_fresh_dir_secrets_0600_dirs_0700(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path, 3)
    base = tmp_path.resolve()

    for d in ("secrets", "tls", "n1", "n2", "n3"):
        assert _mode(base / d) == 0o700, d
    keys = [prepared.config.raft_password_file, base / "secrets" / "ca.key", prepared.tls.key]
    keys += [n.tls_key for n in prepared.config.nodes if n.tls_key is not None]
    assert len(keys) == 6
    for key in keys:
        assert _mode(key) == 0o600, key


def test_prepare_five_nodes_every_port_distinct(tmp_path: Path) -> None:
    config = prepare_cluster_dir(tmp_path, 5).config

    ports = [a.rsplit(":", 1)[1] for n in config.nodes for a in (n.raft_address, n.grpc_address)]
    assert len(ports) == 10
    assert len(set(ports)) == 10


def test_prepare_node_certs_verify_against_ca_with_server_sans(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path, 3)
    assert prepared.config.tls_ca is not None
    ca = _cert(prepared.config.tls_ca)
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert ca_key.curve.name == "secp256r1"
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= dt.timedelta(days=3650)
    store = Store([ca])

    for node in prepared.config.nodes:
        assert node.tls_cert is not None
        leaf = _cert(node.tls_cert)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
        for name in (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")):
            chain = PolicyBuilder().store(store).build_server_verifier(name).verify(leaf, [])
            assert chain[-1] == ca


def test_prepare_client_cert_verifies_for_client_auth(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path, 3)
    ca = _cert(prepared.tls.ca)

    client = _cert(prepared.tls.cert)
    verified = PolicyBuilder().store(Store([ca])).build_client_verifier().verify(client, [])
    assert verified.chain[-1] == ca
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]


def test_prepare_existing_dir_reuses_config_and_material(tmp_path: Path) -> None:
    first = prepare_cluster_dir(tmp_path, 3, overrides={"limits": {"max_sessions_per_principal": 4}})
    config_bytes = first.config_path.read_bytes()
    ca_bytes = first.tls.ca.read_bytes()

    again = prepare_cluster_dir(tmp_path, 3)
    same_overrides = prepare_cluster_dir(tmp_path, 3, overrides={"limits": {"max_sessions_per_principal": 4}})

    assert not again.created
    assert again.config == first.config == same_overrides.config
    assert first.config_path.read_bytes() == config_bytes
    assert first.tls.ca.read_bytes() == ca_bytes


def test_prepare_existing_dir_other_node_count_refused(tmp_path: Path) -> None:
    prepare_cluster_dir(tmp_path, 3)

    with pytest.raises(ClusterError, match="holds a 3-node cluster, not 5"):
        prepare_cluster_dir(tmp_path, 5)


def test_prepare_existing_dir_other_overrides_refused(tmp_path: Path) -> None:
    prepare_cluster_dir(tmp_path, 3, overrides={"raft": {"election_min_s": 0.3}})

    with pytest.raises(ClusterError, match="made with overrides"):
        prepare_cluster_dir(tmp_path, 3, overrides={})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"raft": {"election_min_s": "fast"}}, "raft.election_min_s must be float"),
        ({"limits": {"max_sesions": 3}}, "unknown key"),
        ({"rfat": {"election_min_s": 0.3}}, "unknown override section"),
    ],
)
def test_prepare_bad_override_refused_before_writing(
    tmp_path: Path, overrides: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ClusterError, match=message):
        prepare_cluster_dir(tmp_path / "c", 3, overrides=overrides)

    assert not (tmp_path / "c").exists()


def test_prepare_incomplete_dir_refused(tmp_path: Path) -> None:
    prepared = prepare_cluster_dir(tmp_path, 3)
    prepared.tls.key.unlink()

    with pytest.raises(ClusterError, match="incomplete"):
        prepare_cluster_dir(tmp_path, 3)


def test_prepare_config_holds_relative_paths_only(tmp_path: Path) -> None:
    """The directory must stay usable when moved or mounted elsewhere."""
    prepared = prepare_cluster_dir(tmp_path, 3)
    raw = json.loads(prepared.config_path.read_text())

    paths = [raw["tls_ca"], raw["raft_password_file"]]
    paths += [n[k] for n in raw["nodes"] for k in ("tls_cert", "tls_key")]
    assert all(not Path(p).is_absolute() for p in paths)
