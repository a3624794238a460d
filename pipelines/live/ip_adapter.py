"""IP-Adapter for the `streamdiffusion` pipeline: a style image steers every frame.

Loaded through diffusers' own IP-Adapter support: the adapter's state dict (the layout of
`h94/IP-Adapter`: `image_proj.*` and `ip_adapter.{1,3,5,...}.to_{k,v}_ip.weight`) and a
`CLIPVisionModelWithProjection` image encoder are read on the session's thread
(`load_adapter`); the worker installs them between two ticks with the pipeline's
`load_ip_adapter` (`IPAdapterHook.install`), which puts an `IPAdapterAttnProcessor2_0` on every
cross-attention layer and the image projection on the UNet.

**Per stream, per layer, in one batch.** diffusers' processors have one scale per layer for the
whole batch. Here each processor's image value projection (`to_v_ip`) is wrapped so its output
is multiplied by a `(rows, blocks)` table set before each UNet call: row r's image attention
in block b is scaled by its stream's `weight_type` curve at b. The image attention is linear
in its values, so this is exactly diffusers' `scale * attention(q, K_ip, V_ip)` with a scale per
row and layer; streams without an IP-Adapter (scale 0, zero image embeddings) share the call.
When no row of a call has a non-zero scale, the processors skip the image attention (diffusers'
own skip at scale 0). Unconditional rows of `cfg_type` full/initialize get zero image
embeddings, as diffusers' pipelines give the negative side.

**Weight types** (`layer_weights`): a curve over the UNet's transformer blocks in diffusers'
order (down, mid, up; SD 1.5: 16 blocks, SDXL: 11). The reference implements 6 names and treats
the rest as uniform; here each of the 15 has its own vector (see `layer_weights`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from ..errors import ModelLoadError
from ..loading import resolve_model_source
from .streamdiffusion_params import IPAdapterWeightType

if TYPE_CHECKING:
    import torch

__all__ = [
    "WEIGHT_TYPES",
    "AdapterWeights",
    "IPAdapterHook",
    "StreamIP",
    "adapter_files",
    "block_keys",
    "check_fit",
    "layer_weights",
    "load_adapter",
]

log = logging.getLogger(__name__)

#: The 15 weight-type names, from the params model's `Literal` (one list, not two).
WEIGHT_TYPES: tuple[str, ...] = get_args(IPAdapterWeightType)

#: InstantStyle's layers (diffusers' IP-Adapter docs), as block indices in diffusers' order.
#: SDXL: down_blocks.1 (0, 1), down_blocks.2 (2, 3), mid (4), up_blocks.0 (5, 6, 7),
#: up_blocks.1 (8, 9, 10): style = up_blocks.0.attentions.1, composition = down_blocks.2.attentions.1.
#: SD 1.5: down 0-5, mid 6, up 7-15: ComfyUI_IPAdapter_plus's SD 1.5 sets (input 0-3 and the last
#: six output blocks for style, input 4 (x0.25) and 5 for composition) mapped to this order.
_STYLE = {"sdxl": (6,), "sd15": (0, 1, 2, 3, 6, 10, 11, 12, 13, 14, 15)}
_COMPOSITION = {"sdxl": ((3, 1.0),), "sd15": ((4, 0.25), (5, 1.0))}
_STRONG_STYLE = {"sdxl": (0, 1, 2, 4, 5, 6, 7, 8, 9, 10), "sd15": (0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)}
_STYLE_PRECISE = {"sdxl": (6,), "sd15": (10, 11, 12)}
_COMPOSITION_PRECISE = {"sdxl": (3,), "sd15": (4, 5)}
_WEAK = 0.2


def _sections(family: str, blocks: int) -> tuple[range, range, range]:
    """Down, mid, up block index ranges for this family's block count."""
    down = 4 if family == "sdxl" else 6
    if blocks == (11 if family == "sdxl" else 16):
        return range(0, down), range(down, down + 1), range(down + 1, blocks)
    # Another layout (a tiny model): the middle block is the one in the middle.
    mid = blocks // 2
    return range(0, mid), range(mid, mid + 1), range(mid + 1, blocks)


