#!/usr/bin/env bash
# Regenerates the committed protobuf/gRPC modules from livestream/lp_rpc/lp_rpc.proto, so that
# neither the engine nor its tests need a compiler:
#   lp_rpc_pb2.py, lp_rpc_pb2.pyi, lp_rpc_pb2_grpc.py, lp_rpc_pb2_grpc.pyi
# with grpcio-tools 1.85 (protoc 35.1 / protobuf 7.35) and mypy-protobuf 5. Both are build-time
# tools only, installed here into the venv when missing: nothing at run time or test time imports
# them (the runtimes are grpcio and protobuf, pinned in pyproject.toml at least as new as these).
# Usage (repo root): bash livestream/lp_rpc/build.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
"$py" -m pip install -q "grpcio-tools>=1.85,<1.86" "mypy-protobuf>=5,<6"
cd "$root"
PATH="$(dirname "$py"):$PATH" "$py" -m grpc_tools.protoc -I. --python_out=. --mypy_out=. \
  --grpc_python_out=. --mypy_grpc_out=. livestream/lp_rpc/lp_rpc.proto
