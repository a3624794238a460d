"""Cached attention (StreamV2V's extended self-attention): consecutive frames agree.

Each self-attention layer (`attn1`) of the UNet also attends to the keys and values that layer
computed for up to `max_frames` earlier frames of the same stream (StreamV2V's feature bank,
method step 2; the reference implements the same part, in TensorRT engines at 512x512 only).
Here it is a diffusers attention processor (`CachedSelfAttnProcessor`) on the eager and compile
backends (the compile backend's UNet runs eager while a bank is in use), at any resolution and
on every family.

- **Per stream, batched.** Each stream keeps its own bank (`FeatureBank`, on its
  `StreamState.bank`): per layer, `frames x (rows, tokens, channels)` keys and values, row k
  being the UNet row at step k (as the reference: "cache batch = stream batch"). In a batched
  call every row gets its stream's banked K/V concatenated after its own, padded to the
  longest bank of the call and masked (a row with fewer banked frames, or none, attends
  exactly to what it has: masked keys get zero weight).
- **Refresh.** After the call the current K/V of the stream's rows enter its bank every
  `interval` frames (sliding window of `max_frames`). A change of the row count (t_index_list,
  cfg) or of the frame size empties the bank.
- **Live.** `enabled`, `max_frames` and `interval` change on the next frame; disabling drops
  the bank, enabling starts a new one (no blank frame: the first frame attends to itself).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CachedAttentionHook", "FeatureBank", "exportable", "install", "uninstall"]


@dataclass
class FeatureBank:
    """One stream's banked self-attention keys/values.

    Attributes:
        max_frames, interval: the stream's `cached_attention` settings.
        frames: oldest first; each a list over layers of `(k, v)`, each `(rows, tokens, C)`.
    """

    max_frames: int = 1
    interval: int = 1
    frames: list[list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=list)
    calls: int = 0

    def configure(self, max_frames: int, interval: int) -> None:
        self.max_frames, self.interval = max_frames, interval
        del self.frames[: max(0, len(self.frames) - max_frames)]

    def fits(self, layer: int, rows: int, tokens: int) -> bool:
        if not self.frames:
            return True
        k = self.frames[-1][layer][0]
        return int(k.shape[0]) == rows and int(k.shape[1]) == tokens


@dataclass
class CachedAttentionHook:
    """A `stream_batch` UNet hook: sets up each call's banked K/V and banks the new ones."""

    layers: int
    #: Per call: layer -> (banked K, banked V, mask) for the whole batch, or None.
    inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] | None = None
    #: Per call: layer -> current (K, V) of the whole batch.
    current: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    active: bool = False
    _pending: list[tuple[int, int, FeatureBank]] = field(default_factory=list)
    #: ONNX export (`ExportableCachedUNet`): per layer the banked (K, V) given as graph
    #: inputs, `(B, frames * tokens, C)`, and the current (K, V) returned as outputs.
    export: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    export_out: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)

    def begin(self, rows: Sequence[tuple[int, Sequence[int], Any]], sample: torch.Tensor) -> dict[str, Any] | None:
        banks = [(offset, len(steps), bank) for offset, steps, state in rows if (bank := getattr(state, "bank", None)) is not None]
        if not banks:
            self.active = False
            return None
        self.active = True
        self._pending = banks
        self.current = [None] * self.layers
        self.inputs = None
        self._rows_total = int(sample.shape[0])
        return {}

    def banked(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Processor side: record this layer's current K/V; return K/V with the banked ones
        appended and the key mask `(B, 1, 1, keys)` (None when nothing is banked)."""
        import torch

        self.current[layer] = (key, value)
        total, tokens, channels = (int(d) for d in key.shape)
        longest = 0
        for offset, count, bank in self._pending:
            if bank.fits(layer, count, tokens):
                longest = max(longest, len(bank.frames))
        if longest == 0:
            return key, value, None
        extra_k = key.new_zeros(total, longest * tokens, channels)
        extra_v = value.new_zeros(total, longest * tokens, channels)
        mask = torch.zeros(total, tokens * (1 + longest), dtype=torch.bool, device=key.device)
        mask[:, :tokens] = True
        for offset, count, bank in self._pending:
            if not bank.fits(layer, count, tokens) or not bank.frames:
                continue
            for j, frame in enumerate(bank.frames):
                k, v = frame[layer]
                extra_k[offset : offset + count, j * tokens : (j + 1) * tokens] = k.to(key.dtype)
                extra_v[offset : offset + count, j * tokens : (j + 1) * tokens] = v.to(value.dtype)
                mask[offset : offset + count, tokens * (1 + j) : tokens * (2 + j)] = True
        return (
            torch.cat([key, extra_k], dim=1),
            torch.cat([value, extra_v], dim=1),
            mask.view(total, 1, 1, -1),
        )

    def end(self, rows: Sequence[tuple[int, Sequence[int], Any]]) -> None:
        if not self.active:
            return
        for offset, count, bank in self._pending:
            if bank.calls % bank.interval == 0 and all(c is not None for c in self.current):
                frame = []
                for cur in self.current:
                    assert cur is not None
                    k, v = cur
                    frame.append((k[offset : offset + count].detach().clone(), v[offset : offset + count].detach().clone()))
                if bank.frames and not bank.fits(0, count, int(frame[0][0].shape[1])):
                    bank.frames.clear()
                bank.frames.append(frame)
                del bank.frames[: max(0, len(bank.frames) - bank.max_frames)]
            bank.calls += 1
        self.active = False
        self._pending = []
        self.current = []


@functools.cache
def _processor_class() -> Any:
    import torch
    import torch.nn.functional as F

    class CachedSelfAttnProcessor:
        """Self-attention whose keys/values are extended with the stream's banked ones
        (falls back to diffusers' `AttnProcessor2_0` while no bank is in use)."""

        def __init__(self, hook: CachedAttentionHook, layer: int, base: Any) -> None:
            self.hook = hook
            self.layer = layer
            self.base = base

        def __call__(
            self,
            attn: Any,
            hidden_states: torch.Tensor,
            encoder_hidden_states: torch.Tensor | None = None,
            attention_mask: torch.Tensor | None = None,
            temb: torch.Tensor | None = None,
            *args: Any,
            **kwargs: Any,
        ) -> torch.Tensor:
            hook = self.hook
            if hook.export is not None and encoder_hidden_states is None and hidden_states.ndim == 3:
                return self._export(attn, hidden_states)
            if not hook.active or encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
                out: torch.Tensor = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
                return out
            residual = hidden_states
            if attn.group_norm is not None:
                hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
            batch = hidden_states.shape[0]
            query = attn.to_q(hidden_states)
            key = attn.to_k(hidden_states)
            value = attn.to_v(hidden_states)
            key, value, mask = hook.banked(self.layer, key, value)
            head_dim = key.shape[-1] // attn.heads
            query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_q is not None:
                query = attn.norm_q(query)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
            hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
            hidden_states = attn.to_out[0](hidden_states)
            hidden_states = attn.to_out[1](hidden_states)
            if attn.residual_connection:
                hidden_states = hidden_states + residual
            out = hidden_states / attn.rescale_output_factor
            return out

        def _export(self, attn: Any, hidden_states: torch.Tensor) -> torch.Tensor:
            """The traced form: banked K/V are graph inputs (every row has the same frames)."""
            hook = self.hook
            assert hook.export is not None
            batch = hidden_states.shape[0]
            query = attn.to_q(hidden_states)
            key = attn.to_k(hidden_states)
            value = attn.to_v(hidden_states)
            hook.export_out[self.layer] = (key, value)
            bank_k, bank_v = hook.export[self.layer]
            key = torch.cat([key, bank_k], dim=1)
            value = torch.cat([value, bank_v], dim=1)
            head_dim = key.shape[-1] // attn.heads
            query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
            hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
            hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
            hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
            out: torch.Tensor = hidden_states / attn.rescale_output_factor
            return out

    return CachedSelfAttnProcessor


@functools.cache
def _exportable_class() -> Any:
    import torch

    class ExportableCachedUNet(torch.nn.Module):  # type: ignore[misc]
        """The UNet with the bank as extra inputs and the new keys/values as extra outputs,
        for `torch.onnx.export` (a TensorRT engine can then carry the bank between calls):
        `forward(sample, timestep, embeds, k_0, v_0, ..., k_{L-1}, v_{L-1})` ->
        `(eps, k'_0, v'_0, ...)`, each bank input `(B, frames * tokens_l, C_l)`."""

        def __init__(self, unet: Any, hook: CachedAttentionHook) -> None:
            super().__init__()
            self.unet = unet
            self._hook = [hook]

        def forward(self, sample: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor, *bank: torch.Tensor) -> tuple[torch.Tensor, ...]:
            hook = self._hook[0]
            hook.export = [(bank[2 * i], bank[2 * i + 1]) for i in range(hook.layers)]
            hook.export_out = [None] * hook.layers
            try:
                eps = self.unet(sample, timestep, encoder_hidden_states=embeds, return_dict=False)[0]
                outs: list[torch.Tensor] = []
                for kv in hook.export_out:
                    assert kv is not None
                    outs.extend(kv)
                return (eps, *outs)
            finally:
                hook.export = None
                hook.export_out = []

    return ExportableCachedUNet


def exportable(unet: Any, hook: CachedAttentionHook) -> Any:
    """`ExportableCachedUNet` of a UNet with cached attention installed (`install`)."""
    return _exportable_class()(unet, hook)


def install(unet: Any, hook: CachedAttentionHook | None = None) -> CachedAttentionHook:
    """Put a `CachedSelfAttnProcessor` on every self-attention (`attn1`) layer of `unet`
    (worker thread); the others keep theirs. Returns the hook `stream_batch.step` runs
    (`hook`, when given: re-installing after `uninstall` keeps the streams' banks valid)."""
    cls = _processor_class()
    procs = dict(unet.attn_processors)
    selfs = [name for name in procs if name.endswith("attn1.processor")]
    hook = hook if hook is not None else CachedAttentionHook(layers=len(selfs))
    for i, name in enumerate(selfs):
        current = procs[name]
        procs[name] = cls(hook, i, current.base if isinstance(current, cls) else current)
    unet.set_attn_processor(procs)
    return hook


def uninstall(unet: Any) -> None:
    """Give the self-attention layers back their own processors (diffusers' IP-Adapter loader
    re-creates every processor from its class, which a cached one cannot be)."""
    cls = _processor_class()
    procs = dict(unet.attn_processors)
    unet.set_attn_processor({name: (p.base if isinstance(p, cls) else p) for name, p in procs.items()})
