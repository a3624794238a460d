"""ControlNet preprocessors beyond the plain-torch ones: pose (ViTPose drawn as OpenPose),
TemporalNet's optical flow, HED. Tiny random-weight models of the real architectures, 64x64."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sd_helpers import frames_of


@pytest.fixture(scope="module")
def tiny_cn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    root = tmp_path_factory.mktemp("cn-more")
    out = {"three": root / "cn", "six": root / "cn6"}
    write_tiny_controlnet(out["three"], seed=16)
    write_tiny_controlnet(out["six"], conditioning_channels=6, seed=17)
    return out


# --- pose -------------------------------------------------------------------------------------


def test_draw_pose_paints_openpose_limbs_and_joints() -> None:
    import torch

    from pipelines.live.preprocessor_pose import OPENPOSE_COLORS, draw_pose

    points = torch.zeros(18, 2)
    valid = torch.zeros(18, dtype=torch.bool)
    points[1] = torch.tensor([32.0, 16.0])  # neck
    points[2] = torch.tensor([12.0, 16.0])  # right shoulder
    valid[1] = valid[2] = True
    img = draw_pose(points, valid, 64, 64)
    assert img.shape == (1, 3, 64, 64) and img.min() >= 0 and img.max() <= 1
    red = torch.tensor(OPENPOSE_COLORS[0]) / 255.0  # limb 0: neck - right shoulder
    torch.testing.assert_close(img[0, :, 16, 22], red * 0.6)  # the limb, at 60 %
    torch.testing.assert_close(img[0, :, 16, 32], torch.tensor(OPENPOSE_COLORS[1]) / 255.0)  # the neck joint
    torch.testing.assert_close(img[0, :, 16, 12], torch.tensor(OPENPOSE_COLORS[2]) / 255.0)  # the shoulder joint
    assert img[0, :, 40:, :].sum() == 0 and img[0, :, 16, 50].sum() == 0  # black elsewhere


def test_coco_keypoints_map_to_openpose_with_a_neck() -> None:
    import torch

    from pipelines.live.preprocessor_pose import coco_to_openpose

    points = torch.arange(34, dtype=torch.float32).view(17, 2)
    scores = torch.ones(17)
    scores[9] = 0.1  # left wrist: below the threshold
    op, valid = coco_to_openpose(points, scores, 0.3)
    torch.testing.assert_close(op[1], (points[5] + points[6]) / 2)  # neck
    torch.testing.assert_close(op[2], points[6])  # OpenPose 2 = right shoulder = COCO 6
    assert not bool(valid[7]) and int(valid.sum()) == 17  # OpenPose 7 = left wrist = COCO 9


def test_pose_runs_a_transformers_vitpose(
    make_pipeline: Callable[..., Any], tiny_cn: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ViTPose's architecture with random weights: the keypoints mean nothing, so the check is
    that the model computes them, that they land in the frame, and the drawing's form."""
    import torch

    from pipelines.live.preprocessor_pose import detect_keypoints
    from pipelines.live.preprocessors import load_model, run
    from pipelines.testing import write_tiny_model

    write_tiny_model("pose", tmp_path / "pose")
    model = load_model("pose", str(tmp_path / "pose"), model_dir=None, device=torch.device("cpu"), dtype=torch.float32)
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        points, scores = detect_keypoints(image, model)
        drawn = run("openpose", image, {"confidence_threshold": 0.0}, {}, {"pose": model})
        none = run("pose_tensorrt", image, {"confidence_threshold": 1.0}, {}, {"pose": model})
    assert points.shape == (17, 2) and scores.shape == (17,)
    found = points[scores > 0]  # a peak in the letterbox's padding scores 0
    assert len(found) > 0 and found[:, 0].min() >= -0.5 and found[:, 0].max() <= 95.5
    assert found[:, 1].min() >= -0.5 and found[:, 1].max() <= 63.5
    assert drawn.shape == (1, 3, 64, 96) and drawn.min() >= 0 and drawn.max() <= 1 and drawn.sum() > 0
    assert none.sum() == 0  # every keypoint below the threshold: black
    # through the pipeline: the `pose` auxiliary model from AUX_MODELS, no warning
    monkeypatch.setenv("AUX_MODELS", f"pose={tmp_path / 'pose'}")
    pipe = make_pipeline(controlnets=[{"model_id": str(tiny_cn["three"]), "preprocessor": "pose_tensorrt"}])
    assert "pose" in pipe._models.aux and "controlnets" not in pipe.warnings
    assert pipe.process(frames_of(3)).shape == (1, 64, 64, 3)


