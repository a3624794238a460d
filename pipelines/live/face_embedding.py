"""Face embeddings for IP-Adapter FaceID: an ArcFace-family ONNX model through onnxruntime.

InsightFace's `buffalo_l` recognition model (`w600k_r50.onnx`, an ArcFace ResNet-50) is what the
reference's FaceID uses; InsightFace's package needs the full OpenCV wheel and downloads its
models from outside the package registries, so here the ONNX file is the `face_embedding`
auxiliary model (default `public-data/insightface`, file `models/buffalo_l/w600k_r50.onnx`; a
folder holding an `.onnx` file, or the file itself, works too) and runs through onnxruntime.

Input: a 112x112 RGB crop, `(x - 127.5) / 127.5` (InsightFace's `ArcFaceONNX`); output: the
L2-normalised 512-d embedding (InsightFace's `normed_embedding`). The crop is the style image's
largest face, found by the pack's SCRFD detector (`models/buffalo_l/det_10g.onnx`,
`pipelines.live.face_detection`) and aligned onto ArcFace's five-point template, as InsightFace
does. A pack without the detector, or a style image in which it finds no face, falls back to
the centre square of the image (logged): give a face crop then.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..loading import resolve_model_source
from .face_detection import FaceDetector, align_face

__all__ = ["DEFAULT_FILE", "DETECTOR_FILE", "FaceEmbedder", "load_face_embedder"]

log = logging.getLogger(__name__)

DEFAULT_FILE = "models/buffalo_l/w600k_r50.onnx"
#: The same pack's face detector (SCRFD-10GF with keypoints).
DETECTOR_FILE = "models/buffalo_l/det_10g.onnx"
_DETECTOR_NAMES = ("det_", "scrfd", "retinaface")


class FaceEmbedder:
    """An ArcFace ONNX session: `embed(pil_image) -> (1, 512)` float32 numpy, L2-normalised."""

    def __init__(self, session: Any, source: str, detector: FaceDetector | None = None) -> None:
        self.session = session
        self.source = source
        self.detector = detector
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        self.size = (int(shape[2]) if isinstance(shape[2], int) else 112, int(shape[3]) if isinstance(shape[3], int) else 112)
        self.dim = int(session.get_outputs()[0].shape[-1])

    def face_crop(self, image: Any) -> Any:
        """The `(112, 112, 3)` uint8 crop the embedding is made of: the largest face, aligned;
        else the centre square."""
        import numpy as np
        from PIL import Image

        rgb = np.asarray(image.convert("RGB"))
        if self.detector is not None:
            faces = self.detector.detect(rgb)
            if faces:
                try:
                    return align_face(rgb, faces[0].keypoints, self.size[0])
                except ValueError as exc:
                    log.warning("FaceID: the face found in the style image cannot be aligned (%s); using its centre", exc)
            else:
                log.warning("FaceID: no face found in the style image; using its centre")
        h, w = rgb.shape[:2]
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        square = Image.fromarray(rgb[top : top + side, left : left + side])
        return np.asarray(square.resize((self.size[1], self.size[0])))

    def embed(self, image: Any) -> Any:
        import numpy as np

        x = (np.asarray(self.face_crop(image), dtype=np.float32) - 127.5) / 127.5
        x = x.transpose(2, 0, 1)[None]
        out = np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32).reshape(1, -1)
        norm = float(np.linalg.norm(out))
        return out / norm if norm > 0 else out


def _find(folder: Path, default: str, detector: bool) -> Path | None:
    """The pack's recognition model (`detector` False) or face detector in `folder`."""
    direct = folder / default
    if direct.is_file():
        return direct
    found = [p for p in folder.rglob("*.onnx") if any(k in p.name for k in _DETECTOR_NAMES) == detector]
    found.sort(key=lambda p: (detector or not any(k in p.name for k in ("w600k", "arcface", "glint")), str(p)))
    return found[0] if found else None


def _onnx_file(model_id: str, model_dir: Path | None, default: str, detector: bool) -> Path | None:
    """One ONNX file of an InsightFace-style pack: a folder, an `.onnx` file (the recognition
    model alone) or a Hugging Face id; raises `ModelLoadError` when the hub cannot give it."""
    if model_id.endswith(".onnx") and Path(model_id).is_file():
        return None if detector else Path(model_id)
    source = resolve_model_source(model_id, model_dir, probe_file=default)
    if source.path is not None:
        return _find(source.path, default, detector)
    from huggingface_hub import hf_hub_download

    kwargs = {k: v for k, v in source.from_pretrained_kwargs().items() if k in ("cache_dir", "local_files_only")}
    try:
        return Path(hf_hub_download(model_id, default, **kwargs))
    except Exception as exc:  # noqa: BLE001 (hub errors are many classes)
        raise ModelLoadError(f"Could not load {default} of {model_id!r}: {exc}") from exc


def _session(path: Path, cuda: bool) -> Any:
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    providers = [p for p in providers if p in ort.get_available_providers()] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own classes)
        raise ModelLoadError(f"Could not load the ONNX model {path}: {exc}") from exc


def load_face_embedder(model_id: str, *, model_dir: Path | None, cuda: bool = False) -> FaceEmbedder:
    """The ArcFace ONNX of `model_id` (a folder, an `.onnx` file, or a Hugging Face id holding
    `models/buffalo_l/w600k_r50.onnx`) with the pack's face detector when it has one; raises
    `ModelLoadError`."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(f"onnxruntime is not installed ({exc})") from exc
    path = _onnx_file(model_id, model_dir, DEFAULT_FILE, detector=False)
    if path is None:
        raise ModelLoadError(f"no .onnx face-embedding model in {model_id!r}")
    try:
        detector_path = _onnx_file(model_id, model_dir, DETECTOR_FILE, detector=True)
    except ModelLoadError as exc:
        log.warning("FaceID: %s; style images are centre-cropped", exc)
        detector_path = None
    detector = FaceDetector(_session(detector_path, cuda), str(detector_path)) if detector_path is not None else None
    if detector is None:
        log.warning("FaceID: no face detector beside %s; style images are centre-cropped (give face crops)", path)
    return FaceEmbedder(_session(path, cuda), str(path), detector)
