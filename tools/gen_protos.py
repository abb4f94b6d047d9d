"""Regenerate the Python stubs for protos/resplit/v1/*.proto.

Why a script rather than a bare protoc call: grpc_tools writes absolute
imports (``from resplit.v1 import common_pb2``); we rewrite them to
package-relative ones (``from . import common_pb2``) so the stubs do not
depend on where the package is installed, and the CI drift check can
regenerate into a scratch folder and compare byte for byte.

Usage: python tools/gen_protos.py [--out DIR]   (default: the repo root)
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "resplit/v1"
_ABSOLUTE = re.compile(r"^from resplit\.v1 import (\w+)", re.MULTILINE)
_INIT = '"""Generated protobuf and gRPC stubs (make proto). Do not edit."""\n'


def generate(out_root: Path) -> list[Path]:
    """Generate stubs under ``out_root/resplit/v1`` and return their paths."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE}")
    with tempfile.TemporaryDirectory() as tmp:
        grpc_include = Path(protoc.__file__).parent / "_proto"
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{grpc_include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        target = out_root / PACKAGE
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted((Path(tmp) / PACKAGE).iterdir()):
            text = _ABSOLUTE.sub(r"from . import \1", src.read_text())
            dst = target / src.name
            dst.write_text(text)
            written.append(dst)
        init = target / "__init__.py"
        init.write_text(_INIT)
        written.append(init)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root folder to write resplit/v1 into")
    args = parser.parse_args()
    if args.out == ROOT:
        stale = ROOT / PACKAGE
        if stale.exists():
            shutil.rmtree(stale)
    files = generate(args.out)
    print(f"wrote {len(files)} files under {args.out / PACKAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
