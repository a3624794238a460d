"""Params of the `streamdiffusion` live pipeline, named as ai-runner's StreamDiffusion params.

Imports without torch: the registry lists the JSON schema without loading a model.

Every field of ai-runner v0.14.1's `StreamDiffusionParams` is accepted (see
`shared/reference/streamdiffusion-params.md`); fields of features not built yet (ControlNets,
IP-Adapter, cached attention, processing blocks) are validated as the reference validates them
and run "off with a warning" (`pipelines.live.streamdiffusion_features`). For the reference's
own model ids the reference's rules apply (`REFERENCE_MODELS`); for any other id (a Hugging
Face id or a local folder) the checks that depend on the model's family run at load, against
the model's config.

Which changes apply live (next frame, no reload) and which reload the model is decided by
`StreamDiffusionParams.reload_fields`; see `pipelines.live.streamdiffusion`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..base import LiveParams

__all__ = [
    "CONTROLNETS_BY_FAMILY",
    "MAX_DENOISING_STEPS",
    "REFERENCE_MODELS",
    "VARIANTS",
    "CachedAttentionConfig",
    "ControlNetConfig",
    "IPAdapterConfig",
    "ImageProcessingConfig",
    "LatentProcessingConfig",
    "StreamDiffusionParams",
    "StreamDiffusionSD15Params",
]

#: Longest `t_index_list` (ai-runner's bound; the stream batch is this many UNet rows).
MAX_DENOISING_STEPS = 4

#: ai-runner's model ids and their families (its `model_id` Literal).
REFERENCE_MODELS: dict[str, str] = {
    "stabilityai/sd-turbo": "sd21",
    "stabilityai/sdxl-turbo": "sdxl",
    "prompthero/openjourney-v4": "sd15",
    "Lykon/dreamshaper-8": "sd15",
}

#: ai-runner's ControlNet ids per base family (`CONTROLNETS_BY_TYPE`).
CONTROLNETS_BY_FAMILY: dict[str, tuple[str, ...]] = {
    "sd21": (
        "thibaud/controlnet-sd21-openpose-diffusers",
        "thibaud/controlnet-sd21-hed-diffusers",
        "thibaud/controlnet-sd21-canny-diffusers",
        "thibaud/controlnet-sd21-depth-diffusers",
        "thibaud/controlnet-sd21-color-diffusers",
        "daydreamlive/TemporalNet2-stable-diffusion-2-1",
    ),
    "sd15": (
        "lllyasviel/control_v11f1p_sd15_depth",
        "lllyasviel/control_v11f1e_sd15_tile",
        "lllyasviel/control_v11p_sd15_canny",
        "daydreamlive/TemporalNet2-stable-diffusion-v1-5",
    ),
    "sdxl": (
        "xinsir/controlnet-depth-sdxl-1.0",
        "xinsir/controlnet-canny-sdxl-1.0",
        "xinsir/controlnet-tile-sdxl-1.0",
        "daydreamlive/TemporalNet2-stable-diffusion-xl-base-1.0",
    ),
}

#: Most enabled ControlNets on an SDXL base (ai-runner: "VRAM limitations on 4090s").
MAX_SDXL_CONTROLNETS = 3

ImageProcessorName = Literal[
    "passthrough",
    "external",
    "canny",
    "depth",
    "depth_tensorrt",
    "hed",
    "soft_edge",
    "lineart",
    "standard_lineart",
    "openpose",
    "pose_tensorrt",
    "mediapipe_pose",
    "mediapipe_segmentation",
    "feedback",
    "temporal_net_tensorrt",
    "blur",
    "sharpen",
    "upscale",
    "realesrgan_trt",
]

IPAdapterWeightType = Literal[
    "linear",
    "ease in",
    "ease out",
    "ease in-out",
    "reverse in-out",
    "weak input",
    "weak output",
    "weak middle",
    "strong middle",
    "style transfer",
    "composition",
    "strong style transfer",
    "style and composition",
    "style transfer precise",
    "composition precise",
]

DEFAULT_STYLE_IMAGE = "https://storage.googleapis.com/lp-ai-assets/ipadapter_style_imgs/textures/vortex.jpeg"

WeightedPrompts = list[tuple[str, float]]
WeightedSeeds = list[tuple[int, float]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControlNetConfig(_Strict):
    """One ControlNet (ai-runner's `ControlNetConfig`)."""

    model_id: str = Field(min_length=1, description="ControlNet: Hugging Face id or local folder.")
    conditioning_scale: float = Field(default=1.0, description="Strength; 0 = loaded but not fed.")
    conditioning_channels: int | None = Field(
        default=None, ge=1, le=6, description="Control image channels; omitted = the ControlNet's own config value."
    )
    preprocessor: ImageProcessorName = Field(default="passthrough", description="How the control image is computed.")
    preprocessor_params: dict[str, Any] = Field(default_factory=dict, description="Free-form preprocessor settings.")
    enabled: bool = Field(default=True, description="Disabled entries are not loaded.")
    control_guidance_start: float = Field(default=0.0, description="Fraction of the steps where the control starts.")
    control_guidance_end: float = Field(default=1.0, description="Fraction of the steps where the control ends.")


class IPAdapterConfig(_Strict):
    """IP-Adapter (ai-runner's `IPAdapterConfig`); `ipadapter_model_path`/`image_encoder_path`
    are deprecated there and ignored here too (the weights follow `type` and the family)."""

    type: Literal["regular", "faceid"] = Field(default="regular", description="regular, or faceid (face identity).")
    ipadapter_model_path: (
        Literal[
            "h94/IP-Adapter/models/ip-adapter_sd15.bin",
            "h94/IP-Adapter/sdxl_models/ip-adapter_sdxl.bin",
            "h94/IP-Adapter-FaceID/ip-adapter-faceid_sd15.bin",
            "h94/IP-Adapter-FaceID/ip-adapter-faceid_sdxl.bin",
        ]
        | None
    ) = Field(default=None, description="Deprecated, ignored.")
    image_encoder_path: Literal["h94/IP-Adapter/models/image_encoder", "h94/IP-Adapter/sdxl_models/image_encoder"] | None = (
        Field(default=None, description="Deprecated, ignored.")
    )
    insightface_model_name: Literal["buffalo_l"] | None = Field(default="buffalo_l", description="FaceID's face model.")
    scale: float = Field(default=1.0, description="0 off, 1 normal, 2 strong.")
    weight_type: IPAdapterWeightType | None = Field(default="linear", description="Per-layer weighting.")
    enabled: bool = Field(default=True, description="Disabled = scale 0.")


class ProcessorConfig(_Strict):
    type: ImageProcessorName
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)