def test_pose_without_its_model_is_a_warning(make_pipeline: Callable[..., Any], tiny_cn: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUX_MODELS", "pose=/nonexistent/vitpose")
    pipe = make_pipeline(controlnets=[{"model_id": str(tiny_cn["three"]), "preprocessor": "openpose"}])
    why = pipe.warnings["controlnets"]
    assert "preprocessor openpose: the pose model /nonexistent/vitpose could not be loaded" in why and "passthrough" in why
    assert pipe.process(frames_of(2)).shape == (1, 64, 64, 3)


# --- TemporalNet's optical flow ---------------------------------------------------------------


def _square_at(y: int, x: int, size: int = 64) -> Any:
    import torch

    image = torch.zeros(1, 3, size, size)
    image[..., y : y + 24, x : x + 24] = 1.0
    return image


def test_flow_of_a_shifted_square_points_the_right_way() -> None:
    from pipelines.live.preprocessor_flow import optical_flow

    right = optical_flow(_square_at(16, 16), _square_at(16, 20))  # 4 px right
    assert right.shape == (2, 64, 64)
    assert right[0, 16:40, 16:40].mean() > 2 and abs(float(right[1, 16:40, 16:40].mean())) < 1
    down = optical_flow(_square_at(16, 16), _square_at(19, 16))  # 3 px down
    assert down[1, 16:40, 16:40].mean() > 1.5 and abs(float(down[0, 16:40, 16:40].mean())) < 1


def test_flow_image_follows_the_middlebury_wheel() -> None:
    import torch

    from pipelines.live.preprocessor_flow import flow_to_image

    flow = torch.zeros(2, 4, 4)
    flow[0, 0, 0] = 1.0  # right: red
    flow[0, 0, 1] = -1.0  # left: cyan-blue
    flow[1, 0, 2] = -0.5  # up, half as long: half-saturated
    img = flow_to_image(flow)
    assert img.shape == (3, 4, 4) and img.min() >= 0 and img.max() <= 1
    assert img[0, 0, 0] == 1.0 and img[1, 0, 0] < 0.05 and img[2, 0, 0] < 0.3
    assert img[0, 0, 1] == 0.0 and img[1, 0, 1] > 0.75 and img[2, 0, 1] == 1.0
    torch.testing.assert_close(img[:, 3, 3], torch.ones(3))  # no motion: white
    assert 0.4 < float(img[:, 0, 2].min()) < 0.6


def test_temporal_net_gives_previous_input_and_flow() -> None:
    import torch

    from pipelines.live.preprocessor_flow import flow_to_image, optical_flow
    from pipelines.live.preprocessors import run

    memory: dict[str, Any] = {}
    a, b = _square_at(16, 16), _square_at(16, 20)
    first = run("temporal_net_tensorrt", a, {}, memory)
    assert first.shape == (1, 6, 64, 64) and torch.equal(first[:, :3], a) and first[:, 3:].sum() == 0
    second = run("temporal_net_tensorrt", b, {"flow_strength": 0.4}, memory)
    assert second.shape == (1, 6, 64, 64) and torch.equal(second[:, :3], a)  # the previous input
    torch.testing.assert_close(second[0, 3:], flow_to_image(optical_flow(a, b)))
    assert float(second[0, 3, 28, 28]) > 0.9 and float(second[0, 4, 28, 28]) < 0.5  # rightward: red
    only = run("temporal_net_tensorrt", a, {"output_format": "warped_only", "width": 32, "height": 32}, memory)
    assert only.shape == (1, 3, 64, 64) and only.min() >= 0 and only.max() <= 1


def test_temporal_net_runs_without_a_warning(make_pipeline: Callable[..., Any], tiny_cn: dict[str, Path]) -> None:
    pipe = make_pipeline(controlnets=[{"model_id": str(tiny_cn["six"]), "preprocessor": "temporal_net_tensorrt"}])
    assert "controlnets" not in pipe.warnings
    outs = [pipe.process(frames_of(i)) for i in range(3)]
    assert outs[-1].shape == (1, 64, 64, 3)
    assert pipe._slot.cn_memory[str(tiny_cn["six"])]["previous_input"].shape == (1, 3, 64, 64)


# --- HED ----------------------------------------------------------------------------------------


def test_hed_network_loads_its_checkpoint_and_gives_soft_edges(
    make_pipeline: Callable[..., Any], tiny_cn: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HED architecture (ControlNetHED.pth's state dict keys and shapes) with random weights
    at widths 4-8: loads through the same path as the real checkpoint; the output's form."""
    import torch

    from pipelines.live.preprocessor_hed import HEDNetwork
    from pipelines.live.preprocessors import load_model, run
    from pipelines.testing import write_tiny_model

    full = HEDNetwork().state_dict()  # the real checkpoint's layout
    assert {k: tuple(v.shape) for k, v in full.items() if k.startswith("block5.")}["block5.convs.2.weight"] == (512, 512, 3, 3)
    assert len(full) == 1 + 2 * (2 + 2 + 3 + 3 + 3) + 2 * 5
    write_tiny_model("hed", tmp_path / "hed")
    model = load_model("hed", str(tmp_path / "hed"), model_dir=None, device=torch.device("cpu"), dtype=torch.float32)
    assert set(model.state_dict()) == set(full)
    image = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        soft = run("hed", image, {"safe": False}, {}, {"hed": model})
        safe = run("hed", image, {}, {}, {"hed": model})
    assert soft.shape == (1, 3, 64, 48) and 0 < soft.min() and soft.max() < 1 and torch.equal(soft[:, 0], soft[:, 2])
    assert set(safe.unique().tolist()) <= {0.0, 0.5, 1.0}
    # a file path loads too; through the pipeline, the `hed` auxiliary model, no warning
    assert load_model("hed", str(tmp_path / "hed" / "ControlNetHED.pth"), model_dir=None, device=torch.device("cpu"), dtype=torch.float32)
    monkeypatch.setenv("AUX_MODELS", f"hed={tmp_path / 'hed'}")
    pipe = make_pipeline(controlnets=[{"model_id": str(tiny_cn["three"]), "preprocessor": "hed"}])
    assert "hed" in pipe._models.aux and "controlnets" not in pipe.warnings
    assert pipe.process(frames_of(2)).shape == (1, 64, 64, 3)
