"""Cached attention (StreamV2V's extended self-attention, part 6): the processor against a
direct computation, the bank's refresh, live toggling, batching, and less flicker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sd_helpers import frames_of


class _State:
    def __init__(self, bank: Any) -> None:
        self.bank = bank


def test_self_attention_attends_to_the_banked_frames(tiny_sd_dir: Path) -> None:
    import torch
    import torch.nn.functional as F
    from diffusers import UNet2DConditionModel

    from pipelines.live.cached_attention import FeatureBank, install

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet").eval()
    hook = install(unet)
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    layer = 0
    gen = torch.Generator().manual_seed(0)
    rows, tokens, channels = 2, 16, attn.to_q.in_features
    h = torch.randn(rows, tokens, channels, generator=gen)
    bank = FeatureBank(max_frames=2)
    banked = [(torch.randn(rows, tokens, attn.to_k.out_features, generator=gen), torch.randn(rows, tokens, attn.to_v.out_features, generator=gen)) for _ in range(2)]
    bank.frames = [[kv] + [kv] * (hook.layers - 1) for kv in banked]
    with torch.no_grad():
        hook.begin([(0, [0, 1], _State(bank))], torch.zeros(rows, 4, 4, 4))
        got = attn(h)
        hook.end([])
        # direct: the current frame's queries over [own keys, frame 1's, frame 2's]
        q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
        k = torch.cat([k, banked[0][0], banked[1][0]], dim=1)
        v = torch.cat([v, banked[0][1], banked[1][1]], dim=1)
        heads = attn.heads
        split = lambda x: x.view(rows, -1, heads, x.shape[-1] // heads).transpose(1, 2)  # noqa: E731
        want = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(rows, tokens, -1)
        want = attn.to_out[0](want)
        plain = attn.processor.base(attn, h)
    assert torch.allclose(got, want, atol=1e-5)
    assert float((got - plain).abs().max()) > 1e-3  # the bank changed it
    assert layer == 0


def test_the_bank_keeps_max_frames_refreshed_every_interval(tiny_sd_dir: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from pipelines.live.cached_attention import FeatureBank, install
    from pipelines.live.stream_batch import Schedule, StreamState, TorchBackend, step

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    hook = install(pipe.unet)
    backend = TorchBackend(pipe.unet, pipe.vae)
    schedule = Schedule.build(pipe.scheduler.config, [20, 30], 50)
    gen = torch.Generator().manual_seed(1)
    emb = torch.randn(1, 77, 32, generator=gen)

    def state(bank: Any) -> StreamState:
        s = StreamState(schedule=schedule, noise=torch.randn(2, 4, 8, 8, generator=gen), cond=emb, uncond=emb)
        s.bank = bank
        return s

    with torch.inference_mode():
        every = FeatureBank(max_frames=2, interval=1)
        sparse = FeatureBank(max_frames=4, interval=3)
        a, b, plain = state(every), state(sparse), state(None)
        for i in range(7):
            latent = torch.randn(1, 4, 8, 8, generator=gen)
            step(backend, [(a, latent), (b, latent), (plain, latent)], None, [hook])
        assert len(every.frames) == 2 and len(sparse.frames) == 3  # calls 0, 3, 6
        assert len(every.frames[0]) == hook.layers and every.frames[0][0][0].shape[0] == 2  # this stream's 2 rows
        # a live change of max_frames trims the bank; the next call attends to what is left
        every.configure(1, 1)
        assert len(every.frames) == 1


def test_live_toggle_never_blanks_and_batches_per_stream(make_pipeline: Any) -> None:
    base = dict(t_index_list=[20, 30], width=64, height=64)
    pipe = make_pipeline(**base)
    stds = []
    for i, enabled in enumerate([False, True, True, False, True, True, False]):
        cfg = {"enabled": enabled, "max_frames": 1 + i % 4, "interval": 1 + i % 2}
        pipe.update_params(pipe.params.model_copy(update={"cached_attention": pipe.params.cached_attention.model_copy(update=cfg)}))
        stds.append(float(pipe.process(frames_of(i)).float().std()))
    assert min(stds) > 5 and pipe.reloads == 0
    assert pipe.status()["warnings"] == []


def _flicker(pipe: Any, sharpen: float) -> float:
    """Mean frame-to-frame output difference on a static scene with sensor noise."""
    import torch

    unet = pipe._models.pipe.unet
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn1"):  # trained self-attention is peaked, random is near-uniform
                module.to_q.weight.mul_(sharpen)
                module.to_k.weight.mul_(sharpen)
    scene = frames_of(1).float()
    gen = torch.Generator().manual_seed(5)
    prev, diffs = None, []
    for i in range(10):
        frame = (scene + torch.randn(scene.shape, generator=gen) * 20).clamp(0, 255).to(torch.uint8)
        out = pipe.process(frame).float()
        if prev is not None and i > 3:
            diffs.append(float((out - prev).abs().mean()))
        prev = out
    return sum(diffs) / len(diffs)


def test_the_bank_lowers_flicker_on_a_static_scene(make_pipeline: Any) -> None:
    base = dict(t_index_list=[20, 30], width=64, height=64)
    without = _flicker(make_pipeline(**base), 4.0)
    with_bank = _flicker(make_pipeline(**base, cached_attention={"enabled": True, "max_frames": 1, "interval": 1}), 4.0)
    assert with_bank < 0.9 * without, (with_bank, without)


def test_onnx_export_with_the_bank_as_inputs_matches_eager(tiny_sd_dir: Path, tmp_path: Path) -> None:
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch
    from diffusers import UNet2DConditionModel

    from pipelines.live.cached_attention import FeatureBank, exportable, install

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet").eval()
    hook = install(unet)
    gen = torch.Generator().manual_seed(3)
    rows = 2
    sample = torch.randn(rows, 4, 8, 8, generator=gen)
    t = torch.tensor([599, 399])
    embeds = torch.randn(rows, 77, 32, generator=gen)
    # one call banks this stream's keys/values: the bank the next call attends to
    bank = FeatureBank(max_frames=1)
    with torch.no_grad():
        hook.begin([(0, [0, 1], _State(bank))], sample)
        unet(sample, t, encoder_hidden_states=embeds)
        hook.end([])
        inputs = [x for frame in bank.frames[0] for x in frame]
        hook.begin([(0, [0, 1], _State(bank))], sample)
        sample2 = torch.randn(rows, 4, 8, 8, generator=gen)
        want = unet(sample2, t, encoder_hidden_states=embeds).sample
        hook.end([])
        module = exportable(unet, hook)
        got = module(sample2, t, embeds, *inputs)
    assert torch.allclose(got[0], want, atol=1e-5)
    names = [f"{kind}_{i}" for i in range(hook.layers) for kind in ("k", "v")]
    path = tmp_path / "unet_cached.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample2, t, embeds, *inputs),
            str(path),
            input_names=["sample", "timestep", "encoder_hidden_states", *names],
            output_names=["eps", *[f"new_{n}" for n in names]],
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"sample": sample2.numpy(), "timestep": t.numpy(), "encoder_hidden_states": embeds.numpy()}
    feed.update({n: x.numpy() for n, x in zip(names, inputs, strict=True)})
    out = session.run(None, feed)
    assert np.abs(out[0] - want.numpy()).max() < 1e-4
    assert len(out) == 1 + 2 * hook.layers and out[1].shape == tuple(inputs[0].shape)  # the new K/V to bank
