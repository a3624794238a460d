"""The stream batch equals a step-by-step computation of the same denoising math."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import LCMScheduler

from pipelines.live.stream_batch import Schedule, StreamState, TorchBackend, blend, make_noise, step, step_sequential


def _reference(
    backend: TorchBackend,
    scheduler_config: dict[str, Any],
    t_index_list: list[int],
    latent: torch.Tensor,
    noise: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    cfg: str,
    g: float,
    delta: float,
) -> torch.Tensor:
    """One frame through every step in turn, x0 from diffusers' own `LCMScheduler.step`."""
    sched = LCMScheduler.from_config(scheduler_config)
    sched.set_timesteps(50)
    ts = [int(sched.timesteps[i]) for i in t_index_list]
    acp = sched.alphas_cumprod

    def a(t: int) -> torch.Tensor:
        return acp[t].sqrt()

    def b(t: int) -> torch.Tensor:
        return (1 - acp[t]).sqrt()

    def x0_of(x: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        sched._step_index = None  # look the step up from t again
        return sched.step(eps, t, x, return_dict=True).denoised

    guided = cfg != "none" and g > 1
    x = a(ts[0]) * latent + b(ts[0]) * noise[0:1]
    stock = noise[0:1]
    x0 = x
    for k, t in enumerate(ts):
        tt = torch.tensor([t])
        eps_c = backend.unet(x, tt, cond)
        eps_u = torch.zeros_like(eps_c)
        if guided and cfg == "full":
            eps_u = backend.unet(x, tt, uncond)
        elif guided:
            if cfg == "initialize" and k == 0:
                stock = backend.unet(x, tt, uncond)
            eps_u = delta * stock
        eps = eps_u + g * (eps_c - eps_u) if guided else eps_c
        x0 = x0_of(x, eps, t)
        if k + 1 < len(ts):
            tn = ts[k + 1]
            if cfg in ("self", "initialize"):
                # Upstream's residual: the stock noise's own x0 step, rescaled to the next step.
                stock = noise[k + 1 : k + 2] + x0_of(b(t) * stock, eps, t) * a(tn) / b(tn)
            x = a(tn) * x0 + b(tn) * noise[k + 1 : k + 2]
    return x0


@pytest.fixture(scope="module")
def parts(tiny_sd_dir: Any) -> dict[str, Any]:
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    torch.set_num_threads(1)
    pipe = StreamDiffusionPipeline(device="cpu")
    pipe.load(StreamDiffusionParams(model_id=str(tiny_sd_dir), prompt="a cat"))
    m = pipe._models
    assert m is not None
    return {
        "backend": m.backend,
        "config": m.scheduler_config,
        "cond": pipe._embed("a cat"),
        "uncond": pipe._embed("blurry"),
    }


def _state(parts: dict[str, Any], t_index_list: list[int], cfg: str, g: float, delta: float, seed: int = 7) -> StreamState:
    schedule = Schedule.build(parts["config"], t_index_list, 50)
    return StreamState(
        schedule=schedule,
        noise=make_noise((len(t_index_list), 4, 8, 8), [(seed, 1.0)]),
        cond=parts["cond"],
        uncond=parts["uncond"],
        cfg_type=cfg,  # type: ignore[arg-type]
        guidance_scale=g,
        delta=delta,
    )


@pytest.mark.parametrize(
    ("cfg", "g", "t_index_list"),
    [("none", 1.0, [10, 25, 40]), ("self", 1.6, [10, 25, 40]), ("initialize", 1.6, [5, 30]), ("full", 1.6, [10, 25, 40])],
)
def test_stream_batch_matches_step_by_step(parts: dict[str, Any], cfg: str, g: float, t_index_list: list[int]) -> None:
    n = len(t_index_list)
    gen = torch.Generator().manual_seed(1)
    latents = [torch.randn(1, 4, 8, 8, generator=gen) for _ in range(n + 3)]
    state = _state(parts, t_index_list, cfg, g, delta=0.8)
    assert state.unet_rows() == {"none": n, "self": n, "initialize": n + 1, "full": 2 * n}[cfg]
    with torch.inference_mode():
        outs = [step(parts["backend"], [(state, lat)])[0] for lat in latents]
        # Output i is frame i - (n - 1) after all n steps; the first n - 1 come from the primed buffer.
        for i in range(n - 1, len(latents)):
            ref = _reference(
                parts["backend"], parts["config"], t_index_list, latents[i - n + 1], state.noise,
                parts["cond"], parts["uncond"], cfg, g, 0.8,
            )
            torch.testing.assert_close(outs[i], ref, atol=2e-4, rtol=1e-4)
        # The sequential mode (use_denoising_batch=False) is the same computation, without lag.
        seq = _state(parts, t_index_list, cfg, g, delta=0.8)
        torch.testing.assert_close(
            step_sequential(parts["backend"], seq, latents[0]),
            _reference(parts["backend"], parts["config"], t_index_list, latents[0], seq.noise,
                       parts["cond"], parts["uncond"], cfg, g, 0.8),
            atol=2e-4, rtol=1e-4,
        )


def test_primed_buffer_gives_an_image_at_once(parts: dict[str, Any]) -> None:
    """No blank first frames: the buffer is primed with the first frame's latent noised to each
    later step, so output 0 is that frame denoised from the last step alone."""
    state = _state(parts, [10, 25, 40], "self", 1.2, 1.0)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        out = step(parts["backend"], [(state, latent)])[0]
        ref = _reference(
            parts["backend"], parts["config"], [40], latent, state.noise[2:], parts["cond"], parts["uncond"], "self", 1.2, 1.0
        )
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-4)


