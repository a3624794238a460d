"""The transformers backend of the `llm` pipeline: `model.generate` with a token streamer.

`generate` runs in a worker thread, one request at a time. A streamer (transformers'
`BaseStreamer`, as `TextIteratorStreamer` is) receives each new token in that thread, turns
tokens into text incrementally and hands the text to the event loop with
`call_soon_threadsafe`; no thread blocks on a queue. A stopping criterion checks a
`threading.Event` (set when the consumer goes away) and the stop sequences after every token, so
a closed stream stops the model within one decoding step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InferenceError
from ..loading import model_load_errors, torch_dtype_for
from .backend import Finished, FinishReason, Prompt, SamplingParams, TextDelta

if TYPE_CHECKING:
    import torch

    from ..loading import ModelSource

__all__ = ["StopScanner", "TransformersBackend"]

log = logging.getLogger(__name__)

_Event = TextDelta | Finished | BaseException


class StopScanner:
    """Finds stop sequences in text that arrives in pieces, holding back what might start one.

    `feed(text)` returns the text safe to send now; once a stop sequence is seen, `stopped` is
    true and nothing after its start is ever returned.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = tuple(stop)
        self._longest = max((len(s) for s in self._stop), default=0)
        self._text = ""
        self._sent = 0
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self._text += text
        if not self._stop:
            out, self._sent = self._text[self._sent :], len(self._text)
            return out
        # A stop sequence may straddle what was held back and the new text.
        start = max(0, self._sent - self._longest + 1)
        hits = [i for s in self._stop if (i := self._text.find(s, start)) != -1]
        if hits:
            self.stopped = True
            end = min(hits)
        else:
            end = len(self._text) - self._held_back()
        out, self._sent = self._text[self._sent : end], max(self._sent, end)
        return out

    def flush(self) -> str:
        """The held-back tail, at the end of a generation that did not stop on a sequence."""
        if self.stopped:
            return ""
        out, self._sent = self._text[self._sent :], len(self._text)
        return out

    def _held_back(self) -> int:
        tail = self._text[max(self._sent, len(self._text) - self._longest + 1) :]
        for n in range(len(tail), 0, -1):
            if any(s.startswith(tail[-n:]) for s in self._stop):
                return n
        return 0


class _Detokenizer:
    """Incremental decoding that never splits a multi-byte character across two deltas.

    Decodes a short window of recent tokens and sends only text that no longer ends in U+FFFD
    (a character whose bytes are still arriving), as vLLM's detokenizer does.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self._prefix_text = ""  # decode(ids[prefix:read]), kept to decode once per token

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decode(self._ids[self._prefix :])
        if len(text) > len(self._prefix_text) and not text.endswith("\ufffd"):
            delta = text[len(self._prefix_text) :]
            self._prefix, self._read = self._read, len(self._ids)
            self._prefix_text = self._decode(self._ids[self._prefix : self._read])
            return delta
        return ""

    def flush(self) -> str:
        text = self._decode(self._ids[self._prefix :])
        delta = text[len(self._prefix_text) :]
        self._prefix = self._read = len(self._ids)
        self._prefix_text = ""
        return delta

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True)
        return text


class _Run:
    """One generation's state, shared by `generate`'s thread, the streamer and the criterion."""

    def __init__(
        self, tokenizer: Any, eos: frozenset[int], params: SamplingParams, emit: Callable[[_Event], object]
    ) -> None:
        self.cancel = threading.Event()
        self.eos = eos
        self.emit = emit
        self.detok = _Detokenizer(tokenizer)
        self.scanner = StopScanner(params.stop)
        self.tokens = 0
        self.ended_on_eos = False
        self._prompt_seen = False

    # transformers' BaseStreamer interface (duck-typed: `generate` only calls put/end).
    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        if self.cancel.is_set() or self.scanner.stopped:
            return
        token = int(value.reshape(-1)[0])
        if token in self.eos:
            self.ended_on_eos = True
            return
        self.tokens += 1
        text = self.scanner.feed(self.detok.add(token))
        if text:
            self.emit(TextDelta(text, self.tokens))

    def end(self) -> None:
        pass

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.scanner.stopped


class _StopWhen:
    """A `StoppingCriteria` that ends generation when the run says so."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        return torch.full((input_ids.shape[0],), self._run.should_stop(), dtype=torch.bool, device=input_ids.device)


