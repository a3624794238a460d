"""LLM serving overhead: time to first token and tokens/s, HTTP routes vs `model.generate`.

    python -m benchmarks llm_bench

Models: random-weight Llama-3-style chat models written by `pipelines.testing.llm` (the tiny test
fixture, 2 layers x 32 wide, and a "medium" one, 6 layers x 768 wide, 32 M parameters, whose
steps cost more than the per-token Python around them, as a real model's do). Greedy decoding, so every path generates the
same tokens.

In one run, on the same loaded model object, alternating:

- direct: `model.generate` on the rendered prompt in a thread, with a streamer that records the
  first token's time (the baseline: what the model costs with nothing around it);
- `/llm` stream: the engine (`livestream serve --pipeline llm`) on a loopback port, an aiohttp
  client reading the SSE stream; first token = first `data:` chunk;
- `/llm` without streaming, and `/v1/chat/completions` streaming.

The HTTP client runs in a child process, as a real client would: the engine's process holds
only the engine, the model and (for the baseline) the direct call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import platform
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from ._common import free_port

__all__ = ["main"]

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly and politely."},
    {"role": "user", "content": "Write a short poem about the sea, the wind and the stars."},
]
ROUNDS = 9


@dataclass
class Sample:
    ttft: float  # seconds from request to first token
    total: float  # seconds from request to the last byte
    tokens: int
    cpu: float = 0.0  # CPU seconds the engine's process spent (all its threads)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total


@contextlib.asynccontextmanager
async def _engine(model_dir: Path) -> AsyncIterator[tuple[str, web.Application]]:
    from livestream.app import build_app
    from livestream.settings import Settings

    port = free_port()
    settings = replace(Settings(), pipeline="llm", model_id=str(model_dir), host="127.0.0.1", port=port)
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()


def _direct(pipeline: Any, max_tokens: int) -> Sample:
    import torch
    from transformers.generation.streamers import BaseStreamer

    from pipelines.llm import ChatMessage, SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    start = time.perf_counter()
    prompt = pipeline.prepare([ChatMessage(**m) for m in MESSAGES], params)
    first: list[float] = []

    class FirstToken(BaseStreamer):  # type: ignore[misc]
        calls = 0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:  # the first call carries the prompt
                first.append(time.perf_counter())

        def end(self) -> None:
            pass

    ids = torch.tensor([prompt.token_ids])
    model = pipeline.backend.model
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=prompt.max_tokens,
            streamer=FirstToken(),
            **pipeline.backend.generation_kwargs(params),
        )
    end = time.perf_counter()
    generated = out[0, ids.shape[1] :].tolist()
    eos = pipeline.backend._eos
    tokens = len(generated) - (1 if generated and generated[-1] in eos else 0)
    return Sample(first[0] - start, end - start, tokens)


async def _sse(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], usage_of: Callable[[Any], int]
) -> Sample:
    start = time.perf_counter()
    first = None
    tokens = 0
    async with session.post(url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            chunk = json.loads(data)
            if first is None and _has_text(chunk):
                first = time.perf_counter()
            tokens = max(tokens, usage_of(chunk))
    end = time.perf_counter()
    return Sample((first or end) - start, end - start, tokens)


def _has_text(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


async def _plain(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Sample:
    start = time.perf_counter()
    async with session.post(url, json=body) as resp:
        resp.raise_for_status()
        result = await resp.json()
    end = time.perf_counter()
    return Sample(end - start, end - start, result["usage"]["completion_tokens"])


def _usage_tokens(chunk: dict[str, Any]) -> int:
    return int((chunk.get("usage") or {}).get("completion_tokens", 0))


async def _client_requests(conn: Connection) -> None:
    async with aiohttp.ClientSession() as session:
        while (job := conn.recv()) is not None:
            kind, url, body = job
            sample = await (_plain(session, url, body) if kind == "plain" else _sse(session, url, body, _usage_tokens))
            conn.send(sample)


def _client_process(conn: Connection) -> None:
    asyncio.run(_client_requests(conn))


async def _bench_model(name: str, model_dir: Path, max_tokens: int) -> dict[str, list[Sample]]:
    from livestream.keys import REGISTRY_KEY

    runner_body = {"messages": MESSAGES, "temperature": 0, "max_tokens": max_tokens}
    v1_body = {**runner_body, "model": "", "stream": True, "stream_options": {"include_usage": True}}
    samples: dict[str, list[Sample]] = {"direct": [], "/llm stream": [], "/llm": [], "/v1 stream": []}
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    client = multiprocessing.get_context("spawn").Process(target=_client_process, args=(theirs,), daemon=True)
    client.start()
    try:
        async with _engine(model_dir) as (base, app):
            registry = app[REGISTRY_KEY]
            model_id = registry.resolve_model_id("llm", "")

            async def direct() -> Sample:
                async with registry.acquire("llm", model_id) as pipeline:
                    return await asyncio.to_thread(_direct, pipeline, max_tokens)

            async def remote(kind: str, path: str, body: dict[str, Any]) -> Sample:
                ours.send((kind, base + path, body))
                return await asyncio.to_thread(ours.recv)  # type: ignore[no-any-return]

            paths: dict[str, Callable[[], Awaitable[Sample]]] = {
                "direct": direct,
                "/llm stream": lambda: remote("sse", "/llm", {**runner_body, "stream": True}),
                "/llm": lambda: remote("plain", "/llm", runner_body),
                "/v1 stream": lambda: remote("sse", "/v1/chat/completions", v1_body),
            }
            for fn in paths.values():  # warm-up: load, first-call allocations
                await fn()
            for _ in range(ROUNDS):
                for key, fn in paths.items():
                    cpu = time.process_time()
                    sample = await fn()
                    sample.cpu = time.process_time() - cpu
                    samples[key].append(sample)
    finally:
        ours.send(None)
        client.join(10)
    tokens = {s.tokens for v in samples.values() for s in v}
    assert len(tokens) == 1, f"paths generated different token counts: {tokens}"
    print(f"\n{name}: {tokens.pop()} tokens per request, {ROUNDS} rounds, medians")
    return samples


def _report(samples: dict[str, list[Sample]]) -> None:
    """Wall-clock best (min) and median of the rounds, and the engine process's CPU time.

    On a shared machine wall-clock time follows the neighbours' load; CPU time counts only the
    work this process did (engine, model, generation thread), so its overhead is the steadier
    figure. The HTTP client's CPU is in its own process and not counted.
    """
    base = samples["direct"]
    base_cpu = statistics.median(s.cpu for s in base)
    print(
        f"{'path':<12} {'TTFT ms best/med':>17} {'total ms best/med':>18} {'tok/s best':>10} "
        f"{'CPU ms med':>10} {'CPU overhead':>12} {'wall overhead best':>18}"
    )
    for key, values in samples.items():
        ttft = (min(s.ttft for s in values), statistics.median(s.ttft for s in values))
        total = (min(s.total for s in values), statistics.median(s.total for s in values))
        tps = max(s.tokens_per_s for s in values)
        cpu = statistics.median(s.cpu for s in values)
        if key == "direct":
            cpu_overhead = wall_overhead = "-"
        else:
            cpu_overhead = f"{(cpu / base_cpu - 1) * 100:+.1f}%"
            wall_overhead = f"{(total[0] / min(s.total for s in base) - 1) * 100:+.1f}%"
        print(
            f"{key:<12} {ttft[0] * 1000:>8.1f}/{ttft[1] * 1000:<8.1f} {total[0] * 1000:>8.1f}/{total[1] * 1000:<9.1f} "
            f"{tps:>10.0f} {cpu * 1000:>10.1f} {cpu_overhead:>12} {wall_overhead:>18}"
        )


def main() -> None:
    import torch

    from pipelines.testing import write_tiny_model
    from pipelines.testing.llm import write_tiny_llm

    # One intra-op thread: on a shared 2-core VM, two spinning OpenMP threads make every step's time
    # depend on the neighbours' load; the comparison is what matters here.
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        tiny, medium = Path(tmp) / "tiny", Path(tmp) / "medium"
        write_tiny_model("llm", tiny)
        write_tiny_llm(medium, hidden_size=768, num_layers=6)
        for name, folder, max_tokens in (("tiny (2 x 32)", tiny, 128), ("medium (6 x 768)", medium, 128)):
            _report(asyncio.run(_bench_model(name, folder, max_tokens)))


if __name__ == "__main__":
    main()
