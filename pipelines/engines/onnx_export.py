"""The UNet and the VAE encoder/decoder as ONNX, checked against PyTorch with onnxruntime.

Three graphs, each with the exact semantics of one `DenoiseBackend` call, so an engine built
from them replaces `TorchBackend` one for one:

- `unet.onnx`: `sample (B, 4, h, w)`, `timestep (B,)` float32, `encoder_hidden_states
  (B, L, D)` -> `latent (B, 4, h, w)`.
- `vae_encoder.onnx`: `images (N, 3, H, W)` in [-1, 1] -> scaled latents `(N, 4, H/8, W/8)`
  (the distribution's mode, shift and scaling factor applied, as `TorchBackend.encode`).
- `vae_decoder.onnx`: scaled latents -> `images (N, 3, H, W)`.

Batch, height and width are dynamic axes, so one file covers every cross-stream batch size and
resolution; TensorRT's optimization profiles then pick the ranges.

**Exporter.** The TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`), opset 17.
On torch 2.13 with diffusers 0.42 the dynamo exporter also gives a correct graph, but it took
115 s for the tiny UNet on the 2-core CPU machine (the TorchScript one: 1 s), needs onnxscript,
and cannot make the batch axis reach 64: diffusers' upsampler branches on
`hidden_states.shape[0] >= 64`, so `torch.export` refuses `Dim(max=64)`. The TorchScript
tracer records shapes as graph ops, so `dynamic_axes` stay dynamic; its one trap is Python
branches on shapes, which are frozen at trace time. The UNet's is `forward_upsample_size`
(latent sides not divisible by the UNet's overall downsampling factor): the UNet is traced at
a latent size that is *not* divisible, so the graph always passes explicit upsample sizes
taken from the skip connections, and works for both kinds of size (768x432 is a 96x54 latent).

Models above 2 GB (protobuf's limit; SDXL's UNet) are written with their weights in one
external data file, `<name>.onnx.data`, next to the graph.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..live.streamdiffusion_folders import component_folders

if TYPE_CHECKING:
    import torch

__all__ = [
    "EXTERNAL_DATA_THRESHOLD",
    "OPSET",
    "ExportResult",
    "LoadedComponents",
    "check_parity",
    "export_model",
    "export_onnx",
    "load_components",
]

log = logging.getLogger(__name__)

OPSET = 17
#: Above this many bytes of weights the graph keeps them in an external data file.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
LATENT_FACTOR = 8


@dataclass
class LoadedComponents:
    """The modules an export needs, on the CPU in float32."""

    unet: Any
    vae: Any
    vae_kind: str  # "taesd" or "kl"
    path: Path | None
    text_dim: int
    text_len: int = 77


@dataclass
class ExportResult:
    """One exported graph: where it is, how long it took, its parity against PyTorch."""

    name: str
    path: Path
    bytes: int
    seconds: float
    external_data: bool
    #: Max abs difference per checked case, e.g. `{"b2 64x64": 1.2e-5}`.
    max_abs_diff: dict[str, float] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=float("nan"))


def load_components(
    model_id: str, model_dir: Path | None = None, *, tiny_vae: bool | None = None, vae_id: str | None = None
) -> LoadedComponents:
    """Load the UNet and VAE of a StableDiffusion-layout model, on the CPU in float32 (see
    `pipelines.live.streamdiffusion_folders.component_folders` for which VAE)."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    unet_dir, vae_dir, kind = component_folders(model_id, model_dir, tiny_vae=tiny_vae, vae_id=vae_id)
    unet = UNet2DConditionModel.from_pretrained(str(unet_dir), dtype=torch.float32)
    vae_class: Any = AutoencoderTiny if kind == "taesd" else AutoencoderKL
    vae = vae_class.from_pretrained(str(vae_dir), dtype=torch.float32)
    for module in (unet, vae):
        module.eval().requires_grad_(False)
    return LoadedComponents(
        unet=unet, vae=vae, vae_kind=kind, path=unet_dir.parent, text_dim=int(unet.config.cross_attention_dim)
    )


def _wrappers(parts: LoadedComponents) -> dict[str, Any]:
    import torch
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

    vae = parts.vae
    scaling = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(vae.config, "shift_factor", 0.0) or 0.0)

    class UNet(torch.nn.Module):  # type: ignore[misc]  # torch is not followed (mypy config): Module is Any
        def __init__(self) -> None:
            super().__init__()
            self.unet = parts.unet

        def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

    class Encoder(torch.nn.Module):  # type: ignore[misc]  # torch is not followed (mypy config): Module is Any
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            latents = retrieve_latents(self.vae.encode(images), sample_mode="argmax")
            return (latents - shift) * scaling

    class Decoder(torch.nn.Module):  # type: ignore[misc]  # torch is not followed (mypy config): Module is Any
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, latent: torch.Tensor) -> torch.Tensor:
            return self.vae.decode(latent / scaling + shift, return_dict=False)[0]

    return {"unet": UNet().eval(), "vae_encoder": Encoder().eval(), "vae_decoder": Decoder().eval()}


def _unet_factor(unet: Any) -> int:
    # Not `2 ** n`: int ** int is Any to mypy (a negative exponent gives a float); a UNet has >= 1 block.
    return 1 << (len(unet.config.block_out_channels) - 1)


