"""Generate the gRPC adapter's protobuf code from proto/, or check it is up to date.

    python tools/gen_proto.py           # rewrite fedgate/transport/grpc/proto/
    python tools/gen_proto.py --check   # exit 1 if regenerating would change anything

protoc names modules after the .proto path (``fedgate.v1``), which would collide with the
``fedgate`` package; the generated files are flattened into one subpackage and their
imports rewritten to point at it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "proto"
SOURCE = "fedgate/v1/fedgate.proto"
TARGET = ROOT / "fedgate" / "transport" / "grpc" / "proto"
PACKAGE = "fedgate.transport.grpc.proto"
BIN = Path(sys.executable).parent  # the plugins live beside the interpreter in the venv
INIT = '"""Generated from proto/fedgate/v1/fedgate.proto by tools/gen_proto.py. Do not edit."""\n'


def generate() -> dict[str, str]:
    """The generated files, by name, with imports rewritten into PACKAGE."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            str(PROTO_ROOT / SOURCE),
        ]
        subprocess.run(command, check=True)
        out = Path(tmp) / "fedgate" / "v1"
        files = {path.name: path.read_text() for path in sorted(out.iterdir()) if path.is_file()}
    files = {name: _rewrite(text) for name, text in files.items()}
    files["__init__.py"] = INIT
    return files


def _rewrite(text: str) -> str:
    text = re.sub(r"^from fedgate\.v1 import ", f"from {PACKAGE} import ", text, flags=re.M)
    return re.sub(r"^import fedgate\.v1\.(\w+)", rf"import {PACKAGE}.\1", text, flags=re.M)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the code is stale")
    args = parser.parse_args()
    files = generate()
    if args.check:
        current = {p.name: p.read_text() for p in TARGET.iterdir() if p.is_file()}
        if current != files:
            stale = sorted(
                set(current) ^ set(files) | {n for n in files if current.get(n) != files[n]}
            )
            print(
                f"generated protobuf code is stale: {', '.join(stale)}; run `make proto`",
                file=sys.stderr,
            )
            return 1
        print("generated protobuf code is up to date")
        return 0
    shutil.rmtree(TARGET, ignore_errors=True)
    TARGET.mkdir(parents=True)
    for name, text in files.items():
        (TARGET / name).write_text(text)
    print(f"wrote {', '.join(sorted(files))} to {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
