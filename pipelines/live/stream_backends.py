"""Denoise backends beyond eager PyTorch: `compile` (torch.compile, Inductor).

`make_backend(name, unet, vae, device)` returns the `DenoiseBackend` a worker runs:

- `eager` — `stream_batch.TorchBackend`, the diffusers modules as they are.
- `compile` — the same modules through `torch.compile` with static shapes (`dynamic=False`):
  one graph per batch size and frame size. On CUDA the mode is `reduce-overhead`, so each
  graph is captured as a CUDA graph (outputs are cloned before the next replay overwrites
  them); on the CPU Inductor generates C++ (needs a C compiler). `prepare()` compiles ahead
  for the batch sizes in use and logs each one's progress and time. A compile that fails
  raises `BackendError`: there is no silent fallback to eager. `LIVESTREAM_TORCH_COMPILER`
  names another dynamo backend than `inductor` (e.g. `aot_eager` to debug, or in tests:
  Inductor takes minutes per graph on a small CPU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from .dynamo_config import raise_recompile_limit
from .stream_batch import TorchBackend

if TYPE_CHECKING:
    import torch

    from .stream_batch import DenoiseBackend

__all__ = ["BACKENDS", "BackendError", "CompiledBackend", "make_backend"]

log = logging.getLogger(__name__)

BACKENDS = ("eager", "compile")
#: Graphs per compiled function: batch sizes x frame sizes (dynamo's default is 8).
_RECOMPILE_LIMIT = 64


class BackendError(ModelLoadError):
    """The requested backend could not be built or compiled."""


class CompiledBackend(TorchBackend):
    """`TorchBackend` with the UNet, VAE encoder and VAE decoder through `torch.compile`.

    `eager` is the backend whose calls are compiled (default `TorchBackend`; an `SDXLBackend`
    for SDXL: its packed-embedding split and added text/time embeddings compile with the UNet);
    its `unet_with_residuals` (ControlNets, hooks) and `split_embeds` are used as they are."""

    name = "compile"

    def __init__(self, unet: Any, vae: Any, device: torch.device, eager: TorchBackend | None = None) -> None:
        import torch

        super().__init__(unet, vae)
        #: SDXL's packed embeddings -> (hidden states, added_cond_kwargs); None for SD 1.5/2.1.
        self.split_embeds: Callable[..., Any] | None = getattr(eager, "split_embeds", None)
        self.device = device
        self.cuda_graphs = device.type == "cuda"
        raise_recompile_limit(_RECOMPILE_LIMIT)
        self.compiler = os.environ.get("LIVESTREAM_TORCH_COMPILER") or "inductor"
        if self.compiler != "inductor":
            self.cuda_graphs = False
        mode = "reduce-overhead" if self.cuda_graphs else None
        eager = eager if eager is not None else TorchBackend(unet, vae)
        self._eager = eager
        self._unet_c = torch.compile(eager.unet, dynamic=False, mode=mode, backend=self.compiler)
        self._encode_c = torch.compile(eager.encode, dynamic=False, mode=mode, backend=self.compiler)
        self._decode_c = torch.compile(eager.decode, dynamic=False, mode=mode, backend=self.compiler)
        log.info("compile backend: torch.compile(backend=%r, mode=%r, dynamic=False) on %s", self.compiler, mode, device)
        self.compiled: set[tuple[str, tuple[int, ...]]] = set()
        self.compile_s = 0.0
        self._ahead = False

    def _run(self, what: str, fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
        import torch

        key = (what, tuple(args[0].shape))
        started = time.monotonic() if key not in self.compiled else None
        if started is not None and not self._ahead:
            log.warning("compile backend: compiling %s for %s now (not compiled ahead)", what, key[1])
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        if not all(a.is_inference() for a in args):
            # `prepare` compiles with inference tensors; a normal one (a slot's prompt
            # embeddings, made outside inference mode) fails dynamo's dispatch-key guard and
            # would recompile here, on the worker thread, stalling every stream.
            with torch.inference_mode():
                args = tuple(a if a.is_inference() else a.clone() for a in args)
        try:
            out = fn(*args)
        except Exception as exc:
            raise BackendError(f"torch.compile failed for {what} {key[1]}: {exc!r}") from exc
        if started is not None:
            self.compiled.add(key)
            self.compile_s += time.monotonic() - started
        # A CUDA graph's output is overwritten by its next replay.
        return out.clone() if self.cuda_graphs else out

    def unet(self, sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return self._run("unet", self._unet_c, sample, timesteps, embeds)

    def unet_with_residuals(self, sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor, **extra: Any) -> torch.Tensor:
        """The eager backend's (ControlNet residuals and hook inputs run the eager UNet)."""
        return self._eager.unet_with_residuals(sample, timesteps, embeds, **extra)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._run("encode", self._encode_c, images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._run("decode", self._decode_c, latents)

    def prepare(self, shapes: Iterable[tuple[str, tuple[tuple[int, ...], ...]]], dtype: torch.dtype) -> None:
        """Compile ahead: `shapes` are (what, input shapes) pairs, e.g.
        `("unet", ((8, 4, 64, 64), (8,), (8, 77, 1024)))`; progress is logged per graph."""
        import torch

        todo = [(what, dims) for what, dims in dict.fromkeys(shapes) if (what, dims[0]) not in self.compiled]
        self._ahead = True
        try:
            self._prepare(todo, dtype)
        finally:
            self._ahead = False

    def _prepare(self, todo: list[tuple[str, tuple[tuple[int, ...], ...]]], dtype: torch.dtype) -> None:
        import torch

        for i, (what, dims) in enumerate(todo, 1):
            started = time.monotonic()
            log.info("compile backend: %d/%d %s %s ...", i, len(todo), what, dims[0])
            with torch.inference_mode():
                if what == "unet":
                    sample, t, embeds = dims
                    self.unet(
                        torch.randn(sample, device=self.device, dtype=dtype),
                        torch.full(t, 500, device=self.device, dtype=torch.long),
                        torch.randn(embeds, device=self.device, dtype=dtype),
                    )
                elif what == "encode":
                    self.encode(torch.zeros(dims[0], device=self.device, dtype=dtype))
                else:
                    self.decode(torch.zeros(dims[0], device=self.device, dtype=dtype))
            log.info("compile backend: %d/%d %s %s done in %.1f s", i, len(todo), what, dims[0], time.monotonic() - started)


def make_backend(name: str, unet: Any, vae: Any, device: torch.device, eager: TorchBackend | None = None) -> DenoiseBackend:
    """The backend called `name` (`BACKENDS`) over `eager` (default `TorchBackend(unet, vae)`;
    an `SDXLBackend` for SDXL); raises `BackendError` for an unknown one."""
    if name == "eager":
        return eager if eager is not None else TorchBackend(unet, vae)
    if name == "compile":
        try:
            return CompiledBackend(unet, vae, device, eager)
        except Exception as exc:
            raise BackendError(f"the compile backend is not available: {exc!r}") from exc
    raise BackendError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
