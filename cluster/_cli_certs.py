"""`sessionquorum certs rotate --role app|admin` and `certs revoke FILE.pem` (see _certs.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from sessionquorum.store.authz import Role

from . import _certs
from ._cli_local import shown
from ._errors import ClusterError
from ._local import NodeCommand
from ._output import emit

_AFTER = (
    "nodes refuse it within about a second (they watch {file}; nodes on other machines: copy "
    "the file next to their ca.pem)"
)


def rotate(args: argparse.Namespace, node_command: NodeCommand) -> int:
    done = _certs.rotate(args.data_dir, Role(args.role))
    file = shown(_certs.revoked_file(args.data_dir))
    lines = [f"new {done.role.value} certificate: {shown(done.files.cert)}, key {shown(done.files.key)}"]
    if done.revoked_fingerprint is not None:
        lines.append(f"revoked the old one (SHA-256 {done.revoked_fingerprint}); " + _AFTER.format(file=file))
    data = {"role": done.role.value, "cert": str(done.files.cert), "key": str(done.files.key)}
    emit(args, {**data, "revoked": done.revoked_fingerprint}, "\n".join(lines))
    return 0


def revoke(args: argparse.Namespace, node_command: NodeCommand) -> int:
    path: Path = args.certificate
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot read a PEM certificate from {path}: {exc}") from exc
    found = _certs.revoke(args.data_dir, cert, f"revoked with `certs revoke {path.name}`")
    file = shown(_certs.revoked_file(args.data_dir))
    emit(args, {"revoked": found, "file": str(file)}, f"revoked SHA-256 {found}; " + _AFTER.format(file=file))
    return 0


Add = Callable[..., argparse.ArgumentParser]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], add: Add) -> None:
    certs = commands.add_parser("certs", help="rotate or revoke client certificates")
    actions: Any = certs.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotating = add(
        actions,
        "rotate",
        "new key and certificate for a role; the old one is revoked at once",
        rotate,
    )
    rotating.add_argument("--role", choices=[r.value for r in Role], required=True)
    revoking = add(actions, "revoke", "add a certificate to the cluster's revocation list", revoke)
    revoking.add_argument("certificate", type=Path, metavar="FILE.pem")
