# CUDA + TensorRT deployment image. Runs like an ai-runner container:
#   docker run --gpus all -p 8000:8000 -e PIPELINE=text-to-image -e MODEL_ID=stabilityai/sd-turbo \
#     -v $PWD/models:/models livestream
# Without PIPELINE/MODEL_ID it serves every route and loads models on demand.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MODEL_DIR=/models \
    HF_HOME=/models/huggingface \
    HOST=0.0.0.0 \
    PORT=8000

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev ffmpeg curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# CUDA build of torch first, so the project's `torch` requirement is already met.
RUN pip install torch --index-url https://download.pytorch.org/whl/cu128

WORKDIR /app
COPY pyproject.toml README.md ./
COPY livestream ./livestream
COPY pipelines ./pipelines
COPY trickle ./trickle
RUN pip install ".[gpu]"

VOLUME /models
EXPOSE 8000 1935
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/health" | grep -qv '"ERROR"' || exit 1
CMD ["livestream", "serve"]
