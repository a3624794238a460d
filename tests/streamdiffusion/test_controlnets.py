"""ControlNets (part 5): the residual math against diffusers, scale 0, guidance windows, live
switching on a running session, batching across streams with different ControlNet sets, and
each preprocessor's output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sd_helpers import frames_of


@pytest.fixture(scope="session")
def tiny_cn_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two distinct 3-channel tiny ControlNets and one 6-channel (TemporalNet2's layout)."""
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    root = tmp_path_factory.mktemp("controlnets")
    out = {"a": root / "cn-a", "b": root / "cn-b", "six": root / "cn-6ch"}
    write_tiny_controlnet(out["a"], seed=6)
    write_tiny_controlnet(out["b"], seed=7)
    write_tiny_controlnet(out["six"], conditioning_channels=6, seed=8)
    return out


def _cn(path: Path, **kw: Any) -> dict[str, Any]:
    return {"model_id": str(path), **kw}


def _run(pipe: Any, frames: Any) -> Any:
    return pipe.process(frames)


def _update(pipe: Any, **changes: Any) -> None:
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    pipe.update_params(StreamDiffusionParams(**{**pipe.params.model_dump(), **changes}))


# --- math -------------------------------------------------------------------------------------


def _state(unet: Any, controls: list[Any], cfg_type: str = "none") -> Any:
    import torch

    from pipelines.live.stream_batch import Schedule, StreamState

    sched = Schedule.build(
        {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"},
        [10, 30],
        50,
    )
    gen = torch.Generator().manual_seed(3)
    return StreamState(
        schedule=sched,
        noise=torch.randn(2, 4, 8, 8, generator=gen),
        cond=torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen),
        uncond=torch.zeros(1, 77, unet.config.cross_attention_dim),
        cfg_type=cfg_type,  # type: ignore[arg-type]
        controls=controls,
    )


def test_residuals_match_diffusers_and_windows_gate_steps(tiny_sd_dir: Path, tiny_cn_dirs: dict[str, Path]) -> None:
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from pipelines.live.controlnets import Control
    from pipelines.live.stream_batch import TorchBackend, step

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet").eval()
    cn = ControlNetModel.from_pretrained(tiny_cn_dirs["a"]).eval()

    class Recorder(TorchBackend):
        def __init__(self) -> None:
            self._unet = unet
            self.calls: list[dict[str, Any]] = []

        def unet_with_residuals(self, sample: Any, t: Any, embeds: Any, **extra: Any) -> Any:
            self.calls.append({"sample": sample, "t": t, "embeds": embeds, **extra})
            return super().unet_with_residuals(sample, t, embeds, **extra)

    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        # scale 0.7 on both steps: equal to diffusers' ControlNet at conditioning_scale 0.7
        backend = Recorder()
        state = _state(unet, [Control("a", image, 0.7)])
        step(backend, [(state, latent)], {"a": cn})
        (call,) = backend.calls
        d, m = cn(call["sample"], call["t"], encoder_hidden_states=call["embeds"], controlnet_cond=image.expand(2, -1, -1, -1),
                  conditioning_scale=0.7, return_dict=False)
        for got, want in zip(call["down_block_additional_residuals"], d, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(call["mid_block_additional_residual"], m, rtol=1e-4, atol=1e-5)
        # end 0.5 of 2 steps: only step 0's row is fed; step 1's residuals are 0
        backend = Recorder()
        step(backend, [(_state(unet, [Control("a", image, 0.7, 0.0, 0.5)]), latent)], {"a": cn})
        mid = backend.calls[0]["mid_block_additional_residual"]
        assert mid[0].abs().sum() > 0 and mid[1].abs().sum() == 0
        # start 0.5: only step 1
        backend = Recorder()
        step(backend, [(_state(unet, [Control("a", image, 0.7, 0.5, 1.0)]), latent)], {"a": cn})
        mid = backend.calls[0]["mid_block_additional_residual"]
        assert mid[0].abs().sum() == 0 and mid[1].abs().sum() > 0
        # a window that covers no step, or scale 0: the plain UNet (no residuals at all)
        backend = Recorder()
        plain = step(backend, [(_state(unet, []), latent)], {"a": cn})[0]
        zero = step(backend, [(_state(unet, [Control("a", image, 0.0)]), latent)], {"a": cn})[0]
        closed = step(backend, [(_state(unet, [Control("a", image, 1.0, 0.6, 0.9)]), latent)], {"a": cn})[0]
        assert backend.calls == []
        assert torch.equal(plain, zero) and torch.equal(plain, closed)
        fed = step(backend, [(_state(unet, [Control("a", image, 1.0)]), latent)], {"a": cn})[0]
        assert (fed - plain).abs().max() > 1e-3


def test_batch_of_streams_with_different_controlnets_equals_each_alone(tiny_sd_dir: Path, tiny_cn_dirs: dict[str, Path]) -> None:
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from pipelines.live.controlnets import Control
    from pipelines.live.stream_batch import TorchBackend, step

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet").eval()
    nets = {k: ControlNetModel.from_pretrained(tiny_cn_dirs[k]).eval() for k in ("a", "b")}
    class B(TorchBackend):
        def __init__(self) -> None:
            self._unet = unet

    backend = B()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    sets = [[Control("a", image, 0.8)], [Control("b", image, 0.5), Control("a", image, 0.3, 0.5, 1.0)], [], [Control("b", image, 1.2)]]
    latents = [torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(10 + i)) for i in range(len(sets))]
    with torch.inference_mode():
        states = [_state(unet, c, cfg) for c, cfg in zip(sets, ["none", "full", "self", "none"], strict=True)]
        for s in states:
            s.guidance_scale = 1.5
        together = step(backend, list(zip(states, latents, strict=True)), nets)
        alone = []
        for c, lat, cfg in zip(sets, latents, ["none", "full", "self", "none"], strict=True):
            s = _state(unet, c, cfg)
            s.guidance_scale = 1.5
            alone.append(step(backend, [(s, lat)], nets)[0])
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# --- the pipeline -----------------------------------------------------------------------------


