"""TLS material for a local cluster: one private CA, a certificate per node, one client cert.

A cluster's gRPC API is TLS-only with client certificates (secure by default), so a local
cluster needs its own small PKI. It is generated with `cryptography` instead of shelling out
to openssl: no external tool, and the same code runs in tests.

- The CA is EC P-256, valid 10 years, and may sign only end-entity certificates
  (path length 0). Its key is kept (0600) so more certificates can be issued later.
- Node certificates are valid for serverAuth *and* clientAuth: a node may one day call
  another node's gRPC API (leader forwarding) and must then present a client certificate.
  Their SANs always cover 127.0.0.1 and localhost plus the host of the node's gRPC address.
- Client certificates are clientAuth only, one per role (store/authz.py): the role is a
  SAN URI `sessionquorum:role:<role>`. They carry a DNS SAN too (their own name): RFC 5280
  verifiers (cryptography's among them) refuse a leaf without SANs.
- Leaf certificates never outlive the CA, and start 5 minutes in the past so a slightly
  slow clock on another machine does not reject a certificate just made.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sessionquorum.store.authz import Role, role_uri

CA_VALIDITY = dt.timedelta(days=3650)
CLOCK_SKEW = dt.timedelta(minutes=5)
KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644


@dataclass(frozen=True, slots=True)
class Issued:
    """A private key and the certificate for it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sessionquorum local cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(common_name: str = "sessionquorum local CA") -> Issued:
    """A self-signed CA that can sign leaf certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def _san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_leaf(
    ca: Issued, common_name: str, names: tuple[str, ...], *, server: bool, role: Role | None = None
) -> Issued:
    """A certificate signed by `ca` for clientAuth, and with `server` also serverAuth.

    `names` (IP addresses or DNS names) become the SANs: what a server certificate is
    checked against, and what verifiers require of a client certificate too. `role` (a
    client's) becomes a SAN URI the nodes authorize by.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + CA_VALIDITY, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    sans: list[x509.GeneralName] = []
    for name in names:
        entry = _san_entry(name)
        if entry not in sans:
            sans.append(entry)
    if role is not None:
        sans.append(x509.UniformResourceIdentifier(role_uri(role)))
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return Issued(key, builder.sign(ca.key, hashes.SHA256()))


def write_private(path: Path, data: bytes) -> None:
    """Write a secret so that it is 0600 from its first byte (never briefly world-readable).

    An existing file is replaced: its mode might be wider, and O_CREAT keeps an old mode.
    """
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    # The mode given to os.open is filtered by the umask; a secret must not depend on it.
    os.chmod(path, KEY_FILE_MODE)


def write_issued(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Write a certificate (0644: public) and its key (0600: unencrypted PKCS#8 PEM)."""
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_path, key_pem)
    cert_path.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, CERT_FILE_MODE)
