#!/usr/bin/env bash
# The real-time diffusion numbers on an NVIDIA GPU in one call (issue 32; benchmarks/gpu_check.py
# says what it runs and the JSON it writes). On the device machine (torch, no network):
#
#   make wheelhouse                      # here, once: .whl/ (git-ignored, ~31 MB)
#   # device tool: run(command="benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#   benchmarks/gpu_check.sh [--out FILE] [--budget S]   # default: $OUT/gpu_check.json (or out/)
#   benchmarks/gpu_check.sh --device cpu --tiny         # the CPU dry run (the test suite's)
#
# Installs .whl/*.whl (if there) into a private target folder with --no-index, then runs
# `python -m benchmarks.gpu_check`. PYTHON picks the interpreter (default: python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHL=${GPU_CHECK_WHEELS:-.whl}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if compgen -G "$WHL/*.whl" >/dev/null; then
  SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
  t0=$(date +%s)
  timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl \
    || { echo "gpu_check: installing $WHL failed" >&2; exit 2; }
  echo "[gpu_check] installed $WHL in $(( $(date +%s) - t0 )) s" >&2
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "${1:-}" != "--child" ] && command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
fi
exec timeout 470 "$PY" -m benchmarks.gpu_check "$@"
