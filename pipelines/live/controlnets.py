"""ControlNets of the `streamdiffusion` pipeline: loading, fit checks, and batched residuals.

A worker keeps every ControlNet any of its sessions asked for, by key (the `model_id`), as a
diffusers `ControlNetModel` on its device. A session's slot turns its `controlnets` params
into `stream_batch.Control`s each frame (control image, scale, guidance window); ControlNets
that are disabled, have scale 0, or are not loaded are left out, so they cost nothing.

**Batching across streams** (`residuals`). The UNet call of a tick holds the rows of every
stream. For each ControlNet used by at least one stream in the tick, the ControlNet runs once
on the rows that use it (any subset of the batch: rows of other streams, and rows whose step
is outside the entry's `control_guidance_start/end`, are left out), its residuals are scaled
per row by that stream's `conditioning_scale`, and added into zero residuals of the full
batch. So streams with different ControlNet sets (or none) still share one UNet call; each
ControlNet costs one call over the rows that use it. The reference needs the same ControlNet
set in every row of its engines.

Every row of a stream gets the current frame's control image (as StreamDiffusion's ControlNet
module does: the older frames in the buffer are guided by the newest control image).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ModelLoadError
from ..loading import resolve_model_source

if TYPE_CHECKING:
    import torch

__all__ = ["Control", "ControlledStream", "check_fit", "load_controlnet", "residuals"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Control:
    """One active ControlNet of a stream for the next step.

    Attributes:
        key: the ControlNet in the `controlnets` map `step` is given.
        image: `(1, C, H, W)` control image in [0, 1] (the current frame's, for every row).
        scale: `conditioning_scale`.
        start, end: `control_guidance_start/end`: step k of n is fed only when
            `start <= k / n` and `(k + 1) / n <= end` (diffusers' rule).
    """

    key: str
    image: torch.Tensor
    scale: float
    start: float = 0.0
    end: float = 1.0

    def row_scales(self, steps: Sequence[int], n: int) -> list[float]:
        """The scale each UNet row gets (0 where the guidance window excludes its step)."""
        return [0.0 if (k / n < self.start or (k + 1) / n > self.end) else self.scale for k in steps]


class _Steps(Protocol):
    @property
    def steps(self) -> int: ...


class ControlledStream(Protocol):
    """What `residuals` reads of a stream's state (`stream_batch.StreamState`)."""

    @property
    def schedule(self) -> _Steps: ...

    @property
    def controls(self) -> Sequence[Control]: ...


def load_controlnet(model_id: str, *, model_dir: Path | None, device: torch.device, dtype: torch.dtype) -> Any:
    """A diffusers `ControlNetModel` from a Hugging Face id or a local folder, on `device`;
    raises `ModelLoadError`."""
    from diffusers import ControlNetModel

    try:
        source = resolve_model_source(model_id, model_dir, probe_file="config.json")
        model = ControlNetModel.from_pretrained(source.pretrained_name, dtype=dtype, **source.from_pretrained_kwargs())
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(f"Could not load ControlNet {model_id!r}: {exc}") from exc
    model.to(device).eval().requires_grad_(False)
    return model


def check_fit(controlnet: Any, unet_config: Mapping[str, Any]) -> str | None:
    """Why `controlnet` cannot feed a UNet of `unet_config`, or None when it fits."""
    cfg = controlnet.config
    for name in ("block_out_channels", "cross_attention_dim", "in_channels"):
        mine, theirs = cfg.get(name), unet_config.get(name)
        if isinstance(mine, (list, tuple)) and isinstance(theirs, (list, tuple)):
            mine, theirs = list(mine), list(theirs)
        if mine != theirs:
            return f"its {name} {mine} differs from the model's {theirs} (another base family)"
    if cfg.get("addition_embed_type") != unet_config.get("addition_embed_type"):
        return f"it is built for addition_embed_type {cfg.get('addition_embed_type')!r}, the model has {unet_config.get('addition_embed_type')!r}"
    return None


def residuals(
    controlnets: Mapping[str, Any],
    sample: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    rows: Sequence[tuple[int, Sequence[int], ControlledStream]],
    added: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any] | None:
    """The UNet's extra residual arguments for one batched call (see the module docstring),
    or None when no row is fed by a ControlNet.

    Args:
        rows: per stream, its first row in `sample`, the schedule step of each of its rows
            (`Control.row_scales`), and its state (whose `controls` are fed).
        added: SDXL's `added_cond_kwargs` for the whole batch (rows are selected from it).
    """
    import torch

    wanted: dict[str, list[tuple[list[int], torch.Tensor, list[float]]]] = {}
    for offset, steps, state in rows:
        n = state.schedule.steps
        for control in state.controls:
            if control.key not in controlnets:
                continue
            scales = control.row_scales(steps, n)
            picked = [i for i, s in enumerate(scales) if s != 0.0]
            if picked:
                wanted.setdefault(control.key, []).append(
                    ([offset + i for i in picked], control.image, [scales[i] for i in picked])
                )
    if not wanted:
        return None
    total = sample.shape[0]
    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    for key, parts in wanted.items():
        model = controlnets[key]
        index = [i for idx, _, _ in parts for i in idx]
        images = torch.cat([image.expand(len(idx), -1, -1, -1) for idx, image, _ in parts], dim=0).to(sample.dtype)
        scale = torch.tensor([s for _, _, scales in parts for s in scales], device=sample.device, dtype=sample.dtype)
        scale = scale.view(-1, 1, 1, 1)
        whole = index == list(range(total))
        where = None if whole else torch.tensor(index, device=sample.device)

        def pick(x: torch.Tensor, where: torch.Tensor | None = where) -> torch.Tensor:
            return x if where is None else x.index_select(0, where)

        kwargs: dict[str, Any] = {}
        if added is not None:
            kwargs["added_cond_kwargs"] = {k: pick(v) for k, v in added.items()}
        d, m = model(
            pick(sample),
            pick(t),
            encoder_hidden_states=pick(embeds),
            controlnet_cond=images,
            conditioning_scale=1.0,
            return_dict=False,
            **kwargs,
        )
        d = [r * scale for r in d]
        m = m * scale
        if where is not None:
            d = [torch.zeros((total, *r.shape[1:]), device=r.device, dtype=r.dtype).index_add_(0, where, r) for r in d]
            m = torch.zeros((total, *m.shape[1:]), device=m.device, dtype=m.dtype).index_add_(0, where, m)
        if down is None or mid is None:
            down, mid = d, m
        else:
            down = [a + b for a, b in zip(down, d, strict=True)]
            mid = mid + m
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
