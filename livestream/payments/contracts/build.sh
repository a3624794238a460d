#!/usr/bin/env bash
# Rebuilds what livestream/payments commits so that tests need no compiler:
#   contracts/TicketBroker.json   from TicketBroker.sol, with the npm `solc` package (0.8.28)
#   lp_rpc_pb2.py, lp_rpc_pb2.pyi from lp_rpc.proto, with grpcio-tools and mypy-protobuf
# Usage (repo root): bash livestream/payments/contracts/build.sh [contract|proto|all]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
what="${1:-all}"
py="${PYTHON:-$root/.venv/bin/python}"

if [[ "$what" == contract || "$what" == all ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm init -y >/dev/null && npm install --silent solc@0.8.28 >/dev/null)
  SOLC_MODULE_DIR="$tmp/node_modules" node "$here/compile.mjs"
fi

if [[ "$what" == proto || "$what" == all ]]; then
  "$py" -m pip install -q "grpcio-tools>=1.85,<1.86" "mypy-protobuf>=5,<6"
  (cd "$root" && PATH="$(dirname "$py"):$PATH" "$py" -m grpc_tools.protoc -I. --python_out=. --mypy_out=. \
    livestream/payments/lp_rpc.proto)
fi
