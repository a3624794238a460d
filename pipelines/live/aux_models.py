"""Auxiliary models of the live pipelines (NSFW classifier, depth, pose, ...): where each loads from.

Each kind has a default Hugging Face id; one map points any of them at another id or a local
folder: `livestream serve --aux-model safety=DIR` (repeatable) or env
`AUX_MODELS=safety=DIR,depth=DIR`. The engine builds one `AuxModels` from its settings and the
live registry hands it to each pipeline it makes (no process-wide state). `livestream models tiny --task nsfw-classifier` writes a
tiny random-weight classifier for tests.

Kinds loaded today: `safety` (the `use_safety_checker` classifier), `depth` (the
`depth`/`depth_tensorrt` ControlNet preprocessors; `--task depth` writes a tiny one) and `pose`
(`openpose`/`pose_tensorrt`: a transformers ViTPose; `--task pose`) and `hed` (the `hed`
preprocessor: `ControlNetHED.pth` from a folder, a file or a Hub repo; `--task hed`),
`person_detector` (the pose preprocessor's person boxes: a transformers object detector,
RT-DETR by default; `--task person-detector`), `lineart` (the `lineart` preprocessor's
`sk_model.pth`/`sk_model2.pth`; `--task lineart`),
`ip_adapter`, `faceid` and `face_embedding` (the IP-Adapter, FaceID and FaceID's ArcFace ONNX;
`--task ip-adapter`, `ip-adapter-faceid`, `face-embedding`) and `super_resolution` (the
`realesrgan_trt` processing block; `--task super-resolution`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["AUX_MODEL_DEFAULTS", "AuxModels", "parse_aux_models"]

#: Kind -> default Hugging Face id. `safety`: the reference's `Freepik/nsfw_image_detector` is a
#: timm model (needs timm, not installed); a ViT classifier that transformers loads natively
#: stands in. `pose`: the reference's YOLO-NAS-Pose is a TensorRT engine (super-gradients); ViTPose
#: (COCO keypoints, transformers-native) stands in. `super_resolution`: the reference's RealESRGAN x2
#: is a TensorRT engine from a .pth; a x2 Swin2SR that transformers loads stands in (`realesrgan_trt`).
AUX_MODEL_DEFAULTS: dict[str, str] = {
    "safety": "Falconsai/nsfw_image_detection",
    "depth": "depth-anything/Depth-Anything-V2-Small-hf",
    "pose": "usyd-community/vitpose-base-simple",
    "hed": "lllyasviel/Annotators",
    # The pose preprocessor's person boxes (ViTPose is top-down): RT-DETR, as transformers'
    # ViTPose docs pair them; DETR/YOLOS ids load the same way.
    "person_detector": "PekingU/rtdetr_r50vd_coco_o365",
    # The `lineart` preprocessor's informative-drawings generator (sk_model.pth, sk_model2.pth).
    "lineart": "lllyasviel/Annotators",
    "ip_adapter": "h94/IP-Adapter",
    "faceid": "h94/IP-Adapter-FaceID",
    # FaceID's face embedder: InsightFace buffalo_l's ArcFace ONNX (models/buffalo_l/w600k_r50.onnx).
    "face_embedding": "public-data/insightface",
    "super_resolution": "caidas/swin2SR-lightweight-x2-64",
}

def parse_aux_models(text: str | None) -> dict[str, str]:
    """`"safety=DIR,depth=ID"` (or one `KIND=VALUE`) -> a map; raises ValueError on a bad entry."""
    out: dict[str, str] = {}
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        kind, sep, value = entry.partition("=")
        kind, value = kind.strip(), value.strip()
        if not sep or not value:
            raise ValueError(f"auxiliary model {entry!r}: expected KIND=ID_OR_FOLDER")
        if kind not in AUX_MODEL_DEFAULTS:
            raise ValueError(f"unknown auxiliary model kind {kind!r}; known: {', '.join(sorted(AUX_MODEL_DEFAULTS))}")
        out[kind] = value
    return out


@dataclass(frozen=True)
class AuxModels:
    """Where each auxiliary model loads from: the given overrides (`--aux-model`, env
    `AUX_MODELS`), else each kind's default id."""

    overrides: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in self.overrides:
            if kind not in AUX_MODEL_DEFAULTS:
                raise ValueError(f"unknown auxiliary model kind {kind!r}; known: {', '.join(sorted(AUX_MODEL_DEFAULTS))}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuxModels:
        return cls(parse_aux_models((os.environ if env is None else env).get("AUX_MODELS")))

    def id(self, kind: str) -> str:
        """The id or folder the `kind` model loads from."""
        return self.overrides.get(kind) or AUX_MODEL_DEFAULTS[kind]
