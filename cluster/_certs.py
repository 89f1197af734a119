"""Client certificates after `init`: rotate a role's certificate, revoke any certificate.

gRPC's TLS in Python takes no CRL, and a certificate from the cluster CA stays valid for
up to 10 years, so retiring one means naming it in the cluster's revocation list
(`tls/revoked.txt` beside ca.pem, `store/config.py read_revoked`): the SHA-256 fingerprint
of its DER, one per line, with a comment saying what it was. Every node re-reads the file
within a second of a change (`store/authz.py watch_revocations`) and refuses the
certificate with PERMISSION_DENIED whatever its role. Nodes on other machines read their
own copy: copy the file there too.

`rotate` is for a leaked (or departing) role certificate: a fresh key and certificate from
the kept CA key replace the files in place, and the old one is revoked at once, so
applications still presenting it are refused until they load the new files.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sessionquorum.store.authz import Role
from sessionquorum.store.config import read_revoked
from sessionquorum.store.errors import ConfigError

from . import _tls
from ._bootstrap import ADMIN_NAME, CLIENT_NAME, TLSFiles, open_cluster_dir
from ._errors import ClusterError

REVOKED_FILE_MODE = 0o644  # fingerprints are public; nodes and operators read the file


@dataclass(frozen=True, slots=True)
class Rotated:
    role: Role
    files: TLSFiles
    revoked_fingerprint: str | None  # hex; None when there was no old certificate


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _role_files(data_dir: Path, role: Role) -> tuple[TLSFiles, str]:
    if role is Role.APP:
        return TLSFiles.in_dir(data_dir), CLIENT_NAME
    return TLSFiles.admin_in_dir(data_dir), ADMIN_NAME


def _ca(data_dir: Path, ca_pem: Path) -> _tls.Issued:
    ca_key = data_dir / "secrets" / "ca.key"
    try:
        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot load the cluster CA ({ca_key}, {ca_pem}): {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ClusterError(f"{ca_key} is not the EC key `init` writes")
    return _tls.Issued(key, cert)


def revoked_file(data_dir: Path) -> Path:
    path = open_cluster_dir(data_dir).config.tls_revoked_file
    if path is None:
        raise ClusterError("this cluster runs without TLS: there is nothing to revoke")
    return path


def revoke(data_dir: Path, cert: x509.Certificate, why: str) -> str:
    """Add `cert` to the cluster's revocation list (atomically); returns its fingerprint."""
    path = revoked_file(data_dir)
    try:
        read_revoked(path)  # never append to a list the nodes would refuse to load
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (ConfigError, OSError) as exc:
        raise ClusterError(f"cannot read the revocation list: {exc}") from exc
    found = fingerprint(cert)
    if found in text.lower():
        return found
    if text and not text.endswith("\n"):
        text += "\n"
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = str(names[0].value) if names else "(no common name)"
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    text += f"# {stamp} CN={name} serial={cert.serial_number:x}: {why}\n{found}\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, REVOKED_FILE_MODE)
    os.replace(tmp, path)  # a new inode: the nodes' watchers see the change at once
    return found


def rotate(data_dir: Path, role: Role) -> Rotated:
    """A fresh certificate for `role` in place of the old one, which is revoked."""
    data_dir = data_dir.resolve()
    files, name = _role_files(data_dir, role)
    ca = _ca(data_dir, files.ca)
    old = x509.load_pem_x509_certificate(files.cert.read_bytes()) if files.cert.exists() else None
    issued = _tls.issue_leaf(ca, name, (name,), server=False, role=role)
    tmp_cert, tmp_key = files.cert.with_suffix(".pem.tmp"), files.key.with_suffix(".key.tmp")
    _tls.write_issued(issued, tmp_cert, tmp_key)
    os.replace(tmp_key, files.key)
    os.replace(tmp_cert, files.cert)
    revoked = revoke(data_dir, old, f"{role.value} certificate replaced by `certs rotate`") if old else None
    return Rotated(role, files, revoked)
