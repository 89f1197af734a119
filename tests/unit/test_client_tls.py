"""The client's TLS channels against a real in-process gRPC server with mutual TLS.

Certificates are made per test session with `cryptography` (EC P-256, fast), shaped like
the cluster's: node certificates name IP 127.0.0.1 and DNS localhost.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sessionquorum.client import SessionClient, TLSConfig, Unavailable
from sessionquorum.proto import sessionquorum_pb2 as pb
from sessionquorum.proto import sessionquorum_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> tuple[Pem, x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), key_pem), _name(subject), key


@dataclass(frozen=True)
class Pki:
    ca: bytes
    node: Pem  # names 127.0.0.1 and localhost, like the cluster's node certificates
    odd_node: Pem  # names only node1.internal: reachable by IP only with an override
    client: Pem


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca, ca_name, ca_key = _issue("sessionquorum test CA", None)
    issuer = (ca_name, ca_key)
    node, _, _ = _issue(
        "n1",
        issuer,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    odd, _, _ = _issue(
        "n1", issuer, sans=[x509.DNSName("node1.internal")], usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client, _, _ = _issue("web-frontend", issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(ca=ca.cert, node=node, odd_node=odd, client=client)


class ValidatingNode(pb_grpc.SessionStoreServicer):
    """Serves Validate only; the other methods keep the generated UNIMPLEMENTED answer."""

    def Validate(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ValidateResponse(session=pb.Session(handle="h1", version=1))


@pytest.fixture
def start_tls_node(pki: Pki) -> Iterator[Callable[[Pem], str]]:
    stops: list[tuple[grpc.Server, ThreadPoolExecutor]] = []

    def start(identity: Pem) -> str:
        executor = ThreadPoolExecutor(max_workers=4)
        server = grpc.server(executor)
        pb_grpc.add_SessionStoreServicer_to_server(ValidatingNode(), server)  # type: ignore[abstract]
        credentials = grpc.ssl_server_credentials(
            [(identity.key, identity.cert)], root_certificates=pki.ca, require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        stops.append((server, executor))
        return f"127.0.0.1:{port}"

    yield start
    for server, executor in stops:
        server.stop(grace=None).wait()
        executor.shutdown(wait=True)


def test_mutual_tls_from_pem_files_reaches_the_node(
    pki: Pki, start_tls_node: Callable[[Pem], str], tmp_path: Path
) -> None:
    address = start_tls_node(pki.node)
    (tmp_path / "ca.pem").write_bytes(pki.ca)
    (tmp_path / "client.pem").write_bytes(pki.client.cert)
    (tmp_path / "client.key").write_bytes(pki.client.key)
    tls = TLSConfig.from_files(tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key")

    with SessionClient([address], tls=tls, timeout_s=5.0) as client:
        assert client.validate("t").handle == "h1"


def test_server_name_override_verifies_a_certificate_for_another_name(
    pki: Pki, start_tls_node: Callable[[Pem], str]
) -> None:
    address = start_tls_node(pki.odd_node)
    tls = TLSConfig(pki.ca, pki.client.cert, pki.client.key, server_name_override="node1.internal")

    with SessionClient([address], tls=tls, timeout_s=5.0) as client:
        assert client.validate("t").handle == "h1"


def test_certificate_for_another_name_is_refused_without_override(
    pki: Pki, start_tls_node: Callable[[Pem], str]
) -> None:
    address = start_tls_node(pki.odd_node)
    tls = TLSConfig(pki.ca, pki.client.cert, pki.client.key)

    with SessionClient([address], tls=tls, timeout_s=0.3) as client, pytest.raises(Unavailable):
        client.validate("t")


def test_client_without_certificate_is_refused_by_mutual_tls(
    pki: Pki, start_tls_node: Callable[[Pem], str]
) -> None:
    address = start_tls_node(pki.node)

    with SessionClient([address], tls=TLSConfig(pki.ca), timeout_s=0.3) as client, pytest.raises(Unavailable):
        client.validate("t")


def test_tls_and_insecure_together_are_refused(pki: Pki) -> None:
    with pytest.raises(ValueError, match="contradict"):
        SessionClient(["127.0.0.1:1"], tls=TLSConfig(pki.ca), insecure=True)