def layer_weights(weight_type: str | None, scale: float, blocks: int, family: str = "sd15") -> list[float]:
    """The IP-Adapter scale of each of `blocks` transformer blocks (diffusers' order: down,
    mid, up) for `weight_type` (None = linear). With i the block index, N = blocks - 1, m the
    middle block's index and d_i = |i - m| / max(m, N - m):

    - `linear`: s everywhere.
    - `ease in`: s (0.05 + 0.95 (1 - i/N)); `ease out`: s (0.05 + 0.95 i/N) (the reference's).
    - `ease in-out`: s (0.05 + 0.95 (1 - d_i)), peak at the middle; `reverse in-out`:
      s (0.05 + 0.95 d_i), dip at the middle.
    - `weak input` / `weak output` / `weak middle`: 0.2 s on the down / up / mid block(s), s elsewhere;
      `strong middle`: s on the mid block and its two neighbours, 0.2 s elsewhere.
    - `style transfer`: s on the style blocks, 0 elsewhere (SDXL: block 6, up_blocks.0.attentions.1;
      SD 1.5: 0-3, 6, 10-15); `composition`: SDXL block 3 (down_blocks.2.attentions.1), SD 1.5
      block 4 at 0.25 s and 5 at s; `strong style transfer`: s everywhere but the composition
      blocks; `style and composition`: the union of both.
    - `style transfer precise`: only the single style layer group (SDXL 6; SD 1.5 10-12, the
      first up-block with attention), 0 elsewhere; `composition precise`: the composition
      blocks at full s (SDXL 3; SD 1.5 4 and 5).

    Families other than `sdxl` use the SD 1.5 sets; for other block counts the sets that fall
    outside are dropped.
    """
    name = weight_type or "linear"
    fam = "sdxl" if family == "sdxl" else "sd15"
    n = max(blocks - 1, 1)
    down, mid, up = _sections(fam, blocks)
    m = mid[0]
    span = max(m, n - m, 1)
    s = float(scale)

    def only(indices: Sequence[int], value: float = 1.0) -> list[float]:
        return [s * value if i in indices else 0.0 for i in range(blocks)]

    def composed(out: list[float]) -> list[float]:
        """`out` with the composition blocks set to their weights."""
        for i, w in _COMPOSITION[fam]:
            if i < blocks:
                out[i] = s * w
        return out

    if name == "linear":
        return [s] * blocks
    if name == "ease in":
        return [s * (0.05 + 0.95 * (1 - i / n)) for i in range(blocks)]
    if name == "ease out":
        return [s * (0.05 + 0.95 * i / n) for i in range(blocks)]
    if name == "ease in-out":
        return [s * (0.05 + 0.95 * (1 - abs(i - m) / span)) for i in range(blocks)]
    if name == "reverse in-out":
        return [s * (0.05 + 0.95 * abs(i - m) / span) for i in range(blocks)]
    if name in ("weak input", "weak output", "weak middle"):
        weak = {"weak input": down, "weak output": up, "weak middle": mid}[name]
        return [s * _WEAK if i in weak else s for i in range(blocks)]
    if name == "strong middle":
        return [s if abs(i - m) <= 1 else s * _WEAK for i in range(blocks)]
    if name == "style transfer":
        return only(_STYLE[fam])
    if name == "composition":
        return composed([0.0] * blocks)
    if name == "strong style transfer":
        return only(_STRONG_STYLE[fam])
    if name == "style and composition":
        return composed(only(_STYLE[fam]))
    if name == "style transfer precise":
        return only(_STYLE_PRECISE[fam])
    if name == "composition precise":
        return only(_COMPOSITION_PRECISE[fam])
    raise ValueError(f"unknown IP-Adapter weight_type {name!r}")


