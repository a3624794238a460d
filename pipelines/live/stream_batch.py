"""StreamDiffusion's denoising math on current diffusers: schedule, per-stream state, one step.

The method (Kodaira et al., arXiv 2312.12491), written against diffusers 0.42 components:

- **Schedule.** LCMScheduler's grid (`num_inference_steps` timesteps, `999 - 20 i` for 50);
  `t_index_list` picks n of them. Per picked step k the tables hold
  `alpha_k = sqrt(acp[t_k])`, `beta_k = sqrt(1 - acp[t_k])` and LCM's boundary scalings
  `c_skip_k, c_out_k`, as `(n, 1, 1, 1)` tensors, so the step is a few batched ops.
- **Stream batch.** A stream keeps `n - 1` latents from earlier frames, row k sitting at step
  `t_k`. Each frame's latent is noised to `t_0` and stacked on top, one UNet call advances all n
  rows, the last row's x0 is the output, and rows `0..n-2` are re-noised to the next step
  (`alpha_{k+1} x0 + beta_{k+1} noise_{k+1}`) and kept. Output lags input by n - 1 frames and
  equals running each frame through the n steps one after the other (the tests check this).
- **Fixed noise.** `noise` (n rows) is drawn once per seed and reused every frame.
- **Residual CFG.** `none`; `full` (uncond rows for every step, negative prompt); `self` (the
  uncond prediction is `delta * stock`, a virtual residual noise carried with each frame
  through its steps); `initialize` (one extra row evaluates the negative prompt at `t_0`
  and seeds the stock noise). Guidance applies when `guidance_scale > 1`.
- **x0.** `c_out (x - beta eps) / alpha + c_skip x`; v-prediction models are converted to eps.

A stream's rows never mix with another's except in the UNet call itself, so `step` takes a
list of (state, latent) pairs and runs them all in one UNet call: cross-stream batching is
the same code with more than one stream. The UNet and the VAE are behind `DenoiseBackend`,
so compiled or TensorRT engines can replace the PyTorch modules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .controlnets import Control
from .controlnets import residuals as controlnet_residuals

if TYPE_CHECKING:
    import torch

__all__ = [
    "CfgType",
    "Control",
    "DenoiseBackend",
    "SDXLBackend",
    "Schedule",
    "StreamState",
    "UnetHook",
    "TorchBackend",
    "blend",
    "make_noise",
    "pack_sdxl_embeds",
    "step",
    "step_sequential",
]

CfgType = Literal["none", "full", "self", "initialize"]


class DenoiseBackend(Protocol):
    """The three model calls of a frame. Tensors stay on the backend's device and dtype."""

    def unet(self, sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Args: sample `(B, 4, h, w)`, timesteps `(B,)` long, embeds `(B, L, D)`. Returns `(B, 4, h, w)`.

        A backend that can take ControlNet residuals also has `unet_with_residuals(sample,
        timesteps, embeds, **extra)` (`TorchBackend`'s; the compile backend inherits it, eager)."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images `(N, 3, H, W)` in [-1, 1]. Returns scaled latents `(N, 4, H/f, W/f)`."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Args: scaled latents. Returns images `(N, 3, H, W)` in about [-1, 1]."""
        ...


class TorchBackend:
    """Eager PyTorch: a diffusers `UNet2DConditionModel` and `AutoencoderKL`/`AutoencoderTiny`."""

    name = "eager"

    def __init__(self, unet: Any, vae: Any) -> None:
        self._unet = unet
        self._vae = vae
        self._scaling = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
        self._shift = float(getattr(vae.config, "shift_factor", 0.0) or 0.0)

    def unet(self, sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return self._unet(sample, timesteps, encoder_hidden_states=embeds, return_dict=False)[0]

    def unet_with_residuals(self, sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor, **extra: Any) -> torch.Tensor:
        """The UNet with ControlNet residuals (`down_block_additional_residuals`,
        `mid_block_additional_residual`) and hook inputs (`added_cond_kwargs`: the
        IP-Adapter's `image_embeds`), always the eager module."""
        if not extra.get("added_cond_kwargs"):
            extra.pop("added_cond_kwargs", None)
        return self._unet(sample, timesteps, encoder_hidden_states=embeds, return_dict=False, **extra)[0]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

        # The distribution's mode, not a sample: the same frame always gives the same latent.
        latents = retrieve_latents(self._vae.encode(images), sample_mode="argmax")
        return (latents - self._shift) * self._scaling

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self._vae.decode(latents / self._scaling + self._shift, return_dict=False)[0]


class SDXLBackend(TorchBackend):
    """`TorchBackend` for SDXL UNets (`addition_embed_type="text_time"`).

    The embeddings a stream carries are packed: `(B, L + 1, D)`, the text encoders' hidden
    states and, in the last token, the pooled text embedding (its first P entries). So prompt
    blends, stream batches and cross-stream batches treat them as any embeddings (the pooled
    part blends with the rest). The time ids are SDXL's micro-conditioning for an uncropped
    frame of the sample's size: `(H, W, 0, 0, H, W)`.
    """

    name = "eager"

    def __init__(self, unet: Any, vae: Any, latent_factor: int = 8) -> None:
        super().__init__(unet, vae)
        cfg = unet.config
        self.pooled_dim = int(cfg.projection_class_embeddings_input_dim) - 6 * int(cfg.addition_time_embed_dim)
        self.latent_factor = latent_factor

    def split_embeds(self, sample: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Packed embeddings -> (hidden states, SDXL's `added_cond_kwargs`)."""
        import torch

        h, w = (int(d) * self.latent_factor for d in sample.shape[-2:])
        ids = torch.tensor([h, w, 0, 0, h, w], device=sample.device, dtype=embeds.dtype).expand(sample.shape[0], 6)
        return embeds[:, :-1], {"text_embeds": embeds[:, -1, : self.pooled_dim], "time_ids": ids}

    def unet(self, sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        text, added = self.split_embeds(sample, embeds)
        return self._unet(sample, timesteps, encoder_hidden_states=text, added_cond_kwargs=added, return_dict=False)[0]

    def unet_with_residuals(self, sample: torch.Tensor, timesteps: torch.Tensor, embeds: torch.Tensor, **extra: Any) -> torch.Tensor:
        text, added = self.split_embeds(sample, embeds)
        added = {**added, **(extra.pop("added_cond_kwargs", None) or {})}
        return self._unet(sample, timesteps, encoder_hidden_states=text, added_cond_kwargs=added, return_dict=False, **extra)[0]


def pack_sdxl_embeds(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """`(1, L, D)` hidden states and `(1, P)` pooled (P <= D) -> `(1, L + 1, D)` (`SDXLBackend`)."""
    import torch

    last = torch.zeros(hidden.shape[0], 1, hidden.shape[-1], device=hidden.device, dtype=hidden.dtype)
    last[:, 0, : pooled.shape[-1]] = pooled.to(hidden.dtype)
    return torch.cat([hidden, last], dim=1)


@dataclass(frozen=True)
class Schedule:
    """The per-step tables of one `t_index_list` (see the module docstring); rows are steps."""

    t_index_list: tuple[int, ...]
    num_inference_steps: int
    timesteps: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    c_skip: torch.Tensor
    c_out: torch.Tensor
    prediction_type: str = "epsilon"

    @property
    def steps(self) -> int:
        return len(self.t_index_list)

    @classmethod
    def build(
        cls,
        scheduler_config: Any,
        t_index_list: Sequence[int],
        num_inference_steps: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> Schedule:
        """Tables for `t_index_list` on the LCM grid of `num_inference_steps` steps.

        Args:
            scheduler_config: the model's scheduler config (any SD scheduler); LCMScheduler's
                math is built from its betas.
        """
        import torch
        from diffusers import LCMScheduler

        config = dict(scheduler_config)
        prediction_type = str(config.get("prediction_type") or "epsilon")
        scheduler = LCMScheduler.from_config(config)
        original = max(int(scheduler.config.original_inference_steps), num_inference_steps)
        scheduler.set_timesteps(num_inference_steps, original_inference_steps=original)
        grid = scheduler.timesteps.to("cpu", torch.long)
        if max(t_index_list) > len(grid):
            raise ValueError(f"t_index_list {list(t_index_list)} indexes past the {len(grid)}-step grid")
        # ai-runner accepts an index equal to num_inference_steps: it runs the grid's last step.
        timesteps = grid[[min(t, len(grid) - 1) for t in t_index_list]]
        acp = scheduler.alphas_cumprod.to(torch.float64)[timesteps]
        scalings = [scheduler.get_scalings_for_boundary_condition_discrete(int(t)) for t in timesteps]
        dtype = dtype or torch.float32

        def table(values: Any) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float64).view(-1, 1, 1, 1).to(device=device, dtype=dtype)

        return cls(
            t_index_list=tuple(t_index_list),
            num_inference_steps=num_inference_steps,
            timesteps=timesteps.to(device),
            alpha=table(acp.sqrt()),
            beta=table((1 - acp).sqrt()),
            c_skip=table([float(s) for s, _ in scalings]),
            c_out=table([float(o) for _, o in scalings]),
            prediction_type=prediction_type,
        )


@dataclass
class StreamState:
    """One stream's denoising state: the slot a (future) GPU worker indexes per session.

    Attributes:
        noise: `(n, 4, h, w)` fixed noise, row k used at step k.
        cond, uncond: `(1, L, D)` prompt and negative-prompt embeddings.
        buffer: `(n - 1, 4, h, w)` latents of earlier frames at steps 1..n-1, or None until
            the next frame primes it (its own latent noised to each step: never a blank frame).
        stock: `(n, 4, h, w)` residual-CFG stock noise; row k belongs to the frame entering
            step k + 1 on the next call.
    """

    schedule: Schedule
    noise: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    cfg_type: CfgType = "self"
    guidance_scale: float = 1.0
    delta: float = 1.0
    do_add_noise: bool = True
    buffer: torch.Tensor | None = None
    stock: torch.Tensor | None = None
    frames: int = field(default=0)
    #: ControlNets fed on the next step (set per frame by the pipeline).
    controls: list[Control] = field(default_factory=list)
    #: IP-Adapter input of the next step (`ip_adapter.StreamIP`), or None.
    ip: Any = None
    #: Cached attention's feature bank (`cached_attention.FeatureBank`), or None when off.
    bank: Any = None
    #: Latent pre/post-processing (`processing_blocks.LatentFeedback`: `pre(latent)` on the
    #: new frame's latent, `post(x0)` on the output latent), or None.
    latent_blocks: Any = None

    @property
    def guided(self) -> bool:
        return self.cfg_type != "none" and self.guidance_scale > 1.0

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.noise.shape[1:])

    def unet_rows(self) -> int:
        """UNet rows this stream adds to a step."""
        n = self.schedule.steps
        if self.guided and self.cfg_type == "full":
            return 2 * n
        if self.guided and self.cfg_type == "initialize":
            return n + 1
        return n

    def reset(self) -> None:
        """Forget earlier frames: the next frame primes the buffer again."""
        self.buffer = None
        self.stock = None
        self.frames = 0


def make_noise(shape: Sequence[int], seeds: Sequence[tuple[int, float]], *, method: str = "linear", normalize: bool = True) -> torch.Tensor:
    """Fixed noise for weighted seeds (float32, CPU): one `randn(shape)` per seed, blended."""
    import torch

    parts = []
    for seed, _ in seeds:
        gen = torch.Generator("cpu").manual_seed(int(seed) % 2**64)  # any int, negative too
        parts.append(torch.randn(tuple(shape), generator=gen, dtype=torch.float32))
    out = blend(parts, [w for _, w in seeds], method=method, normalize=normalize)
    if normalize and len(parts) > 1 and not (method == "slerp" and len(parts) == 2):
        # A weighted sum of independent noises is quieter than each: rescale to their mean
        # norm, so a seed blend keeps the noise magnitude (as the reference's updater does).
        target = sum(float(p.norm()) for p in parts) / len(parts)
        norm = float(out.norm())
        if norm > 0:
            out = out * (target / norm)
    return out


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    import torch

    af, bf = a.flatten().double(), b.flatten().double()
    cos = torch.dot(af / af.norm(), bf / bf.norm()).clamp(-1.0, 1.0)
    theta = float(torch.arccos(cos))
    if theta < 1e-4:
        return (1 - t) * a + t * b
    s = math.sin(theta)
    return (math.sin((1 - t) * theta) / s) * a + (math.sin(t * theta) / s) * b


def blend(tensors: Sequence[torch.Tensor], weights: Sequence[float], *, method: str = "linear", normalize: bool = True) -> torch.Tensor:
    """Weighted blend of same-shape tensors, as the reference's stream updater blends.

    Weights are divided by their sum when `normalize` (and the sum is not 0); `slerp` applies
    to exactly two tensors (t = the second weight), any other count is a weighted sum.
    """
    w = [float(x) for x in weights]
    total = sum(w)
    if normalize and abs(total) > 1e-12:
        w = [x / total for x in w]
    if method == "slerp" and len(tensors) == 2:
        return _slerp(tensors[0], tensors[1], w[1])
    out = tensors[0] * w[0]
    for tensor, x in zip(tensors[1:], w[1:], strict=True):
        out = out + tensor * x
    return out


def _to_eps(out: torch.Tensor, sample: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "epsilon":
        return out
    if kind == "v_prediction":
        return alpha * out + beta * sample
    if kind == "sample":
        return (sample - alpha * out) / beta
    raise ValueError(f"unsupported prediction_type {kind!r}")


def _x0(x: torch.Tensor, eps: torch.Tensor, s: Schedule, rows: slice | torch.Tensor) -> torch.Tensor:
    """LCM's boundary-condition x0 for rows `rows` of the schedule."""
    alpha, beta = s.alpha[rows], s.beta[rows]
    return s.c_out[rows] * ((x - beta * eps) / alpha) + s.c_skip[rows] * x


@dataclass
class _Pending:
    x: torch.Tensor
    stock: torch.Tensor
    rows: int
    #: The schedule step of each UNet row.
    steps: list[int]


def _prepare(state: StreamState, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, _Pending]:
    """This stream's UNet inputs for one frame (and what `_finish` needs)."""
    import torch

    s, noise = state.schedule, state.noise
    n = s.steps
    x_new = s.alpha[0:1] * latent + s.beta[0:1] * noise[0:1]
    if n > 1 and (state.buffer is None or state.buffer.shape[0] != n - 1):
        # Prime with this frame: its latent noised to every later step.
        state.buffer = s.alpha[1:] * latent + s.beta[1:] * noise[1:]
        state.stock = None
    if state.stock is None or state.stock.shape[0] != n:
        # Row k holds the stock noise of the frame entering step k + 1: its true noise.
        state.stock = torch.roll(noise, -1, dims=0)
    x = torch.cat([x_new, state.buffer], dim=0) if n > 1 else x_new
    stock = torch.cat([noise[0:1], state.stock[:-1]], dim=0)
    t = s.timesteps
    cond = state.cond.expand(n, -1, -1)
    steps = list(range(n))
    if state.guided and state.cfg_type == "full":
        sample = torch.cat([x, x], dim=0)
        t = torch.cat([t, t])
        embeds = torch.cat([state.uncond.expand(n, -1, -1), cond], dim=0)
        steps = steps + steps
    elif state.guided and state.cfg_type == "initialize":
        sample = torch.cat([x[0:1], x], dim=0)
        t = torch.cat([t[0:1], t])
        embeds = torch.cat([state.uncond, cond], dim=0)
        steps = [0, *steps]
    else:
        sample, embeds = x, cond
    return sample, t, embeds, _Pending(x, stock, sample.shape[0], steps)


def _finish(state: StreamState, pending: _Pending, out: torch.Tensor) -> torch.Tensor:
    """The guided prediction, x0 of every row, the new buffer and stock; returns the output x0."""
    import torch

    s, noise, x, stock = state.schedule, state.noise, pending.x, pending.stock
    n = s.steps
    g = state.guidance_scale
    kind = s.prediction_type
    if state.guided and state.cfg_type == "full":
        eps_u = _to_eps(out[:n], x, s.alpha, s.beta, kind)
        eps_c = _to_eps(out[n:], x, s.alpha, s.beta, kind)
        eps = eps_u + g * (eps_c - eps_u)
    elif state.guided and state.cfg_type == "initialize":
        first = _to_eps(out[0:1], x[0:1], s.alpha[0:1], s.beta[0:1], kind)
        stock = torch.cat([first, stock[1:]], dim=0)
        eps_c = _to_eps(out[1:], x, s.alpha, s.beta, kind)
        eps_u = state.delta * stock
        eps = eps_u + g * (eps_c - eps_u)
    elif state.guided:  # self
        eps_c = _to_eps(out, x, s.alpha, s.beta, kind)
        eps_u = state.delta * stock
        eps = eps_u + g * (eps_c - eps_u)
    else:
        eps = _to_eps(out, x, s.alpha, s.beta, kind)
    rows = slice(0, n)
    x0 = _x0(x, eps, s, rows)
    if state.cfg_type in ("self", "initialize"):
        # The stock noise follows its frame: the residual it leaves at the next step.
        one = torch.ones_like(s.alpha[0:1])
        alpha_next = torch.cat([s.alpha[1:], one], dim=0)
        beta_next = torch.cat([s.beta[1:], one], dim=0)
        delta_x = _x0(s.beta * stock, eps, s, rows) * alpha_next / beta_next
        state.stock = torch.roll(noise, -1, dims=0) + delta_x
    else:
        state.stock = torch.roll(noise, -1, dims=0)
    if n > 1:
        renoised = s.alpha[1:] * x0[:-1]
        if state.do_add_noise:
            renoised = renoised + s.beta[1:] * noise[1:]
        state.buffer = renoised
    state.frames += 1
    return x0[-1:]


class UnetHook(Protocol):
    """Something a UNet call carries for its rows (the IP-Adapter, cached attention).

    `begin` returns None when no row of this call needs it, else the `added_cond_kwargs` it adds
    (possibly none); `end` runs after the call, for every hook whose `begin` did not return None."""

    def begin(self, rows: Sequence[tuple[int, Sequence[int], Any]], sample: torch.Tensor) -> dict[str, Any] | None: ...

    def end(self, rows: Sequence[tuple[int, Sequence[int], Any]]) -> None: ...


def _unet(
    backend: DenoiseBackend,
    sample: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    rows: Sequence[tuple[int, Sequence[int], StreamState]],
    controlnets: Mapping[str, Any] | None,
    hooks: Sequence[UnetHook] = (),
) -> torch.Tensor:
    """The UNet call, with the residuals of every active ControlNet when there are any, and
    what each active hook adds (the eager UNet runs whenever one of them is active).

    `rows`: per stream, its first row in the batch, the step of each of its rows, its state."""
    controlled = getattr(backend, "unet_with_residuals", None)
    active: list[UnetHook] = []
    added_extra: dict[str, Any] = {}
    if controlled is not None:
        for hook in hooks:
            kwargs = hook.begin(rows, sample)
            if kwargs is not None:
                active.append(hook)
                added_extra.update(kwargs)
    try:
        extra = None
        if controlnets and controlled is not None:
            split = getattr(backend, "split_embeds", None)
            text, added = split(sample, embeds) if split is not None else (embeds, None)
            extra = controlnet_residuals(controlnets, sample, t, text, rows, added)
        if extra is not None or active:
            assert controlled is not None
            out: torch.Tensor = controlled(sample, t, embeds, **(extra or {}), added_cond_kwargs=added_extra)
            return out
        return backend.unet(sample, t, embeds)
    finally:
        for hook in active:
            hook.end(rows)


def step(
    backend: DenoiseBackend,
    items: Sequence[tuple[StreamState, torch.Tensor]],
    controlnets: Mapping[str, Any] | None = None,
    hooks: Sequence[UnetHook] = (),
) -> list[torch.Tensor]:
    """One stream-batch step for each (state, latent) pair, all in one UNet call.

    Args:
        items: each a stream's state and its new frame's clean latent `(1, 4, h, w)`; every
            stream must have the same latent and embedding shapes.
        controlnets: key -> diffusers `ControlNetModel`, for the states' `controls`; streams
            with different ControlNets still share the UNet call (`controlnets.residuals`).

    Returns: each stream's output x0 latent `(1, 4, h, w)` (the frame n - 1 steps back).
    """
    import torch

    items = [(state, state.latent_blocks.pre(latent) if state.latent_blocks is not None else latent) for state, latent in items]
    prepared = [_prepare(state, latent) for state, latent in items]
    if len(prepared) == 1:
        sample, t, embeds, _ = prepared[0]
    else:
        sample = torch.cat([p[0] for p in prepared], dim=0)
        t = torch.cat([p[1] for p in prepared])
        embeds = torch.cat([p[2] for p in prepared], dim=0)
    rows = []
    offset = 0
    for (state, _), (_, _, _, pending) in zip(items, prepared, strict=True):
        rows.append((offset, pending.steps, state))
        offset += pending.rows
    out = _unet(backend, sample, t, embeds, rows, controlnets, hooks)
    results = []
    start = 0
    for (state, _), (_, _, _, pending) in zip(items, prepared, strict=True):
        x0 = _finish(state, pending, out[start : start + pending.rows])
        results.append(state.latent_blocks.post(x0) if state.latent_blocks is not None else x0)
        start += pending.rows
    return results


def step_sequential(
    backend: DenoiseBackend,
    state: StreamState,
    latent: torch.Tensor,
    controlnets: Mapping[str, Any] | None = None,
    hooks: Sequence[UnetHook] = (),
) -> torch.Tensor:
    """`use_denoising_batch=False`: this frame through all n steps now (n UNet calls, no lag).

    Same fixed noise and guidance as the stream batch; the buffer is not used.
    """
    import torch

    s, noise = state.schedule, state.noise
    n = s.steps
    g, kind = state.guidance_scale, s.prediction_type
    if state.latent_blocks is not None:
        latent = state.latent_blocks.pre(latent)
    x = s.alpha[0:1] * latent + s.beta[0:1] * noise[0:1]
    stock = noise[0:1]
    x0 = x
    for k in range(n):
        rows = slice(k, k + 1)
        alpha, beta = s.alpha[rows], s.beta[rows]
        t = s.timesteps[rows]
        if state.guided and state.cfg_type == "full":
            out = _unet(backend, torch.cat([x, x]), torch.cat([t, t]), torch.cat([state.uncond, state.cond]), [(0, [k, k], state)], controlnets, hooks)
            eps_u, eps_c = (_to_eps(o, x, alpha, beta, kind) for o in out.chunk(2))
        elif state.guided and state.cfg_type == "initialize" and k == 0:
            out = _unet(backend, torch.cat([x, x]), torch.cat([t, t]), torch.cat([state.uncond, state.cond]), [(0, [k, k], state)], controlnets, hooks)
            stock = _to_eps(out[0:1], x, alpha, beta, kind)
            eps_c = _to_eps(out[1:], x, alpha, beta, kind)
            eps_u = state.delta * stock
        else:
            eps_c = _to_eps(_unet(backend, x, t, state.cond, [(0, [k], state)], controlnets, hooks), x, alpha, beta, kind)
            eps_u = state.delta * stock
        eps = eps_u + g * (eps_c - eps_u) if state.guided else eps_c
        x0 = _x0(x, eps, s, rows)
        if k + 1 < n:
            nxt = slice(k + 1, k + 2)
            if state.cfg_type in ("self", "initialize"):
                stock = noise[nxt] + _x0(beta * stock, eps, s, rows) * s.alpha[nxt] / s.beta[nxt]
            x = s.alpha[nxt] * x0 + (s.beta[nxt] * noise[nxt] if state.do_add_noise else 0)
    state.frames += 1
    return state.latent_blocks.post(x0) if state.latent_blocks is not None else x0
