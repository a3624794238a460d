"""The vLLM backend of the `llm` pipeline: continuous batching on NVIDIA GPUs, as ai-runner runs.

vLLM is not a dependency of this package and cannot share its CPU/test environment: each vLLM
release pins exact torch, torchvision, torchaudio and transformers versions (0.33.0: torch
2.14.0, transformers <5.21) and CUDA-only packages. Install it in its own image or virtual
environment (`pip install livestream[llm-vllm]` on top of vLLM's own torch), where
`LLMPipeline` picks this backend by default when a GPU is present. It is not exercised by the
CPU test suite.

The engine is configured as ai-runner configures it (bf16/fp16 "auto" dtype, prefix caching,
`max_num_seqs` 128, `gpu_memory_utilization` 0.85); requests run concurrently on the engine, so
`concurrency` tells the registry how many may hold the model at once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..errors import InferenceError, ModelLoadError
from .backend import Finished, FinishReason, Prompt, SamplingParams, TextDelta

if TYPE_CHECKING:
    from ..loading import ModelSource

__all__ = ["VLLMBackend"]

log = logging.getLogger(__name__)


class VLLMBackend:
    """vLLM's `AsyncLLMEngine`, fed token ids rendered by `LLMPipeline.prepare`."""

    def __init__(
        self,
        source: ModelSource,
        max_model_len: int,
        *,
        max_num_seqs: int = 128,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
    ) -> None:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise ModelLoadError(
                "The vLLM backend needs vLLM, which is installed in its own image (extra `llm-vllm`), "
                f"not alongside this environment's torch: {exc}"
            ) from exc
        args = AsyncEngineArgs(
            model=source.pretrained_name,
            tokenizer=source.pretrained_name,
            download_dir=str(source.cache_dir) if source.cache_dir else None,
            dtype="auto",
            max_model_len=max_model_len,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max(8192, max_model_len),
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=True,
        )
        try:
            self._engine: Any = AsyncLLMEngine.from_engine_args(args)
        except Exception as exc:  # vLLM raises many types while building the engine
            raise ModelLoadError(f"vLLM could not load {source.model_id!r}: {exc}") from exc
        self.concurrency = max_num_seqs

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[TextDelta | Finished]:
        from vllm import SamplingParams as VLLMSamplingParams

        sampling = VLLMSamplingParams(
            max_tokens=prompt.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            stop=list(params.stop) or None,
        )
        request_id = f"llm-{uuid.uuid4().hex}"
        sent = ""
        tokens = 0
        finished = False
        try:
            async for output in self._engine.generate(
                {"prompt_token_ids": list(prompt.token_ids)}, sampling, request_id
            ):
                completion = output.outputs[0]
                tokens = len(completion.token_ids)
                # Cumulative text; vLLM holds back partial characters and stop-sequence prefixes.
                if len(completion.text) > len(sent):
                    yield TextDelta(completion.text[len(sent) :], tokens)
                    sent = completion.text
                if output.finished:
                    finished = True
                    reason: FinishReason = "length" if completion.finish_reason == "length" else "stop"
                    yield Finished(reason, len(prompt.token_ids), tokens)
                    return
        except Exception as exc:
            raise InferenceError(f"vLLM failed while generating: {exc}") from exc
        finally:
            if not finished:
                await self._engine.abort(request_id)

    def close(self) -> None:
        shutdown = getattr(self._engine, "shutdown", None)
        if shutdown is not None:
            shutdown()
