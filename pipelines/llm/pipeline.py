"""Chat completion (`llm`) with token streaming, behaving as ai-runner's LLM pipeline.

A chat model (Llama-3.x-Instruct class: anything `AutoModelForCausalLM` loads that has a chat
template) from a Hugging Face id or a local folder. A request goes in two steps:

1. `LLMPipeline.prepare(messages, params)` checks the request, renders the chat template and
   tokenizes it. Input that does not fit the model's context fails here with
   `ContextLengthError`, before any response has been started. `max_tokens` is cut down to what
   is left of the context.
2. `LLMPipeline.stream(prompt, params)` is an async iterator of `TextDelta` events ending with
   one `Finished` (`finish_reason` "stop" on an end-of-turn token or a stop sequence, "length"
   at `max_tokens`). Closing it early (`aclose()`, or cancelling the task iterating it) stops
   generation at the next token and returns only once the model is idle again, so whoever
   holds the model's slot can release it right after.

Two backends do step 2 (`transformers_backend`, the default, one request at a time in a worker
thread; `vllm_backend`, continuous batching on NVIDIA GPUs, in its own image because vLLM pins
its own torch and transformers). What they take and yield is in `backend`.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, ModelLoadError
from ..loading import pick_device, resolve_model_source
from .backend import Finished, LLMBackend, Prompt, SamplingParams, TextDelta
from .transformers_backend import TransformersBackend
from .vllm_backend import VLLMBackend

__all__ = ["ROLES", "ChatMessage", "ContextLengthError", "LLMPipeline"]

log = logging.getLogger(__name__)

#: Message roles a request may use (ai-runner accepts these three).
ROLES = ("system", "user", "assistant")


class ContextLengthError(InvalidRequestError):
    """The rendered messages do not fit the model's context."""

    def __init__(self, prompt_tokens: int, max_context: int) -> None:
        super().__init__(
            f"The messages are {prompt_tokens} tokens long, but the model's context is {max_context} tokens "
            "(prompt and completion together). Shorten the messages."
        )
        self.prompt_tokens = prompt_tokens
        self.max_context = max_context


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


class LLMPipeline:
    """A chat model, loaded in `__init__` (call it in a worker thread).

    Args:
        model_id: Hugging Face id or local folder (see `pipelines.loading`).
        model_dir: ai-runner's MODEL_DIR: local models and the Hugging Face cache.
        device: `"cuda"`, `"cpu"`, ...; default CUDA when available (float16), else CPU (float32).
        backend: `"transformers"` or `"vllm"`; default vLLM when it is installed and a GPU is
            present, else transformers.
        max_model_len: context length; default the model's `max_position_embeddings`.

    Raises:
        ModelLoadError: the model cannot be found or loaded, or it has no chat template.
    """

    task = "llm"

    def __init__(
        self,
        model_id: str,
        *,
        model_dir: Path | None = None,
        device: str | None = None,
        backend: str | None = None,
        max_model_len: int | None = None,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.model_id = model_id
        self.device = pick_device(device)
        source = resolve_model_source(model_id, model_dir, probe_file="config.json")
        try:
            config = AutoConfig.from_pretrained(source.pretrained_name, **source.from_pretrained_kwargs())
            self.tokenizer: Any = AutoTokenizer.from_pretrained(source.pretrained_name, **source.from_pretrained_kwargs())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"Could not load LLM {model_id!r}: {exc}") from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelLoadError(f"Model {model_id!r} has no chat template, so it cannot take chat messages.")
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        context = getattr(text_config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        self.max_context: int = int(max_model_len or context)

        name = backend or _default_backend(self.device.type)
        self.backend: LLMBackend
        if name == "transformers":
            self.backend = TransformersBackend(source, self.tokenizer, self.device)
        elif name == "vllm":
            self.backend = VLLMBackend(source, self.max_context)
        else:
            raise ModelLoadError(f"Unknown LLM backend {name!r}; use 'transformers' or 'vllm'.")
        self.backend_name = name
        log.info("llm %s loaded (%s backend) on %s, context %d", model_id, name, self.device, self.max_context)

    def prepare(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Prompt:
        """Check the request, render the chat template and tokenize it (cheap; any thread).

        Raises:
            InvalidRequestError: no messages, an unknown role, a sampling value out of range, or
                messages the chat template refuses (e.g. roles that do not alternate).
            ContextLengthError: the prompt leaves no room in the context for a completion.
        """
        if not messages:
            raise InvalidRequestError("messages must not be empty.")
        for i, message in enumerate(messages):
            if message.role not in ROLES:
                raise InvalidRequestError(
                    f"messages[{i}].role is {message.role!r}; it must be one of {', '.join(ROLES)}."
                )
        params.check()
        from jinja2 import TemplateError

        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True, tokenize=False
            )
        except TemplateError as exc:
            raise InvalidRequestError(f"The model's chat template refused the messages: {exc}") from exc
        # The template already starts with the BOS token; do not add a second one.
        ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) >= self.max_context:
            raise ContextLengthError(len(ids), self.max_context)
        return Prompt(text=text, token_ids=ids, max_tokens=min(params.max_tokens, self.max_context - len(ids)))

    def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[TextDelta | Finished]:
        """Generate from `prompt` (see the module docstring); close it to stop early."""
        return self.backend.stream(prompt, params)

    @property
    def concurrency(self) -> int:
        return self.backend.concurrency

    def close(self) -> None:
        self.backend.close()


def _default_backend(device_type: str) -> str:
    if device_type != "cuda":
        return "transformers"
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"
