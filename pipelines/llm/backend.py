"""What an `llm` backend takes and yields, and the protocol it implements.

`LLMPipeline` (`pipelines.llm.pipeline`) renders and tokenizes a request into a `Prompt`; a
backend (`transformers_backend`, `vllm_backend`) generates from it, yielding `TextDelta`s and one
closing `Finished`. Both sides import these types from here, so neither imports the other's
module for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import InvalidRequestError

__all__ = ["FinishReason", "Finished", "LLMBackend", "Prompt", "SamplingParams", "TextDelta"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample. Defaults are ai-runner's `LLMRequest` defaults.

    Attributes:
        max_tokens: most tokens to generate (cut to what the context leaves).
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass, in (0, 1].
        top_k: sample from the k likeliest tokens; -1 or 0: all.
        stop: generation ends before the first of these strings; it is not returned.
    """

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = -1
    stop: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise `InvalidRequestError`, quoting the value, for a value out of range."""
        if self.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidRequestError(f"temperature must be between 0 and 2, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise InvalidRequestError(f"top_k must be -1 (off) or at least 0, got {self.top_k}.")
        if any(not s for s in self.stop):
            raise InvalidRequestError("stop sequences must not be empty strings.")


@dataclass(frozen=True, slots=True)
class Prompt:
    """A rendered, tokenized request, ready to generate from."""

    text: str
    token_ids: tuple[int, ...]
    #: `SamplingParams.max_tokens`, cut to what the context leaves after the prompt.
    max_tokens: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New text; `completion_tokens` counts the tokens generated so far."""

    text: str
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a generation, always the last event of `LLMPipeline.stream`."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class LLMBackend(Protocol):
    """Generates from a tokenized prompt. The closing contract: `pipelines.llm.pipeline`'s docstring."""

    #: Requests the backend serves at once (1: one at a time; vLLM batches many).
    concurrency: int

    def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[TextDelta | Finished]: ...

    def close(self) -> None: ...
