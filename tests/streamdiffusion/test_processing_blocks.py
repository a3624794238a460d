"""Processing blocks (part 6): image pre/post-processing, latent feedback, skip_diffusion, and
the output sizes ai-runner's `get_output_resolution` computes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.live.processing_blocks import output_resolution
from pipelines.live.streamdiffusion_params import StreamDiffusionParams

from sd_helpers import frames_of


def _block(*procs: tuple[str, dict[str, Any]], enabled: bool = True) -> dict[str, Any]:
    return {"enabled": enabled, "processors": [{"type": t, "params": p} for t, p in procs]}


def test_output_resolution_is_the_references() -> None:
    p = StreamDiffusionParams(image_postprocessing=_block(("realesrgan_trt", {}), ("upscale", {"scale_factor": 1.5}), ("blur", {})))
    assert output_resolution(p, 512, 384) == (1536, 1152)
    assert output_resolution(StreamDiffusionParams(image_postprocessing=_block(("upscale", {}), enabled=False)), 64, 64) == (64, 64)
    assert output_resolution(StreamDiffusionParams(image_preprocessing=_block(("upscale", {}))), 64, 64) == (64, 64)  # post only


@pytest.fixture(scope="module")
def tiny_sr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.mktemp("sr") / "tiny-sr"
    write_tiny_model("super-resolution", out)
    return out


def test_blocks_run_and_give_the_computed_sizes(make_pipeline: Any, tiny_sr: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUX_MODELS", f"super_resolution={tiny_sr}")
    base = dict(t_index_list=[20, 30], width=64, height=64)
    plain = make_pipeline(**base).process(frames_of(1)).float()
    post = _block(("upscale", {"scale_factor": 2.0, "algorithm": "bicubic"}), ("realesrgan_trt", {}), ("sharpen", {}))
    pipe = make_pipeline(**base, image_postprocessing=post)
    out = pipe.process(frames_of(1))
    want = output_resolution(pipe.params, 64, 64)
    assert tuple(out.shape[1:3]) == (want[1], want[0]) == (256, 256)
    assert pipe.status()["warnings"] == []
    # skip_diffusion: only the blocks (pre, then post), same sizes
    skip = make_pipeline(**base, skip_diffusion=True, image_preprocessing=_block(("blur", {"blur_intensity": 2.0})), image_postprocessing=_block(("upscale", {})))
    frame = frames_of(2)
    got = skip.process(frame)
    assert tuple(got.shape[1:3]) == (128, 128)
    assert float((got.float().mean() - frame.float().mean()).abs()) < 3  # the frame, blurred and resized, not diffused
    # pre-processing changes what is diffused; latent feedback blends with the previous output
    pre = make_pipeline(**base, image_preprocessing=_block(("canny", {})))
    assert float((pre.process(frames_of(1)).float() - plain).abs().mean()) > 1
    fb = make_pipeline(**base, latent_postprocessing={"processors": [{"type": "latent_feedback", "params": {"feedback_strength": 0.9}}]})
    ref = make_pipeline(**base)
    gaps = [float((fb.process(frames_of(i)).float() - ref.process(frames_of(i)).float()).abs().mean()) for i in range(5)]
    # the first frame passes through; then each output keeps 90 % of the previous one, so it
    # starts from the primed first output and closes on the plain stream's outputs
    assert gaps[0] == 0.0 and gaps[1] > 1 and gaps[1] > gaps[2] > gaps[3] > gaps[4]


def test_latent_feedback_is_the_references_blend() -> None:
    import torch

    from pipelines.live.processing_blocks import LatentFeedback
    from pipelines.live.streamdiffusion_params import LatentProcessorConfig

    proc = LatentProcessorConfig(type="latent_feedback", params={"feedback_strength": 0.25})
    blocks = LatentFeedback([proc], [])
    a, b = torch.full((1, 4, 2, 2), 4.0), torch.full((1, 4, 2, 2), 40.0)
    assert torch.equal(blocks.pre(a), a)  # nothing before the first output
    blocks.post(a)
    assert torch.allclose(blocks.pre(b), (0.75 * b + 0.25 * a).clamp(-10, 10))


def test_size_changes_mid_stream_and_missing_models_warn(make_pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUX_MODELS", "super_resolution=/nonexistent/sr")
    pipe = make_pipeline(t_index_list=[20, 30], width=64, height=64)
    assert tuple(pipe.process(frames_of(1)).shape[1:3]) == (64, 64)
    pipe.update_params(pipe.params.model_copy(update={"image_postprocessing": StreamDiffusionParams(image_postprocessing=_block(("realesrgan_trt", {}), ("lineart", {}))).image_postprocessing}))
    out = pipe.process(frames_of(1))
    assert tuple(out.shape[1:3]) == (128, 128) and float(out.float().std()) > 5 and pipe.reloads == 0
    message = {w["field"]: w["message"] for w in pipe.status()["warnings"]}["image_postprocessing"]
    assert "bicubic x2 instead" in message and "lineart: the lineart model" in message and "standard_lineart instead" in message
