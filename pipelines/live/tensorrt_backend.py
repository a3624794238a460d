"""`DenoiseBackend` on TensorRT engines (TensorRT 10+ name-based I/O).

The engines come from `pipelines.engines` (`livestream engines build`); each is one
`DenoiseBackend` call with the same inputs and outputs as `TorchBackend` (see
`pipelines.engines.onnx_export`). Per call: `set_input_shape` and `set_tensor_address` for
every input by name, outputs allocated from `get_tensor_shape` (kept per shape), then
`execute_async_v3` on the current torch CUDA stream, so no host synchronisation per frame.

CUDA graphs: for the UNet (dozens of small kernels per step at 512x512) each new input shape
is run once eagerly, then captured into a `torch.cuda.CUDAGraph` over static input/output
buffers; later calls with that shape copy into the buffers and replay. The VAE calls are a
few large kernels where replay gains little, so they run eagerly.

The graphs are built from float32 ONNX with FP16 enabled, so I/O is float32: inputs are cast
on the way in and outputs back to the pipeline's dtype (a few small copies per frame).

There is no silent fallback to PyTorch: a missing or stale engine, or a shape outside the
engine's profile, raises with the command that fixes it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ..engines.cache import CacheEntry

__all__ = ["TensorRTBackend", "TensorRTEngine", "backend_for_params", "tensorrt_available"]

log = logging.getLogger(__name__)


def tensorrt_available() -> str | None:
    """None when TensorRT imports, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"TensorRT is not installed ({exc}); use the Docker image or install tensorrt-cu12 from NVIDIA's index"
    return None


class TensorRTEngine:
    """One deserialized engine with one execution context."""

    def __init__(self, path: Path, *, cuda_graphs: bool = False) -> None:
        import tensorrt as trt

        self.path = path
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.cuda_graphs = cuda_graphs
        self._out: dict[tuple[Any, ...], dict[str, torch.Tensor]] = {}
        self._graphs: dict[tuple[Any, ...], tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
        self._seen: set[tuple[Any, ...]] = set()

    def _dtype(self, name: str) -> torch.dtype:
        import torch

        trt = self._trt
        return {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.BF16: torch.bfloat16,
            trt.DataType.INT32: torch.int32,
            trt.DataType.INT64: torch.int64,
        }[self.engine.get_tensor_dtype(name)]

    def _bind(self, inputs: dict[str, torch.Tensor], key: tuple[Any, ...]) -> dict[str, torch.Tensor]:
        import torch

        for name in self.inputs:
            tensor = inputs[name]
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                low, _, high = self.engine.get_tensor_profile_shape(name, 0)
                raise ValueError(
                    f"{self.path.name}: input {name} shape {tuple(tensor.shape)} is outside the engine's profile "
                    f"{tuple(low)}..{tuple(high)}; rebuild with `livestream engines build` for this size/batch"
                )
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = self._out.get(key)
        if outputs is None:
            outputs = {
                name: torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype(name), device=tensor.device)
                for name in self.outputs
            }
            self._out[key] = outputs
        for name, out in outputs.items():
            self.context.set_tensor_address(name, out.data_ptr())
        return outputs

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        inputs = {n: inputs[n].to(self._dtype(n)).contiguous() for n in self.inputs}
        key = tuple(tuple(inputs[n].shape) for n in self.inputs)
        stream = torch.cuda.current_stream()
        if not self.cuda_graphs:
            outputs = self._bind(inputs, key)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{self.path.name}: execute_async_v3 failed")
            return outputs
        graph = self._graphs.get(key)
        if graph is None and key in self._seen:
            # Second call with this shape: capture over static buffers (the first ran eagerly,
            # which lets TensorRT finish its lazy per-shape setup outside the capture).
            static_in = {n: t.clone() for n, t in inputs.items()}
            static_out = self._bind(static_in, key)
            cuda_graph = torch.cuda.CUDAGraph()
            capture = torch.cuda.Stream()
            capture.wait_stream(stream)
            with torch.cuda.graph(cuda_graph, stream=capture):
                self.context.execute_async_v3(capture.cuda_stream)
            stream.wait_stream(capture)
            graph = self._graphs[key] = (cuda_graph, static_in, static_out)
        if graph is None:
            self._seen.add(key)
            outputs = self._bind(inputs, key)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{self.path.name}: execute_async_v3 failed")
            return outputs
        cuda_graph, static_in, static_out = graph
        for name, tensor in inputs.items():
            static_in[name].copy_(tensor)
        cuda_graph.replay()
        return static_out


