# `make run` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_STAMP := $(VENV)/.system-packages
HOST ?= 0.0.0.0
PORT ?= 8000
RTMP_PORT ?= 1935

.PHONY: run test bench system-packages clean wheelhouse gpu-check fuzz-long

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# System packages the engine and end-to-end tests use (ffmpeg for RTMP/ffprobe; chromium and
# iproute2 for the WebRTC browser tests, which run in a loopback-only network namespace).
$(SYSTEM_STAMP): | $(BIN)/python
	@if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then \
		if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg chromium iproute2 >/dev/null; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg chromium iproute2 >/dev/null; fi; \
	fi
	@touch $@

# torch is pinned to the CPU build for this install; the Dockerfile installs the CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

system-packages: $(SYSTEM_STAMP)

run: $(STAMP) $(SYSTEM_STAMP)
	$(BIN)/livestream serve --host $(HOST) --port $(PORT) --rtmp-port $(RTMP_PORT)

# mypy first ([tool.mypy] in pyproject.toml): a type error fails the run before any test does.
test: $(STAMP) $(SYSTEM_STAMP)
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP) $(SYSTEM_STAMP)
	$(BIN)/python -m benchmarks

# The protocol fuzz tests (tests/reliability) with FUZZ_EXAMPLES examples each instead of CI's few.
FUZZ_EXAMPLES ?= 2000
fuzz-long: $(STAMP) $(SYSTEM_STAMP)
	LIVESTREAM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/reliability -k fuzz -q

# The GPU check (issue 32, docs/benchmarks.md "gpu_check"): `make wheelhouse` here downloads
# the wheels the GPU machine lacks into .whl/ (git-ignored, ~31 MB; carry it); `make gpu-check`
# there installs them and writes $(OUT)/gpu_check.json (out/ when OUT is unset), in < 8 minutes.
wheelhouse: $(STAMP)
	PYTHON=$(BIN)/python benchmarks/wheelhouse.sh .whl

gpu-check:
	benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV)