def test_scale_zero_equals_none_and_live_switching(make_pipeline: Callable[..., Any], tiny_cn_dirs: dict[str, Path]) -> None:
    import torch

    frames = frames_of(1, 3)
    plain = make_pipeline()
    base = torch.cat([_run(plain, frames[i : i + 1]) for i in range(3)])
    pipe = make_pipeline(controlnets=[_cn(tiny_cn_dirs["a"], conditioning_scale=0.0, preprocessor="canny")])
    assert pipe.status()["controlnets"][0]["loaded"] is True
    assert "controlnets" not in pipe.warnings
    zero = torch.cat([_run(pipe, frames[i : i + 1]) for i in range(3)])
    assert torch.equal(base, zero)
    # scale up live: the next frame differs, no blank frame, no reload
    _update(pipe, controlnets=[_cn(tiny_cn_dirs["a"], conditioning_scale=1.0, preprocessor="canny")])
    on = _run(pipe, frames[0:1])
    again = _run(plain, frames[0:1])
    assert (on.float() - again.float()).abs().mean() > 0.5 and on.float().std() > 1
    # add a second, change the first's preprocessor, then remove both; never a reload
    _update(pipe, controlnets=[_cn(tiny_cn_dirs["a"], preprocessor="soft_edge"), _cn(tiny_cn_dirs["b"], conditioning_scale=0.5)])
    assert [c["loaded"] for c in pipe.status()["controlnets"]] == [True, True]
    two = _run(pipe, frames[0:1])
    assert not torch.equal(two, on)
    _update(pipe, controlnets=[_cn(tiny_cn_dirs["a"], preprocessor="soft_edge", enabled=False)])
    # each frame's rows are its own: once a frame entered after the switch leaves the
    # buffer (n - 1 = 2 frames later), the output is the plain model's for the same frames
    outs = [(_run(pipe, frames[i : i + 1]), _run(plain, frames[i : i + 1])) for i in range(3)]
    assert torch.equal(*outs[-1])
    assert pipe.reloads == 0 and pipe.status()["worker"]["model_reloads"] == 0


