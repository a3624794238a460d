"""The `llm` task: chat completion with token streaming, on a transformers or a vLLM backend.

    pipeline.py              LLMPipeline: loads the model, checks and renders requests (ChatMessage)
    backend.py               what a backend takes and yields (Prompt, SamplingParams, TextDelta,
                             Finished) and the LLMBackend protocol
    transformers_backend.py  model.generate in a worker thread, one request at a time (default)
    vllm_backend.py          vLLM's continuous batching on NVIDIA GPUs (its own image)
"""

from .backend import Finished, FinishReason, LLMBackend, Prompt, SamplingParams, TextDelta
from .pipeline import ROLES, ChatMessage, ContextLengthError, LLMPipeline

__all__ = [
    "ROLES",
    "ChatMessage",
    "ContextLengthError",
    "FinishReason",
    "Finished",
    "LLMBackend",
    "LLMPipeline",
    "Prompt",
    "SamplingParams",
    "TextDelta",
]