_BLOCK = re.compile(r"^(down_blocks\.\d+\.attentions\.\d+|mid_block\.attentions\.\d+|up_blocks\.\d+\.attentions\.\d+)\.")


def block_keys(processor_names: Sequence[str]) -> list[str]:
    """The transformer blocks holding cross-attention processors, in diffusers' order (down,
    mid, up), from `unet.attn_processors` names."""
    found = {m.group(1) for name in processor_names if "attn2" in name and (m := _BLOCK.match(name))}

    def order(key: str) -> tuple[int, int, int]:
        parts = key.split(".")
        section = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}[parts[0]]
        return (section, int(parts[1]) if section != 1 else 0, int(parts[-1]))

    return sorted(found, key=order)


def adapter_files(family: str, kind: str) -> tuple[str, tuple[str, ...], str]:
    """`(subfolder, weight file names to try, image encoder subfolder)` in `h94/IP-Adapter`'s
    layout (FaceID: `h94/IP-Adapter-FaceID`'s, no image encoder: the face embedder instead)."""
    if kind == "faceid":
        name = "ip-adapter-faceid_sdxl" if family == "sdxl" else "ip-adapter-faceid_sd15"
        return "", (f"{name}.safetensors", f"{name}.bin"), ""
    if family == "sdxl":
        return "sdxl_models", ("ip-adapter_sdxl.safetensors", "ip-adapter_sdxl.bin"), "sdxl_models/image_encoder"
    return "models", ("ip-adapter_sd15.safetensors", "ip-adapter_sd15.bin"), "models/image_encoder"


def check_fit(state_dict: dict[str, dict[str, Any]], unet: Any) -> str | None:
    """Why an IP-Adapter state dict cannot be installed on `unet` (None when it fits): its
    image tokens' width must be the UNet's `cross_attention_dim`, and it must have a
    `to_k_ip`/`to_v_ip` pair of that width for each cross-attention layer."""
    cross = int(unet.config.cross_attention_dim)
    image_proj = state_dict.get("image_proj", {})
    proj = image_proj.get("proj.weight")
    if proj is None and "proj.2.weight" in image_proj and "norm.weight" in image_proj:  # FaceID
        width = int(image_proj["norm.weight"].shape[0])
        if width != cross:
            return f"makes image tokens of width {width}, the model's cross-attention width is {cross} (another base family)"
    elif proj is None:
        return "is neither a regular nor a FaceID IP-Adapter (no image_proj.proj.weight / proj.2.weight)"
    elif int(proj.shape[0]) != 4 * cross:
        return f"makes image tokens of width {int(proj.shape[0]) // 4}, the model's cross-attention width is {cross} (another base family)"
    layers = sum(1 for name in unet.attn_processors if not name.endswith("attn1.processor"))
    ip = state_dict.get("ip_adapter", {})
    for i in range(layers):
        k = ip.get(f"{2 * i + 1}.to_k_ip.weight")
        if k is None or int(k.shape[1]) != cross:
            return f"has no fitting weights for cross-attention layer {i + 1} of {layers} (another base family)"
    return None


@dataclass
class AdapterWeights:
    """What `load_adapter` read (session thread), for `IPAdapterHook.install` (worker thread)."""

    model_id: str
    state_dict: dict[str, dict[str, torch.Tensor]]
    image_encoder: Any
    image_processor: Any
    #: FaceID: the face embedder (`face_embedding.FaceEmbedder`) instead of an image encoder.
    face: Any = None
    kind: str = "regular"


