"""Helpers for the streamdiffusion tests (a module name of its own: `conftest` is ambiguous)."""

from __future__ import annotations

from typing import Any


def frames_of(seed: int, count: int = 1, size: int = 64) -> Any:
    """`(count, size, size, 3)` uint8 frames with structure (a gradient plus seeded noise)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 255, size).view(1, 1, size, 1).expand(count, size, size, 3)
    noise = torch.randint(0, 80, (count, size, size, 3), generator=gen)
    return (ramp * 0.7 + noise).clamp(0, 255).to(torch.uint8)


def apply_params(pipe: Any, params: Any, timeout: float = 120.0) -> None:
    """`pipe.update_params(params)` as the session's pipeline stage applies it: a change that
    loads a model in the background is waited for, then finished (raising why it failed)."""
    pipe.update_params(params)
    pending = pipe.pending_update
    if pending is not None:
        pending.result(timeout)
        pipe.finish_update()
