"""Regenerate blindsum/rpc/v1 from proto/blindsum/rpc/v1.

Usage: python scripts/gen_protos.py OUT_DIR

OUT_DIR receives *_pb2.py, *_pb2.pyi, *_pb2_grpc.py and *_pb2_grpc.pyi. The
proto folder mirrors the import path, so the generated imports need no rewriting.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = Path("blindsum/rpc/v1")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gen_protos.py OUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(argv[1])
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            print("protoc failed", file=sys.stderr)
            return 1
        out_dir.mkdir(parents=True, exist_ok=True)
        for generated in sorted((Path(tmp) / PACKAGE).iterdir()):
            shutil.copyfile(generated, out_dir / generated.name)
    init = out_dir / "__init__.py"
    if not init.exists():
        init.write_text(
            '"""Generated protobuf and gRPC code for blindsum.rpc.v1 (do not edit)."""\n'
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
