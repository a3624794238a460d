"""The TensorRT engine cache: what an engine was built for, and when it must not be reused.

A TensorRT engine is only valid for the weights, shape ranges, TensorRT version and GPU
architecture it was built with. Upstream StreamDiffusion keys its cache folder by model name
and batch only, so a new resolution, TensorRT upgrade or GPU silently reuses the old engine
(or crashes inside TensorRT). Here each build lives in its own folder:

    <engine_dir>/<model slug>--<key[:16]>/
        manifest.json           the full key: spec + environment + files (written last)
        unet.engine  vae_encoder.engine  vae_decoder.engine
        onnx/                   the graphs the engines were built from
    <engine_dir>/timing-trt<version>-sm<cc>.cache   TensorRT's timing cache, shared by builds

The key is a SHA-256 of `EngineSpec` (model id, weights fingerprint, VAE kind, precision,
width/height ranges, batch ranges, text length) plus `Environment` (TensorRT version and GPU
compute capability) and `FORMAT`. Lookups never guess: an engine is used only when its
manifest matches the current environment and weights and its ranges cover the request;
otherwise `StaleEngineError` says what differs and which command rebuilds it. A folder
without a manifest (a build that died) is never used and `engines clear` removes it.

Nothing here imports TensorRT or needs a GPU, so the rules are tested on the CPU with fake
environments.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ENGINE_NAMES",
    "FORMAT",
    "CacheEntry",
    "EngineCache",
    "EngineCacheError",
    "EngineSpec",
    "Environment",
    "ShapeRange",
    "StaleEngineError",
    "default_engine_dir",
    "describe",
    "parse_sizes",
    "weights_fingerprint",
]

#: Bumped whenever the graphs' inputs/outputs or the build recipe change.
FORMAT = 1
ENGINE_NAMES = ("unet", "vae_encoder", "vae_decoder")
MANIFEST = "manifest.json"
_SAMPLE = 1 << 20
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

#: One input's (min, opt, max) shapes in a TensorRT optimization profile.
ShapeRange = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


class EngineCacheError(Exception):
    """No usable engine for a request (none built, or only stale ones)."""


class StaleEngineError(EngineCacheError):
    """Engines exist for the model but were built for something else (see `reasons`)."""

    def __init__(self, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


@dataclass(frozen=True)
class Environment:
    """What an engine is tied to besides the model: TensorRT's version and the GPU."""

    tensorrt: str
    #: e.g. "8.9" for an RTX 4090, "9.0" for an H100.
    compute_capability: str
    #: For people reading the manifest; not part of the key (same architecture, same engine).
    gpu_name: str = ""

    def key_fields(self) -> dict[str, str]:
        return {"tensorrt": self.tensorrt, "compute_capability": self.compute_capability}

    @classmethod
    def current(cls, device: int = 0) -> Environment:
        """This machine's (needs TensorRT and a CUDA GPU)."""
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise EngineCacheError("TensorRT engines need an NVIDIA GPU; torch.cuda.is_available() is False")
        major, minor = torch.cuda.get_device_capability(device)
        return cls(str(trt.__version__), f"{major}.{minor}", torch.cuda.get_device_name(device))


