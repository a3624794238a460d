"""Faces in a style image for IP-Adapter FaceID: InsightFace's SCRFD detector (ONNX) and the
ArcFace alignment.

InsightFace's `buffalo_l` pack holds the detector FaceID's reference uses (`det_10g.onnx`, an
SCRFD-10GF with five keypoints) beside the recognition model (`face_embedding`). The contract
carried over from InsightFace: the image is scaled (aspect kept) into a square canvas at its
top-left corner, normalised `(x - 127.5) / 128` as RGB, NCHW; the nine outputs are the scores,
box distances and keypoint offsets of strides 8, 16 and 32 in that order, two anchors per cell;
boxes are `(left, top, right, bottom)` distances from the anchor centre and keypoints offsets
from it, both in units of the stride; scores >= 0.5 are kept, then non-maximum suppression at
IoU 0.4. The largest face is aligned onto ArcFace's five-point 112x112 template with a
similarity transform (OpenCV's `estimateAffinePartial2D`, as InsightFace's `norm_crop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ARCFACE_TEMPLATE", "Face", "FaceDetector", "align_face", "decode_scrfd"]

#: Where ArcFace expects the eyes, nose tip and mouth corners in a 112x112 crop (InsightFace).
ARCFACE_TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
STRIDES = (8, 16, 32)
ANCHORS = 2
DETECT_SIZE = 640
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.4


@dataclass(frozen=True)
class Face:
    """One detected face, in the input image's pixels."""

    box: tuple[float, float, float, float]
    score: float
    #: `(5, 2)`: left eye, right eye, nose tip, left and right mouth corners.
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def _anchor_centres(height: int, width: int, stride: int) -> np.ndarray:
    import numpy as np

    ys, xs = np.mgrid[:height, :width]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, ANCHORS, axis=0)  # each cell's anchors in a row


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    import numpy as np

    order = np.argsort(-scores)
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
        overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return keep


def decode_scrfd(outputs: list[np.ndarray], input_size: tuple[int, int], scale: float) -> list[Face]:
    """SCRFD's nine raw outputs (for an input of `input_size` = (height, width) made by scaling
    the image by `scale`) -> faces in the image's pixels, largest first."""
    import numpy as np

    if len(outputs) != 3 * len(STRIDES):
        raise ValueError(f"an SCRFD model has {3 * len(STRIDES)} outputs (scores, boxes, keypoints per stride), not {len(outputs)}")
    height, width = input_size
    boxes, scores, points = [], [], []
    for i, stride in enumerate(STRIDES):
        score = np.asarray(outputs[i], dtype=np.float32).reshape(-1)
        dist = np.asarray(outputs[i + 3], dtype=np.float32).reshape(-1, 4) * stride
        kps = np.asarray(outputs[i + 6], dtype=np.float32).reshape(-1, 10) * stride
        centres = _anchor_centres(height // stride, width // stride, stride)
        if not len(score) == len(dist) == len(kps) == len(centres):
            raise ValueError(f"SCRFD stride {stride}: output sizes do not fit a {width}x{height} input")
        keep = score >= SCORE_THRESHOLD
        c = centres[keep]
        d = dist[keep]
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        scores.append(score[keep])
        points.append(np.tile(c, 5) + kps[keep])
    box = np.concatenate(boxes) / scale
    score = np.concatenate(scores)
    point = np.concatenate(points).reshape(-1, 5, 2) / scale
    faces = [Face(tuple(float(v) for v in box[i]), float(score[i]), point[i]) for i in _nms(box, score, NMS_IOU)]  # type: ignore[arg-type]
    return sorted(faces, key=lambda f: -f.area)


class FaceDetector:
    """An SCRFD ONNX session: `detect(rgb (H, W, 3) uint8) -> [Face]`, largest first."""

    def __init__(self, session: Any, source: str) -> None:
        self.session = session
        self.source = source
        self.input_name = session.get_inputs()[0].name

    def detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2
        import numpy as np

        height, width = rgb.shape[:2]
        scale = DETECT_SIZE / max(height, width)
        resized = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))))
        canvas = np.zeros((DETECT_SIZE, DETECT_SIZE, 3), dtype=np.float32)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        x = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(None, {self.input_name: x})
        return decode_scrfd(list(outputs), (DETECT_SIZE, DETECT_SIZE), scale)


def align_face(rgb: np.ndarray, keypoints: np.ndarray, size: int = 112) -> np.ndarray:
    """The face at `keypoints` warped onto ArcFace's template: `(size, size, 3)` uint8."""
    import cv2
    import numpy as np

    template = np.array(ARCFACE_TEMPLATE, dtype=np.float32) * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(keypoints, dtype=np.float32), template, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("the face's keypoints give no similarity transform")
    return np.asarray(cv2.warpAffine(rgb, matrix, (size, size), borderValue=0.0), dtype=np.uint8)
