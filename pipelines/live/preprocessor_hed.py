"""The `hed` preprocessor: soft edges from the HED network ControlNet's HED annotator uses.

The network is lllyasviel's Apache-2.0 HED (`ControlNetHED.pth` in `lllyasviel/Annotators`,
the checkpoint controlnet_aux's `HEDdetector` loads): five VGG-style blocks of 3x3 convolutions
and ReLUs (2, 2, 3, 3, 3 convolutions; 64, 128, 256, 512, 512 channels; 2x2 max-pooling before
blocks 2-5), each with a 1x1 projection to one edge map, after subtracting a learned
per-channel `norm` from the RGB input on the 0..255 scale. No transformers or diffusers class
has this architecture, so it is built here (`HEDNetwork`) and the checkpoint's state dict is
loaded into it (the widths are read from the weights, so a tiny random-weight copy loads the
same way: `livestream models tiny --task hed`).

The control image is as controlnet_aux's: the five maps resized (bilinear) to the frame,
averaged, through a sigmoid; with `safe` (true, the reference's default) quantised as its
`safe_step` (`floor(3 x) / 2`, clipped to 1); grey in 3 channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CHECKPOINT", "HEDNetwork", "hed", "load_hed_model", "write_hed_checkpoint"]

#: The checkpoint's file name, in a local folder or the Hugging Face repo.
CHECKPOINT = "ControlNetHED.pth"
_LAYERS = (2, 2, 3, 3, 3)
_WIDTHS = (64, 128, 256, 512, 512)


def _network_class() -> Any:
    import torch
    import torch.nn.functional as F

    class Block(torch.nn.Module):  # type: ignore[misc]  # torch is not followed by mypy
        def __init__(self, cin: int, cout: int, layers: int) -> None:
            super().__init__()
            self.convs = torch.nn.Sequential(
                *[torch.nn.Conv2d(cin if i == 0 else cout, cout, kernel_size=3, padding=1) for i in range(layers)]
            )
            self.projection = torch.nn.Conv2d(cout, 1, kernel_size=1)

        def forward(self, x: torch.Tensor, down: bool) -> tuple[torch.Tensor, torch.Tensor]:
            h = F.max_pool2d(x, kernel_size=2, stride=2) if down else x
            for conv in self.convs:
                h = F.relu(conv(h))
            return h, self.projection(h)

    class Network(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, widths: tuple[int, ...] = _WIDTHS) -> None:
            super().__init__()
            self.norm = torch.nn.Parameter(torch.zeros(1, 3, 1, 1))
            cin = 3
            for i, (cout, layers) in enumerate(zip(widths, _LAYERS, strict=True)):
                setattr(self, f"block{i + 1}", Block(cin, cout, layers))
                cin = cout

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            h = x - self.norm
            maps = []
            for i in range(5):
                h, p = getattr(self, f"block{i + 1}")(h, i > 0)
                maps.append(p)
            return maps

    return Network


def HEDNetwork(widths: tuple[int, ...] = _WIDTHS) -> Any:  # noqa: N802 - a module factory
    """The HED network (a `torch.nn.Module`) with these block widths."""
    return _network_class()(widths)


def _widths_of(state: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(state[f"block{i}.projection.weight"].shape[1]) for i in range(1, 6))


def load_hed_model(path: Path, *, device: Any, dtype: Any) -> Any:
    """The HED network with the weights of checkpoint `path` (a state dict), on `device`."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "block1.projection.weight" not in state:
        raise ValueError(f"{path} is not a HED state dict (no block1.projection.weight)")
    model = HEDNetwork(_widths_of(state))
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def write_hed_checkpoint(out: Path, widths: tuple[int, ...] = _WIDTHS, seed: int = 0) -> Path:
    """A random-weight HED checkpoint `out/ControlNetHED.pth` (for tests)."""
    import torch

    torch.manual_seed(seed)
    model = HEDNetwork(widths)
    with torch.no_grad():
        model.norm.copy_(torch.tensor([123.7, 116.3, 103.5]).view(1, 3, 1, 1))
    out.mkdir(parents=True, exist_ok=True)
    path = out / CHECKPOINT
    torch.save(model.state_dict(), path)
    return path


def hed(image: torch.Tensor, model: Any, safe: bool = True) -> torch.Tensor:
    """HED soft edges of `image` (`(1, 3, H, W)` in [0, 1]) as grey `(1, 3, H, W)` in [0, 1]."""
    import torch
    import torch.nn.functional as F

    h, w = (int(s) for s in image.shape[-2:])
    param = next(model.parameters())
    maps = model((image.float() * 255.0).to(param.dtype))
    stacked = torch.cat(
        [F.interpolate(m.float(), size=(h, w), mode="bilinear", align_corners=False) for m in maps], dim=1
    )
    edge = torch.sigmoid(stacked.mean(dim=1, keepdim=True))
    if safe:
        edge = (torch.floor(edge * 3.0) / 2.0).clamp(0, 1)
    return edge.to(image.dtype).expand(-1, 3, -1, -1).contiguous()