@dataclass(frozen=True)
class EngineSpec:
    """What the engines are built for. Sizes are image pixels; batches are rows per call."""

    model_id: str
    weights_hash: str
    vae: str = "taesd"
    precision: str = "fp16"
    #: The sizes asked for, (width, height); the first is the profile's optimum.
    sizes: tuple[tuple[int, int], ...] = ((512, 512),)
    #: UNet rows per call: 1 .. max_unet_batch (streams x rows per stream), optimum opt_unet_batch.
    max_unet_batch: int = 1
    opt_unet_batch: int = 1
    #: VAE images per call: 1 .. max_vae_batch (one per stream).
    max_vae_batch: int = 1
    text_len: int = 77

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ValueError("EngineSpec needs at least one size")
        for w, h in self.sizes:
            if w % 8 or h % 8 or w <= 0 or h <= 0:
                raise ValueError(f"sizes must be positive multiples of 8, got {w}x{h}")
        if not 1 <= self.opt_unet_batch <= self.max_unet_batch or self.max_vae_batch < 1:
            raise ValueError("batches must satisfy 1 <= opt_unet_batch <= max_unet_batch and max_vae_batch >= 1")

    @property
    def width_range(self) -> tuple[int, int]:
        return min(w for w, _ in self.sizes), max(w for w, _ in self.sizes)

    @property
    def height_range(self) -> tuple[int, int]:
        return min(h for _, h in self.sizes), max(h for _, h in self.sizes)

    @property
    def opt_size(self) -> tuple[int, int]:
        return self.sizes[0]

    def key_fields(self) -> dict[str, Any]:
        """What decides whether an engine fits; `sizes` enter only as the ranges they span
        plus the optimum, so 512x512,768x432 and 768x512,512x432 share an engine."""
        return {
            "model_id": self.model_id,
            "weights_hash": self.weights_hash,
            "vae": self.vae,
            "precision": self.precision,
            "width_range": list(self.width_range),
            "height_range": list(self.height_range),
            "opt_size": list(self.opt_size),
            "unet_batch": [1, self.opt_unet_batch, self.max_unet_batch],
            "vae_batch": [1, self.max_vae_batch],
            "text_len": self.text_len,
        }

    def key(self, env: Environment) -> str:
        payload = {"format": FORMAT, **self.key_fields(), **env.key_fields()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def covers(self, width: int, height: int, unet_batch: int = 1, vae_batch: int = 1) -> bool:
        (w0, w1), (h0, h1) = self.width_range, self.height_range
        return w0 <= width <= w1 and h0 <= height <= h1 and unet_batch <= self.max_unet_batch and vae_batch <= self.max_vae_batch

    def profile(self, name: str) -> dict[str, ShapeRange]:
        """TensorRT optimization profile (min, opt, max) per input of graph `name`."""
        (w0, w1), (h0, h1), (wo, ho) = self.width_range, self.height_range, self.opt_size
        lat = 8
        if name == "unet":
            b = (1, self.opt_unet_batch, self.max_unet_batch)
            return {
                "sample": ((b[0], 4, h0 // lat, w0 // lat), (b[1], 4, ho // lat, wo // lat), (b[2], 4, h1 // lat, w1 // lat)),
                "timestep": ((b[0],), (b[1],), (b[2],)),
                "encoder_hidden_states": ((b[0], self.text_len, -1), (b[1], self.text_len, -1), (b[2], self.text_len, -1)),
            }
        b = (1, 1, self.max_vae_batch)
        if name == "vae_encoder":
            return {"images": ((b[0], 3, h0, w0), (b[1], 3, ho, wo), (b[2], 3, h1, w1))}
        if name == "vae_decoder":
            return {"latent": ((b[0], 4, h0 // lat, w0 // lat), (b[1], 4, ho // lat, wo // lat), (b[2], 4, h1 // lat, w1 // lat))}
        raise ValueError(f"unknown engine {name!r}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sizes"] = [list(s) for s in self.sizes]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineSpec:
        data = dict(data)
        data["sizes"] = tuple((int(w), int(h)) for w, h in data["sizes"])
        return cls(**data)


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """`"512x512,768x432"` -> ((512, 512), (768, 432))."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)[xX](\d+)", part)
        if not match:
            raise ValueError(f"size {part!r} is not WIDTHxHEIGHT")
        sizes.append((int(match[1]), int(match[2])))
    if not sizes:
        raise ValueError("no sizes given")
    return tuple(sizes)


def weights_fingerprint(*folders: Path) -> str:
    """A SHA-256 over the weight files in `folders` (e.g. the UNet's and the VAE's): each
    file's folder name, relative path, size, and its first and last MiB (the safetensors
    header names every tensor, shape and dtype).

    Reading a 3.4 GB UNet in full would take seconds to minutes at every start; this is
    milliseconds and changes whenever weights are replaced, fine-tuned, fused or converted.
    """
    digest = hashlib.sha256()
    count = 0
    for folder in folders:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
        if not files:
            raise EngineCacheError(f"no weight files in {folder}")
        for path in files:
            size = path.stat().st_size
            digest.update(f"{Path(folder).name}/{path.relative_to(folder).as_posix()}\0{size}\0".encode())
            with path.open("rb") as f:
                digest.update(f.read(_SAMPLE))
                if size > _SAMPLE:
                    f.seek(max(_SAMPLE, size - _SAMPLE))
                    digest.update(f.read(_SAMPLE))
            count += 1
    if not count:
        raise EngineCacheError("weights_fingerprint needs at least one folder")
    return digest.hexdigest()[:32]


def default_engine_dir(model_dir: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """`ENGINE_DIR`, else `<MODEL_DIR>/engines`, else `./engines`."""
    env = os.environ if env is None else env
    if env.get("ENGINE_DIR"):
        return Path(env["ENGINE_DIR"])
    return (model_dir / "engines") if model_dir is not None else Path("engines")


def _slug(model_id: str) -> str:
    name = model_id.rstrip("/").split("/")[-1] if os.sep in model_id or model_id.startswith((".", "~")) else model_id
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-") or "model"


@dataclass
class CacheEntry:
    """One folder of the cache, readable or not."""

    path: Path
    manifest: dict[str, Any] | None = None
    error: str | None = None

    @property
    def spec(self) -> EngineSpec | None:
        return EngineSpec.from_json(self.manifest["spec"]) if self.manifest else None

    @property
    def environment(self) -> Environment | None:
        return Environment(**self.manifest["environment"]) if self.manifest else None

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def problems(self, env: Environment | None = None, weights_hash: str | None = None) -> list[str]:
        """Why this entry cannot be used here (empty: usable)."""
        if self.manifest is None:
            return [self.error or "no manifest (an interrupted build)"]
        spec, built = self.spec, self.environment
        assert spec is not None and built is not None
        reasons = []
        if self.manifest.get("format") != FORMAT:
            reasons.append(f"cache format {self.manifest.get('format')} (this build reads {FORMAT})")
        if self.manifest.get("key") != spec.key(built):
            reasons.append("manifest key does not match its own contents (edited or corrupted)")
        if env is not None:
            if built.tensorrt != env.tensorrt:
                reasons.append(f"built with TensorRT {built.tensorrt}, running {env.tensorrt}")
            if built.compute_capability != env.compute_capability:
                reasons.append(
                    f"built for compute capability {built.compute_capability} ({built.gpu_name or 'unknown GPU'}), "
                    f"this GPU is {env.compute_capability} ({env.gpu_name or 'unknown'})"
                )
        if weights_hash is not None and spec.weights_hash != weights_hash:
            reasons.append(f"built from other weights ({spec.weights_hash[:12]}, now {weights_hash[:12]})")
        for name, info in self.manifest.get("engines", {}).items():
            path = self.path / info["file"]
            if not path.is_file():
                reasons.append(f"{info['file']} is missing")
            elif path.stat().st_size != info["bytes"]:
                reasons.append(f"{info['file']} is {path.stat().st_size} bytes, the manifest says {info['bytes']}")
        if set(self.manifest.get("engines", {})) != set(ENGINE_NAMES):
            reasons.append(f"engines {sorted(self.manifest.get('engines', {}))}, expected {list(ENGINE_NAMES)}")
        return reasons


class EngineCache:
    """The folders under `root` (default `<model_dir>/engines`); see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, spec: EngineSpec, env: Environment) -> Path:
        return self.root / f"{_slug(spec.model_id)}--{spec.key(env)[:16]}"

    def timing_cache(self, env: Environment) -> Path:
        return self.root / f"timing-trt{env.tensorrt}-sm{env.compute_capability.replace('.', '')}.cache"

    def entries(self) -> list[CacheEntry]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(p for p in self.root.iterdir() if p.is_dir()):
            manifest_path = path / MANIFEST
            if not manifest_path.is_file():
                found.append(CacheEntry(path, error="no manifest (an interrupted build)"))
                continue
            try:
                manifest = json.loads(manifest_path.read_text())
                entry = CacheEntry(path, manifest)
                _ = entry.spec, entry.environment
            except (ValueError, KeyError, TypeError) as exc:
                found.append(CacheEntry(path, error=f"unreadable manifest: {exc}"))
                continue
            found.append(entry)
        return found

    def lookup(self, spec: EngineSpec, env: Environment) -> Path | None:
        """The folder built for exactly `spec` here, or None; raises `StaleEngineError` when
        that folder exists but fails its checks (files missing or changed)."""
        entry = next((e for e in self.entries() if e.path == self.folder(spec, env)), None)
        if entry is None:
            return None
        problems = entry.problems(env, spec.weights_hash)
        if problems:
            raise StaleEngineError(f"engines in {entry.path} cannot be used: {'; '.join(problems)}", problems)
        return entry.path

    def find(
        self,
        model_id: str,
        env: Environment,
        *,
        width: int,
        height: int,
        unet_batch: int = 1,
        vae_batch: int = 1,
        weights_hash: str | None = None,
        vae: str | None = None,
    ) -> CacheEntry:
        """An engine set for `model_id` usable here for this request (the runtime's lookup).

        Raises:
            EngineCacheError: nothing was built for `model_id`.
            StaleEngineError: engines exist but none fits; the message lists why for each.
        """
        candidates = [e for e in self.entries() if e.spec is not None and e.spec.model_id == model_id]
        if vae is not None:
            candidates = [e for e in candidates if e.spec is not None and e.spec.vae == vae]
        hint = (
            f"run `livestream engines build --model-id {model_id} --sizes {width}x{height} "
            f"--max-batch {unet_batch}` (or `livestream engines list` to see what is there)"
        )
        if not candidates:
            raise EngineCacheError(f"no TensorRT engines for {model_id} in {self.root}: {hint}")
        why = []
        for entry in candidates:
            spec = entry.spec
            assert spec is not None
            problems = entry.problems(env, weights_hash)
            if not spec.covers(width, height, unet_batch, vae_batch):
                (w0, w1), (h0, h1) = spec.width_range, spec.height_range
                problems.append(
                    f"covers widths {w0}-{w1}, heights {h0}-{h1}, UNet batch <= {spec.max_unet_batch}, "
                    f"VAE batch <= {spec.max_vae_batch}; asked {width}x{height}, UNet batch {unet_batch}, VAE batch {vae_batch}"
                )
            if not problems:
                return entry
            why.append(f"{entry.path.name}: {'; '.join(problems)}")
        raise StaleEngineError(f"no usable TensorRT engines for {model_id} ({' | '.join(why)}): {hint}", why)

    def write_manifest(
        self, folder: Path, spec: EngineSpec, env: Environment, *, build_seconds: float = 0.0, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record a finished build (last step of a build, atomically: a half-built folder never
        has a manifest)."""
        engines = {name: {"file": f"{name}.engine", "bytes": (folder / f"{name}.engine").stat().st_size} for name in ENGINE_NAMES}
        manifest = {
            "format": FORMAT,
            "key": spec.key(env),
            "spec": spec.to_json(),
            "environment": asdict(env),
            "engines": engines,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(build_seconds, 1),
            **(extra or {}),
        }
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        tmp.replace(folder / MANIFEST)
        return manifest

    def clear(
        self, *, model_id: str | None = None, stale_only: bool = False, env: Environment | None = None
    ) -> list[Path]:
        """Remove engine folders: all, one model's, or (`stale_only`) those unusable with
        `env` (another TensorRT/GPU, broken, or interrupted). Returns what was removed."""
        removed = []
        for entry in self.entries():
            spec = entry.spec
            if model_id is not None and (spec is None or spec.model_id != model_id):
                if not (spec is None and _slug(model_id) in entry.path.name):
                    continue
            if stale_only and not entry.problems(env):
                continue
            shutil.rmtree(entry.path)
            removed.append(entry.path)
        return removed


def describe(entry: CacheEntry, env: Environment | None = None) -> dict[str, Any]:
    """One `engines list` row."""
    spec, built = entry.spec, entry.environment
    problems = entry.problems(env)
    row: dict[str, Any] = {"folder": entry.path.name, "mb": round(entry.bytes / 1e6, 1)}
    if spec is not None and built is not None:
        (w0, w1), (h0, h1) = spec.width_range, spec.height_range
        row.update(
            model_id=spec.model_id,
            vae=spec.vae,
            sizes=f"{w0}-{w1}x{h0}-{h1} (opt {spec.opt_size[0]}x{spec.opt_size[1]})",
            unet_batch=f"1-{spec.max_unet_batch}",
            tensorrt=built.tensorrt,
            gpu=f"sm{built.compute_capability} {built.gpu_name}".strip(),
        )
    row["status"] = "ok" if not problems else "stale: " + "; ".join(problems)
    if env is None and not problems:
        row["status"] = "ok (TensorRT/GPU not checked here)"
    return row
