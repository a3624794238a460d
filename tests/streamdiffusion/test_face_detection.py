"""FaceID's face detection and alignment (InsightFace's SCRFD contract, ArcFace's template), on
hand-made detector outputs and on the tiny random-weight pack (`--task face-embedding`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.live.face_detection import ARCFACE_TEMPLATE, STRIDES, align_face, decode_scrfd
from pipelines.live.face_embedding import DETECTOR_FILE, load_face_embedder
from pipelines.testing import write_tiny_model


def _outputs(size: int) -> list[np.ndarray]:
    """All-zero SCRFD outputs for a `size` x `size` input (no face)."""
    cells = [(size // s) ** 2 * 2 for s in STRIDES]
    return [np.zeros((n, 1), np.float32) for n in cells] + [np.zeros((n, 4), np.float32) for n in cells] + [
        np.zeros((n, 10), np.float32) for n in cells
    ]


def test_decode_turns_distances_into_boxes_and_keypoints_in_image_pixels() -> None:
    out = _outputs(64)
    # stride 16 (index 1), cell x=2, y=1, anchor 0: anchor centre (32, 16)
    i = (1 * 4 + 2) * 2
    out[1][i] = 0.9
    out[4][i] = (1.0, 0.5, 1.0, 1.5)  # left, top, right, bottom in strides
    out[7][i] = (-0.5, -0.25, 0.5, -0.25, 0.0, 0.25, -0.25, 0.75, 0.25, 0.75)
    faces = decode_scrfd(out, (64, 64), scale=0.5)  # the image was scaled by 0.5 into the input
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.9)
    assert faces[0].box == pytest.approx((32.0, 16.0, 96.0, 80.0))  # ((32,16) -/+ (16,8)/(16,24)) / 0.5
    assert faces[0].keypoints[0].tolist() == pytest.approx([48.0, 24.0])  # (32 - 8, 16 - 4) / 0.5
    assert faces[0].keypoints.shape == (5, 2)


def test_overlapping_detections_are_one_face_and_faces_come_largest_first() -> None:
    out = _outputs(64)
    a, b, c = (0 * 8 + 1) * 2, (0 * 8 + 1) * 2 + 1, (6 * 8 + 6) * 2  # stride 8: two anchors of one cell, another cell
    out[0][a], out[0][b], out[0][c] = 0.8, 0.9, 0.7
    out[3][a], out[3][b], out[3][c] = (1, 1, 1, 1), (1, 1, 1.1, 1), (2, 2, 2, 2)
    faces = decode_scrfd(out, (64, 64), scale=1.0)
    assert [round(f.score, 1) for f in faces] == [0.7, 0.9]  # the lower duplicate is gone; largest first
    assert faces[0].area > faces[1].area
    out[0][:] = 0.4  # under the threshold: nothing
    assert decode_scrfd(out, (64, 64), scale=1.0) == []
    with pytest.raises(ValueError, match="9 outputs"):
        decode_scrfd(out[:6], (64, 64), scale=1.0)


def test_alignment_puts_the_keypoints_on_arcfaces_template() -> None:
    template = np.array(ARCFACE_TEMPLATE)
    # A face at 1.5x the template's scale, shifted: its five points marked with distinct colours.
    points = template * 1.5 + (20.0, 30.0)
    image = np.zeros((220, 220, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    for (x, y), colour in zip(points, colours, strict=True):
        image[round(y) - 3 : round(y) + 4, round(x) - 3 : round(x) + 4] = colour
    crop = align_face(image, points)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for (x, y), colour in zip(template, colours, strict=True):
        assert crop[round(y), round(x)].tolist() == list(colour)


def test_the_tiny_pack_detects_aligns_and_embeds(tmp_path: Path) -> None:
    write_tiny_model("face-embedding", tmp_path / "pack")
    embedder = load_face_embedder(str(tmp_path / "pack"), model_dir=None)
    assert embedder.detector is not None and embedder.source.endswith("w600k_r50.onnx")
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    faces = embedder.detector.detect(np.asarray(image))
    assert faces and all(f.keypoints.shape == (5, 2) for f in faces)
    crop = embedder.face_crop(image)
    assert crop.shape == (112, 112, 3)
    vector = embedder.embed(image)
    assert vector.shape == (1, 512) and abs(float((vector**2).sum()) - 1.0) < 1e-4
    # without the detector the pack still works, on the image's centre square
    (tmp_path / "pack" / DETECTOR_FILE).unlink()
    plain = load_face_embedder(str(tmp_path / "pack"), model_dir=None)
    assert plain.detector is None
    centre = np.asarray(image.crop((15, 0, 105, 90)).resize((112, 112)))
    assert np.array_equal(plain.face_crop(image), centre)
    assert not np.array_equal(crop, centre)