def _inputs(name: str, parts: LoadedComponents, batch: int, width: int, height: int) -> dict[str, torch.Tensor]:
    import torch

    g = torch.Generator().manual_seed(batch * 1000 + width + height)
    h, w = height // LATENT_FACTOR, width // LATENT_FACTOR
    if name == "unet":
        return {
            "sample": torch.randn(batch, 4, h, w, generator=g),
            "timestep": torch.randint(0, 1000, (batch,), generator=g).float(),
            "encoder_hidden_states": torch.randn(batch, parts.text_len, parts.text_dim, generator=g),
        }
    if name == "vae_encoder":
        return {"images": torch.rand(batch, 3, height, width, generator=g) * 2 - 1}
    return {"latent": torch.randn(batch, 4, h, w, generator=g)}


_AXES = {
    "unet": {
        "sample": {0: "batch", 2: "latent_height", 3: "latent_width"},
        "timestep": {0: "batch"},
        "encoder_hidden_states": {0: "batch"},
        "latent": {0: "batch", 2: "latent_height", 3: "latent_width"},
    },
    "vae_encoder": {
        "images": {0: "batch", 2: "height", 3: "width"},
        "latent": {0: "batch", 2: "latent_height", 3: "latent_width"},
    },
    "vae_decoder": {
        "latent": {0: "batch", 2: "latent_height", 3: "latent_width"},
        "images": {0: "batch", 2: "height", 3: "width"},
    },
}
OUTPUTS = {"unet": "latent", "vae_encoder": "latent", "vae_decoder": "images"}


def export_onnx(
    name: str, module: Any, example: dict[str, torch.Tensor], out: Path, *, external_data: bool | None = None
) -> tuple[Path, bool]:
    """Export one wrapper to `out/<name>.onnx`; returns (path, whether weights are external)."""
    import tempfile

    import onnx
    import torch

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.onnx"
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    if external_data is None:
        external_data = weights > EXTERNAL_DATA_THRESHOLD
    for stale in (path, out / f"{name}.onnx.data"):
        stale.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp, warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # TracerWarnings about shape-dependent Python branches: the module docstring says
        # which one matters and how the trace handles it.
        warnings.simplefilter("ignore")
        traced = Path(tmp) / f"{name}.onnx"
        torch.onnx.export(
            module,
            tuple(example.values()),
            str(traced),
            input_names=list(example),
            output_names=[OUTPUTS[name]],
            dynamic_axes=_AXES[name],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        # Whatever the exporter did with large weights, rewrite as one graph file plus (for
        # large models) one data file next to it.
        model = onnx.load(str(traced), load_external_data=True)
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=external_data,
            all_tensors_to_one_file=True,
            location=f"{name}.onnx.data",
            size_threshold=1024,
        )
    return path, external_data


def check_parity(
    path: Path, module: Any, cases: Sequence[dict[str, torch.Tensor]], *, threads: int = 1
) -> list[float]:
    """Max abs difference between onnxruntime (CPU) and PyTorch, one per input case."""
    import numpy as np
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    diffs = []
    for inputs in cases:
        with torch.no_grad():
            expected = module(*inputs.values()).numpy()
        (got,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        if got.shape != expected.shape:
            raise AssertionError(f"{path.name}: onnxruntime gave shape {got.shape}, PyTorch {expected.shape}")
        diffs.append(float(np.abs(got - expected).max()))
    return diffs


def export_model(
    model_id: str,
    out: Path,
    *,
    model_dir: Path | None = None,
    tiny_vae: bool | None = None,
    vae_id: str | None = None,
    check_batches: Sequence[int] = (1, 3),
    check_sizes: Sequence[tuple[int, int]] = ((64, 64), (96, 72)),
    external_data: bool | None = None,
    parts: LoadedComponents | None = None,
    report: Callable[[str], None] = lambda _line: None,
) -> list[ExportResult]:
    """Export the three graphs of `model_id` into `out` and check each against PyTorch.

    Args:
        check_batches, check_sizes: the parity cases, every batch at every (width, height);
            empty to skip the check.
        external_data: force (True) or forbid (False) external weights; default by size.
    """
    parts = parts or load_components(model_id, model_dir, tiny_vae=tiny_vae, vae_id=vae_id)
    wrappers = _wrappers(parts)
    factor = _unet_factor(parts.unet)
    # A latent side not divisible by the UNet's factor (see the module docstring); 2 rows.
    trace_latent = factor * 2 + 1
    results = []
    for name, module in wrappers.items():
        side = trace_latent * LATENT_FACTOR if name == "unet" else 8 * LATENT_FACTOR
        example = _inputs(name, parts, 2, side, side)
        started = time.monotonic()
        path, external = export_onnx(name, module, example, out, external_data=external_data)
        seconds = time.monotonic() - started
        size = path.stat().st_size + sum(p.stat().st_size for p in out.glob(f"{name}.onnx.data"))
        result = ExportResult(name, path, size, seconds, external)
        cases = [(b, w, h) for b in check_batches for (w, h) in check_sizes]
        if cases:
            diffs = check_parity(path, module, [_inputs(name, parts, b, w, h) for b, w, h in cases])
            result.max_abs_diff = {f"b{b} {w}x{h}": d for (b, w, h), d in zip(cases, diffs, strict=True)}
        log.info("exported %s (%.1f MB) in %.1f s", path, size / 1e6, seconds)
        report(_describe(result))
        results.append(result)
    return results


def _describe(result: ExportResult) -> str:
    where = " + external data" if result.external_data else ""
    diffs = ", ".join(f"{case}: {d:.2e}" for case, d in result.max_abs_diff.items())
    check = f"; max abs diff vs PyTorch: {result.worst:.2e} ({diffs})" if diffs else ""
    return f"{result.name}: {result.path}{where} ({result.bytes / 1e6:.1f} MB, {result.seconds:.1f} s){check}"