def load_adapter(
    model_id: str,
    family: str,
    kind: str,
    *,
    model_dir: Path | None,
    device: torch.device,
    dtype: torch.dtype,
    face_model: str | None = None,
) -> AdapterWeights:
    """The IP-Adapter weights and image encoder from a Hugging Face id or a folder in
    `h94/IP-Adapter`'s layout (FaceID: `h94/IP-Adapter-FaceID`'s, and the face embedder
    `face_model`); raises `ModelLoadError`."""
    from diffusers.models.model_loading_utils import load_state_dict
    from diffusers.utils import _get_model_file
    from safetensors import safe_open
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    subfolder, names, encoder_folder = adapter_files(family, kind)
    probe = f"{encoder_folder}/config.json" if encoder_folder else names[0]
    source = resolve_model_source(model_id, model_dir, probe_file=probe)
    kwargs = source.from_pretrained_kwargs()
    hub = {k: v for k, v in kwargs.items() if k in ("cache_dir", "local_files_only", "revision", "token")}
    errors = []
    state: dict[str, dict[str, Any]] | None = None
    for name in names:
        try:
            path = _get_model_file(source.pretrained_name, weights_name=name, subfolder=subfolder or None, **hub)
        except (OSError, ValueError, EnvironmentError) as exc:
            errors.append(f"{subfolder}/{name}: {exc}")
            continue
        if name.endswith(".safetensors"):
            state = {"image_proj": {}, "ip_adapter": {}}
            with safe_open(path, framework="pt", device="cpu") as f:
                for key in f.keys():
                    head, _, rest = key.partition(".")
                    if head in state:
                        state[head][rest] = f.get_tensor(key)
        else:
            state = load_state_dict(path)
        break
    if state is None:
        raise ModelLoadError(f"Could not load the IP-Adapter weights from {model_id!r}: {'; '.join(errors)}")
    if "image_proj" not in state or "ip_adapter" not in state:
        raise ModelLoadError(f"{model_id!r}: not an IP-Adapter state dict (needs image_proj and ip_adapter)")
    if kind == "faceid":
        from .face_embedding import load_face_embedder

        if face_model is None:
            raise ModelLoadError("FaceID needs a face-embedding model")
        try:
            face = load_face_embedder(face_model, model_dir=model_dir, cuda=device.type == "cuda")
        except ModelLoadError as exc:
            raise ModelLoadError(f"FaceID's face-embedding model {face_model!r} could not be loaded: {exc}") from exc
        return AdapterWeights(model_id, state, None, None, face=face, kind="faceid")
    try:
        encoder = CLIPVisionModelWithProjection.from_pretrained(source.pretrained_name, subfolder=encoder_folder, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load the IP-Adapter image encoder {model_id!r}/{encoder_folder}: {exc}") from exc
    encoder.to(device).eval().requires_grad_(False)
    size = int(encoder.config.image_size)
    return AdapterWeights(model_id, state, encoder, CLIPImageProcessor(size=size, crop_size=size))


@dataclass
class StreamIP:
    """One stream's IP-Adapter input for the next step (`StreamState.ip`).

    Attributes:
        embeds: `(1, 1, E)` image embedding of the style image.
        weights: `(blocks,)` per-block scale (`layer_weights`); all 0 = off.
    """

    embeds: torch.Tensor
    weights: torch.Tensor


@functools.cache
def _row_scaled_class() -> Any:
    import torch

    class RowScaledValue(torch.nn.Module):  # type: ignore[misc]
        """An `IPAdapterAttnProcessor2_0`'s `to_v_ip[k]` whose output is multiplied by the
        row scale of its block (`IPAdapterHook.table`, `(rows, blocks)`, set per UNet call)."""

        def __init__(self, linear: Any, hook: IPAdapterHook, block: int) -> None:
            super().__init__()
            self.linear = linear
            self.block = block
            self._hook = [hook]  # a list: not a submodule

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.linear(x)
            table = self._hook[0].table
            if table is None:
                return out
            # (rows, 1, ..., 1): the image tokens may come as (rows, images, tokens, C).
            return out * table[:, self.block].view(-1, *([1] * (out.ndim - 1))).to(out.dtype)

    return RowScaledValue


@dataclass
class IPAdapterHook:
    """The installed IP-Adapter of one worker's UNet (a `stream_batch` UNet hook)."""

    weights: AdapterWeights
    blocks: list[str]
    embed_dim: int
    processors: list[Any] = field(default_factory=list)
    #: `(rows, blocks)` scales of the current UNet call.
    table: torch.Tensor | None = None
    family: str = "sd15"

    @classmethod
    def install(cls, pipe: Any, weights: AdapterWeights, family: str) -> IPAdapterHook:
        """Worker thread: `pipe.load_ip_adapter` with the weights `load_adapter` read."""
        import torch
        from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

        if weights.image_encoder is not None:
            pipe.register_modules(image_encoder=weights.image_encoder, feature_extractor=weights.image_processor)
        pipe.load_ip_adapter(weights.state_dict, subfolder="", weight_name="", image_encoder_folder=None, low_cpu_mem_usage=False)
        unet = pipe.unet
        names = list(unet.attn_processors)
        blocks = block_keys(names)
        index = {key: i for i, key in enumerate(blocks)}
        scaled = _row_scaled_class()
        if weights.face is not None:
            embed_dim = int(weights.face.dim)
        else:
            embed_dim = int(weights.image_encoder.config.projection_dim)
        hook = cls(weights=weights, blocks=blocks, embed_dim=embed_dim, family=family)
        for name, proc in unet.attn_processors.items():
            if not isinstance(proc, IPAdapterAttnProcessor2_0):
                continue
            match = _BLOCK.match(name)
            assert match is not None, name
            block = index[match.group(1)]
            proc.to_v_ip = torch.nn.ModuleList([scaled(v, hook, block) for v in proc.to_v_ip])
            hook.processors.append(proc)
        log.info("IP-Adapter %s installed: %d cross-attention layers in %d blocks", weights.model_id, len(hook.processors), len(blocks))
        return hook

    def embed(self, image: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """`(1, 1, E)` image embedding of a PIL image (the image encoder's projection; FaceID:
        the face embedding)."""
        import torch

        if self.weights.face is not None:
            face = torch.from_numpy(self.weights.face.embed(image))
            return face.view(1, 1, -1).to(device=device, dtype=dtype)
        pixels = self.weights.image_processor(images=image, return_tensors="pt").pixel_values.to(device=device, dtype=dtype)
        with torch.inference_mode():
            embeds = self.weights.image_encoder(pixels).image_embeds
        return embeds.view(1, 1, -1).to(dtype)

    def begin(self, rows: Sequence[tuple[int, Sequence[int], Any]], sample: torch.Tensor) -> dict[str, Any]:
        """The UNet's `added_cond_kwargs` for this call (`image_embeds`), the scale table set."""
        import torch

        total = sample.shape[0]
        embeds = torch.zeros(total, 1, self.embed_dim, device=sample.device, dtype=sample.dtype)
        table = torch.zeros(total, len(self.blocks), device=sample.device, dtype=torch.float32)
        for offset, steps, state in rows:
            ip: StreamIP | None = getattr(state, "ip", None)
            if ip is None:
                continue
            count = len(steps)
            uncond = _uncond_rows(state, count)
            for i in range(count):
                if i in uncond:
                    continue
                embeds[offset + i] = ip.embeds[0].to(sample.dtype)
                table[offset + i] = ip.weights.to(table.device)
        active = bool(table.abs().sum() > 0)
        self.table = table if active else None
        for proc in self.processors:
            proc.scale = [1.0 if active else 0.0] * len(proc.scale)
        return {"image_embeds": [embeds]}

    def end(self, rows: Sequence[tuple[int, Sequence[int], Any]]) -> None:
        self.table = None


def _uncond_rows(state: Any, count: int) -> set[int]:
    """Rows of a stream that evaluate the negative prompt (no style image)."""
    if not getattr(state, "guided", False):
        return set()
    kind = getattr(state, "cfg_type", "self")
    if kind == "full":
        return set(range(count // 2))
    if kind == "initialize":
        return {0}
    return set()
