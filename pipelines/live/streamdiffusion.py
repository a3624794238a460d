"""`streamdiffusion`: every frame restyled by a prompt in real time (StreamDiffusion's img2img).

The math lives in `pipelines.live.stream_batch`; this module loads the model, keeps one
stream's state, and applies parameter changes between frames:

- **Loading.** `model_id` resolves through `pipelines.loading` (local folder or Hugging Face
  id). SD 1.5 and SD 2.1 families (sd-turbo included) load as `StableDiffusionPipeline`
  components; with `use_tiny_vae` the VAE is TAESD (`vae_id`, else the model folder's own
  `taesd/`, else `madebyollin/taesd`). Non-distilled bases get an LCM-LoRA fused in
  (`lcm_lora_id`, default `latent-consistency/lcm-lora-sdv1-5` for SD 1.5), and `lora_dict`
  LoRAs with it. Distilled means: a turbo id, an LCMScheduler, or a `trailing` timestep
  spacing (sd-turbo's scheduler config).
- **Live updates** (next frame, no reload): prompt and negative prompt (embeddings cached per
  text; the change blends over `prompt_transition_frames`), guidance, delta, cfg_type,
  `t_index_list` and `num_inference_steps` (same length: the buffered frames continue on the
  new steps; other length: the buffer is primed again from the next frame, so no blank
  frame), seed (new fixed noise), filter settings, skip_diffusion. Changing a model field
  (`StreamDiffusionParams.reload_fields`) loads the new model first and swaps only when it
  loaded; on any failure the pipeline keeps its last good params and the caller reports it.
- **Warm-up.** `load` runs two frames at the params' size (or 512x512 on CUDA, 64x64 on the
  CPU) so the first real frame is fast; `warm(w, h)` does it again for a new size.
  `status()` reports load, warm-up and first-frame times.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..base import LiveParams
from ..diffusion import is_turbo_model
from ..errors import ModelLoadError
from ..loading import pick_device, resolve_model_source, torch_dtype_for
from .similarity_filter import SimilarityFilter
from .streamdiffusion_params import StreamDiffusionParams

if TYPE_CHECKING:
    import torch

    from .stream_batch import DenoiseBackend, Schedule, StreamState

__all__ = ["LCM_LORAS", "StreamDiffusionPipeline"]

log = logging.getLogger(__name__)

#: LCM-LoRA per base family (there is none for SD 2.1; give `lcm_lora_id` for one).
LCM_LORAS = {"sd15": "latent-consistency/lcm-lora-sdv1-5"}
DEFAULT_TINY_VAE = "madebyollin/taesd"
_PROMPT_CACHE = 32
_WARM_FRAMES = 2


@dataclass
class _Models:
    """What one load produced; swapped in whole so a failed reload leaves the old one."""

    model_id: str
    family: str
    distilled: bool
    device: torch.device
    dtype: torch.dtype
    tokenizer: Any
    text_encoder: Any
    backend: DenoiseBackend
    scheduler_config: dict[str, Any]
    vae: str
    loras: list[str]


class StreamDiffusionPipeline:
    """The live pipeline; one instance per session (see `pipelines.base.LivePipeline`).

    Args:
        model_dir: ai-runner's MODEL_DIR (local models and the Hugging Face cache).
        device: default CUDA when available (float16), else CPU (float32).
    """

    name: ClassVar[str] = "streamdiffusion"
    params_model: ClassVar[type[LiveParams]] = StreamDiffusionParams
    max_batch: ClassVar[int] = 1
    passthrough: ClassVar[bool] = False

    def __init__(self, *, model_dir: Path | None = None, device: str | None = None) -> None:
        self.model_dir = model_dir
        self._device_request = device
        self.device: torch.device | None = None
        self.params: StreamDiffusionParams | None = None
        self._models: _Models | None = None
        self._state: StreamState | None = None
        self._embeds: OrderedDict[str, torch.Tensor] = OrderedDict()
        #: Embeddings (prompt, negative prompt) of the current params, and where an ongoing
        #: prompt change started from.
        self._target: tuple[torch.Tensor, torch.Tensor] | None = None
        self._blend_from: tuple[torch.Tensor, torch.Tensor] | None = None
        self._blend_step = 0
        self._filter = SimilarityFilter()
        self._last_output: torch.Tensor | None = None
        self._warmed: tuple[int, int] | None = None
        # figures for status()
        self._load_started = 0.0
        self.load_ms: float | None = None
        self.warmup_ms: float | None = None
        self.first_frame_ms: float | None = None
        self.time_to_first_frame_ms: float | None = None
        self.frames = 0
        self.reloads = 0

    # --- LivePipeline -----------------------------------------------------------------------

    def load(self, params: LiveParams) -> None:
        assert isinstance(params, StreamDiffusionParams)
        self._load_started = time.monotonic()
        self._models = self._load_models(params)
        self.device = self._models.device
        self._apply(params, reset=True)
        self.load_ms = (time.monotonic() - self._load_started) * 1000
        default = 512 if self.device.type == "cuda" else 64
        self.warm(params.width or default, params.height or default)

    def warm(self, width: int, height: int) -> None:
        """Run warm-up frames at this size (once per size), then start the stream afresh."""
        import torch

        if self._warmed != (width, height) and self.params is not None and not self.params.skip_diffusion:
            started = time.monotonic()
            saved = self._state, self._last_output, self.frames
            dummy = torch.full((1, height, width, 3), 127, dtype=torch.uint8)
            for _ in range(_WARM_FRAMES):
                self._run(dummy[0], count=False)
            self._state, self._last_output, self.frames = saved
            self.warmup_ms = (time.monotonic() - started) * 1000
            log.info("streamdiffusion warmed up at %dx%d in %.0f ms", width, height, self.warmup_ms)
        self._warmed = (width, height)
        self._reset_stream()

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        import torch

        started = time.monotonic()
        outputs = [self._run(frame) for frame in frames]
        if self.first_frame_ms is None:
            self.first_frame_ms = (time.monotonic() - started) * 1000
            self.time_to_first_frame_ms = (time.monotonic() - self._load_started) * 1000
        return torch.stack(outputs)

    def update_params(self, params: LiveParams) -> None:
        """Apply a validated full param set (see the module docstring); raises and keeps the
        last good params when it cannot be applied."""
        assert isinstance(params, StreamDiffusionParams)
        current = self.params
        if current is not None and any(getattr(current, f) != getattr(params, f) for f in params.reload_fields):
            models = self._load_models(params)
            old = self._models
            self._models, self.device = models, models.device
            try:
                self._embeds.clear()
                self._apply(params, reset=True)
            except Exception:
                self._models, self.device = old, old.device if old is not None else None
                self._embeds.clear()
                raise
            self.reloads += 1
            size, self._warmed = self._warmed, None
            if size is not None:
                self.warm(*size)
            return
        self._apply(params, reset=False)

    def close(self) -> None:
        self._models = None
        self._state = None
        self._embeds.clear()
        self._last_output = None

    def status(self) -> dict[str, Any]:
        """Figures for the session's status event."""
        m, p, s = self._models, self.params, self._state
        return {
            "model_id": m.model_id if m else None,
            "family": m.family if m else None,
            "distilled": m.distilled if m else None,
            "vae": m.vae if m else None,
            "loras": m.loras if m else [],
            "backend": getattr(m.backend, "name", type(m.backend).__name__) if m else None,
            "acceleration_requested": p.acceleration if p else None,
            "device": str(m.device) if m else None,
            "dtype": str(m.dtype).removeprefix("torch.") if m else None,
            "unet_batch": s.unet_rows() if s else None,
            "load_ms": _round(self.load_ms),
            "warmup_ms": _round(self.warmup_ms),
            "first_frame_ms": _round(self.first_frame_ms),
            "time_to_first_frame_ms": _round(self.time_to_first_frame_ms),
            "frames": self.frames,
            "frames_skipped": self._filter.skipped,
            "reloads": self.reloads,
        }

    # --- loading ----------------------------------------------------------------------------

    def _load_models(self, params: StreamDiffusionParams) -> _Models:
        import torch
        from diffusers import AutoencoderTiny, DiffusionPipeline, StableDiffusionPipeline

        from .stream_batch import TorchBackend

        device = pick_device(self._device_request)
        dtype = torch_dtype_for(device)
        source = resolve_model_source(params.model_id, self.model_dir)
        kwargs = source.from_pretrained_kwargs()
        try:
            index = DiffusionPipeline.load_config(source.pretrained_name, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Could not load streamdiffusion model {params.model_id!r}: {exc}") from exc
        class_name = str(index.get("_class_name", ""))
        if "XL" in class_name or "unet" not in index or "text_encoder" not in index:
            raise ModelLoadError(
                f"streamdiffusion supports SD 1.5 / SD 2.1 / sd-turbo pipelines; {params.model_id!r} is {class_name!r}."
            )
        extra: dict[str, Any] = {}
        vae_name = "full"
        if params.use_tiny_vae:
            tiny_id = params.vae_id or self._bundled_tiny_vae(source.path) or DEFAULT_TINY_VAE
            tiny_source = resolve_model_source(tiny_id, self.model_dir, probe_file="config.json")
            try:
                extra["vae"] = AutoencoderTiny.from_pretrained(
                    tiny_source.pretrained_name, dtype=dtype, **tiny_source.from_pretrained_kwargs()
                )
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"Could not load the tiny VAE {tiny_id!r}: {exc}") from exc
            vae_name = f"taesd ({tiny_id})"
        if device.type == "cuda" and source.has_fp16_variant():
            extra["variant"] = "fp16"
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                source.pretrained_name,
                dtype=dtype,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
                **extra,
                **kwargs,
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelLoadError(f"Could not load streamdiffusion model {params.model_id!r}: {exc}") from exc
        unet = pipe.unet
        family = "sd21" if unet.config.use_linear_projection else "sd15"
        scheduler_config = dict(pipe.scheduler.config)
        distilled = (
            is_turbo_model(params.model_id)
            or (source.path is not None and is_turbo_model(source.path.name))
            or pipe.scheduler.__class__.__name__ == "LCMScheduler"
            or scheduler_config.get("timestep_spacing") == "trailing"
        )
        loras = self._fuse_loras(pipe, params, family, distilled)
        pipe.to(device)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.eval().requires_grad_(False)
        log.info(
            "streamdiffusion %s loaded (%s%s, vae %s, loras %s) on %s %s",
            params.model_id,
            family,
            ", distilled" if distilled else "",
            vae_name,
            loras or "none",
            device,
            dtype,
        )
        if params.acceleration != "none":
            log.warning(
                "acceleration=%r requested; this build runs the PyTorch backend (status says so)", params.acceleration
            )
        return _Models(
            model_id=params.model_id,
            family=family,
            distilled=distilled,
            device=device,
            dtype=dtype,
            tokenizer=pipe.tokenizer,
            text_encoder=pipe.text_encoder,
            backend=TorchBackend(pipe.unet, pipe.vae),
            scheduler_config=scheduler_config,
            vae=vae_name,
            loras=loras,
        )

    @staticmethod
    def _bundled_tiny_vae(path: Path | None) -> str | None:
        from ..tiny_streamdiffusion import TAESD_SUBFOLDER

        if path is not None and (path / TAESD_SUBFOLDER / "config.json").is_file():
            return str(path / TAESD_SUBFOLDER)
        return None

    def _fuse_loras(self, pipe: Any, params: StreamDiffusionParams, family: str, distilled: bool) -> list[str]:
        wanted: dict[str, float] = {}
        if params.use_lcm_lora and not distilled:
            lcm = params.lcm_lora_id or LCM_LORAS.get(family)
            if lcm is None:
                log.warning("no LCM-LoRA known for %s bases; set lcm_lora_id to use one", family)
            else:
                wanted[lcm] = 1.0
        wanted.update(params.lora_dict or {})
        if not wanted:
            return []
        names = []
        for i, repo in enumerate(wanted):
            name = f"lora{i}"
            try:
                src = resolve_model_source(repo, self.model_dir, probe_file="pytorch_lora_weights.safetensors")
                pipe.load_lora_weights(src.pretrained_name, adapter_name=name, **src.from_pretrained_kwargs())
            except (ModelLoadError, OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ModelLoadError(f"Could not load LoRA {repo!r}: {exc}") from exc
            names.append(name)
        pipe.set_adapters(names, adapter_weights=list(wanted.values()))
        pipe.fuse_lora(components=["unet", "text_encoder"], adapter_names=names)
        pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
        return list(wanted)

    # --- params -----------------------------------------------------------------------------

    def _apply(self, params: StreamDiffusionParams, *, reset: bool) -> None:
        """Build everything the new params need, then commit it (nothing changes on error)."""
        from .stream_batch import Schedule

        m = self._models
        assert m is not None, "load() first"
        old = self.params
        schedule = Schedule.build(
            m.scheduler_config, params.t_index_list, params.num_inference_steps, device=m.device, dtype=m.dtype
        )
        cond = self._prompt_embeds(params)
        uncond = self._embed(params.negative_prompt)
        state = self._state
        noise = None
        if state is not None and not reset:
            if old is None or (old.seeds(), old.seed_interpolation_method, old.normalize_seed_weights) != (
                params.seeds(),
                params.seed_interpolation_method,
                params.normalize_seed_weights,
            ) or state.schedule.steps != schedule.steps:
                noise = self._noise(params, (schedule.steps, *state.latent_shape))
        # commit
        self.params = params
        self._filter.configure(params.similar_image_filter_threshold, params.similar_image_filter_max_skip_frame)
        self._target = (cond, uncond)
        if state is None or reset:
            self._state = None
            self._blend_from = None
            return
        if old is None or (old.prompt, old.prompt_interpolation_method, old.normalize_prompt_weights, old.negative_prompt) != (
            params.prompt,
            params.prompt_interpolation_method,
            params.normalize_prompt_weights,
            params.negative_prompt,
        ):
            self._blend_from = (state.cond, state.uncond)
            self._blend_step = 0
        if state.schedule.steps != schedule.steps:
            state.reset()  # the next frame primes the new buffer
        state.schedule = schedule
        if noise is not None:
            state.noise = noise
            state.stock = None
        state.cfg_type = params.cfg_type
        state.guidance_scale = params.guidance_scale
        state.delta = params.delta
        state.do_add_noise = params.do_add_noise
        if not params.enable_similar_image_filter:
            self._filter.reset()

    def _reset_stream(self) -> None:
        self._state = None
        self._last_output = None
        self._filter.reset()
        self._blend_from = None

    def _noise(self, params: StreamDiffusionParams, shape: tuple[int, ...]) -> torch.Tensor:
        from .stream_batch import make_noise

        m = self._models
        assert m is not None
        noise = make_noise(
            shape, params.seeds(), method=params.seed_interpolation_method, normalize=params.normalize_seed_weights
        )
        return noise.to(device=m.device, dtype=m.dtype)

    def _embed(self, text: str) -> torch.Tensor:
        """`(1, 77, D)` text-encoder output for `text`, cached."""
        import torch

        cached = self._embeds.get(text)
        if cached is not None:
            self._embeds.move_to_end(text)
            return cached
        m = self._models
        assert m is not None
        ids = m.tokenizer(
            text, padding="max_length", max_length=m.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(m.device)
        with torch.inference_mode():
            embeds = m.text_encoder(ids)[0].to(m.dtype)
        self._embeds[text] = embeds
        while len(self._embeds) > _PROMPT_CACHE:
            self._embeds.popitem(last=False)
        return embeds

    def _prompt_embeds(self, params: StreamDiffusionParams) -> torch.Tensor:
        from .stream_batch import blend

        pairs = params.prompts()
        embeds = [self._embed(text) for text, _ in pairs]
        return blend(
            embeds,
            [w for _, w in pairs],
            method=params.prompt_interpolation_method,
            normalize=params.normalize_prompt_weights,
        )

    # --- frames -----------------------------------------------------------------------------

    def _run(self, frame: torch.Tensor, *, count: bool = True) -> torch.Tensor:
        """One `(H, W, 3)` uint8 frame through the stream; returns `(H, W, 3)` uint8 on the model's device."""
        import torch

        from .stream_batch import StreamState, step, step_sequential

        p, m = self.params, self._models
        assert p is not None and m is not None, "load() first"
        if p.skip_diffusion:
            return frame
        with torch.inference_mode():
            x = frame.to(m.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).to(m.dtype)
            x = x / 127.5 - 1.0
            if p.enable_similar_image_filter and count and self._filter.should_skip(x):
                last = self._last_output
                if last is not None and last.shape == frame.shape:
                    self.frames += 1
                    return last
            latent = m.backend.encode(x)
            state = self._state
            if state is None or state.latent_shape != tuple(latent.shape[1:]):
                state = self._new_state(p, tuple(latent.shape[1:]))
            self._advance_blend(state)
            if p.use_denoising_batch:
                (out,) = step(m.backend, [(state, latent)])
            else:
                out = step_sequential(m.backend, state, latent)
            image = m.backend.decode(out)
            # Stays on the device: the session moves the batch to the CPU once.
            result = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
        self._state = state
        if count:
            self._last_output = result
            self.frames += 1
        return result

    def _new_state(self, p: StreamDiffusionParams, latent_shape: tuple[int, ...]) -> StreamState:
        from .stream_batch import Schedule, StreamState

        m = self._models
        assert m is not None
        schedule = Schedule.build(m.scheduler_config, p.t_index_list, p.num_inference_steps, device=m.device, dtype=m.dtype)
        assert self._target is not None
        cond, uncond = self._target
        self._blend_from = None
        return StreamState(
            schedule=schedule,
            noise=self._noise(p, (schedule.steps, *latent_shape)),
            cond=cond,
            uncond=uncond,
            cfg_type=p.cfg_type,
            guidance_scale=p.guidance_scale,
            delta=p.delta,
            do_add_noise=p.do_add_noise,
        )

    def _advance_blend(self, state: StreamState) -> None:
        """Move the embeddings one frame along an ongoing prompt change."""
        from .stream_batch import blend

        p, target = self.params, self._target
        assert p is not None and target is not None
        if self._blend_from is None:
            state.cond, state.uncond = target
            return
        self._blend_step += 1
        t = min(1.0, self._blend_step / p.prompt_transition_frames)
        if t >= 1.0:
            state.cond, state.uncond = target
            self._blend_from = None
            return
        (c0, u0), (c1, u1) = self._blend_from, target
        method = p.prompt_interpolation_method
        state.cond = blend([c0, c1], [1 - t, t], method=method)
        state.uncond = blend([u0, u1], [1 - t, t], method=method)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