class LatentProcessorConfig(_Strict):
    type: Literal["latent_feedback"]
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)


class ImageProcessingConfig(_Strict):
    """An image pre- or post-processing block."""

    enabled: bool = True
    processors: list[ProcessorConfig] = Field(default_factory=list)


class LatentProcessingConfig(_Strict):
    """A latent pre- or post-processing block (only `latent_feedback`)."""

    enabled: bool = True
    processors: list[LatentProcessorConfig] = Field(default_factory=list)


class CachedAttentionConfig(_Strict):
    """StreamV2V's cached attention (ai-runner's `CachedAttentionConfig`)."""

    enabled: bool = True
    max_frames: int = Field(default=1, ge=1, le=4, description="Past frames whose K/V each self-attention sees.")
    interval: int = Field(default=1, ge=1, le=1440, description="Frames between cache refreshes.")


class StreamDiffusionParams(LiveParams):
    """StreamDiffusion's img2img on every frame: see `docs/` and the field descriptions."""

    model_id: str = Field(
        default="stabilityai/sd-turbo",
        min_length=1,
        description="Diffusion model: Hugging Face id or local folder (SD 1.5, SD 2.1 or sd-turbo family).",
    )
    show_reloading_frame: bool = Field(
        default=True,
        description=(
            "While a new model loads (a reload), show the last output dimmed under a \"loading\" line; "
            "when false, the old model keeps restyling until the new one is ready."
        ),
    )
    prompt: str | WeightedPrompts = Field(
        default="flowers", description="Prompt, or a weighted list of [prompt, weight] pairs blended together."
    )
    prompt_interpolation_method: Literal["linear", "slerp"] = Field(
        default="slerp", description="How weighted prompts' embeddings are blended (slerp only for exactly two)."
    )
    normalize_prompt_weights: bool = Field(default=True, description="Scale prompt weights to sum to 1.")
    negative_prompt: str = Field(
        default="blurry, low quality, flat, 2d",
        description="What to avoid; used by cfg_type 'full' and 'initialize' when guidance_scale > 1.",
    )
    guidance_scale: float = Field(default=1.0, description="Classifier-free guidance; 1 or less turns guidance off.")
    delta: float = Field(default=0.7, description="Residual CFG: weight of the virtual negative noise (cfg_type self/initialize).")
    num_inference_steps: int = Field(
        default=50, ge=1, le=100, description="Size of the LCM timestep grid that t_index_list indexes."
    )
    t_index_list: list[int] = Field(
        default_factory=lambda: [12, 20, 32],
        description="Denoising steps run per frame, as indices into the grid: 1 to 4, non-decreasing, "
        "each at most num_inference_steps (that index runs the grid's last step). "
        "Smaller first index = stronger restyling.",
    )
    cfg_type: Literal["none", "full", "self", "initialize"] = Field(
        default="self",
        description="Guidance: none; full (2x UNet rows, negative prompt); self (residual CFG, no extra rows); "
        "initialize (one extra row evaluating the negative prompt).",
    )
    seed: int | WeightedSeeds = Field(default=789, description="Noise seed (any int), or weighted [seed, weight] pairs.")
    seed_interpolation_method: Literal["linear", "slerp"] = Field(
        default="linear", description="How weighted seeds' noises are blended (slerp only for exactly two)."
    )
    normalize_seed_weights: bool = Field(default=True, description="Scale seed weights to sum to 1.")
    prompt_transition_frames: int = Field(
        default=4, ge=1, le=120, description="Frames over which a prompt change blends from old to new embeddings."
    )
    # Model setup (changing these reloads the model).
    use_lcm_lora: bool = Field(
        default=True, description="Fuse an LCM-LoRA into non-distilled bases (never into turbo/LCM models)."
    )
    lcm_lora_id: str | None = Field(
        default=None, description="LCM-LoRA id or folder; default by family (latent-consistency/lcm-lora-sdv1-5 for SD 1.5)."
    )
    lora_dict: dict[str, float] | None = Field(default=None, description="More LoRAs to fuse: id or folder -> scale.")
    use_tiny_vae: bool = Field(default=True, description="TAESD (AutoencoderTiny) instead of the model's own VAE.")
    vae_id: str | None = Field(
        default=None,
        description="Tiny VAE id or folder; default the model folder's own taesd/ if it has one, else madebyollin/taesd.",
    )
    acceleration: Literal["none", "compile", "xformers", "tensorrt"] = Field(
        default="none",
        description="Backend: none (eager PyTorch), compile (torch.compile: Inductor, CUDA graphs on CUDA), "
        "tensorrt (engines from `livestream engines build`, docs/tensorrt.md; without TensorRT or fitting engines "
        "the model runs eager PyTorch, with a warning); xformers is not built in and runs eager PyTorch (warning).",
    )
    use_denoising_batch: bool = Field(
        default=True, description="Stream batch: all steps of different frames in one UNet call (else sequential)."
    )
    do_add_noise: bool = Field(default=True, description="Re-noise buffered latents with the fixed noise between steps.")
    skip_diffusion: bool = Field(default=False, description="Pass frames through untouched (no diffusion).")
    enable_similar_image_filter: bool = Field(
        default=False, description="Stochastic similarity filter: reuse the last output for near-identical inputs."
    )
    similar_image_filter_threshold: float = Field(
        default=0.98, description="Cosine similarity above which frames may be skipped (1 or more: never skip)."
    )
    similar_image_filter_max_skip_frame: int = Field(
        default=10, ge=0, description="Most frames skipped since the last processed one."
    )
    use_safety_checker: bool = Field(
        default=False,
        description="NSFW classifier on every output frame; a flagged frame is replaced by the last safe one "
        "(the `safety` auxiliary model, docs/realtime-diffusion.md).",
    )
    safety_checker_threshold: float = Field(default=0.5, description="NSFW probability above which a frame is flagged.")
    controlnets: list[ControlNetConfig] = Field(
        default_factory=list, description="ControlNets (accepted and validated; not built yet: off, with a warning)."
    )
    ip_adapter: IPAdapterConfig = Field(
        default_factory=lambda: IPAdapterConfig(enabled=False),
        description="IP-Adapter (accepted and validated; not built yet: off, with a warning when enabled).",
    )
    ip_adapter_style_image_url: str = Field(
        default=DEFAULT_STYLE_IMAGE, description="Style image: http(s) URL, data URI or base64 (fetched only when enabled)."
    )
    image_preprocessing: ImageProcessingConfig | None = Field(default=None, description="Image processors before encode.")
    image_postprocessing: ImageProcessingConfig | None = Field(default=None, description="Image processors after decode.")
    latent_preprocessing: LatentProcessingConfig | None = Field(default=None, description="Latent processors before denoising.")
    latent_postprocessing: LatentProcessingConfig | None = Field(default=None, description="Latent processors after denoising.")
    cached_attention: CachedAttentionConfig = Field(
        default_factory=lambda: CachedAttentionConfig(enabled=False),
        description="StreamV2V cached attention (accepted and validated; not built yet: off, with a warning).",
    )

    @model_validator(mode="after")
    def _check(self) -> StreamDiffusionParams:
        self._check_t_index_list()
        self._check_controlnets()
        family = self.reference_family()
        if family is not None:
            self._check_reference(family)
        return self

    def _check_t_index_list(self) -> None:
        t = self.t_index_list
        if not 1 <= len(t) <= MAX_DENOISING_STEPS:
            raise ValueError(f"t_index_list must have between 1 and {MAX_DENOISING_STEPS} elements, got {len(t)}")
        for i, value in enumerate(t):
            if not 0 <= value <= self.num_inference_steps:
                raise ValueError(
                    f"t_index_list values must be in [0, num_inference_steps={self.num_inference_steps}]; "
                    f"got {value} at index {i}"
                )
        for prev, curr in zip(t, t[1:], strict=False):
            if curr < prev:
                raise ValueError(f"t_index_list must be non-decreasing; {curr} follows {prev}")

    def _check_controlnets(self) -> None:
        ids = [cn.model_id for cn in self.controlnets]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate ControlNet model_id: {', '.join(duplicates)}")

    def _check_reference(self, family: str) -> None:
        """ai-runner's validators, for its own model ids."""
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and not (384 <= value <= 1024 and value % 64 == 0):
                raise ValueError(f"{name} must be 384..1024 and a multiple of 64 for {self.model_id}; got {value}")
        allowed = CONTROLNETS_BY_FAMILY[family]
        invalid = [cn.model_id for cn in self.controlnets if cn.model_id not in allowed]
        if invalid:
            raise ValueError(
                f"Invalid ControlNets for model {self.model_id}: {', '.join(invalid)}; allowed: {', '.join(allowed)}"
            )
        enabled = sum(cn.enabled for cn in self.controlnets)
        if family == "sdxl" and enabled > MAX_SDXL_CONTROLNETS:
            raise ValueError(f"at most {MAX_SDXL_CONTROLNETS} enabled ControlNets on SDXL; got {enabled}")
        if self.ip_adapter.enabled and family not in ("sd15", "sdxl"):
            raise ValueError(f"IPAdapter is not supported for {self.model_id}")
        ca = self.cached_attention
        if ca.enabled:
            if self.acceleration != "tensorrt":
                raise ValueError("cached_attention needs acceleration 'tensorrt'")
            if (self.width or 512, self.height or 512) != (512, 512):
                raise ValueError("cached_attention runs at 512x512 only")
            if family == "sdxl":
                limit = {1: 4, 2: 2, 3: 1}.get(len(self.t_index_list), 0)
                if ca.max_frames > limit:
                    raise ValueError(
                        f"cached_attention on SDXL with {len(self.t_index_list)} denoising steps allows max_frames "
                        f"up to {limit}; got {ca.max_frames}"
                    )

    #: Fields whose change needs the model reloaded (everything else applies on the next frame).
    reload_fields: ClassVar[frozenset[str]] = frozenset(
        {"model_id", "use_lcm_lora", "lcm_lora_id", "lora_dict", "use_tiny_vae", "vae_id", "acceleration"}
    )

    def reference_family(self) -> str | None:
        """The family of one of ai-runner's model ids; None for any other id."""
        return REFERENCE_MODELS.get(self.model_id)

    def prompts(self) -> WeightedPrompts:
        """The weighted prompts; an empty list runs the empty prompt."""
        if isinstance(self.prompt, str):
            return [(self.prompt, 1.0)]
        return list(self.prompt) or [("", 1.0)]

    def seeds(self) -> WeightedSeeds:
        """The weighted seeds; an empty list runs the default seed."""
        if isinstance(self.seed, int):
            return [(self.seed, 1.0)]
        return list(self.seed) or [(789, 1.0)]


