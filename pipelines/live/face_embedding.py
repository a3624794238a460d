"""Face embeddings for IP-Adapter FaceID: an ArcFace-family ONNX model through onnxruntime.

InsightFace's `buffalo_l` recognition model (`w600k_r50.onnx`, an ArcFace ResNet-50) is what the
reference's FaceID uses; InsightFace's package needs the full OpenCV wheel and downloads its
models from outside the package registries, so here the ONNX file is the `face_embedding`
auxiliary model (default `public-data/insightface`, file `models/buffalo_l/w600k_r50.onnx`; a
folder holding an `.onnx` file, or the file itself, works too) and runs through onnxruntime.

Input: a 112x112 RGB crop, `(x - 127.5) / 127.5` (InsightFace's `ArcFaceONNX`); output: the
L2-normalised 512-d embedding (InsightFace's `normed_embedding`). There is no face detector or
landmark alignment here: the style image is centre-cropped to a square and resized, so it
should be a face crop (InsightFace would find and align the face first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..loading import resolve_model_source

__all__ = ["DEFAULT_FILE", "FaceEmbedder", "load_face_embedder"]

DEFAULT_FILE = "models/buffalo_l/w600k_r50.onnx"


class FaceEmbedder:
    """An ArcFace ONNX session: `embed(pil_image) -> (1, 512)` float32 numpy, L2-normalised."""

    def __init__(self, session: Any, source: str) -> None:
        self.session = session
        self.source = source
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        self.size = (int(shape[2]) if isinstance(shape[2], int) else 112, int(shape[3]) if isinstance(shape[3], int) else 112)
        self.dim = int(session.get_outputs()[0].shape[-1])

    def embed(self, image: Any) -> Any:
        import numpy as np

        w, h = image.size
        side = min(w, h)
        crop = image.convert("RGB").crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        crop = crop.resize((self.size[1], self.size[0]))
        x = (np.asarray(crop, dtype=np.float32) - 127.5) / 127.5
        x = x.transpose(2, 0, 1)[None]
        out = np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32).reshape(1, -1)
        norm = float(np.linalg.norm(out))
        return out / norm if norm > 0 else out


def _find(folder: Path) -> Path | None:
    direct = folder / DEFAULT_FILE
    if direct.is_file():
        return direct
    found = sorted(folder.rglob("*.onnx"), key=lambda p: (not any(k in p.name for k in ("w600k", "arcface", "glint")), str(p)))
    return found[0] if found else None


def load_face_embedder(model_id: str, *, model_dir: Path | None, cuda: bool = False) -> FaceEmbedder:
    """The ArcFace ONNX of `model_id` (a folder, an `.onnx` file, or a Hugging Face id holding
    `models/buffalo_l/w600k_r50.onnx`); raises `ModelLoadError`."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelLoadError(f"onnxruntime is not installed ({exc})") from exc
    path: Path | None
    if model_id.endswith(".onnx") and Path(model_id).is_file():
        path = Path(model_id)
    else:
        source = resolve_model_source(model_id, model_dir, probe_file=DEFAULT_FILE)
        if source.path is not None:
            path = _find(source.path)
        else:
            from huggingface_hub import hf_hub_download

            kwargs = {k: v for k, v in source.from_pretrained_kwargs().items() if k in ("cache_dir", "local_files_only")}
            try:
                path = Path(hf_hub_download(model_id, DEFAULT_FILE, **kwargs))
            except Exception as exc:  # noqa: BLE001 (hub errors are many classes)
                raise ModelLoadError(f"Could not load the face-embedding model {model_id!r}: {exc}") from exc
    if path is None:
        raise ModelLoadError(f"no .onnx face-embedding model in {model_id!r}")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    providers = [p for p in providers if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own classes)
        raise ModelLoadError(f"Could not load the face-embedding model {path}: {exc}") from exc
    return FaceEmbedder(session, str(path))
