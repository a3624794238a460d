"""A tiny random-weight Llama-3-style chat model, tokenizer and chat template built locally.

The real models of the `llm` task (Llama-3.x-Instruct) are `LlamaForCausalLM` with a byte-level
BPE tokenizer, five header/turn special tokens and a chat template. This builds the same family
shrunk to ~60 kB: a BPE trained in memory on a few sentences (no download), a 2-layer Llama with
grouped-query attention and llama3 rope scaling, and Llama-3's stop tokens
(`<|end_of_text|>`, `<|eot_id|>`) in both the config and the generation config.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "write_tiny_llm"]

#: Llama-3's special tokens, in the order they get ids after the BPE vocabulary.
SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

#: Llama-3's chat template without the tool-calling and date branches.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Livestream turns a live video into a new one with a diffusion model.",
    "Hello! How can I help you today?",
    "A Livepeer orchestrator sends jobs to the runner over HTTP.",
    "Tokens stream back to the client one at a time as server-sent events.",
    "The weather is nice and the sky is blue, so we walk to the park.",
    "Write a short poem about the sea, the wind and the stars.",
    "You are a helpful assistant. Answer briefly and politely.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "What is the capital of France? Paris is the capital of France.",
]

_VOCAB_SIZE = 384
_CONTEXT = 512


def _tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    bpe.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=_CONTEXT,
    )


def write_tiny_llm(out: Path, *, hidden_size: int = 32, num_layers: int = 2) -> None:
    """Write a tiny `LlamaForCausalLM` chat model and its tokenizer into folder `out`.

    Hidden 32, intermediate 64, 2 layers, 4 query heads over 2 KV heads of dim 8, a 512-token
    context (small so that over-long input is cheap to test), seeded weights. Benchmarks pass a
    larger `hidden_size`/`num_layers` (same shape otherwise) for tokens/s that mean something.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}  # type: ignore[attr-defined]
    eos = [ids["<|end_of_text|>"], ids["<|eot_id|>"]]
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=_CONTEXT,
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=eos,
        pad_token_id=ids["<|end_of_text|>"],
        tie_word_embeddings=True,
        initializer_range=0.5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 128,
        },
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=eos,
        pad_token_id=config.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
    )
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
