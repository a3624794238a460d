"""ONNX export of the tiny sd-turbo-family model, checked against PyTorch with onnxruntime at
two batch sizes and two resolutions (one whose latent is not divisible by the UNet's
downsampling factor); the `engines` CLI (export-onnx, list, clear); prepare without TensorRT."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra")
pytest.importorskip("onnx", reason="onnx is in the dev extra")

#: float32 CPU, onnxruntime vs PyTorch: differences are ~1e-5 (summation order).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def cli_export(tiny_streamdiffusion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`livestream engines export-onnx --model-id TINY --out DIR` (TAESD: the bundled one)."""
    import torch

    from livestream.cli import main

    out = tmp_path_factory.mktemp("onnx")
    stdout = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with contextlib.redirect_stdout(stdout):
        rc = main(["engines", "export-onnx", "--model-id", str(tiny_streamdiffusion_dir), "--out", str(out)])
    torch.set_num_threads(threads)
    assert rc == 0
    return out, stdout.getvalue()


def test_export_onnx_cli_writes_the_graphs_and_prints_the_difference(cli_export: tuple[Path, str]) -> None:
    out, printed = cli_export
    for name in ("unet", "vae_encoder", "vae_decoder"):
        assert (out / f"{name}.onnx").is_file()
        line = next(line for line in printed.splitlines() if line.startswith(f"max abs diff {name}:"))
        assert float(line.split(":")[1]) < TOLERANCE, printed
    # every case is reported: 2 batches x 2 sizes
    assert "b1 64x64" in printed and "b3 96x72" in printed


def test_the_graphs_have_dynamic_batch_and_size_axes(cli_export: tuple[Path, str]) -> None:
    import onnx

    out, _ = cli_export
    unet = onnx.load(str(out / "unet.onnx"), load_external_data=False)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in unet.graph.input}
    assert dims["sample"] == ["batch", 4, "latent_height", "latent_width"]
    assert dims["timestep"] == ["batch"]
    assert dims["encoder_hidden_states"] == ["batch", 77, 32]
    encoder = onnx.load(str(out / "vae_encoder.onnx"), load_external_data=False)
    assert [d.dim_param or d.dim_value for d in encoder.graph.input[0].type.tensor_type.shape.dim] == [
        "batch",
        3,
        "height",
        "width",
    ]


def test_a_batch_and_size_the_export_never_saw(cli_export: tuple[Path, str], tiny_streamdiffusion_dir: Path) -> None:
    """Cross-stream batches (e.g. 4 streams x 3 rows = 12) and a non-square 16:9-ish size."""
    from pipelines.engines.onnx_export import _inputs, _wrappers, check_parity, load_components

    out, _ = cli_export
    parts = load_components(str(tiny_streamdiffusion_dir))
    unet = _wrappers(parts)["unet"]
    diffs = check_parity(out / "unet.onnx", unet, [_inputs("unet", parts, 12, 128, 72)])
    assert diffs[0] < TOLERANCE


def test_autoencoder_kl_with_external_data(tiny_streamdiffusion_dir: Path, tmp_path: Path) -> None:
    """The full VAE, and weights in `<name>.onnx.data` as models above 2 GB are written."""
    from pipelines.engines.onnx_export import export_model

    results = export_model(
        str(tiny_streamdiffusion_dir), tmp_path, tiny_vae=False, external_data=True, check_batches=(1, 2), check_sizes=((64, 64), (80, 48))
    )
    assert [r.name for r in results] == ["unet", "vae_encoder", "vae_decoder"]
    for r in results:
        assert r.external_data and (tmp_path / f"{r.name}.onnx.data").stat().st_size > 0
        assert len(r.max_abs_diff) == 4 and r.worst < TOLERANCE, r.max_abs_diff
    # The graph file alone is small: the weights are outside it.
    assert (tmp_path / "unet.onnx").stat().st_size < (tmp_path / "unet.onnx.data").stat().st_size


def test_engines_list_and_clear_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engines_fakes import ADA, fake_build, spec

    from livestream.cli import main
    from pipelines.engines.cache import EngineCache

    cache = EngineCache(tmp_path)
    fake_build(cache, spec(), ADA)
    (tmp_path / "sd-turbo--deadbeef").mkdir()  # an interrupted build
    assert main(["engines", "list", "--engine-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "2 engine folder(s) (no TensorRT/GPU here)" in printed
    assert "model_id=stabilityai/sd-turbo" in printed and "tensorrt=10.12.0" in printed and "sm8.9" in printed
    assert "stale: no manifest (an interrupted build)" in printed
    assert main(["engines", "clear", "--stale", "--engine-dir", str(tmp_path)]) == 0
    assert "removed 1 engine folder(s)" in capsys.readouterr().out
    assert len(cache.entries()) == 1
    assert main(["engines", "clear", "--engine-dir", str(tmp_path)]) == 0
    assert cache.entries() == []


def test_build_and_prepare_say_why_without_tensorrt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.live.tensorrt_backend import tensorrt_available

    if tensorrt_available() is None:
        pytest.skip("TensorRT is installed here: tests/engines/test_tensorrt.py covers the build")
    from livestream.cli import main
    from pipelines.engines.build import prepare_engines
    from pipelines.prepare import ENGINE_BUILDERS

    assert main(["engines", "build", "--model-id", "x", "--engine-dir", str(tmp_path)]) == 1
    assert "TensorRT is not installed" in capsys.readouterr().out
    lines: list[str] = []
    assert prepare_engines("streamdiffusion", tmp_path, report=lines.append) is None
    assert "no TensorRT engines built: TensorRT is not installed" in lines[0]
    assert "streamdiffusion" in ENGINE_BUILDERS


def test_acceleration_tensorrt_fails_the_load_instead_of_falling_back(tiny_streamdiffusion_dir: Path) -> None:
    from pipelines.errors import ModelLoadError
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams
    from pipelines.live.tensorrt_backend import backend_for_params, tensorrt_available

    params = StreamDiffusionParams(model_id=str(tiny_streamdiffusion_dir), acceleration="tensorrt")
    with pytest.raises(ModelLoadError, match="LoRAs"):
        backend_for_params(params, model_dir=None, dtype=None, loras=["some/lora"])  # type: ignore[arg-type]
    if tensorrt_available() is None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(ModelLoadError, match="acceleration=tensorrt: TensorRT is not installed"):
        backend_for_params(params, model_dir=None, dtype=None, loras=[])  # type: ignore[arg-type]


def test_loading_the_live_pipeline_with_tensorrt_and_no_engines_falls_back(tiny_streamdiffusion_dir: Path) -> None:
    import torch

    from pipelines.live.streamdiffusion import load_models
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    params = StreamDiffusionParams(model_id=str(tiny_streamdiffusion_dir), acceleration="tensorrt")
    # Here: TensorRT is missing. In the image: no engines in ENGINE_DIR. ai-runner's clients ask
    # for tensorrt by default (issue 20): eager PyTorch instead, with a warning.
    models = load_models(params, model_dir=None, device=torch.device("cpu"))
    assert models.backend.name == "eager"
    assert "TensorRT is not available" in models.warnings["acceleration"]
