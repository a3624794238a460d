"""A tiny random-weight x2 Swin2SR (`livestream models tiny --task super-resolution --out DIR`):
the `super_resolution` auxiliary model's architecture (transformers'
`Swin2SRForImageSuperResolution`, `pixelshuffledirect` upsampler as swin2SR-lightweight-x2),
embed width 8, one stage of depth 1, window 4."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_tiny_super_resolution"]


def write_tiny_super_resolution(out: Path) -> None:
    import torch
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    torch.manual_seed(21)
    config = Swin2SRConfig(
        image_size=32, embed_dim=8, depths=[1], num_heads=[1], window_size=4, upscale=2, upsampler="pixelshuffledirect", mlp_ratio=2.0
    )
    Swin2SRForImageSuperResolution(config).save_pretrained(out, safe_serialization=True)
