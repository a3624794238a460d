# livestream runner image: a drop-in for livepeer/ai-runner under a go-livepeer orchestrator
# (see docs/orchestrator.md). One image runs every pipeline; the container's PIPELINE/MODEL_ID
# pick one, exactly as go-livepeer sets them:
#
#   docker build -t livestream .
#   docker run --gpus device=0 -p 8000:8000 -v $PWD/models:/models \
#     -e PIPELINE=text-to-image -e MODEL_ID=stabilityai/sd-turbo livestream
#   docker run --gpus device=0 -p 8000:8000 -v $PWD/models:/models \
#     -e PIPELINE=live-video-to-video -e MODEL_ID=streamdiffusion livestream
#
# Download weights ahead of time (and build engines) into the models folder, then exit:
#   docker run --rm -v $PWD/models:/models -e PREPARE_MODELS=1 \
#     -e PIPELINE=text-to-image -e MODEL_ID=stabilityai/sd-turbo livestream
#
# Without PIPELINE/MODEL_ID it serves every route and loads models on demand.
#
# Build targets (`docker build --target NAME`):
#   runner (default, last)  CUDA 12.8 + torch cu128 + TensorRT (NVIDIA's index) + every pipeline
#   llm                     the llm task on vLLM, whose pins (torch, transformers) conflict with
#                           the runner's; same as Dockerfile.llm
# Parler-TTS is not a target: its pins conflict too, and the text-to-speech pipeline does not
# load Parler models (docs/speech-and-vision.md).
#
# Ports: 8000 HTTP (runner API, /live, trickle at /ai/trickle/, WHIP/WHEP); 1935 RTMP ingest
# when enabled; WebRTC media on UDP ports the kernel picks. To publish a fixed UDP range, narrow
# the container's ephemeral range and publish it (docker-compose.yml does):
#   --sysctl net.ipv4.ip_local_port_range="50000 50199" -p 50000-50199:50000-50199/udp
# (or use --network host).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG VLLM_IMAGE=vllm/vllm-openai:latest

# --- llm: the vLLM backend in vLLM's own image (its torch/transformers pins) -------------------
FROM ${VLLM_IMAGE} AS llm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MODEL_DIR=/models \
    HUGGINGFACE_HUB_CACHE=/models \
    DIFFUSERS_CACHE=/models \
    PIPELINE=llm \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY livestream ./livestream
COPY pipelines ./pipelines
COPY trickle ./trickle
# vLLM (and its torch and transformers) are already installed; pip keeps them.
RUN pip install ".[llm-vllm]"
VOLUME /models
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD python3 -c "import json,os,sys,urllib.request as u; s=json.load(u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT','8000'), timeout=4))['status']; sys.exit(s == 'ERROR')"
ENTRYPOINT []
CMD ["livestream", "serve"]

# --- runner: the default image ----------------------------------------------------------------
FROM ${CUDA_IMAGE} AS runner

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ffmpeg: RTMP/ffprobe; build-essential + python3-dev: torch.compile (Inductor/Triton) compiles
# C at run time; curl: the healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential ffmpeg curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && pip install --upgrade pip

# The CUDA build of torch first, so the project's `torch` requirement is already met.
RUN pip install "torch==2.13.*" --index-url https://download.pytorch.org/whl/cu128
# TensorRT for CUDA 12 from NVIDIA's index (the `tensorrt` meta package now means CUDA 13),
# plus the rest of the `gpu` extra (NVML for /hardware/*, ONNX export).
RUN pip install --extra-index-url https://pypi.nvidia.com "tensorrt-cu12>=10" "nvidia-ml-py>=12" "onnx>=1.16"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY livestream ./livestream
COPY pipelines ./pipelines
COPY trickle ./trickle
RUN pip install .

# Non-root; /models is the orchestrator's models folder (bind-mounted: make it writable for
# uid 1000 to prepare models into it, readable is enough to serve).
RUN useradd --create-home --uid 1000 runner \
    && mkdir -p /models \
    && chown runner:runner /models
USER runner

# ai-runner's variables: MODEL_DIR and the Hugging Face caches are all /models, so a folder
# filled by `hf download --cache-dir models` (ai-runner's dl_checkpoints.sh) works as is.
ENV MODEL_DIR=/models \
    HUGGINGFACE_HUB_CACHE=/models \
    DIFFUSERS_CACHE=/models \
    HF_HOME=/home/runner/.cache/huggingface \
    HOST=0.0.0.0 \
    PORT=8000

VOLUME /models
EXPOSE 8000 1935
# Healthy unless /health says ERROR (LOADING is healthy: go-livepeer waits on it itself).
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/health" | grep -qv '"ERROR"' || exit 1
CMD ["livestream", "serve"]
