"""Model-backed preprocessors batched across streams (`preprocessor_batch`), the pose
preprocessor's person detector and the `lineart` generator: tiny random-weight models of the
real architectures, counted with forward hooks on the real modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sd_helpers import frames_of


@pytest.fixture(scope="module")
def aux_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pipelines.testing import write_tiny_model

    root = tmp_path_factory.mktemp("aux")
    out = {kind: root / kind for kind in ("depth", "pose", "person-detector", "lineart")}
    for task, path in out.items():
        write_tiny_model(task, path)
    return out


def _load(kind: str, path: Path) -> Any:
    import torch

    from pipelines.live.preprocessors import load_model

    return load_model(kind, str(path), model_dir=None, device=torch.device("cpu"), dtype=torch.float32)


class _Calls:
    """Counts the forward calls of a real module and keeps each call's `pixel_values`."""

    def __init__(self, module: Any) -> None:
        self.inputs: list[Any] = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: Any, kwargs: Any) -> None:
        self.inputs.append(kwargs.get("pixel_values", args[0] if args else None))

    @property
    def count(self) -> int:
        return len(self.inputs)


def _frames() -> list[Any]:
    import torch

    gen = torch.Generator().manual_seed(3)
    return [torch.rand(1, 3, 64, 64, generator=gen), torch.rand(1, 3, 48, 80, generator=gen)]


def _run_batched(name: str, images: list[Any], params: list[dict[str, Any]], models: dict[str, Any]) -> list[Any]:
    from pipelines.live.preprocessor_batch import Deferred, run_deferred

    got: list[Any] = [None] * len(images)

    def keep(i: int) -> Callable[[Any], None]:
        def done(image: Any) -> None:
            got[i] = image

        return done

    jobs = [[Deferred(name, image, p, models, keep(i))] for i, (image, p) in enumerate(zip(images, params, strict=True))]
    assert run_deferred(jobs) == [None] * len(images)
    return got


def test_depth_of_two_streams_in_one_call_equals_each_alone(aux_dirs: dict[str, Path]) -> None:
    import torch

    from pipelines.live.preprocessors import run

    model = _load("depth", aux_dirs["depth"])
    images = _frames()
    params = {"detect_resolution": 56}
    calls = _Calls(model)
    batched = _run_batched("depth_tensorrt", images, [params, params], {"depth": model})
    assert calls.count == 1 and tuple(calls.inputs[0].shape) == (2, 3, 56, 56)
    with torch.inference_mode():
        alone = [run("depth", image, params, {}, {"depth": model}) for image in images]
    assert calls.count == 3
    for b, a, image in zip(batched, alone, images, strict=True):
        assert b.shape == image.shape and torch.allclose(b, a, atol=1e-4)
    # another detect_resolution is another model input size: its own call
    _run_batched("depth", images, [params, {"detect_resolution": 28}], {"depth": model})
    assert calls.count == 5