def test_warnings_name_what_cannot_run(make_pipeline: Callable[..., Any], tiny_cn_dirs: dict[str, Path], tmp_path: Path) -> None:
    pipe = make_pipeline(
        controlnets=[
            _cn(tmp_path / "missing"),
            _cn(tiny_cn_dirs["a"], preprocessor="depth_tensorrt", conditioning_channels=6),
            _cn(tiny_cn_dirs["six"], preprocessor="mediapipe_pose"),
        ]
    )
    why = pipe.warnings["controlnets"]
    assert f"{tmp_path / 'missing'} could not be loaded" in why
    assert "preprocessor depth_tensorrt: the depth model depth-anything/Depth-Anything-V2-Small-hf could not be loaded" in why
    assert "passthrough" in why
    assert "conditioning_channels 6 differs from the ControlNet's own 3" in why
    assert "mediapipe_pose is not available" in why
    out = pipe.process(frames_of(2))  # still runs: the 6-channel one gets a fitted image
    assert out.shape == (1, 64, 64, 3)


def test_feedback_and_sequential_mode(make_pipeline: Callable[..., Any], tiny_cn_dirs: dict[str, Path]) -> None:
    pipe = make_pipeline(
        use_denoising_batch=False,
        controlnets=[_cn(tiny_cn_dirs["a"], preprocessor="feedback", preprocessor_params={"feedback_strength": 0.5})],
    )
    frames = frames_of(3, 2)
    a = pipe.process(frames[0:1])
    b = pipe.process(frames[1:2])
    assert a.shape == b.shape == (1, 64, 64, 3)
    assert pipe._slot.cn_memory[str(tiny_cn_dirs["a"])]["previous_output"] is not None


