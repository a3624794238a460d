"""LLMPipeline with the tiny model: prompts, limits, streaming, stop sequences, early close."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import InvalidRequestError, ModelLoadError
from pipelines.llm import ChatMessage, ContextLengthError, Finished, LLMPipeline, SamplingParams, TextDelta
from pipelines.llm.transformers_backend import StopScanner
from pipelines.testing.llm import SPECIAL_TOKENS

GREEDY = SamplingParams(temperature=0.0, max_tokens=24)
HELLO = [ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", "Hello there")]


async def collect(pipeline: LLMPipeline, messages: list[ChatMessage], params: SamplingParams) -> tuple[str, Finished]:
    events = [e async for e in pipeline.stream(pipeline.prepare(messages, params), params)]
    *deltas, end = events
    assert all(isinstance(d, TextDelta) for d in deltas)
    assert isinstance(end, Finished)
    return "".join(d.text for d in deltas if isinstance(d, TextDelta)), end


def direct_generate(pipeline: LLMPipeline, messages: list[ChatMessage], max_new_tokens: int) -> list[int]:
    import torch

    prompt = pipeline.prepare(messages, GREEDY)
    model: Any = pipeline.backend.model  # type: ignore[attr-defined]
    ids = torch.tensor([prompt.token_ids])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return [int(t) for t in out[0, ids.shape[1] :]]


def test_tiny_model_files(tiny_llm_dir: Path) -> None:
    config = json.loads((tiny_llm_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["rope_parameters"]["rope_type"] == "llama3"
    assert len(config["eos_token_id"]) == 2
    assert (tiny_llm_dir / "chat_template.jinja").exists()
    assert (tiny_llm_dir / "README.md").read_text().startswith("# Tiny random-weight llm model")


def test_prepare_renders_the_chat_template(llm_pipeline: LLMPipeline) -> None:
    prompt = llm_pipeline.prepare(HELLO, GREEDY)
    assert prompt.text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    bos = llm_pipeline.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0])
    assert prompt.token_ids[0] == bos and prompt.token_ids[1] != bos  # one BOS, from the template
    assert prompt.max_tokens == GREEDY.max_tokens


@pytest.mark.parametrize(
    ("messages", "params", "match"),
    [
        ([], GREEDY, "messages must not be empty"),
        ([ChatMessage("wizard", "hi")], GREEDY, r"messages\[0\]\.role is 'wizard'"),
        (HELLO, SamplingParams(temperature=2.5), "temperature must be between 0 and 2, got 2.5"),
        (HELLO, SamplingParams(max_tokens=0), "max_tokens must be at least 1, got 0"),
        (HELLO, SamplingParams(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (HELLO, SamplingParams(top_k=-5), "top_k must be -1"),
        (HELLO, SamplingParams(stop=("",)), "stop sequences must not be empty"),
    ],
)
def test_prepare_rejects_bad_requests(
    llm_pipeline: LLMPipeline, messages: list[ChatMessage], params: SamplingParams, match: str
) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        llm_pipeline.prepare(messages, params)


def test_over_long_input_and_max_tokens_cut_to_the_context(llm_pipeline: LLMPipeline) -> None:
    assert llm_pipeline.max_context == 512
    with pytest.raises(ContextLengthError, match=r"The messages are \d+ tokens long, but the model's context is 512"):
        llm_pipeline.prepare([ChatMessage("user", "x" * 2000)], GREEDY)
    # Room for a few tokens only: max_tokens is cut to what is left.
    prompt = llm_pipeline.prepare([ChatMessage("user", "x" * 490)], SamplingParams(max_tokens=256))
    assert prompt.max_tokens == 512 - len(prompt.token_ids) < 256


def test_model_without_chat_template_is_refused(tiny_llm_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "no-template"
    shutil.copytree(tiny_llm_dir, copy)
    (copy / "chat_template.jinja").unlink()
    with pytest.raises(ModelLoadError, match="has no chat template"):
        LLMPipeline(str(copy), device="cpu")


async def test_streamed_text_is_what_generate_returns(llm_pipeline: LLMPipeline) -> None:
    text, end = await collect(llm_pipeline, HELLO, GREEDY)
    expected = direct_generate(llm_pipeline, HELLO, GREEDY.max_tokens)
    assert text == llm_pipeline.tokenizer.decode(expected, skip_special_tokens=True)
    assert end.finish_reason == "length"
    assert end.completion_tokens == GREEDY.max_tokens
    assert end.prompt_tokens == len(llm_pipeline.prepare(HELLO, GREEDY).token_ids)


async def test_sampling_runs(llm_pipeline: LLMPipeline) -> None:
    params = SamplingParams(temperature=0.9, top_p=0.8, top_k=20, max_tokens=8)
    _, end = await collect(llm_pipeline, HELLO, params)
    assert end.completion_tokens <= 8


async def test_stop_sequence_ends_the_answer_before_it(llm_pipeline: LLMPipeline) -> None:
    full, _ = await collect(llm_pipeline, HELLO, GREEDY)
    stop = full[6:9]
    before = full[: full.index(stop)]
    text, end = await collect(llm_pipeline, HELLO, SamplingParams(temperature=0.0, max_tokens=24, stop=(stop, "never")))
    assert text == before
    assert end.finish_reason == "stop"
    assert end.completion_tokens < 24


async def test_closing_the_stream_stops_the_model(llm_pipeline: LLMPipeline) -> None:
    model: Any = llm_pipeline.backend.model  # type: ignore[attr-defined]
    steps = 0

    def count(*_: Any) -> None:
        nonlocal steps
        steps += 1

    hook = model.register_forward_hook(count)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=400)
        stream = llm_pipeline.stream(llm_pipeline.prepare(HELLO, params), params)
        async with contextlib.aclosing(stream):
            async for _ in stream:
                break
        # aclose() returned: the generation thread is idle, and no step runs after it.
        stopped_at = steps
        assert stopped_at < 20
        for _ in range(3):
            import asyncio

            await asyncio.sleep(0.05)
        assert steps == stopped_at
    finally:
        hook.remove()


def test_stop_scanner_holds_back_possible_starts() -> None:
    scanner = StopScanner(["END", "STOP"])
    assert scanner.feed("hello E") == "hello "
    assert scanner.feed("N") == ""
    assert scanner.feed("x S") == "ENx "
    assert scanner.feed("TOP and more") == ""
    assert scanner.stopped
    assert scanner.feed("later") == "" and scanner.flush() == ""


def test_stop_scanner_flushes_the_tail() -> None:
    scanner = StopScanner(["</s>"])
    assert scanner.feed("a</") == "a"
    assert scanner.flush() == "</"
    plain = StopScanner([])
    assert plain.feed("abc") == "abc" and plain.flush() == ""


async def test_multibyte_characters_are_never_split(llm_pipeline: LLMPipeline) -> None:
    from pipelines.llm.transformers_backend import _Detokenizer

    text = "héllo wörld 😀 日本"
    ids = llm_pipeline.tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = _Detokenizer(llm_pipeline.tokenizer)
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


async def test_a_slow_reader_gets_the_same_text_in_fewer_deltas(llm_pipeline: LLMPipeline) -> None:
    import asyncio

    fast, _ = await collect(llm_pipeline, HELLO, GREEDY)
    params = GREEDY
    deltas: list[TextDelta] = []
    async for event in llm_pipeline.stream(llm_pipeline.prepare(HELLO, params), params):
        if isinstance(event, TextDelta):
            deltas.append(event)
            await asyncio.sleep(0.05)  # the model runs ahead; its deltas pile up and are merged
        else:
            end = event
    assert "".join(d.text for d in deltas) == fast
    assert len(deltas) < GREEDY.max_tokens
    assert end.completion_tokens == GREEDY.max_tokens
