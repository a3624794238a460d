"""Tiny random-weight IP-Adapters (`livestream models tiny --task ip-adapter --out DIR`).

The folder has `h94/IP-Adapter`'s layout, so the live pipeline loads it exactly as the real
one (`pipelines.live.ip_adapter.load_adapter`, then diffusers' `load_ip_adapter`):

- `models/ip-adapter_sd15.safetensors` + `models/image_encoder/`: fits the `streamdiffusion`
  tiny UNet (the SD 1.5 / 2.1 layout of files);
- `sdxl_models/ip-adapter_sdxl.safetensors` + `sdxl_models/image_encoder/`: fits the
  `streamdiffusion-sdxl` tiny UNet.

Each adapter: an image projection `image_proj.proj` (4 image tokens) and `image_proj.norm`,
and `ip_adapter.{1,3,5,...}.to_{k,v}_ip.weight` per cross-attention layer (diffusers' key
numbering); the image encoder is a tiny `CLIPVisionModelWithProjection` (32 px, projection 16).
The values are strong enough that a style image visibly changes the tiny model's output.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["faceid_state_dict", "ip_adapter_state_dict", "write_tiny_face_embedding", "write_tiny_ip_adapter", "write_tiny_ip_adapter_faceid"]

IMAGE_EMBED_DIM = 16


def ip_adapter_state_dict(unet: Any, *, embed_dim: int = IMAGE_EMBED_DIM, seed: int = 11) -> dict[str, Any]:
    """Flat safetensors state dict of a random IP-Adapter that fits `unet`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    cfg = unet.config
    cross = int(cfg.cross_attention_dim)
    out: dict[str, Any] = {
        "image_proj.proj.weight": torch.randn(cross * 4, embed_dim, generator=gen) * 0.5,
        "image_proj.proj.bias": torch.randn(cross * 4, generator=gen) * 0.1,
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = int(cfg.block_out_channels[-1])
        elif name.startswith("up_blocks"):
            hidden = int(list(reversed(cfg.block_out_channels))[int(name[len("up_blocks.")])])
        else:
            hidden = int(cfg.block_out_channels[int(name[len("down_blocks.")])])
        out[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=gen) * 0.5
        out[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=gen) * 1.5
        key_id += 2
    return out


def _image_encoder(embed_dim: int) -> Any:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(12)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=embed_dim
    )
    return CLIPVisionModelWithProjection(config)


def write_tiny_ip_adapter(out: Path) -> None:
    """See the module docstring."""
    from safetensors.torch import save_file

    from .streamdiffusion import _tiny_sdxl_unet, _tiny_unet

    for sub, name, unet in (("models", "ip-adapter_sd15.safetensors", _tiny_unet()), ("sdxl_models", "ip-adapter_sdxl.safetensors", _tiny_sdxl_unet())):
        folder = Path(out) / sub
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in ip_adapter_state_dict(unet).items()}, str(folder / name))
        _image_encoder(IMAGE_EMBED_DIM).save_pretrained(folder / "image_encoder", safe_serialization=True)


def faceid_state_dict(unet: Any, *, id_dim: int = 512, seed: int = 13) -> dict[str, Any]:
    """Flat state dict of a random IP-Adapter FaceID (no LoRA) that fits `unet`: the image
    projection `proj.0` (512 -> 1024), `proj.2` (-> 4 tokens), `norm`, and the per-layer
    `to_{k,v}_ip` of `ip_adapter_state_dict`."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    out = {k: v for k, v in ip_adapter_state_dict(unet, seed=seed).items() if k.startswith("ip_adapter.")}
    out.update(
        {
            "image_proj.proj.0.weight": torch.randn(id_dim * 2, id_dim, generator=gen) * 0.1,
            "image_proj.proj.0.bias": torch.zeros(id_dim * 2),
            "image_proj.proj.2.weight": torch.randn(cross * 4, id_dim * 2, generator=gen) * 0.1,
            "image_proj.proj.2.bias": torch.zeros(cross * 4),
            "image_proj.norm.weight": torch.ones(cross),
            "image_proj.norm.bias": torch.zeros(cross),
        }
    )
    return out


def write_tiny_ip_adapter_faceid(out: Path) -> None:
    """`livestream models tiny --task ip-adapter-faceid`: `ip-adapter-faceid_sd15.safetensors`
    (fits the `streamdiffusion` tiny UNet) and `ip-adapter-faceid_sdxl.safetensors` (the SDXL
    one), in `h94/IP-Adapter-FaceID`'s layout (files at the top). The real files also hold a
    LoRA, which diffusers' loader applies through PEFT; these have none."""
    from safetensors.torch import save_file

    from .streamdiffusion import _tiny_sdxl_unet, _tiny_unet

    Path(out).mkdir(parents=True, exist_ok=True)
    for name, unet in (("ip-adapter-faceid_sd15.safetensors", _tiny_unet()), ("ip-adapter-faceid_sdxl.safetensors", _tiny_sdxl_unet())):
        save_file({k: v.contiguous() for k, v in faceid_state_dict(unet).items()}, str(Path(out) / name))


