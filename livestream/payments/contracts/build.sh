#!/usr/bin/env bash
# Rebuilds what livestream/payments commits so that tests need no compiler:
#   contracts/TicketBroker.json   from TicketBroker.sol, with the npm `solc` package (0.8.28)
#   `proto`: the shared livestream/lp_rpc protobufs (lp_rpc_pb2*.py), by livestream/lp_rpc/build.sh
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
  PYTHON="$py" bash "$root/livestream/lp_rpc/build.sh"
fi
