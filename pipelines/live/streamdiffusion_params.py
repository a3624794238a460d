"""Params of the `streamdiffusion` live pipeline, named as ai-runner's StreamDiffusion params.

Imports without torch: the registry lists the JSON schema without loading a model.

Which changes apply live (next frame, no reload) and which reload the model is decided by
`StreamDiffusionParams.reload_fields`; see `pipelines.live.streamdiffusion`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..base import LiveParams

__all__ = ["MAX_DENOISING_STEPS", "VARIANTS", "StreamDiffusionParams", "StreamDiffusionSD15Params"]

#: Longest `t_index_list` (ai-runner's bound; the stream batch is this many UNet rows).
MAX_DENOISING_STEPS = 4

WeightedPrompts = list[tuple[str, float]]
WeightedSeeds = list[tuple[int, float]]


class StreamDiffusionParams(LiveParams):
    """StreamDiffusion's img2img on every frame: see `docs/` and the field descriptions."""

    model_id: str = Field(
        default="stabilityai/sd-turbo",
        min_length=1,
        description="Diffusion model: Hugging Face id or local folder (SD 1.5, SD 2.1 or sd-turbo family).",
    )
    prompt: str | WeightedPrompts = Field(
        default="flowers", description="Prompt, or a weighted list of [prompt, weight] pairs blended together."
    )
    prompt_interpolation_method: Literal["linear", "slerp"] = Field(
        default="slerp", description="How weighted prompts' embeddings are blended."
    )
    normalize_prompt_weights: bool = Field(default=True, description="Scale prompt weights to sum to 1.")
    negative_prompt: str = Field(
        default="blurry, low quality, flat, 2d",
        description="What to avoid; used by cfg_type 'full' and 'initialize' when guidance_scale > 1.",
    )
    guidance_scale: float = Field(
        default=1.0, ge=0.0, le=20.0, description="Classifier-free guidance; 1 or less turns guidance off."
    )
    delta: float = Field(
        default=0.7, ge=0.0, le=5.0, description="Residual CFG: weight of the virtual negative noise (cfg_type self/initialize)."
    )
    num_inference_steps: int = Field(
        default=50, ge=1, le=100, description="Size of the LCM timestep grid that t_index_list indexes."
    )
    t_index_list: list[int] = Field(
        default_factory=lambda: [12, 20, 32],
        description="Denoising steps run per frame, as indices into the grid: 1 to 4, non-decreasing, "
        "each below num_inference_steps. Smaller first index = stronger restyling.",
    )
    cfg_type: Literal["none", "full", "self", "initialize"] = Field(
        default="self",
        description="Guidance: none; full (2x UNet rows, negative prompt); self (residual CFG, no extra rows); "
        "initialize (one extra row evaluating the negative prompt).",
    )
    seed: int | WeightedSeeds = Field(default=789, description="Noise seed, or weighted [seed, weight] pairs.")
    seed_interpolation_method: Literal["linear", "slerp"] = Field(
        default="linear", description="How weighted seeds' noises are blended."
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
        "tensorrt (engines from `livestream engines build`, docs/tensorrt.md; the load fails when none fit); "
        "xformers is not built in and runs eager PyTorch (logged, and status says so).",
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
        default=0.98, ge=0.0, lt=1.0, description="Cosine similarity above which frames may be skipped."
    )
    similar_image_filter_max_skip_frame: int = Field(
        default=10, ge=0, le=1000, description="Most frames skipped since the last processed one."
    )

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str | WeightedPrompts) -> str | WeightedPrompts:
        if isinstance(value, list):
            if not value:
                raise ValueError("a weighted prompt list needs at least one [prompt, weight] pair")
            if any(w < 0 for _, w in value) or sum(w for _, w in value) <= 0:
                raise ValueError("prompt weights must be >= 0 and not all 0")
        return value

    @field_validator("seed")
    @classmethod
    def _check_seed(cls, value: int | WeightedSeeds) -> int | WeightedSeeds:
        seeds = [value] if isinstance(value, int) else [s for s, _ in value]
        if isinstance(value, list):
            if not value:
                raise ValueError("a weighted seed list needs at least one [seed, weight] pair")
            if any(w < 0 for _, w in value) or sum(w for _, w in value) <= 0:
                raise ValueError("seed weights must be >= 0 and not all 0")
        if any(not 0 <= s < 2**63 for s in seeds):
            raise ValueError("seeds must be between 0 and 2**63 - 1")
        return value

    @model_validator(mode="after")
    def _check_t_index_list(self) -> StreamDiffusionParams:
        t = self.t_index_list
        if not 1 <= len(t) <= MAX_DENOISING_STEPS:
            raise ValueError(f"t_index_list must have between 1 and {MAX_DENOISING_STEPS} elements, got {len(t)}")
        for i, value in enumerate(t):
            if not 0 <= value < self.num_inference_steps:
                raise ValueError(
                    f"t_index_list values must be in [0, num_inference_steps={self.num_inference_steps}); "
                    f"got {value} at index {i}"
                )
        for prev, curr in zip(t, t[1:], strict=False):
            if curr < prev:
                raise ValueError(f"t_index_list must be non-decreasing; {curr} follows {prev}")
        return self

    #: Fields whose change needs the model reloaded (everything else applies on the next frame).
    reload_fields: ClassVar[frozenset[str]] = frozenset(
        {"model_id", "use_lcm_lora", "lcm_lora_id", "lora_dict", "use_tiny_vae", "vae_id", "acceleration"}
    )

    def prompts(self) -> WeightedPrompts:
        return [(self.prompt, 1.0)] if isinstance(self.prompt, str) else list(self.prompt)

    def seeds(self) -> WeightedSeeds:
        return [(self.seed, 1.0)] if isinstance(self.seed, int) else list(self.seed)


class StreamDiffusionSD15Params(StreamDiffusionParams):
    """ai-runner's `sd15` variant defaults: an SD 1.5 base with LCM-LoRA."""

    model_id: str = Field(default="Lykon/dreamshaper-8", min_length=1, description=StreamDiffusionParams.model_fields["model_id"].description)
    prompt: str | WeightedPrompts = Field(
        default="cyberpunk desert structures, masterpiece", description=StreamDiffusionParams.model_fields["prompt"].description
    )
    t_index_list: list[int] = Field(
        default_factory=lambda: [5, 15, 32], description=StreamDiffusionParams.model_fields["t_index_list"].description
    )


#: Live pipeline names (ai-runner's `streamdiffusion[-SUBVARIANT]`) -> their params model.
VARIANTS: dict[str, type[StreamDiffusionParams]] = {
    "streamdiffusion": StreamDiffusionParams,
    "streamdiffusion-sdturbo": StreamDiffusionParams,
    "streamdiffusion-sd15": StreamDiffusionSD15Params,
}
