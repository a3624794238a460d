"""`streamdiffusion`: every frame restyled by a prompt in real time (StreamDiffusion's img2img).

The math lives in `pipelines.live.stream_batch`; the model runs on a shared GPU worker
(`pipelines.live.diffusion_worker`): every session using the same model (same `model_id`,
LoRAs, VAE, backend and device) is a slot on one worker, and each tick runs the newest frame
of all of them through one UNet call. This module loads the model (on the worker's thread),
keeps one session's stream in its slot (`_StreamSlot`), and applies parameter changes to that
slot between ticks:

- **Loading.** `model_id` resolves through `pipelines.loading` (local folder or Hugging Face
  id). SD 1.5 and SD 2.1 families (sd-turbo included) load as `StableDiffusionPipeline`
  components; with `use_tiny_vae` the VAE is TAESD (`vae_id`, else the model folder's own
  `taesd/`, else `madebyollin/taesd`). Non-distilled bases get an LCM-LoRA fused in
  (`lcm_lora_id`, default `latent-consistency/lcm-lora-sdv1-5` for SD 1.5), and `lora_dict`
  LoRAs with it. Distilled means: a turbo id, an LCMScheduler, or a `trailing` timestep
  spacing (sd-turbo's scheduler config).
- **Backend.** `acceleration`: `none` runs eager PyTorch, `compile` runs `torch.compile`
  (`pipelines.live.stream_backends`), compiled ahead at warm-up for the pool's `compile_streams` (1..4)
  streams at the frame size; `tensorrt` runs prebuilt engines (`pipelines.live.tensorrt_backend`,
  docs/tensorrt.md). The backend is logged and in `status()`; a backend that fails
  fails the load (no silent fallback).
- **Live updates** (next frame, no reload): prompt and negative prompt (embeddings cached per
  text on the worker; the change blends over `prompt_transition_frames`), guidance, delta,
  cfg_type, `t_index_list` and `num_inference_steps` (same length: the buffered frames
  continue on the new steps; other length: the buffer is primed again from the next frame, so
  no blank frame), seed (new fixed noise), filter settings, skip_diffusion. They replace this
  session's slot only; the other sessions on the worker are untouched. Changing a model field
  (`StreamDiffusionParams.reload_fields`) joins the worker of the new model in the background
  (`pipelines.live.background_reload`: loading it if no session has, and warming it up at the
  stream's size) while the stream goes on: with `show_reloading_frame` it shows its last
  output dimmed under a "loading" line, else the old model keeps restyling. The new model is
  swapped in between two batches once it is ready (`pending_update`, `finish_update`: the
  session's pipeline stage waits for the load on the event loop, not on the pipeline's
  thread), and the old one left; param sets that arrive meanwhile wait (the latest wins). A
  reload that fails keeps the last good params, and the session reports why.
- **Warm-up.** `load` runs two frames at the params' size (or 512x512 on CUDA, 64x64 on the
  CPU) so the first real frame is fast; `warm(w, h)` does it again for a new size.
  `status()` reports load, warm-up and first-frame times and the worker's figures.
- **A new session never stalls the running ones.** Its setup runs in a child process, on
  its own (pipeline) thread, or in slices between the worker's ticks. With Inductor the
  compile for a new size runs first in a child process (`pipelines.live.precompile`: its own
  GIL, bounded, killed by `close`), which leaves the compiled graphs in Inductor's on-disk
  caches; the compile backend's `prepare` then runs on the session's thread, off the tick
  path, and loads them (dynamo's tracing is what is left of it; dynamo's code cache is shared
  by threads, so the worker's next call at that shape finds the compiled graph). Each warm-up
  frame and the params are separate worker calls, and the worker runs a tick between two
  calls whenever frames are pending. CUDA graphs (`reduce-overhead`) are per process and
  thread-bound: torch's cudagraph trees keep one tree per thread, so neither the child's nor
  an off-thread `prepare`'s graphs are the worker's; the worker captures its own on its first
  run at the shape, which the warm-up frames (on the worker, sliced, after the cache is warm)
  do: a capture costs a frame or two, not a compile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import AbstractContextManager
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..base import LiveParams
from ..errors import ModelLoadError
from ..loading import is_turbo_model, pick_device, resolve_model_source, torch_dtype_for
from ..progress import Progress, Stage
from .aux_models import AuxModels
from .background_reload import BackgroundLoad, reloading_frame
from .controlnets import check_fit, load_controlnet
from .preprocessors import FALLBACK, MODEL_BACKED, UNSERVED, fit_channels, model_kinds
from .preprocessors import load_model as load_preprocessor_model
from .preprocessors import run as run_preprocessor
from .diffusion_worker import DiffusionWorker, Job, WorkerPool
from .precompile import PrecompileCancelled, PrecompileError, PrecompileJob, Precompiler, cache_counters, inductor_cache_dir
from .safety_checker import NsfwClassifier, SafetyFilter, load_classifier
from .similarity_filter import SimilarityFilter
from .streamdiffusion_folders import tiny_vae_id
from .ip_adapter import load_adapter
from .streamdiffusion_features import feature_warnings, fetch_style_image
from .streamdiffusion_params import StreamDiffusionParams

if TYPE_CHECKING:
    import torch

    from .controlnets import Control
    from .stream_batch import DenoiseBackend, StreamState

__all__ = ["LCM_LORAS", "StreamDiffusionPipeline", "load_models", "worker_key"]

log = logging.getLogger(__name__)

#: LCM-LoRA per base family (there is none for SD 2.1; give `lcm_lora_id` for one).
LCM_LORAS = {"sd15": "latent-consistency/lcm-lora-sdv1-5", "sdxl": "latent-consistency/lcm-lora-sdxl"}
_PROMPT_CACHE = 64
#: Style images kept per URL (a client switching back and forth fetches each once).
_STYLE_CACHE = 8
_WARM_FRAMES = 2


@dataclass
class _Models:
    """What one load produced: owned by a worker, used only on its thread."""

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
    latent_channels: int = 4
    latent_factor: int = 8
    embeds: OrderedDict[str, torch.Tensor] = field(default_factory=OrderedDict)
    #: SDXL: the pipeline whose `encode_prompt` runs both text encoders (None otherwise).
    xl_pipe: Any = None
    #: Frame sizes warmed (and, for `compile`, compiled) on this model.
    warmed: set[tuple[int, int]] = field(default_factory=set)
    #: What this load runs without, and why (`{field: why}`), e.g. a TensorRT fallback.
    warnings: dict[str, str] = field(default_factory=dict)
    #: The UNet's config (ControlNet fit checks).
    unet_config: dict[str, Any] = field(default_factory=dict)
    #: ControlNets loaded for the worker's sessions, by model_id, and those that could not
    #: load or fit, with why. Replaced whole on the worker thread (readers see either).
    controlnets: dict[str, Any] = field(default_factory=dict)
    controlnet_errors: dict[str, str] = field(default_factory=dict)
    #: Preprocessor models by auxiliary kind (`depth`), and those that could not load, with why.
    aux: dict[str, Any] = field(default_factory=dict)
    aux_errors: dict[str, str] = field(default_factory=dict)
    #: The diffusers pipeline the modules came from (the IP-Adapter installs through it).
    pipe: Any = None
    #: UNet hooks every step runs (`stream_batch.UnetHook`): the IP-Adapter, cached attention.
    hooks: list[Any] = field(default_factory=list)
    ip_hook: Any = None
    #: Why the IP-Adapter could not be installed (by adapter id), if it could not.
    ip_errors: dict[str, str] = field(default_factory=dict)
    cache_hook: Any = None

    @property
    def takes_controlnets(self) -> bool:
        """The backend can take ControlNet residuals (eager and compile; not TensorRT engines)."""
        return getattr(self.backend, "unet_with_residuals", None) is not None

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (self.latent_channels, height // self.latent_factor, width // self.latent_factor)

    def embed(self, text: str) -> torch.Tensor:
        """`(1, 77, D)` text-encoder output for `text`, cached (shared by the worker's sessions)."""
        import torch

        cached = self.embeds.get(text)
        if cached is not None:
            self.embeds.move_to_end(text)
            return cached
        if self.xl_pipe is not None:
            from .stream_batch import pack_sdxl_embeds

            with torch.inference_mode():
                hidden, _, pooled, _ = self.xl_pipe.encode_prompt(
                    text, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
                )
            return self._cache(text, pack_sdxl_embeds(hidden.to(self.dtype), pooled))
        ids = self.tokenizer(
            text, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        with torch.inference_mode():
            embeds = self.text_encoder(ids)[0].to(self.dtype)
        return self._cache(text, embeds)

    def _cache(self, text: str, embeds: torch.Tensor) -> torch.Tensor:
        self.embeds[text] = embeds
        while len(self.embeds) > _PROMPT_CACHE:
            self.embeds.popitem(last=False)
        return embeds


def worker_key(params: StreamDiffusionParams, device: torch.device, model_dir: Path | None) -> str:
    """Sessions whose params give the same key share one loaded model and one worker."""
    fields = {f: getattr(params, f) for f in sorted(params.reload_fields)}
    if params.ip_adapter.enabled and params.ip_adapter.type == "faceid":
        # FaceID's adapter comes with a LoRA that diffusers fuses into the whole UNet: its
        # sessions get a model of their own.
        fields["ip_adapter_type"] = "faceid"
    return json.dumps({"device": str(device), "model_dir": str(model_dir), **fields}, sort_keys=True, default=str)


def _backend_name(params: StreamDiffusionParams) -> str:
    return "compile" if params.acceleration == "compile" else "eager"


def load_models(params: StreamDiffusionParams, *, model_dir: Path | None, device: torch.device) -> _Models:
    """Load the model for `params` on `device` (the worker thread calls this)."""
    import torch
    from diffusers import (
        AutoencoderTiny,
        DiffusionPipeline,
        LCMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    from .stream_backends import make_backend
    from .stream_batch import SDXLBackend, TorchBackend

    dtype = torch_dtype_for(device)
    source = resolve_model_source(params.model_id, model_dir)
    kwargs = source.from_pretrained_kwargs()
    try:
        index = DiffusionPipeline.load_config(source.pretrained_name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load streamdiffusion model {params.model_id!r}: {exc}") from exc
    class_name = str(index.get("_class_name", ""))
    xl = class_name.startswith("StableDiffusionXL") and "text_encoder_2" in index
    if "unet" not in index or "text_encoder" not in index or ("XL" in class_name and not xl):
        raise ModelLoadError(
            f"streamdiffusion supports SD 1.5 / SD 2.1 / sd-turbo / SDXL(-Turbo) pipelines; {params.model_id!r} is {class_name!r}."
        )
    extra: dict[str, Any] = {}
    vae_name = "full"
    if params.use_tiny_vae:
        tiny_id = tiny_vae_id(params.vae_id, source.path)
        tiny_source = resolve_model_source(tiny_id, model_dir, probe_file="config.json")
        try:
            extra["vae"] = AutoencoderTiny.from_pretrained(
                tiny_source.pretrained_name, dtype=dtype, **tiny_source.from_pretrained_kwargs()
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Could not load the tiny VAE {tiny_id!r}: {exc}") from exc
        vae_name = f"taesd ({tiny_id})"
    if device.type == "cuda" and source.has_fp16_variant():
        extra["variant"] = "fp16"
    if not xl:
        extra.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe_class = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    try:
        pipe = pipe_class.from_pretrained(source.pretrained_name, dtype=dtype, **extra, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(f"Could not load streamdiffusion model {params.model_id!r}: {exc}") from exc
    unet = pipe.unet
    family = "sdxl" if xl else "sd21" if unet.config.use_linear_projection else "sd15"
    scheduler_config = dict(pipe.scheduler.config)
    distilled = (
        is_turbo_model(params.model_id)
        or (source.path is not None and is_turbo_model(source.path.name))
        or isinstance(pipe.scheduler, LCMScheduler)
        or scheduler_config.get("timestep_spacing") == "trailing"
    )
    loras = _fuse_loras(pipe, params, family, distilled, model_dir)
    pipe.to(device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
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
    backend_name = _backend_name(params)
    warnings: dict[str, str] = {}
    if params.acceleration not in ("none", "compile", "tensorrt"):
        log.warning("acceleration=%r is not built in; running the %s backend (status says so)", params.acceleration, backend_name)
    backend: DenoiseBackend | None = None
    if params.acceleration == "tensorrt":  # engines from `livestream engines build`
        try:
            from .tensorrt_backend import backend_for_params

            backend = backend_for_params(params, model_dir=model_dir, dtype=dtype, loras=loras)
        except (ModelLoadError, ImportError, OSError, RuntimeError) as exc:
            # ai-runner's clients ask for tensorrt by default: run the best backend we have.
            warnings["acceleration"] = f"TensorRT is not available ({exc}): running eager PyTorch"
            log.warning("acceleration=tensorrt: %s", warnings["acceleration"])
    with torch.inference_mode():
        probe = TorchBackend(pipe.unet, pipe.vae).encode(torch.zeros(1, 3, 64, 64, device=device, dtype=dtype))
    if xl and backend is not None:
        # Engines here are built from SD 1.5/2.1 UNets (no added text/time embeddings).
        warnings["acceleration"] = "TensorRT engines are not built for SDXL here: running eager PyTorch"
        backend = None
    if xl and backend is None:
        xl_eager = SDXLBackend(pipe.unet, pipe.vae, latent_factor=64 // int(probe.shape[-1]))
        backend = make_backend(backend_name, pipe.unet, pipe.vae, device, eager=xl_eager)
    if backend is None:
        backend = make_backend(backend_name, pipe.unet, pipe.vae, device)
    return _Models(
        model_id=params.model_id,
        family=family,
        distilled=distilled,
        device=device,
        dtype=dtype,
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        backend=backend,
        scheduler_config=scheduler_config,
        vae=vae_name,
        loras=loras,
        latent_channels=int(probe.shape[1]),
        latent_factor=64 // int(probe.shape[-1]),
        warnings=warnings,
        unet_config=dict(pipe.unet.config),
        xl_pipe=pipe if xl else None,
        pipe=pipe,
    )


def _fuse_loras(pipe: Any, params: StreamDiffusionParams, family: str, distilled: bool, model_dir: Path | None) -> list[str]:
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
            src = resolve_model_source(repo, model_dir, probe_file="pytorch_lora_weights.safetensors")
            pipe.load_lora_weights(src.pretrained_name, adapter_name=name, **src.from_pretrained_kwargs())
        except (ModelLoadError, OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"Could not load LoRA {repo!r}: {exc}") from exc
        names.append(name)
    pipe.set_adapters(names, adapter_weights=list(wanted.values()))
    components = ["unet", "text_encoder", *(["text_encoder_2"] if getattr(pipe, "text_encoder_2", None) is not None else [])]
    pipe.fuse_lora(components=components, adapter_names=names)
    pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers go
    return list(wanted)


class _StreamSlot:
    """One session's stream on the worker: params, state, embeddings, filter, last output.

    The worker indexes it (`WorkerSlot`); every method runs on the worker thread, so nothing
    here is shared with another session. Holds no model: the worker passes its `_Models`.
    """

    def __init__(self, params: StreamDiffusionParams) -> None:
        self.params = params
        self.state: StreamState | None = None
        #: Embeddings (prompt, negative prompt) of the current params, and where an ongoing
        #: prompt change started from.
        self.target: tuple[torch.Tensor, torch.Tensor] | None = None
        self.blend_from: tuple[torch.Tensor, torch.Tensor] | None = None
        self.blend_step = 0
        self.filter = SimilarityFilter()
        self.last_output: torch.Tensor | None = None
        self.counting = True
        self.stale = True
        self.frames = 0
        #: Per ControlNet (model_id): what its preprocessor keeps between frames.
        self.cn_memory: dict[str, dict[str, Any]] = {}
        #: The ControlNets this slot was fed, so a model reloaded after a failure (a new
        #: `_Models`, without them) gets them back on the next frame.
        self.cn_models: dict[str, Any] = {}
        #: IP-Adapter: its weights (installed on a model that lacks them, e.g. after a reload),
        #: the style image (PIL) and its embedding, computed on the worker when it changes.
        self.ip_weights: Any = None
        self.style_image: Any = None
        self.style_embeds: tuple[int, torch.Tensor] | None = None
        #: What the processing blocks keep between frames; the worker's auxiliary models.
        self.block_memory: dict[str, Any] = {}
        self.models_aux: Mapping[str, Any] = {}

    # --- WorkerSlot -------------------------------------------------------------------------

    def begin(self, m: _Models, frame: torch.Tensor) -> Job:
        from .processing_blocks import enabled_processors, image_block

        if self.stale:
            self.apply(m, self.params, reset=True)
        p = self.params
        pre = enabled_processors(p.image_preprocessing)
        self.models_aux = m.aux
        if p.skip_diffusion:
            if not pre and not enabled_processors(p.image_postprocessing):
                return Job(output=frame)
            image = frame.to(m.device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
            out = self._post(image_block(pre, image, self.block_memory, m.aux, self._previous_output(m, image)))
            if self.counting:
                self.last_output = out
            return Job(output=out)
        x = frame.to(m.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).to(m.dtype)
        x = x / 127.5 - 1.0
        if pre:
            image = ((x.float() + 1.0) / 2.0).clamp(0, 1)
            x = (image_block(pre, image, self.block_memory, m.aux, self._previous_output(m, image)) * 2.0 - 1.0).to(m.dtype)
        if p.enable_similar_image_filter and self.counting and self.filter.should_skip(x):
            last = self.last_output
            if last is not None and last.shape == frame.shape:
                return Job(output=last, skipped=True)
        shape = m.latent_shape(int(x.shape[-2]), int(x.shape[-1]))
        state = self.state
        if state is None or state.latent_shape != shape:
            state = self._new_state(m, shape)
        self._advance_blend(state)
        deferred: list[Any] = []
        state.controls = self._controls(m, x, deferred)
        state.ip = self._ip(m)
        state.bank = self._bank(m, state)
        state.latent_blocks = self._latent_blocks(state)
        return Job(image=x, state=state, sequential=not p.use_denoising_batch, deferred=deferred)

    def _controls(self, m: _Models, x: torch.Tensor, deferred: list[Any]) -> list[Control]:
        """This frame's active ControlNets: enabled, scale not 0, loaded; each with its
        preprocessor's control image (fitted to the ControlNet's own channel count). Depth and
        pose go to `deferred` (`preprocessor_batch`: the tick runs them batched across streams
        and fills their control image in)."""
        from .controlnets import Control
        from .preprocessor_batch import Deferred, defer

        out: list[Control] = []
        image: torch.Tensor | None = None
        for cn in self.params.controlnets:
            if not cn.enabled or cn.conditioning_scale == 0.0:
                continue
            model = m.controlnets.get(cn.model_id)
            if model is None:
                model = self.cn_models.get(cn.model_id)
                if model is None:
                    continue
                m.controlnets = {**m.controlnets, cn.model_id: model}  # after a model reload
            self.cn_models[cn.model_id] = model
            if image is None:
                image = ((x.float() + 1.0) / 2.0).clamp(0, 1)
            memory = self.cn_memory.setdefault(cn.model_id, {})
            if cn.preprocessor == "feedback":
                memory["previous_output"] = self._previous_output(m, image)
            later = defer(cn.preprocessor, m.aux)
            control = image if later else run_preprocessor(cn.preprocessor, image, cn.preprocessor_params, memory, m.aux)
            control = fit_channels(control, int(model.config.conditioning_channels))
            if later:
                fill = functools.partial(_fill_control, out, len(out), int(model.config.conditioning_channels), m.dtype)
                deferred.append(Deferred(cn.preprocessor, image, cn.preprocessor_params, m.aux, fill))
            out.append(
                Control(
                    cn.model_id, control.to(m.dtype), cn.conditioning_scale, cn.control_guidance_start, cn.control_guidance_end
                )
            )
        return out

    def _ip(self, m: _Models) -> Any:
        """This frame's IP-Adapter input (`ip_adapter.StreamIP`), or None (off, not loaded,
        no style image). Scale, weight type, enable and the style image apply here, live."""
        import torch

        from .ip_adapter import StreamIP, layer_weights

        cfg = self.params.ip_adapter
        if not cfg.enabled or self.ip_weights is None or self.style_image is None or self.ip_weights.kind != cfg.type:
            return None
        if not m.takes_controlnets:
            return None
        if m.ip_hook is None:
            _install_ip(m, self.ip_weights)  # a model reloaded after a failure
        hook = m.ip_hook
        if self.style_embeds is None or self.style_embeds[0] != id(self.style_image):
            self.style_embeds = (id(self.style_image), hook.embed(self.style_image, m.device, m.dtype))
        weights = layer_weights(cfg.weight_type, cfg.scale, len(hook.blocks), m.family)
        return StreamIP(self.style_embeds[1], torch.tensor(weights, device=m.device, dtype=torch.float32))

    def _bank(self, m: _Models, state: StreamState) -> Any:
        """The stream's cached-attention feature bank (None when off); settings apply live."""
        from .cached_attention import FeatureBank

        cfg = self.params.cached_attention
        if not cfg.enabled or not m.takes_controlnets:
            return None
        if m.cache_hook is None:
            _install_cache(m)
        bank = state.bank if isinstance(state.bank, FeatureBank) else FeatureBank()
        bank.configure(cfg.max_frames, cfg.interval)
        return bank

    def _latent_blocks(self, state: StreamState) -> Any:
        from .processing_blocks import LatentFeedback, enabled_processors

        p = self.params
        pre, post = enabled_processors(p.latent_preprocessing), enabled_processors(p.latent_postprocessing)
        if not pre and not post:
            return None
        blocks = state.latent_blocks if isinstance(state.latent_blocks, LatentFeedback) else LatentFeedback(pre, post)
        blocks.configure(pre, post)
        return blocks

    def _post(self, image: torch.Tensor) -> torch.Tensor:
        """`image_postprocessing` of a `(1, 3, H, W)` [0, 1] frame -> `(H', W', 3)` uint8 on the CPU."""
        import torch

        from .processing_blocks import enabled_processors, image_block

        post = enabled_processors(self.params.image_postprocessing)
        if post:
            last = self.last_output
            previous = last.to(image.device).permute(2, 0, 1).unsqueeze(0).float() / 255.0 if last is not None else None
            image = image_block(post, image.float(), self.block_memory, self.models_aux, previous)
        return (image[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu()

    def set_style(self, image: Any, weights: Any) -> None:
        """Worker thread: the style image and adapter weights the session thread loaded."""
        if weights is not None:
            self.ip_weights = weights
        if image is not None and image is not self.style_image:
            self.style_image = image
            self.style_embeds = None

    def _previous_output(self, m: _Models, image: torch.Tensor) -> torch.Tensor | None:
        last = self.last_output
        if last is None or tuple(last.shape[:2]) != tuple(image.shape[-2:]):
            return None
        return last.to(m.device).permute(2, 0, 1).unsqueeze(0).float() / 255.0

    def end(self, job: Job, output: torch.Tensor) -> torch.Tensor:
        if job.image is None:  # pass-through, skipped, or skip_diffusion's blocks
            if job.skipped:
                self.frames += 1
            return output
        from .processing_blocks import enabled_processors

        if enabled_processors(self.params.image_postprocessing):
            output = self._post(output.to(job.image.device).permute(2, 0, 1).unsqueeze(0).float() / 255.0)
        self.state = job.state
        if self.counting:
            self.last_output = output
            self.frames += 1
        return output

    def invalidate(self) -> None:
        self.stale = True

    # --- params -----------------------------------------------------------------------------

    def apply(self, m: _Models, params: StreamDiffusionParams, *, reset: bool) -> None:
        """Build everything the new params need, then commit it (nothing changes on error)."""
        from .stream_batch import Schedule

        old = self.params if not self.stale else None
        schedule = Schedule.build(
            m.scheduler_config, params.t_index_list, params.num_inference_steps, device=m.device, dtype=m.dtype
        )
        cond = _prompt_embeds(m, params)
        uncond = m.embed(params.negative_prompt)
        state = self.state
        noise = None
        if state is not None and not reset:
            if old is None or (old.seeds(), old.seed_interpolation_method, old.normalize_seed_weights) != (
                params.seeds(),
                params.seed_interpolation_method,
                params.normalize_seed_weights,
            ) or state.schedule.steps != schedule.steps:
                noise = _noise(m, params, (schedule.steps, *state.latent_shape))
        # commit
        self.params = params
        self.stale = False
        self.filter.configure(params.similar_image_filter_threshold, params.similar_image_filter_max_skip_frame)
        self.target = (cond, uncond)
        if state is None or reset:
            self.state = None
            self.blend_from = None
            return
        if old is None or (old.prompt, old.prompt_interpolation_method, old.normalize_prompt_weights, old.negative_prompt) != (
            params.prompt,
            params.prompt_interpolation_method,
            params.normalize_prompt_weights,
            params.negative_prompt,
        ):
            self.blend_from = (state.cond, state.uncond)
            self.blend_step = 0
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
            self.filter.reset()

    def reset_stream(self) -> None:
        self.state = None
        self.last_output = None
        self.cn_memory = {}
        self.block_memory = {}
        self.filter.reset()
        self.blend_from = None

    def _new_state(self, m: _Models, latent_shape: tuple[int, ...]) -> StreamState:
        from .stream_batch import Schedule, StreamState

        p = self.params
        schedule = Schedule.build(m.scheduler_config, p.t_index_list, p.num_inference_steps, device=m.device, dtype=m.dtype)
        assert self.target is not None
        cond, uncond = self.target
        self.blend_from = None
        return StreamState(
            schedule=schedule,
            noise=_noise(m, p, (schedule.steps, *latent_shape)),
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

        p, target = self.params, self.target
        assert target is not None
        if self.blend_from is None:
            state.cond, state.uncond = target
            return
        self.blend_step += 1
        t = min(1.0, self.blend_step / p.prompt_transition_frames)
        if t >= 1.0:
            state.cond, state.uncond = target
            self.blend_from = None
            return
        (c0, u0), (c1, u1) = self.blend_from, target
        method = p.prompt_interpolation_method
        state.cond = blend([c0, c1], [1 - t, t], method=method)
        state.uncond = blend([u0, u1], [1 - t, t], method=method)


#: What joining a worker gives a session: the worker, its slot there, and the slot id.
_Attached = tuple[DiffusionWorker, _StreamSlot, int]


def _noise(m: _Models, params: StreamDiffusionParams, shape: tuple[int, ...]) -> torch.Tensor:
    from .stream_batch import make_noise

    noise = make_noise(shape, params.seeds(), method=params.seed_interpolation_method, normalize=params.normalize_seed_weights)
    return noise.to(device=m.device, dtype=m.dtype)


def _prompt_embeds(m: _Models, params: StreamDiffusionParams) -> torch.Tensor:
    from .stream_batch import blend

    pairs = params.prompts()
    return blend(
        [m.embed(text) for text, _ in pairs],
        [w for _, w in pairs],
        method=params.prompt_interpolation_method,
        normalize=params.normalize_prompt_weights,
    )


class StreamDiffusionPipeline:
    """The live pipeline; one instance per session (see `pipelines.base.LivePipeline`).

    Args:
        model_dir: ai-runner's MODEL_DIR (local models and the Hugging Face cache).
        device: default CUDA when available (float16), else CPU (float32).
        pool: the workers shared with other sessions (the live registry's); by default a
            pool of this instance's own, i.e. a model of its own.
    """

    name: ClassVar[str] = "streamdiffusion"
    params_model: ClassVar[type[LiveParams]] = StreamDiffusionParams
    max_batch: ClassVar[int] = 1
    passthrough: ClassVar[bool] = False
    #: Set by the engine before `load` (`pipelines.progress`): model load, compile and warm-up
    #: report as stages (the session's status shows them as `loading`).
    progress: Progress | None = None

    def __init__(
        self,
        *,
        model_dir: Path | None = None,
        device: str | None = None,
        pool: WorkerPool | None = None,
        aux: AuxModels | None = None,
    ) -> None:
        self.model_dir = model_dir
        #: Where the auxiliary models load from (`--aux-model`, env AUX_MODELS).
        self.aux = aux if aux is not None else AuxModels.from_env()
        self._device_request = device
        self._pool = pool if pool is not None else WorkerPool()
        self.device: torch.device | None = None
        self.params: StreamDiffusionParams | None = None
        self._worker: DiffusionWorker | None = None
        self._slot: _StreamSlot | None = None
        self._slot_id = 0
        self._warmed: tuple[int, int] | None = None
        #: Compiles for a new size in a child process (killed by `close`).
        self._precompiler = Precompiler(self._pool.precompile_timeout_s)
        self.precompile_ms: float | None = None
        #: Inductor's FX graph / AOTAutograd cache hits and misses of the last compile after a child.
        self.compile_cache: dict[str, int] | None = None
        # figures for status()
        self._load_started = 0.0
        self.load_ms: float | None = None
        self.warmup_ms: float | None = None
        self.first_frame_ms: float | None = None
        self.time_to_first_frame_ms: float | None = None
        self.reloads = 0
        # use_safety_checker, and the IP-Adapter's style image (fetched only while enabled)
        self._classifier: NsfwClassifier | None = None
        self._safety = SafetyFilter()
        self._safety_error: tuple[str, str] | None = None  # (model id, why)
        self._style_url: str | None = None
        self.style_image: Any = None
        self._style_error: str | None = None
        self._style_cache: dict[str, Any] = {}
        self._ip_errors: dict[str, str] = {}
        # a model reload in the background (see the module docstring)
        self._reload: BackgroundLoad[_Attached] | None = None
        self._reload_params: StreamDiffusionParams | None = None
        self._last_output: torch.Tensor | None = None

    @property
    def _models(self) -> _Models | None:
        worker = self._worker
        models = worker.models if worker is not None else None
        assert models is None or isinstance(models, _Models)
        return models

    @property
    def frames(self) -> int:
        return self._slot.frames if self._slot is not None else 0

    # --- LivePipeline -----------------------------------------------------------------------

    def load(self, params: LiveParams) -> None:
        assert isinstance(params, StreamDiffusionParams)
        self._load_started = time.monotonic()
        with self._stage("load model"):
            self._worker, self._slot, self._slot_id = self._attach(params)
        self.params = params
        m = self._models
        assert m is not None
        self.device = m.device
        self._sync_aux(params)
        self.load_ms = (time.monotonic() - self._load_started) * 1000
        default = 512 if m.device.type == "cuda" else 64
        self.warm(params.width or default, params.height or default)

    def warm(self, width: int, height: int) -> None:
        """Run warm-up frames at this size (once per size; for `compile`, compile the batch
        sizes of the pool's `compile_streams` first, on this thread), then start the stream
        afresh. Nothing here holds the worker for longer than one warm-up frame."""
        worker, slot = self._worker, self._slot
        assert worker is not None and slot is not None, "load() first"
        self._warm_slot(worker, slot, width, height, self._warmed)
        self._warmed = (width, height)

    def _warm_slot(
        self, worker: DiffusionWorker, slot: _StreamSlot, width: int, height: int, warmed: tuple[int, int] | None
    ) -> None:
        """`warm` for `slot` on `worker` (the current one, or a reload's in the background)."""
        if warmed != (width, height) and not slot.params.skip_diffusion:
            started = time.monotonic()
            plan = worker.call(_compile_plan, worker, slot, width, height, self._pool.compile_streams)
            if plan is not None:
                backend, shapes, dtype = plan
                with self._stage("compile"):
                    before = self._precompile(backend, shapes, slot.params)  # a child process fills Inductor's caches
                    backend.prepare(shapes, dtype)  # this (the session's) thread: off the tick path
                if before is not None:
                    after = cache_counters()
                    self.compile_cache = {k: after[k] - before[k] for k in after}
                    log.info("streamdiffusion: compile caches after the child: %s", self.compile_cache)
                worker.call(_mark_warmed, worker, width, height)
            saved = worker.call(_warm_begin, slot)
            try:
                dummy = _dummy_frame(width, height)
                with self._stage("warm-up", total=_WARM_FRAMES) as stage:
                    for _ in range(_WARM_FRAMES):
                        worker.call(worker.run_alone, slot, dummy)  # one frame per call: ticks between
                        if stage is not None:
                            stage.advance()
            finally:
                worker.call(_warm_end, slot, saved)
            self.warmup_ms = (time.monotonic() - started) * 1000
            log.info("streamdiffusion warmed up at %dx%d in %.0f ms", width, height, self.warmup_ms)
        worker.call(slot.reset_stream)

    def _stage(self, name: str, total: int | None = None) -> AbstractContextManager[Stage | None]:
        """A stage of `progress` when the engine gave one, else nothing."""
        return self.progress.stage(name, total) if self.progress is not None else contextlib.nullcontext()

    def _precompile(
        self, backend: Any, shapes: list[tuple[str, tuple[tuple[int, ...], ...]]], params: StreamDiffusionParams
    ) -> dict[str, int] | None:
        """Inductor only: compile `shapes` in a child process first, so the `prepare` that follows
        on this thread loads compiled graphs from Inductor's caches instead of building them
        while holding the GIL the worker needs (`pipelines.live.precompile`). A child that fails
        is logged and this thread compiles by itself. Returns the cache counters before, or None
        when no child ran."""
        import torch

        device = getattr(backend, "device", None)
        if not self._pool.precompile or getattr(backend, "compiler", None) != "inductor" or device is None:
            return None
        job = PrecompileJob(
            build=load_models,
            params=params,
            model_dir=None if self.model_dir is None else str(self.model_dir),
            device=str(device),
            shapes=tuple(shapes),
            cache_dir=inductor_cache_dir(),
            threads=torch.get_num_threads(),
        )
        before = cache_counters()
        try:
            seconds = self._precompiler.run(job)
        except PrecompileCancelled:
            raise
        except PrecompileError as exc:
            log.warning("streamdiffusion: compiling in a child process failed (%s); compiling here instead", exc)
            return None
        self.precompile_ms = seconds * 1000
        log.info("streamdiffusion: %d graph(s) compiled in a child process in %.1f s", len(shapes), seconds)
        return before

    def process(self, frames: torch.Tensor) -> torch.Tensor:
        """Each frame through the shared worker (batched with the other sessions' frames);
        a bad frame raises `InvalidFrameError` without reaching the batch."""
        import torch

        p = self._reload_params or self.params
        last = self._last_output
        if self._reload is not None and p is not None and p.show_reloading_frame and last is not None:
            shown = reloading_frame(last)
            return shown.unsqueeze(0).expand(len(frames), *shown.shape).contiguous()
        worker = self._worker
        assert worker is not None, "load() first"
        started = time.monotonic()
        outputs = [worker.process(self._slot_id, frame) for frame in frames]
        if self.first_frame_ms is None:
            self.first_frame_ms = (time.monotonic() - started) * 1000
            self.time_to_first_frame_ms = (time.monotonic() - self._load_started) * 1000
        out = torch.stack(outputs)
        p, classifier = self.params, self._classifier
        if p is not None and classifier is not None and p.use_safety_checker and not p.skip_diffusion:
            out = self._safety.apply(classifier, out, p.safety_checker_threshold)
        self._last_output = out[-1]
        return out

    def update_params(self, params: LiveParams) -> None:
        """Apply a validated full param set (see the module docstring); raises and keeps the
        last good params when it cannot be applied."""
        assert isinstance(params, StreamDiffusionParams)
        current, worker, slot = self.params, self._worker, self._slot
        assert current is not None and worker is not None and slot is not None, "load() first"
        self._abandon_reload()  # a newer set replaces one still loading (the stage waits, normally)
        device = self.device
        moved = device is not None and worker_key(current, device, self.model_dir) != worker_key(params, device, self.model_dir)
        if moved or any(getattr(current, f) != getattr(params, f) for f in params.reload_fields):
            size = self._warmed

            def load() -> _Attached:
                new = self._attach(params)
                try:
                    if size is not None:
                        self._warm_slot(new[0], new[1], *size, None)
                except BaseException:
                    self._leave(new[0], new[2])
                    raise
                return new

            self._reload_params = params
            self._reload = BackgroundLoad(f"sd-reload-{self._slot_id}", load, lambda new: self._leave(new[0], new[2]))
            log.info("streamdiffusion: loading %s in the background (the stream goes on)", params.model_id)
            return
        worker.call(_apply_on_worker, worker, slot, params, False)
        self.params = params
        self._sync_aux(params)

    @property
    def pending_update(self) -> Future[None] | None:
        """While a new model loads in the background: a future done when the load is (either
        way); `finish_update()` then completes the change. None otherwise."""
        reload = self._reload
        return reload.finished if reload is not None else None

    def finish_update(self) -> None:
        """Between two batches, once `pending_update` is done: switch to the reloaded model and
        leave the old one; or raise why the reload failed (the last good params stay)."""
        reload, params = self._reload, self._reload_params
        if reload is None or params is None:
            return
        self._reload, self._reload_params = None, None
        if not reload.done:
            reload.abandon(timeout=0.0)
            raise TimeoutError(f"the model {params.model_id} did not load in time; the stream keeps its params")
        new = reload.take()  # raises the load's error: the caller reports it
        old = (self._worker, self._slot_id)
        self._worker, self._slot, self._slot_id = new
        self.params = params
        m = self._models
        assert m is not None
        self.device = m.device
        self.reloads += 1
        if old[0] is not None:
            self._leave(old[0], old[1])
        self._sync_aux(params)
        log.info("streamdiffusion: switched to %s", params.model_id)

    def _abandon_reload(self) -> None:
        reload, self._reload, self._reload_params = self._reload, None, None
        if reload is not None:
            reload.abandon(timeout=5.0)

    @property
    def warnings(self) -> dict[str, str]:
        """`{field: why}` for what the current params run without (attribute reads only)."""
        p, m = self.params, self._models
        if p is None:
            return {}
        out = feature_warnings(p, m.family if m is not None else None)
        if m is not None:
            out.update(m.warnings)
        controlnets = _controlnet_warnings(p, m)
        if controlnets:
            out["controlnets"] = controlnets
        if p.use_safety_checker and self._classifier is None and self._safety_error is not None:
            out["use_safety_checker"] = self._safety_error[1]
        if p.ip_adapter.enabled and self._style_error is not None:
            out["ip_adapter_style_image_url"] = self._style_error
        ip = _ip_warning(p, m, self._ip_errors, self.style_image is not None, self.aux)
        if ip:
            out["ip_adapter"] = ip
        elif "ip_adapter" in out:
            del out["ip_adapter"]
        for name, why in _block_warnings(p, m).items():
            out[name] = why
        cache = _cache_warning(p, m)
        if cache:
            out["cached_attention"] = cache
        elif "cached_attention" in out:
            del out["cached_attention"]
        return out

    def _sync_controlnets(self, params: StreamDiffusionParams) -> None:
        """Load the enabled ControlNets the worker does not have yet, on this (the session's)
        thread, off the tick path; then hand each to the worker between two ticks. One that
        cannot load, or does not fit the model, is recorded with why (a warning)."""
        worker, m = self._worker, self._models
        assert worker is not None and m is not None
        for cn in params.controlnets:
            key = cn.model_id
            if not cn.enabled or key in m.controlnets or key in m.controlnet_errors:
                continue
            model: Any = None
            try:
                model = load_controlnet(key, model_dir=self.model_dir, device=m.device, dtype=m.dtype)
                why = check_fit(model, m.unet_config)
                if why is not None:
                    why = f"does not fit this {m.family} model: {why}"
            except ModelLoadError as exc:
                why = f"could not be loaded ({exc})"
            if why is not None:
                log.warning("ControlNet %s %s: running without it", key, why)
                model = None
            else:
                log.info("ControlNet %s loaded (%d control channels)", key, int(model.config.conditioning_channels))
            worker.call(_register_controlnet, worker, key, model, why)
        self._load_aux({kind for cn in params.controlnets if cn.enabled for kind in model_kinds(cn.preprocessor)}, "preprocessor model")

    def _sync_aux(self, params: StreamDiffusionParams) -> None:
        """Load what the params' auxiliary parts need (session thread); a part that cannot
        load runs off, with a warning."""
        self._sync_controlnets(params)
        if params.use_safety_checker and self._classifier is None:
            model_id = self.aux.id("safety")
            if self._safety_error is None or self._safety_error[0] != model_id:
                assert self.device is not None
                try:
                    self._classifier = load_classifier(model_id, model_dir=self.model_dir, device=self.device)
                    self._safety_error = None
                except ModelLoadError as exc:
                    why = f"the NSFW classifier could not be loaded ({exc}): frames are not checked"
                    self._safety_error = (model_id, why)
                    log.warning("use_safety_checker: %s", why)
        self._sync_ip(params)
        self._sync_block_models(params)

    def _sync_block_models(self, params: StreamDiffusionParams) -> None:
        """The auxiliary models the image blocks use (super-resolution, depth, ...), loaded on
        this thread and handed to the worker; one that cannot load is a warning."""
        from .processing_blocks import enabled_processors

        names = {p.type for block in (params.image_preprocessing, params.image_postprocessing) for p in enabled_processors(block)}
        kinds = {kind for n in names for kind in model_kinds(n)} | ({"super_resolution"} if "realesrgan_trt" in names else set())
        self._load_aux(kinds, "processing block model")

    def _load_aux(self, kinds: set[str], what: str) -> None:
        """Load the auxiliary models of `kinds` the worker neither has nor has failed, on this
        (the session's) thread, and hand each to the worker between two ticks; one that cannot
        load is recorded with why. `what` names the user in the log (`preprocessor model`)."""
        m, worker = self._models, self._worker
        assert m is not None and worker is not None
        for kind in sorted(kinds - m.aux.keys() - m.aux_errors.keys()):
            model_id = self.aux.id(kind)
            try:
                if kind == "super_resolution":
                    from .processing_blocks import load_super_resolution

                    aux = load_super_resolution(model_id, model_dir=self.model_dir, device=m.device, dtype=m.dtype)
                else:
                    aux = load_preprocessor_model(kind, model_id, model_dir=self.model_dir, device=m.device, dtype=m.dtype)
                why = None
                log.info("%s %s: %s loaded", what, kind, model_id)
            except ModelLoadError as exc:
                aux, why = None, f"the {kind} model {model_id} could not be loaded ({exc})"
                log.warning("%s %s: %s", what, kind, why)
            worker.call(_register_aux, worker, kind, aux, why)

    def _sync_ip(self, params: StreamDiffusionParams) -> None:
        """IP-Adapter (session thread): the style image (fetched only while enabled, cached per
        URL; a failed fetch keeps the previous image, with a warning) and the adapter weights
        (loaded once per worker); both handed to the worker between two ticks."""
        cfg = params.ip_adapter
        if not cfg.enabled:
            return
        url = params.ip_adapter_style_image_url
        if url != self._style_url:
            self._style_url = url
            cached = self._style_cache.get(url)
            if cached is not None:
                self.style_image, self._style_error = cached, None
            else:
                try:
                    image = fetch_style_image(url)
                except ValueError as exc:
                    # Keep the previous image (if any): the stream goes on as it was.
                    self._style_error = f"the style image could not be fetched: {exc}" + (
                        " (the previous style image stays)" if self.style_image is not None else ""
                    )
                    log.warning("ip_adapter_style_image_url: %s", self._style_error)
                else:
                    self.style_image, self._style_error = image, None
                    self._style_cache[url] = image
                    while len(self._style_cache) > _STYLE_CACHE:
                        self._style_cache.pop(next(iter(self._style_cache)))
        m, worker, slot = self._models, self._worker, self._slot
        assert m is not None and worker is not None and slot is not None
        if not m.takes_controlnets:
            return
        key = self.aux.id("faceid" if cfg.type == "faceid" else "ip_adapter")
        weights = None
        if m.ip_hook is None and key not in m.ip_errors and key not in self._ip_errors:
            try:
                weights = load_adapter(
                    key, m.family, cfg.type, model_dir=self.model_dir, device=m.device, dtype=m.dtype, face_model=self.aux.id("face_embedding")
                )
                log.info("IP-Adapter %s loaded", key)
            except ModelLoadError as exc:
                self._ip_errors[key] = f"the IP-Adapter {key} could not be loaded ({exc})"
                log.warning("ip_adapter: %s", self._ip_errors[key])
                return
        elif m.ip_hook is not None:
            weights = m.ip_hook.weights
        why = worker.call(_register_ip, worker, slot, key, weights, self.style_image)
        if why is not None:
            log.warning("ip_adapter: %s %s: running without it", key, why)

    def close(self) -> None:
        self._precompiler.cancel()
        self._abandon_reload()
        worker, self._worker = self._worker, None
        if worker is not None:
            self._leave(worker, self._slot_id)
        self._slot = None

    def status(self) -> dict[str, Any]:
        """Figures for the session's status event (attribute reads only)."""
        m, p, slot, worker = self._models, self.params, self._slot, self._worker
        s = slot.state if slot is not None else None
        return {
            "model_id": m.model_id if m else None,
            "family": m.family if m else None,
            "distilled": m.distilled if m else None,
            "vae": m.vae if m else None,
            "loras": m.loras if m else [],
            "backend": getattr(m.backend, "name", type(m.backend).__name__) if m else None,
            "compiler": getattr(m.backend, "compiler", None) if m else None,
            "acceleration_requested": p.acceleration if p else None,
            "device": str(m.device) if m else None,
            "dtype": str(m.dtype).removeprefix("torch.") if m else None,
            "unet_batch": s.unet_rows() if s else None,
            "load_ms": _round(self.load_ms),
            "warmup_ms": _round(self.warmup_ms),
            "precompile_ms": _round(self.precompile_ms),
            "compile_cache": self.compile_cache,
            "first_frame_ms": _round(self.first_frame_ms),
            "time_to_first_frame_ms": _round(self.time_to_first_frame_ms),
            "frames": self.frames,
            "frames_skipped": slot.filter.skipped if slot else 0,
            "reloads": self.reloads,
            "reloading": self._reload is not None,
            "worker": worker.status() if worker else None,
            "safety_checker": {
                "model": self.aux.id("safety") if p is not None and p.use_safety_checker else None,
                "loaded": self._classifier is not None,
                "flagged": self._safety.flagged,
                "last_score": self._safety.last_score,
            },
            "controlnets": [
                {
                    "model_id": cn.model_id,
                    "enabled": cn.enabled,
                    "loaded": m is not None and cn.model_id in m.controlnets,
                    "conditioning_scale": cn.conditioning_scale,
                    "preprocessor": cn.preprocessor,
                }
                for cn in (p.controlnets if p is not None else [])
            ],
            "warnings": [{"field": k, "message": v} for k, v in sorted(self.warnings.items())],
        }

    # --- worker -----------------------------------------------------------------------------

    def _attach(self, params: StreamDiffusionParams) -> _Attached:
        """Join the worker of `params`' model (loading it if no session has); the new slot
        has `params` applied. Raises (and holds nothing) on failure."""
        device = pick_device(self._device_request)
        model_dir = self.model_dir
        key = worker_key(params, device, model_dir)
        worker = self._pool.acquire(key, lambda: load_models(params, model_dir=model_dir, device=device), device=device)
        slot = _StreamSlot(params)
        slot_id = worker.join(slot)
        try:
            worker.call(_apply_on_worker, worker, slot, params, True)
        except BaseException:
            self._leave(worker, slot_id)
            raise
        return worker, slot, slot_id

    def _leave(self, worker: DiffusionWorker, slot_id: int) -> None:
        worker.leave(slot_id)
        self._pool.release(worker)

    def _embed(self, text: str) -> torch.Tensor:
        """`(1, 77, D)` embeddings of `text` from the worker's cache (tests and benchmarks)."""
        worker = self._worker
        assert worker is not None
        return worker.call(lambda: _models_of(worker).embed(text))


def _models_of(worker: DiffusionWorker) -> _Models:
    m = worker.models
    assert isinstance(m, _Models), "the worker has no model loaded"
    return m


def _register_controlnet(worker: DiffusionWorker, key: str, model: Any, why: str | None) -> None:
    """Worker thread: add a loaded ControlNet (or why it is not there) to the worker's map."""
    m = _models_of(worker)
    if model is not None:
        m.controlnets = {**m.controlnets, key: model}
    elif why is not None:
        m.controlnet_errors = {**m.controlnet_errors, key: why}


def _install_ip(m: _Models, weights: Any) -> None:
    """Worker thread: install the IP-Adapter on the model's UNet (cached attention, when
    installed, is taken off and put back around diffusers' loader)."""
    from . import cached_attention
    from .ip_adapter import IPAdapterHook

    if m.cache_hook is not None:
        cached_attention.uninstall(m.pipe.unet)
    try:
        m.ip_hook = IPAdapterHook.install(m.pipe, weights, m.family)
    finally:
        if m.cache_hook is not None:
            cached_attention.install(m.pipe.unet, m.cache_hook)
    m.hooks = [h for h in (m.ip_hook, m.cache_hook) if h is not None]


def _install_cache(m: _Models) -> None:
    """Worker thread: cached-attention processors on the model's self-attention layers."""
    from . import cached_attention

    m.cache_hook = cached_attention.install(m.pipe.unet)
    m.hooks = [h for h in (m.ip_hook, m.cache_hook) if h is not None]
    log.info("cached attention installed: %d self-attention layers", m.cache_hook.layers)


def _register_ip(worker: DiffusionWorker, slot: _StreamSlot, key: str, weights: Any, image: Any) -> str | None:
    """Worker thread: install the adapter (once per model) and hand the slot its weights and
    style image; returns why it could not be installed, or None."""
    from .ip_adapter import check_fit

    m = _models_of(worker)
    if weights is not None and m.ip_hook is None:
        why = check_fit(weights.state_dict, m.pipe.unet)
        if why is None:
            try:
                _install_ip(m, weights)
            except (RuntimeError, ValueError, KeyError) as exc:
                why = f"could not be installed ({exc})"
        if why is not None:
            m.ip_errors = {**m.ip_errors, key: why}
            return why
    slot.set_style(image, weights)
    return None


def _fill_control(controls: list[Control], index: int, channels: int, dtype: torch.dtype, image: torch.Tensor) -> None:
    """A deferred preprocessor's control image into `controls[index]` (`preprocessor_batch`)."""
    controls[index] = dataclasses.replace(controls[index], image=fit_channels(image, channels).to(dtype))


def _register_aux(worker: DiffusionWorker, kind: str, model: Any, why: str | None) -> None:
    m = _models_of(worker)
    if model is not None:
        m.aux = {**m.aux, kind: model}
    elif why is not None:
        m.aux_errors = {**m.aux_errors, kind: why}


def _ip_warning(
    p: StreamDiffusionParams, m: _Models | None, errors: dict[str, str], have_image: bool, aux: AuxModels
) -> str:
    """Why the enabled IP-Adapter runs off ("" when it runs, or is off by the params)."""
    cfg = p.ip_adapter
    if not cfg.enabled or m is None:
        return ""
    if not m.takes_controlnets:
        return f"the {getattr(m.backend, 'name', 'current')} backend takes no IP-Adapter inputs: running without it"
    key = aux.id("faceid" if cfg.type == "faceid" else "ip_adapter")
    why = m.ip_errors.get(key) or errors.get(key)
    if why is not None:
        fit = key in m.ip_errors and m.family not in ("sd15", "sdxl")
        return f"{why}: running without it" + (f" (IP-Adapter weights exist for SD 1.5 and SDXL bases; this model is {m.family})" if fit else "")
    if not have_image:
        return "no style image yet: running without the IP-Adapter"
    return ""


def _block_warnings(p: StreamDiffusionParams, m: _Models | None) -> dict[str, str]:
    """What of the enabled processing blocks runs otherwise than asked, per block."""
    from .processing_blocks import enabled_processors

    out: dict[str, str] = {}
    for name in ("image_preprocessing", "image_postprocessing"):
        notes = []
        for proc in enabled_processors(getattr(p, name)):
            if proc.type in ("upscale", "realesrgan_trt"):
                if proc.type == "realesrgan_trt" and m is not None and "super_resolution" in m.aux_errors:
                    notes.append(f"realesrgan_trt: {m.aux_errors['super_resolution']}: bicubic x2 instead")
                continue
            if proc.type in UNSERVED:
                notes.append(f"{proc.type} is not available ({UNSERVED[proc.type]}): passthrough")
            kind = MODEL_BACKED.get(proc.type)
            if kind is not None and m is not None and kind in m.aux_errors:
                notes.append(f"{proc.type}: {m.aux_errors[kind]}: {FALLBACK.get(proc.type, 'passthrough')}{' instead' if proc.type in FALLBACK else ''}")
        if notes:
            out[name] = "; ".join(notes)
    return out


def _cache_warning(p: StreamDiffusionParams, m: _Models | None) -> str:
    if not p.cached_attention.enabled or m is None or m.takes_controlnets:
        return ""
    return f"the {getattr(m.backend, 'name', 'current')} backend has no cached-attention inputs: running without it"


def _controlnet_warnings(p: StreamDiffusionParams, m: _Models | None) -> str:
    """What of the enabled ControlNets runs off or differently, and why ("" when all run)."""
    enabled = [cn for cn in p.controlnets if cn.enabled]
    if not enabled:
        return ""
    if m is not None and not m.takes_controlnets:
        names = ", ".join(cn.model_id for cn in enabled)
        return f"the {getattr(m.backend, 'name', 'current')} backend takes no ControlNet residuals: running without {names}"
    notes = []
    for cn in enabled:
        why = m.controlnet_errors.get(cn.model_id) if m is not None else None
        if why is not None:
            notes.append(f"{cn.model_id} {why}: running without it")
            continue
        kind = MODEL_BACKED.get(cn.preprocessor)
        aux_why = m.aux_errors.get(kind) if m is not None and kind is not None else None
        if aux_why is not None:
            instead = f"{FALLBACK[cn.preprocessor]} instead" if cn.preprocessor in FALLBACK else "its control image is the input frame (passthrough)"
            notes.append(f"{cn.model_id}: preprocessor {cn.preprocessor}: {aux_why}: {instead}")
        if cn.preprocessor in UNSERVED:
            notes.append(
                f"{cn.model_id}: preprocessor {cn.preprocessor} is not available ({UNSERVED[cn.preprocessor]}): "
                "its control image is the input frame (passthrough)"
            )
        model = m.controlnets.get(cn.model_id) if m is not None else None
        own = int(model.config.conditioning_channels) if model is not None else None
        if cn.conditioning_channels is not None and own is not None and cn.conditioning_channels != own:
            notes.append(
                f"{cn.model_id}: conditioning_channels {cn.conditioning_channels} differs from the ControlNet's own {own}: "
                f"the control image is fitted to {own} channels"
            )
    return "; ".join(notes)


def _apply_on_worker(worker: DiffusionWorker, slot: _StreamSlot, params: StreamDiffusionParams, reset: bool) -> None:
    """Worker thread: the models are read here, never on the caller's thread (a reload may
    be replacing them)."""
    slot.apply(_models_of(worker), params, reset=reset)


_Saved = tuple[Any, Any, int, bool]


def _compile_plan(
    worker: DiffusionWorker, slot: _StreamSlot, width: int, height: int, streams: tuple[int, ...]
) -> tuple[Any, list[tuple[str, tuple[tuple[int, ...], ...]]], torch.dtype] | None:
    """Worker thread: what the caller must compile for this size (backend, shapes, dtype),
    or None (an eager backend, or this size is compiled already)."""
    m = _models_of(worker)
    if (width, height) in m.warmed:
        return None
    if getattr(m.backend, "prepare", None) is None or m.ip_hook is not None:
        # An installed IP-Adapter makes every UNet call eager (it needs `image_embeds`).
        m.warmed.add((width, height))
        return None
    return m.backend, _compile_shapes(m, slot.params, width, height, streams), m.dtype


def _mark_warmed(worker: DiffusionWorker, width: int, height: int) -> None:
    _models_of(worker).warmed.add((width, height))


def _warm_begin(slot: _StreamSlot) -> _Saved:
    """Worker thread: warm-up frames must leave no trace in the stream."""
    saved = (slot.state, slot.last_output, slot.frames, slot.counting)
    slot.counting = False
    return saved


def _warm_end(slot: _StreamSlot, saved: _Saved) -> None:
    slot.state, slot.last_output, slot.frames, slot.counting = saved


def _dummy_frame(width: int, height: int) -> torch.Tensor:
    import torch

    return torch.full((height, width, 3), 127, dtype=torch.uint8)


def _compile_shapes(
    m: _Models, params: StreamDiffusionParams, width: int, height: int, streams: tuple[int, ...]
) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    """The graphs `k` streams with these params need at this size: encode, UNet, decode."""
    latent = m.latent_shape(height, width)
    embed = tuple(m.embed(params.negative_prompt).shape[1:])
    n = len(params.t_index_list)
    guided = params.cfg_type != "none" and params.guidance_scale > 1
    rows = 2 * n if guided and params.cfg_type == "full" else n + 1 if guided and params.cfg_type == "initialize" else n
    shapes: list[tuple[str, tuple[tuple[int, ...], ...]]] = []
    for k in streams:
        shapes.append(("encode", ((k, 3, height, width),)))
        shapes.append(("unet", ((k * rows, *latent), (k * rows,), (k * rows, *embed))))
        shapes.append(("decode", ((k, *latent),)))
    return shapes


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