def test_two_sessions_depth_runs_once_per_worker_tick(tiny_sd_dir: Path, aux_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from pipelines.live.diffusion_worker import WorkerPool
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    monkeypatch.setenv("AUX_MODELS", f"depth={aux_dirs['depth']}")
    cn = aux_dirs["depth"].parent / "cn"
    if not cn.exists():
        write_tiny_controlnet(cn, seed=16)
    entry = {"model_id": str(cn), "preprocessor": "depth", "preprocessor_params": {"detect_resolution": 56}}
    pool = WorkerPool(frame_interval_s=0.5)
    pipes = []
    for width in (64, 80):
        p = StreamDiffusionPipeline(device="cpu", pool=pool)
        p.load(StreamDiffusionParams(model_id=str(tiny_sd_dir), width=width, height=64, controlnets=[entry]))
        pipes.append(p)
    try:
        worker = pipes[0]._worker
        assert worker is not None and worker is pipes[1]._worker and worker.models is not None
        calls = _Calls(worker.models.aux["depth"])
        ticks = worker.ticks
        seqs = [frames_of(4, 3), frames_of(5, 3, size=80)[:, :64]]
        outs: list[Any] = [None, None]

        def go(i: int, k: int) -> None:
            outs[i] = pipes[i].process(seqs[i][k : k + 1].contiguous())

        for k in range(3):
            threads = [threading.Thread(target=go, args=(i, k)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
        assert outs[0].shape == (1, 64, 64, 3) and outs[1].shape == (1, 64, 80, 3)
        # one depth call per tick, whatever the number of streams in it; the two streams'
        # frames (64x64 and 64x80) shared at least one call
        assert calls.count == worker.ticks - ticks
        assert max(int(x.shape[0]) for x in calls.inputs) == 2
    finally:
        for p in pipes:
            p.close()


@pytest.mark.parametrize("name", ["hed", "lineart"])
def test_hed_and_lineart_batch_frames_of_one_size(aux_dirs: dict[str, Path], tmp_path: Path, name: str) -> None:
    """They run at a size set by the frame's: frames of one size share a call, another size
    has its own; each result equals the frame's alone."""
    import torch

    from pipelines.live.preprocessor_hed import write_hed_checkpoint
    from pipelines.live.preprocessors import run

    if name == "hed":
        write_hed_checkpoint(tmp_path / "hed", widths=(4, 8, 8, 8, 8))
        model = _load("hed", tmp_path / "hed")
        counted, params = model, {"safe": False}
    else:
        model = _load("lineart", aux_dirs["lineart"])
        counted, params = model.coarse, {"detect_resolution": 64}
    gen = torch.Generator().manual_seed(5)
    images = [torch.rand(1, 3, 48, 64, generator=gen), torch.rand(1, 3, 48, 64, generator=gen), torch.rand(1, 3, 64, 64, generator=gen)]
    calls = _Calls(counted)
    batched = _run_batched(name, images, [params] * 3, {name: model})
    assert calls.count == 2 and [int(x.shape[0]) for x in calls.inputs] == [2, 1]
    with torch.inference_mode():
        alone = [run(name, image, params, {}, {name: model}) for image in images]
    for b, a in zip(batched, alone, strict=True):
        assert b.shape == a.shape and torch.allclose(b, a, atol=1e-5)


def test_a_failing_batched_call_costs_only_its_stream(aux_dirs: dict[str, Path]) -> None:
    import torch

    from pipelines.live.preprocessor_batch import Deferred, run_deferred

    model = _load("depth", aux_dirs["depth"])
    got: list[Any] = []
    good = Deferred("depth", torch.rand(1, 3, 32, 32), {"detect_resolution": 28}, {"depth": model}, got.append)
    bad = Deferred("depth", torch.rand(1, 4, 32, 32), {"detect_resolution": 28}, {"depth": model}, got.append)  # 4 channels
    errors = run_deferred([[good], [bad]])
    assert errors[0] is None and isinstance(errors[1], RuntimeError)
    assert len(got) == 1 and got[0].shape == (1, 3, 32, 32)


def test_person_detector_loads_and_pose_uses_its_boxes(aux_dirs: dict[str, Path]) -> None:
    import torch

    from pipelines.live.preprocessor_person import PersonDetector, detect_people
    from pipelines.live.preprocessor_pose import input_size, pose_crop

    detector = _load("person_detector", aux_dirs["person-detector"])
    pose_model = _load("pose", aux_dirs["pose"])
    assert isinstance(detector, PersonDetector) and detector.size == (64, 64) and detector.sigmoid and detector.person == 0
    images = _frames()
    with torch.inference_mode():
        boxes = detect_people(images, detector, 0.0)
    assert [len(b) for b in boxes] == [8, 8]  # random weights: every query scores above 0; the 8 best kept
    for b, image in zip(boxes, images, strict=True):
        h, w = image.shape[-2:]
        assert bool((b[:, 0] <= b[:, 2]).all()) and bool((b[:, 2] <= w).all()) and bool((b[:, 3] <= h).all())

    det_calls, pose_calls = _Calls(detector.model), _Calls(pose_model)
    models = {"pose": pose_model, "person_detector": detector}
    params = {"person_threshold": 0.0, "confidence_threshold": 0.0}
    drawn = _run_batched("openpose", images, [params, params], models)
    # one detector call for both frames, one ViTPose call for all their boxes: the crops of the detector's boxes
    assert det_calls.count == 1 and tuple(det_calls.inputs[0].shape) == (2, 3, 64, 64)
    assert pose_calls.count == 1
    crops = [pose_crop(image, box.tolist(), input_size(pose_model))[0] for image, b in zip(images, boxes, strict=True) for box in b]
    assert len(crops) == 16 and torch.allclose(pose_calls.inputs[0], torch.cat(crops))
    assert [tuple(d.shape) for d in drawn] == [(1, 3, 64, 64), (1, 3, 48, 80)] and all(d.sum() > 0 for d in drawn)

    # nobody found (threshold above every score): the whole frame is the box
    with torch.inference_mode():
        assert [len(b) for b in detect_people(images, detector, 1.0)] == [0, 0]
    _run_batched("pose_tensorrt", images[:1], [{"person_threshold": 1.0}], models)
    assert torch.allclose(pose_calls.inputs[-1], pose_crop(images[0], None, input_size(pose_model))[0])


def test_pose_pipeline_loads_the_person_detector(
    make_pipeline: Callable[..., Any], aux_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    write_tiny_controlnet(tmp_path / "cn", seed=16)
    monkeypatch.setenv("AUX_MODELS", f"pose={aux_dirs['pose']},person_detector={aux_dirs['person-detector']}")
    pipe = make_pipeline(controlnets=[{"model_id": str(tmp_path / "cn"), "preprocessor": "openpose"}])
    assert {"pose", "person_detector"} <= pipe._models.aux.keys() and "controlnets" not in pipe.warnings
    assert pipe.process(frames_of(3)).shape == (1, 64, 64, 3)


def test_lineart_generator_has_the_published_layout(aux_dirs: dict[str, Path]) -> None:
    import torch

    from pipelines.live.preprocessor_lineart import LineartModels
    from pipelines.live.preprocessors import run

    state = torch.load(aux_dirs["lineart"] / "sk_model.pth", weights_only=True)
    convs = ["model0.1", "model1.0", "model1.3", "model3.0", "model3.3", "model4.1"]
    convs += [f"model2.{i}.conv_block.{j}" for i in range(3) for j in (1, 5)]
    assert set(state) == {f"{c}.{p}" for c in convs for p in ("weight", "bias")}
    assert tuple(state["model0.1.weight"].shape) == (4, 3, 7, 7) and tuple(state["model3.0.weight"].shape) == (16, 8, 3, 3)
    models = _load("lineart", aux_dirs["lineart"])
    assert isinstance(models, LineartModels) and models.coarse is not None
    image = _frames()[1]
    with torch.inference_mode():
        fine = run("lineart", image, {"coarse": False, "detect_resolution": 64}, {}, {"lineart": models})
        coarse = run("lineart", image, {"detect_resolution": 64}, {}, {"lineart": models})
        # a checkpoint file loads too (its sibling sk_model2.pth as the coarse one)
        from_file = _load("lineart", aux_dirs["lineart"] / "sk_model.pth")
        again = run("lineart", image, {"coarse": False, "detect_resolution": 64}, {}, {"lineart": from_file})
    assert fine.shape == coarse.shape == (1, 3, 48, 80) and 0 <= float(fine.min()) and float(fine.max()) <= 1
    assert torch.equal(fine[:, 0], fine[:, 2]) and not torch.equal(fine, coarse) and torch.equal(fine, again)
    # the generator's output inverted: white lines on black
    with torch.inference_mode():
        raw = models.fine(torch.nn.functional.interpolate(image, size=(64, 104), mode="bilinear", align_corners=False))
        expect = 1 - torch.nn.functional.interpolate(raw, size=(48, 80), mode="bilinear", align_corners=False)
    assert torch.allclose(fine[:, :1], expect, atol=1e-5)


def test_lineart_without_its_model_is_standard_lineart_with_a_warning(
    make_pipeline: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from pipelines.live.preprocessors import UNSERVED, run
    from pipelines.testing.streamdiffusion import write_tiny_controlnet

    image = _frames()[0]
    assert torch.equal(run("lineart", image, {}, {}, {}), run("standard_lineart", image, {}, {}))
    # MediaPipe stays out: its names run as passthrough (with the warning the pipeline reports)
    assert "mediapipe_pose" in UNSERVED and run("mediapipe_pose", image, {}, {}) is image
    write_tiny_controlnet(tmp_path / "cn", seed=16)
    monkeypatch.setenv("AUX_MODELS", "lineart=/nonexistent/annotators")
    pipe = make_pipeline(controlnets=[{"model_id": str(tmp_path / "cn"), "preprocessor": "lineart"}])
    why = pipe.warnings["controlnets"]
    assert "preprocessor lineart: the lineart model /nonexistent/annotators could not be loaded" in why
    assert "standard_lineart instead" in why
    assert pipe.process(frames_of(2)).shape == (1, 64, 64, 3)
