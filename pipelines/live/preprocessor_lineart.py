"""The `lineart` preprocessor: the "informative drawings" line-art generator.

The network behind lllyasviel's `lineart` ControlNet annotator (Chan, Durand and Isola,
"Learning to generate line drawings that convey geometry and semantics", MIT): a ResNet
generator. Checkpoints `sk_model.pth` (fine) and `sk_model2.pth` (coarse) of
`lllyasviel/Annotators`, the files controlnet_aux's `LineartDetector` loads. No transformers
or diffusers class has it, so it is built here (`LineartGenerator`) and the state dict loaded
into it; the widths and the number of residual blocks are read from the weights, so a tiny
random-weight copy loads the same way (`livestream models tiny --task lineart`).

Layout (state-dict keys in brackets; every norm an affine-free `InstanceNorm2d`, so without
weights; every activation a ReLU):

- `model0`: reflection pad 3, 7x7 conv 3 -> w [`model0.1`], norm, ReLU;
- `model1`: two 3x3 stride-2 convs (padding 1) w -> 2w -> 4w [`model1.0`, `model1.3`], each
  with norm and ReLU;
- `model2`: residual blocks at 4w (3 in the checkpoints): reflection pad 1, 3x3 conv
  [`model2.N.conv_block.1`], norm, ReLU, reflection pad 1, 3x3 conv [`model2.N.conv_block.5`],
  norm; plus the block's input;
- `model3`: two 3x3 stride-2 transposed convs (padding 1, output padding 1) 4w -> 2w -> w
  [`model3.0`, `model3.3`], each with norm and ReLU;
- `model4`: reflection pad 3, 7x7 conv w -> 1 [`model4.1`], sigmoid.

Use, as controlnet_aux's: the frame, RGB in [0, 1] (no normalisation), resized so its short
side is `detect_resolution` (512; both sides rounded to a multiple of 8); the one-channel output
is dark lines on white, so the control image is `1 - output`, resized to the frame, grey in 3
channels (white lines on black). `coarse` (the reference's default, true) picks `sk_model2.pth`
when it loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CHECKPOINT", "COARSE_CHECKPOINT", "LineartGenerator", "LineartModels", "lineart", "load_lineart_model", "write_lineart_checkpoints"]

#: The checkpoints' file names, in a local folder or the Hugging Face repo.
CHECKPOINT = "sk_model.pth"
COARSE_CHECKPOINT = "sk_model2.pth"


def _generator_class() -> Any:
    import torch
    from torch import nn

    class ResidualBlock(nn.Module):  # type: ignore[misc]  # torch is not followed by mypy
        def __init__(self, width: int) -> None:
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ReflectionPad2d(1),
                nn.Conv2d(width, width, 3),
                nn.InstanceNorm2d(width),
                nn.ReLU(),
                nn.ReflectionPad2d(1),
                nn.Conv2d(width, width, 3),
                nn.InstanceNorm2d(width),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv_block(x)

    class Generator(nn.Module):  # type: ignore[misc]
        def __init__(self, width: int = 64, blocks: int = 3) -> None:
            super().__init__()
            self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, width, 7), nn.InstanceNorm2d(width), nn.ReLU())
            down: list[nn.Module] = []
            for cin in (width, 2 * width):
                down += [nn.Conv2d(cin, 2 * cin, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * cin), nn.ReLU()]
            self.model1 = nn.Sequential(*down)
            self.model2 = nn.Sequential(*[ResidualBlock(4 * width) for _ in range(blocks)])
            up: list[nn.Module] = []
            for cin in (4 * width, 2 * width):
                up += [
                    nn.ConvTranspose2d(cin, cin // 2, 3, stride=2, padding=1, output_padding=1),
                    nn.InstanceNorm2d(cin // 2),
                    nn.ReLU(),
                ]
            self.model3 = nn.Sequential(*up)
            self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width, 1, 7), nn.Sigmoid())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))

    return Generator


def LineartGenerator(width: int = 64, blocks: int = 3) -> Any:  # noqa: N802 - a module factory
    """The line-art generator (a `torch.nn.Module`) of base width `width` with `blocks` residual blocks."""
    return _generator_class()(width, blocks)


@dataclass(frozen=True)
class LineartModels:
    """The fine generator and, when its checkpoint was there, the coarse one."""

    fine: Any
    coarse: Any | None

    def parameters(self) -> Any:
        return self.fine.parameters()


def _load_one(path: Path, device: Any, dtype: Any) -> Any:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model0.1.weight" not in state or "model4.1.weight" not in state:
        raise ValueError(f"{path} is not a line-art generator state dict (no model0.1.weight / model4.1.weight)")
    width = int(state["model0.1.weight"].shape[0])
    blocks = len({k.split(".")[1] for k in state if k.startswith("model2.")})
    model = LineartGenerator(width, blocks)
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_lineart_model(fine: Path, coarse: Path | None, *, device: Any, dtype: Any) -> LineartModels:
    """The generators of checkpoints `fine` (required) and `coarse` (optional: None or a
    missing file leaves `coarse` None); raises ValueError for a file of another layout."""
    return LineartModels(
        _load_one(fine, device, dtype), _load_one(coarse, device, dtype) if coarse is not None and coarse.is_file() else None
    )


def write_lineart_checkpoints(out: Path, width: int = 64, blocks: int = 3, seed: int = 0) -> tuple[Path, Path]:
    """Random-weight `out/sk_model.pth` and `out/sk_model2.pth` (for tests)."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    paths = (out / CHECKPOINT, out / COARSE_CHECKPOINT)
    for i, path in enumerate(paths):
        torch.manual_seed(seed + i)
        torch.save(LineartGenerator(width, blocks).state_dict(), path)
    return paths


def lineart(image: torch.Tensor, models: LineartModels, coarse: bool = True, resolution: int = 512) -> torch.Tensor:
    """Line art of `image` (`(1, 3, H, W)` in [0, 1]): white lines on black, `(1, 3, H, W)` in [0, 1]."""
    import torch.nn.functional as F

    h, w = (int(s) for s in image.shape[-2:])
    model = models.coarse if coarse and models.coarse is not None else models.fine
    scale = max(8, resolution) / min(h, w)
    size = (max(8, round(h * scale / 8) * 8), max(8, round(w * scale / 8) * 8))
    x = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False)
    param = next(model.parameters())
    line = model(x.to(param.dtype)).float()
    line = F.interpolate(line, size=(h, w), mode="bilinear", align_corners=False)
    return (1.0 - line).clamp(0, 1).to(image.dtype).expand(-1, 3, -1, -1).contiguous()