_SD15_CONTROLNETS = [
    ControlNetConfig(
        model_id="lllyasviel/control_v11f1p_sd15_depth", conditioning_scale=1.0, preprocessor="depth_tensorrt"
    ),
    ControlNetConfig(model_id="lllyasviel/control_v11f1e_sd15_tile", conditioning_scale=0.0, preprocessor="feedback"),
    ControlNetConfig(
        model_id="lllyasviel/control_v11p_sd15_canny",
        conditioning_scale=0.0,
        preprocessor="canny",
        preprocessor_params={"low_threshold": 100, "high_threshold": 200},
    ),
    ControlNetConfig(
        model_id="daydreamlive/TemporalNet2-stable-diffusion-v1-5",
        conditioning_scale=0.0,
        preprocessor="temporal_net_tensorrt",
        preprocessor_params={"flow_strength": 0.4},
    ),
]


def _variant(name: str, doc: str, **defaults: Any) -> type[StreamDiffusionParams]:
    """A params class whose omitted fields take `defaults` (a variant's default params)."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__doc__": doc, "__module__": __name__, "__annotations__": annotations}
    for field_name, value in defaults.items():
        info = StreamDiffusionParams.model_fields[field_name]
        annotations[field_name] = info.annotation
        if isinstance(value, (list, dict, BaseModel)):
            namespace[field_name] = Field(default_factory=lambda v=value: _copy(v), description=info.description)
        else:
            namespace[field_name] = Field(default=value, description=info.description)
    return type(name, (StreamDiffusionParams,), namespace)


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


_SD15: dict[str, Any] = dict(
    acceleration="tensorrt",
    model_id="Lykon/dreamshaper-8",
    prompt="cyberpunk desert structures, masterpiece",
    t_index_list=[5, 15, 32],
    controlnets=_SD15_CONTROLNETS,
    ip_adapter=IPAdapterConfig(type="regular", scale=0.5, enabled=True),
)
_SDXL_CONTROLNETS = [
    ControlNetConfig(model_id="xinsir/controlnet-depth-sdxl-1.0", conditioning_scale=0.7, preprocessor="depth_tensorrt"),
    ControlNetConfig(
        model_id="xinsir/controlnet-canny-sdxl-1.0",
        conditioning_scale=0.2,
        preprocessor="canny",
        preprocessor_params={"low_threshold": 100, "high_threshold": 200},
    ),
    ControlNetConfig(model_id="xinsir/controlnet-tile-sdxl-1.0", conditioning_scale=0.15, preprocessor="feedback"),
]
_SDXL: dict[str, Any] = dict(
    acceleration="tensorrt",
    model_id="stabilityai/sdxl-turbo",
    prompt="webcam portrait dissolving into swirling vortex textures, masterpiece",
    t_index_list=[36],
    controlnets=_SDXL_CONTROLNETS,
    ip_adapter=IPAdapterConfig(type="regular", scale=0.6, enabled=True),
)
_V2V = CachedAttentionConfig(enabled=True, max_frames=1, interval=1)

_SDTURBO_CONTROLNETS = [
    ControlNetConfig(
        model_id="thibaud/controlnet-sd21-openpose-diffusers", conditioning_scale=0.711, preprocessor="pose_tensorrt"
    ),
    ControlNetConfig(model_id="thibaud/controlnet-sd21-hed-diffusers", conditioning_scale=0.2, preprocessor="soft_edge"),
    ControlNetConfig(
        model_id="thibaud/controlnet-sd21-canny-diffusers",
        conditioning_scale=0.2,
        preprocessor="canny",
        preprocessor_params={"low_threshold": 100, "high_threshold": 200},
    ),
    ControlNetConfig(
        model_id="thibaud/controlnet-sd21-depth-diffusers", conditioning_scale=0.5, preprocessor="depth_tensorrt"
    ),
    ControlNetConfig(model_id="thibaud/controlnet-sd21-color-diffusers", conditioning_scale=0.2, preprocessor="passthrough"),
    ControlNetConfig(
        model_id="daydreamlive/TemporalNet2-stable-diffusion-2-1",
        conditioning_scale=0.0,
        preprocessor="temporal_net_tensorrt",
        preprocessor_params={"flow_strength": 0.4},
    ),
]

StreamDiffusionSDTurboParams = _variant(
    "StreamDiffusionSDTurboParams",
    "ai-runner's `sdturbo` defaults (sdturbo.json): sd-turbo with its family's ControlNets and the safety checker.",
    controlnets=_SDTURBO_CONTROLNETS,
    use_safety_checker=True,
    acceleration="tensorrt",
)
StreamDiffusionSD15Params = _variant(
    "StreamDiffusionSD15Params", "ai-runner's `sd15` variant defaults: dreamshaper-8 with LCM-LoRA.", **_SD15
)
StreamDiffusionSD15V2VParams = _variant(
    "StreamDiffusionSD15V2VParams",
    "ai-runner's `sd15-v2v` defaults: `sd15` with cached attention.",
    **_SD15,
    cached_attention=_V2V,
)
StreamDiffusionSDXLParams = _variant("StreamDiffusionSDXLParams", "ai-runner's `sdxl` variant defaults.", **_SDXL)
StreamDiffusionSDXLV2VParams = _variant(
    "StreamDiffusionSDXLV2VParams",
    "ai-runner's `sdxl-v2v` defaults: `sdxl` with cached attention.",
    **_SDXL,
    cached_attention=_V2V,
)
StreamDiffusionSDXLFaceIDParams = _variant(
    "StreamDiffusionSDXLFaceIDParams",
    "ai-runner's `sdxl-faceid` variant defaults: FaceID IP-Adapter on a face-focused prompt.",
    **{
        **_SDXL,
        "prompt": "mona lisa, face-focused webcam portrait, masterpiece",
        "controlnets": [
            _SDXL_CONTROLNETS[0].model_copy(update={"conditioning_scale": 0.4}),
            _SDXL_CONTROLNETS[1].model_copy(update={"conditioning_scale": 0.1}),
            _SDXL_CONTROLNETS[2].model_copy(update={"conditioning_scale": 0.1}),
        ],
        "ip_adapter": IPAdapterConfig(type="faceid", scale=1.0, enabled=True),
        "ip_adapter_style_image_url": "https://storage.googleapis.com/lp-ai-assets/ipadapter_style_imgs/mona_lisa.jpeg",
    },
)

#: Live pipeline names (ai-runner's `streamdiffusion[-SUBVARIANT]`, go-livepeer's names) -> their params model.
VARIANTS: dict[str, type[StreamDiffusionParams]] = {
    "streamdiffusion": StreamDiffusionParams,
    "streamdiffusion-sdturbo": StreamDiffusionSDTurboParams,
    "streamdiffusion-sd15": StreamDiffusionSD15Params,
    "streamdiffusion-sd15-v2v": StreamDiffusionSD15V2VParams,
    "streamdiffusion-sdxl": StreamDiffusionSDXLParams,
    "streamdiffusion-sdxl-v2v": StreamDiffusionSDXLV2VParams,
    "streamdiffusion-sdxl-faceid": StreamDiffusionSDXLFaceIDParams,
}