def test_streams_batched_together_equal_each_alone(parts: dict[str, Any]) -> None:
    """Cross-stream batching (one UNet call for several streams) changes no stream's output."""
    specs = [([10, 25, 40], "self", 1.5, 1), ([10, 25, 40], "full", 1.4, 2), ([20, 30], "initialize", 1.3, 3)]
    gen = torch.Generator().manual_seed(2)
    latents = [[torch.randn(1, 4, 8, 8, generator=gen) for _ in specs] for _ in range(4)]
    together = [_state(parts, t, c, g, 0.9, seed) for t, c, g, seed in specs]
    alone = [_state(parts, t, c, g, 0.9, seed) for t, c, g, seed in specs]
    with torch.inference_mode():
        for frame in latents:
            joint = step(parts["backend"], list(zip(together, frame, strict=True)))
            for state, lat, out in zip(alone, frame, joint, strict=True):
                torch.testing.assert_close(out, step(parts["backend"], [(state, lat)])[0], atol=2e-4, rtol=1e-4)


def test_schedule_tables_follow_lcm_grid(parts: dict[str, Any]) -> None:
    s = Schedule.build(parts["config"], [0, 16, 32, 45], 50)
    assert s.timesteps.tolist() == [999, 679, 359, 99]
    sched = LCMScheduler.from_config(parts["config"])
    torch.testing.assert_close(s.alpha.flatten() ** 2, sched.alphas_cumprod[s.timesteps].float())
    torch.testing.assert_close(s.alpha**2 + s.beta**2, torch.ones_like(s.alpha))
    # More steps than LCM's 50 original ones: the grid grows instead of failing.
    assert Schedule.build(parts["config"], [0, 99], 100).steps == 2


def test_v_prediction_is_converted_to_eps(parts: dict[str, Any]) -> None:
    config = {**parts["config"], "prediction_type": "v_prediction"}
    s = Schedule.build(config, [30], 50)
    assert s.prediction_type == "v_prediction"
    from pipelines.live.stream_batch import _to_eps

    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    x = s.alpha * x0 + s.beta * eps
    v = s.alpha * eps - s.beta * x0
    torch.testing.assert_close(_to_eps(v, x, s.alpha, s.beta, "v_prediction"), eps, atol=1e-5, rtol=1e-5)


def test_weighted_blends() -> None:
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(blend([a, b], [1.0, 3.0]), 0.25 * a + 0.75 * b)
    torch.testing.assert_close(blend([a, b], [1.0, 0.0], method="slerp"), a)
    torch.testing.assert_close(blend([a, b], [0.0, 1.0], method="slerp"), b, atol=1e-6, rtol=1e-6)
    n1 = make_noise((2, 4, 4), [(1, 1.0)])
    assert torch.equal(n1, make_noise((2, 4, 4), [(1, 1.0)]))  # fixed per seed
    assert not torch.equal(n1, make_noise((2, 4, 4), [(2, 1.0)]))


@pytest.mark.parametrize("cfg", ["full", "initialize"])
def test_prompt_update_keeps_the_negative_rows(parts: dict[str, Any], cfg: str) -> None:
    """Upstream's `update_prompt` drops the unconditional rows for full/initialize; here a new
    prompt and negative prompt both reach the UNet on the next step."""
    from pipelines.live.stream_batch import _prepare

    state = _state(parts, [10, 25, 40], cfg, 1.5, 1.0)
    latent = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        step(parts["backend"], [(state, latent)])
        state.cond, state.uncond = parts["uncond"], parts["cond"]  # swapped: a prompt update
        _, _, embeds, _ = _prepare(state, latent)
    n_uncond = 3 if cfg == "full" else 1
    assert embeds.shape[0] == state.unet_rows()
    assert torch.equal(embeds[:n_uncond], parts["cond"].expand(n_uncond, -1, -1))
    assert torch.equal(embeds[n_uncond:], parts["uncond"].expand(3, -1, -1))