class TensorRTBackend:
    """UNet and VAE encoder/decoder engines of one cache folder (`CacheEntry`)."""

    name = "tensorrt"

    def __init__(self, folder: Path, *, dtype: torch.dtype | None = None, cuda_graphs: bool = True) -> None:
        import torch

        self.folder = folder
        self.dtype = dtype or torch.float16
        self._unet = TensorRTEngine(folder / "unet.engine", cuda_graphs=cuda_graphs)
        self._encoder = TensorRTEngine(folder / "vae_encoder.engine")
        self._decoder = TensorRTEngine(folder / "vae_decoder.engine")

    @classmethod
    def from_cache(
        cls,
        engine_dir: Path,
        model_id: str,
        *,
        model_dir: Path | None,
        vae: str,
        vae_id: str | None = None,
        width: int,
        height: int,
        unet_batch: int,
        dtype: torch.dtype | None = None,
    ) -> TensorRTBackend:
        """The engines built for this model, weights, VAE, size and batch on this TensorRT/GPU.

        Raises:
            ModelLoadError: TensorRT or the GPU missing, or no usable engine (the message says
                what differs and what to run).
        """
        from ..engines.cache import EngineCache, EngineCacheError, Environment, weights_fingerprint
        from ..errors import ModelLoadError
        from .streamdiffusion_folders import component_folders

        missing = tensorrt_available()
        if missing:
            raise ModelLoadError(f"acceleration=tensorrt: {missing}")
        try:
            env = Environment.current()
            unet_dir, vae_dir, kind = component_folders(model_id, model_dir, tiny_vae=vae == "taesd", vae_id=vae_id)
            entry: CacheEntry = EngineCache(engine_dir).find(
                model_id,
                env,
                width=width,
                height=height,
                unet_batch=unet_batch,
                weights_hash=weights_fingerprint(unet_dir, vae_dir),
                vae=kind,
            )
        except EngineCacheError as exc:
            raise ModelLoadError(f"acceleration=tensorrt: {exc}") from exc
        log.info("TensorRT engines for %s from %s", model_id, entry.path)
        return cls(entry.path, dtype=dtype)

    def unet(self, sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        out = self._unet({"sample": sample, "timestep": timesteps, "encoder_hidden_states": embeds})
        return out["latent"].to(self.dtype, copy=True)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._encoder({"images": images})["latent"].to(self.dtype, copy=True)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._decoder({"latent": latents})["images"].to(self.dtype, copy=True)


def backend_for_params(params: Any, *, model_dir: Path | None, dtype: torch.dtype, loras: list[str]) -> TensorRTBackend:
    """`acceleration=tensorrt` for a `StreamDiffusionParams` (what `load_models` calls).

    Engines are built from the model's own weights, so fused LoRAs (or an LCM-LoRA) would be
    silently missing from them: refused instead.
    """
    from ..engines.cache import default_engine_dir
    from ..errors import ModelLoadError

    if loras:
        raise ModelLoadError(
            f"acceleration=tensorrt runs engines built from the base weights; LoRAs {loras} cannot be fused into them "
            "yet: use acceleration none/compile, or a model with the LoRA merged into its weights"
        )
    rows = len(params.t_index_list)
    if params.guidance_scale > 1 and params.cfg_type == "full":
        rows *= 2
    elif params.guidance_scale > 1 and params.cfg_type == "initialize":
        rows += 1
    return TensorRTBackend.from_cache(
        default_engine_dir(model_dir),
        params.model_id,
        model_dir=model_dir,
        vae="taesd" if params.use_tiny_vae else "kl",
        vae_id=params.vae_id,
        width=params.width or 512,
        height=params.height or 512,
        unet_batch=rows,
        dtype=dtype,
    )
