"""Livepeer's own Python SDK (`livepeer-ai`) against `livestream serve` started as a real process."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from livepeer_ai import Livepeer
from livepeer_ai.models import errors as sdk_errors
from PIL import Image


TOKEN = "sdk-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(url: str) -> str:
    with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
        return str(json.load(resp)["status"])


@pytest.fixture(scope="module")
def engine_url(tiny_t2i_dir: Path) -> Iterator[str]:
    model = tiny_t2i_dir
    port = _free_port()
    env = {**os.environ, "PIPELINE": "text-to-image", "MODEL_ID": str(model), "AUTH_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "livestream", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        status = ""
        while time.monotonic() < deadline and status != "OK":
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "engine exited"
            try:
                status = _health(url)
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        assert status == "OK", f"engine not healthy: {status!r}"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
            if proc.stderr:
                proc.stderr.close()


def test_sdk_text_to_image(engine_url: str) -> None:
    client = Livepeer(server_url=engine_url, http_bearer=TOKEN)
    result = client.generate.text_to_image(
        request={"prompt": "a red square", "width": 64, "height": 64, "num_inference_steps": 2, "seed": 11, "num_images_per_prompt": 2}
    )
    images = result.image_response.images
    assert [img.seed for img in images] == [11, 12]
    header, _, payload = images[0].url.partition(",")
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (64, 64)


def test_sdk_wrong_token_is_401(engine_url: str) -> None:
    client = Livepeer(server_url=engine_url, http_bearer="wrong")
    with pytest.raises(sdk_errors.HTTPError) as info:
        client.generate.text_to_image(request={"prompt": "x", "width": 64, "height": 64, "num_inference_steps": 1})
    assert info.value.data.detail.msg  # the SDK parsed our {"detail": {"msg": ...}} body


def test_sdk_health_and_unimplemented_route(engine_url: str) -> None:
    assert _health(engine_url) == "OK"
    client = Livepeer(server_url=engine_url, http_bearer=TOKEN)
    # A second model on a runner pinned to one: ai-runner answers 400 with HTTPError.
    with pytest.raises(sdk_errors.HTTPError):
        client.generate.text_to_image(request={"prompt": "x", "model_id": "some/other-model"})