def write_tiny_face_embedding(out: Path) -> None:
    """`livestream models tiny --task face-embedding`: a random ArcFace-shaped ONNX model (input
    `(N, 3, 112, 112)`, output a 512-d embedding) at `models/buffalo_l/w600k_r50.onnx`, as
    InsightFace's buffalo_l recognition model is laid out, and beside it the pack's face
    detector (`write_tiny_face_detector`)."""
    import torch

    write_tiny_face_detector(Path(out) / "models" / "buffalo_l" / "det_10g.onnx")

    torch.manual_seed(14)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, 4), torch.nn.PReLU(8), torch.nn.Conv2d(8, 16, 4, 4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 512)
    ).eval()
    path = Path(out) / "models" / "buffalo_l" / "w600k_r50.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter (as pipelines/engines/onnx_export.py) warns it is legacy.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 112, 112),),
            str(path),
            input_names=["input.1"],
            output_names=["embedding"],
            dynamic_axes={"input.1": {0: "N"}},
            opset_version=17,
            dynamo=False,
        )


def write_tiny_face_detector(path: Path) -> None:
    """A random SCRFD-shaped face detector ONNX at `path` (`det_10g.onnx` of InsightFace's
    buffalo_l): input `(1, 3, H, W)`; nine outputs, the scores `(N, 1)`, box distances `(N, 4)`
    and keypoint offsets `(N, 10)` of strides 8, 16 and 32 with two anchors a cell. Its score
    bias is high, so it reports faces (where its random boxes say): the detection, decoding and
    alignment code paths all run (at stride 32 only, so they are few)."""
    import torch

    class TinySCRFD(torch.nn.Module):  # type: ignore[misc]  # torch.nn is untyped here
        def __init__(self) -> None:
            super().__init__()
            self.heads = torch.nn.ModuleList(torch.nn.Conv2d(3, 2 * (1 + 4 + 10), 1) for _ in (8, 16, 32))
            for stride, head in zip((8, 16, 32), self.heads, strict=True):
                torch.nn.init.normal_(head.weight, std=0.05)
                torch.nn.init.constant_(head.bias, 0.5)
                head.bias.data[[0, 15]] = 3.0 if stride == 32 else -3.0  # the two anchors' score logits

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            scores, boxes, points = [], [], []
            for stride, head in zip((8, 16, 32), self.heads, strict=True):
                y = head(torch.nn.functional.avg_pool2d(x, stride))  # (1, 30, H/s, W/s)
                y = y.permute(0, 2, 3, 1).reshape(-1, 2, 15)  # cells x anchors
                scores.append(torch.sigmoid(y[..., :1]).reshape(-1, 1))
                boxes.append(torch.nn.functional.softplus(y[..., 1:5]).reshape(-1, 4))
                points.append(y[..., 5:].reshape(-1, 10))
            return (*scores, *boxes, *points)

    torch.manual_seed(15)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in (8, 16, 32)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is legacy
        torch.onnx.export(
            TinySCRFD().eval(),
            (torch.zeros(1, 3, 64, 64),),
            str(path),
            input_names=["input.1"],
            output_names=names,
            dynamic_axes={"input.1": {2: "H", 3: "W"}, **{n: {0: "N"} for n in names}},
            opset_version=17,
            dynamo=False,
        )
