#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh on a GPU machine with torch but no network (the device image
# has torch, numpy, pillow, safetensors, tokenizers, pytest, onnxruntime, ... but not diffusers, a
# transformers as new as ours, pydantic, or pytest-asyncio). Downloads, with --no-deps, exactly the
# versions installed in our venv (so the GPU run uses what the tests here use), for CPython 3.12
# on x86-64 Linux, into .whl/ (git-ignored; `carry` it with the device tool). About 30 MB.
#
#   benchmarks/wheelhouse.sh [DIR]      # or: make wheelhouse
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-.venv/bin/python}
# Not on the device image (or older there than we need): transformers 5.25 wants
# huggingface_hub >= 2.4 (httpx2/httpcore2/truststore), regex >= 2025.10 and kernels.
# PyAV is left out (about 40 MB): the GPU check does not decode media.
PKGS=(diffusers transformers huggingface_hub httpx2 httpcore2 truststore hf-xet kernels regex click
      pydantic pydantic_core annotated-types typing-inspection pytest-asyncio)
mkdir -p "$DIR"
pins=()
for p in "${PKGS[@]}"; do
  pins+=("$p==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p")")
done
rm -f "$DIR"/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${pins[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
printf '%s\n' "${pins[@]}" > "$DIR/PINS.txt"
du -sh "$DIR"
