"""Property-based fuzzing of the runner API against its own /openapi.json (schemathesis).

A real `livestream serve` process with a tiny random-weight model for every batch task
(`--default-model TASK=DIR`) and small work limits (`--limit`), so that generated requests
within the limits run in milliseconds and the rest are refused. Every operation gets
`MAX_EXAMPLES` generated requests (positive and negative); each response must be no 5xx but an
explicit 503 (the model's queue, the live session limit, a model that cannot be loaded), carry the
status codes, content type and body schema the document declares. The live session API and the
gateway (in front of the same server) are fuzzed the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable  # noqa: E402  (after the skip: hypothesis comes with it)

from pipelines.testing import write_tiny_model  # noqa: E402

#: Generated requests per operation: 16 operations x this stays within about a minute on 2 cores.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
#: The same for the live API and the gateway (their cases are cheaper or repeat the runner's).
FEWER_EXAMPLES = max(5, MAX_EXAMPLES * 3 // 5)

#: Tiny models are cheap, but not at any size: outputs up to 64x64, a step or two.
FUZZ_LIMITS = ["pixels=4096", "side=64", "upscale_pixels=256", "steps=2", "images=2", "llm_tokens=16",
               "tts_chars=200", "audio_seconds=5", "decoded_pixels=65536", "upload_bytes=1048576"]  # fmt: skip

#: The routes declare bearer auth: the server checks it, and schemathesis checks it is checked.
TOKEN = "fuzz-token"

TASKS = ("text-to-image", "image-to-video", "upscale", "llm", "audio-to-text", "text-to-speech",
         "image-to-text", "segment-anything-2")  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_models(tmp_path_factory: pytest.TempPathFactory, tiny_t2i_dir: Path) -> dict[str, Path]:
    """A tiny model folder for every batch task (the fuzz server's `--default-model`s)."""
    models = tmp_path_factory.mktemp("fuzz-models")
    defaults = {"text-to-image": tiny_t2i_dir, "image-to-image": tiny_t2i_dir}
    for task in TASKS:
        if task not in defaults:
            write_tiny_model(task, models / task)
            defaults[task] = models / task
    return defaults


@contextlib.contextmanager
def _livestream(command: list[str], log: Path, env: dict[str, str]) -> Iterator[str]:
    """`python -m livestream COMMAND --host 127.0.0.1 --port P` until `/health` answers; its URL.
    Stopped at the end, and its log must hold no traceback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [sys.executable, "-m", "livestream", command[0], "--host", "127.0.0.1", "--port", str(port), *command[1:]]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        text = log.read_text()
        assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, fuzz_models: dict[str, Path]) -> Iterator[str]:
    command = ["serve", "--auth-token", TOKEN]
    for task, folder in fuzz_models.items():
        command += ["--default-model", f"{task}={folder}"]
    for limit in FUZZ_LIMITS:
        command += ["--limit", limit]
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MAX_LIVE_SESSIONS": "64"}
    with _livestream(command, tmp_path_factory.mktemp("fuzz-log") / "serve.log", env) as url:
        yield url


def _is_explicit_503(response: Any) -> bool:
    """The explicit 503s: the model's queue is full, the live session limit (ai-runner's), or a
    model that cannot be loaded (`could not load TASK model ID: REASON`: a generated model id of
    another type, such as a multipart `false`, names no model)."""
    try:
        msg = json.loads(response.content)["detail"]["msg"]
    except (ValueError, KeyError, TypeError):
        return False
    return response.status_code == 503 and any(w in msg for w in ("busy", "limit", "sessions", "could not load"))


def _check(case: Any, stats: dict[str, list[int]], models: dict[str, Path] | None = None) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}  # open routes ignore it
    if case.operation.method.upper() == "POST":
        if isinstance(case.body, dict):
            # A generated model id names no model: 503 (cannot be loaded), tested elsewhere;
            # here every request runs the server's tiny model for the task (its default, or
            # named: the gateway requires a model id).
            model = str(models[case.path.strip("/")]) if models and case.path.strip("/") in models else ""
            for key in ("model_id", "model"):
                if isinstance(case.body.get(key), str):
                    case.body[key] = model
    response = case.call(timeout=30)
    stats.setdefault(f"{case.method} {case.path}", []).append(response.status_code)
    assert response.status_code < 500 or _is_explicit_503(response), (
        f"{case.method} {case.path} -> {response.status_code} {response.content[:500]!r}"
    )
    case.validate_response(
        response,
        # Requests the schema calls valid may still be refused: an empty prompt, a work limit,
        # a model id that does not exist. The 5xx check is ours, above. `ignored_auth` takes the
        # token we set for its own generated one (auth is tested in test_api_errors.py).
        excluded_checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.positive_data_acceptance,
            schemathesis.checks.ignored_auth,
            # A multipart field generated as an array goes out as that many parts (none for an
            # empty one): an absent optional field, or the field repeated, both valid forms.
            *([schemathesis.checks.negative_data_rejection] if case.media_type == "multipart/form-data" else []),
        ],
    )


def _fuzz(
    document_url: str, *, min_operations: int, models: dict[str, Path] | None = None, examples: int = MAX_EXAMPLES
) -> dict[str, tuple[int, list[int]]]:
    """Each operation of the document: `examples` positive and `examples` negative generated
    requests through `_check`; returns (cases, statuses) per operation.

    (schemathesis's pytest plugin does not run under pytest 9 yet, so the operations are
    driven here with hypothesis directly; a failing example is shrunk and reported as usual.)
    """
    api = schemathesis.openapi.from_url(document_url)
    stats: dict[str, list[int]] = {}
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= min_operations
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                _check(case, stats, models)

            try:
                run()
            except Unsatisfiable:  # no invalid request exists (a GET without parameters)
                assert mode is schemathesis.GenerationMode.NEGATIVE
    summary = {op: (len(codes), sorted(set(codes))) for op, codes in sorted(stats.items())}
    print(f"\n{document_url}: fuzz cases per operation (count, statuses):\n"
          + "\n".join(f"  {k}: {v}" for k, v in summary.items()))  # fmt: skip
    return summary


@pytest.mark.timeout(600)  # hundreds of requests: minutes on busy shared cores
def test_api_fuzz(fuzz_server: str) -> None:
    """The runner API (ai-runner's routes and our additions), against its /openapi.json."""
    _fuzz(fuzz_server + "/openapi.json", min_operations=14)


@pytest.mark.timeout(600)  # hundreds of requests: minutes on busy shared cores
def test_live_api_fuzz(fuzz_server: str) -> None:
    """The live session API (sessions, params, direct streams, recordings), against
    /live/openapi.json; the fuzzed stream names name no running stream (404) or configure
    direct streams that never publish."""
    summary = _fuzz(fuzz_server + "/live/openapi.json", min_operations=10, examples=FEWER_EXAMPLES)
    assert summary["GET /live/pipelines"][1] == [200]


@pytest.fixture(scope="module")
def fuzz_gateway(fuzz_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`livestream gateway` in front of the fuzz server (its token in the gateway's config),
    with the same bearer key on the gateway's own routes."""
    folder = tmp_path_factory.mktemp("fuzz-gateway")
    config = folder / "gateway.json"
    config.write_text(json.dumps({"runners": [{"url": fuzz_server, "token": TOKEN}]}))
    command = ["gateway", "--config", str(config), "--api-key", TOKEN]
    with _livestream(command, folder / "gateway.log", {"HF_HUB_OFFLINE": "1"}) as url:
        yield url


@pytest.mark.timeout(600)  # hundreds of requests: minutes on busy shared cores
def test_gateway_api_fuzz(fuzz_gateway: str, fuzz_models: dict[str, Path]) -> None:
    """The gateway API (what Livepeer's SDK calls), against the gateway's /openapi.json, relayed
    to a runner with a tiny model for every task (named in each request)."""
    summary = _fuzz(fuzz_gateway + "/openapi.json", min_operations=10, models=fuzz_models, examples=FEWER_EXAMPLES)
    # relayed and answered by the runner, not only refused at the gateway (most generated
    # requests are over the runner's small fuzz limits: 400)
    assert sum(200 in statuses for _, statuses in summary.values()) >= 3, summary
