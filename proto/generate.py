"""Regenerate the checked-in gRPC code from sessionquorum.proto.

`python proto/generate.py` rewrites the generated modules; `--check` regenerates into
a temporary folder and exits 1 if the checked-in files differ (CI runs this, as etcd's
verify_genproto.sh does), so the contract and the code cannot drift apart.

The proto is mapped to the virtual path `sessionquorum/proto/` so that the generated
`_grpc` module imports `sessionquorum.proto.sessionquorum_pb2`, the installed name.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
GENERATED = (
    "sessionquorum_pb2.py",
    "sessionquorum_pb2.pyi",
    "sessionquorum_pb2_grpc.py",
    "sessionquorum_pb2_grpc.pyi",
)


def _plugin(name: str) -> str:
    """mypy-protobuf's plugins live beside this interpreter (the project's venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} not found next to {sys.executable}: install the dev extras")
    return str(path)


def generate(out_root: Path) -> Path:
    """Run protoc into out_root; return the folder holding the generated files."""
    args = [
        "protoc",
        f"--proto_path=sessionquorum/proto={HERE}",
        f"--python_out={out_root}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        f"--grpc_python_out={out_root}",
        "sessionquorum/proto/sessionquorum.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return out_root / "sessionquorum" / "proto"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        stale = [
            name
            for name in GENERATED
            if not (HERE / name).exists() or not filecmp.cmp(produced / name, HERE / name, shallow=False)
        ]
        if check:
            if stale:
                print(f"generated code is out of date: {', '.join(stale)}; run: python proto/generate.py")
                return 1
            print("generated code is up to date")
            return 0
        for name in GENERATED:
            shutil.copyfile(produced / name, HERE / name)
        print(f"wrote {', '.join(GENERATED)}")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