class TransformersBackend:
    """`AutoModelForCausalLM` on one device, one request at a time.

    Attributes:
        model: the loaded model (benchmarks call its `generate` directly).
        tokenizer: the model's tokenizer.
    """

    concurrency = 1

    def __init__(self, source: ModelSource, tokenizer: Any, device: torch.device) -> None:
        from transformers import AutoModelForCausalLM

        with model_load_errors("LLM", source.model_id):
            model = AutoModelForCausalLM.from_pretrained(
                source.pretrained_name, dtype=torch_dtype_for(device), **source.from_pretrained_kwargs()
            )
        self.model: Any = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        eos = self.model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self._eos = frozenset(eos)
        self._pad = self.model.generation_config.pad_token_id
        if self._pad is None:
            self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos, default=0)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[TextDelta | Finished]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[_Event] = asyncio.Queue()
        run = _Run(self.tokenizer, self._eos, params, lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
        worker = loop.run_in_executor(None, self._generate, run, prompt, params)
        pending: _Event | None = None
        try:
            while True:
                # Bounded by generation: the thread emits one event per decoding step, at most
                # `max_tokens` steps, and always a last one (Finished or the error).
                event = pending if pending is not None else await events.get()
                pending = None
                # When the loop falls behind the model, send the text that piled up as one delta.
                while isinstance(event, TextDelta) and not events.empty():
                    following = events.get_nowait()
                    if not isinstance(following, TextDelta):
                        pending = following
                        break
                    event = TextDelta(event.text + following.text, following.completion_tokens)
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            # Reached on completion, error, `aclose()` and cancellation alike: stop the model at
            # its next token and wait until it is idle, so the caller may free its slot.
            run.cancel.set()
            await worker  # bounded: the stopping criterion reads `cancel` at every decoding step

    def generation_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        """`generate` keyword arguments for `params` (also used by the benchmark's baseline)."""
        kwargs: dict[str, Any] = {"pad_token_id": self._pad}
        if params.temperature <= 0.0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else 0,
            )
        return kwargs

    def _generate(self, run: _Run, prompt: Prompt, params: SamplingParams) -> None:
        try:
            finish = self._generate_or_raise(run, prompt, params)
        except Exception as exc:  # handed to the consumer, which raises it in its own task
            log.exception("llm generation failed")
            run.emit(InferenceError(f"The model failed while generating: {exc}"))
            return
        if finish is not None:
            run.emit(finish)

    def _generate_or_raise(self, run: _Run, prompt: Prompt, params: SamplingParams) -> Finished | None:
        import torch
        from transformers import StoppingCriteriaList

        input_ids = torch.tensor([prompt.token_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=prompt.max_tokens,
                streamer=run,
                stopping_criteria=StoppingCriteriaList([_StopWhen(run)]),
                **self.generation_kwargs(params),
            )
        if run.cancel.is_set():
            log.debug("llm generation cancelled after %d tokens", run.tokens)
            return None
        tail = run.scanner.feed(run.detok.flush())
        tail += run.scanner.flush()
        if tail:
            run.emit(TextDelta(tail, run.tokens))
        # "length" only when max_tokens cut the answer short; an end-of-turn token or a stop
        # sequence is "stop".
        hit_limit = run.tokens >= prompt.max_tokens and not (run.ended_on_eos or run.scanner.stopped)
        reason: FinishReason = "length" if hit_limit else "stop"
        return Finished(reason, len(prompt.token_ids), run.tokens)

    def close(self) -> None:
        pass