def test_two_sessions_with_different_controlnets_share_one_unet_call(tiny_sd_dir: Path, tiny_cn_dirs: dict[str, Path]) -> None:
    import threading

    import torch

    from pipelines.live.diffusion_worker import WorkerPool
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    pool = WorkerPool(frame_interval_s=0.5)
    sets = [[_cn(tiny_cn_dirs["a"], preprocessor="canny")], [_cn(tiny_cn_dirs["b"], conditioning_scale=0.6, preprocessor="blur")]]
    pipes = []
    for cns in sets:
        p = StreamDiffusionPipeline(device="cpu", pool=pool)
        p.load(StreamDiffusionParams(model_id=str(tiny_sd_dir), controlnets=cns))
        pipes.append(p)
    assert pipes[0]._worker is pipes[1]._worker
    seqs = [frames_of(4, 3), frames_of(5, 3)]
    outs: list[Any] = [None, None]

    def go(i: int, k: int) -> None:
        outs[i] = pipes[i].process(seqs[i][k : k + 1])

    for k in range(3):  # from the second tick on, the worker waits for both sessions
        threads = [threading.Thread(target=go, args=(i, k)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    worker = pipes[0]._worker
    assert worker is not None and worker.status()["batch_sizes"].get("2", 0) >= 1
    # each equals its stream run alone (within float rounding of batched convolutions)
    for i, cns in enumerate(sets):
        alone = StreamDiffusionPipeline(device="cpu")
        alone.load(StreamDiffusionParams(model_id=str(tiny_sd_dir), controlnets=cns))
        ref = [alone.process(seqs[i][k : k + 1]) for k in range(3)][-1]
        assert (ref.float() - outs[i].float()).abs().max() <= 2, i
        alone.close()
    assert not torch.equal(outs[0], outs[1])
    for p in pipes:
        p.close()


# --- preprocessors ----------------------------------------------------------------------------


def _square(size: int = 64) -> Any:
    import torch

    image = torch.zeros(1, 3, size, size)
    image[..., 16:48, 16:48] = 1.0
    return image


def test_canny_finds_the_edges_of_a_square() -> None:
    from pipelines.live.preprocessors import run

    edges = run("canny", _square(), {"low_threshold": 100, "high_threshold": 200}, {})
    assert edges.shape == (1, 3, 64, 64) and edges.min() >= 0 and edges.max() <= 1
    e = edges[0, 0]
    assert e[16:48, 14:18].sum() > 20 and e[16:48, 46:50].sum() > 20  # left and right sides
    assert e[24:40, 24:40].sum() == 0 and e[:8, :8].sum() == 0  # nothing inside or far outside
    assert run("canny", _square(), {"low_threshold": 250, "high_threshold": 255}, {})[0, 0].sum() <= e.sum()


def test_blur_sharpen_soft_edge_lineart_feedback_passthrough() -> None:
    import torch

    from pipelines.live.preprocessors import fit_channels, run

    sq = _square()
    blur = run("blur", sq, {"blur_intensity": 3.0, "kernel_size": 15}, {})
    assert blur.shape == sq.shape and 0 < blur[0, 0, 32, 16] < 1 and blur[0, 0, 32, 32] > 0.9
    sharp = run("sharpen", sq * 0.5 + 0.25, {}, {})
    assert sharp.min() >= 0 and sharp.max() <= 1 and sharp[0, 0, 32, 16] > 0.75  # overshoot at the edge
    soft = run("soft_edge", sq, {}, {})
    assert soft.max() == pytest.approx(1.0) and soft[0, 0, 32, 16] > soft[0, 0, 32, 32]
    line = run("standard_lineart", 1 - sq, {}, {})
    assert line.shape == sq.shape and line[0, 0, 32, 17] > line[0, 0, 2, 2]
    prev = torch.full_like(sq, 0.2)
    fb = run("feedback", sq, {"feedback_strength": 0.25}, {"previous_output": prev})
    torch.testing.assert_close(fb, 0.75 * sq + 0.25 * prev)
    assert torch.equal(run("feedback", sq, {}, {}), sq)  # first frame passes through
    assert torch.equal(run("depth", sq, {}, {}), sq)  # unserved: passthrough
    assert fit_channels(sq, 6).shape[1] == 6 and fit_channels(sq, 1).shape[1] == 1


def test_controlnets_survive_a_model_reload(make_pipeline: Callable[..., Any], tiny_cn_dirs: dict[str, Path]) -> None:
    pipe = make_pipeline(controlnets=[_cn(tiny_cn_dirs["a"], preprocessor="canny")])
    pipe.process(frames_of(1))
    worker = pipe._worker
    worker.call(worker._reload, RuntimeError("test"))  # what a step failing for every stream does
    assert pipe._models.controlnets == {}
    pipe.process(frames_of(2))
    assert str(tiny_cn_dirs["a"]) in pipe._models.controlnets


def test_depth_preprocessor_runs_a_transformers_depth_model(
    make_pipeline: Callable[..., Any], tiny_cn_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Depth Anything's architecture (random weights: the values mean nothing, so the check is
    shape, range and that the model is what computes them)."""
    import torch
    from transformers import AutoModelForDepthEstimation

    from pipelines.live.preprocessors import run
    from pipelines.testing import write_tiny_model

    write_tiny_model("depth", tmp_path / "depth")
    model = AutoModelForDepthEstimation.from_pretrained(tmp_path / "depth").eval()
    with torch.no_grad():
        for p in model.head.parameters():  # random init leaves the ReLU head at 0
            p.normal_(0.0, 0.5)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        d = run("depth_tensorrt", image, {"detect_resolution": 56}, {}, {"depth": model})
    assert d.shape == (1, 3, 64, 64) and d.min() >= 0 and d.max() <= 1 and torch.equal(d[:, 0], d[:, 1])
    assert d.std() > 0 and not torch.equal(d, image)
    # through the pipeline: the `depth` auxiliary model from AUX_MODELS, no warning
    monkeypatch.setenv("AUX_MODELS", f"depth={tmp_path / 'depth'}")
    pipe = make_pipeline(controlnets=[_cn(tiny_cn_dirs["a"], preprocessor="depth_tensorrt", preprocessor_params={"detect_resolution": 56})])
    assert "depth" in pipe._models.aux and "controlnets" not in pipe.warnings
    assert pipe.process(frames_of(3)).shape == (1, 64, 64, 3)
