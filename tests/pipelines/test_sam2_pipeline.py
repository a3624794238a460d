"""segment-anything-2 on the tiny SAM 2 model: prompts, shapes, sorting, thresholds, errors."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.batch.segment_anything_2 import SegmentAnything2Input, SegmentAnything2Pipeline
from pipelines.errors import InvalidRequestError
from pipelines.testing import write_tiny_model

W, H = 120, 90


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> SegmentAnything2Pipeline:
    out = tmp_path_factory.getbasetemp() / "tiny-segment-anything-2"
    if not (out / "config.json").exists():
        write_tiny_model("segment-anything-2", out)
    return SegmentAnything2Pipeline(str(out), device="cpu")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    image = Image.new("RGB", (W, H), (20, 20, 20))
    image.paste((250, 250, 250), (30, 20, 80, 70))
    return image


def _shape(value: Any) -> tuple[int, ...]:
    return np.asarray(value).shape


def test_points_multimask(sam: SegmentAnything2Pipeline, image: Image.Image) -> None:
    result = sam.segment(SegmentAnything2Input(image, point_coords=[[50, 40], [5, 5]], point_labels=[1, 0]))
    assert result.masks.shape == (3, H, W) and result.masks.dtype == np.float32
    assert result.scores.shape == (3,) and result.logits.shape == (3, 32, 32)
    assert list(result.scores) == sorted(result.scores, reverse=True)


def test_box_single_mask_thresholded(sam: SegmentAnything2Pipeline, image: Image.Image) -> None:
    logits = sam.segment(SegmentAnything2Input(image, box=[30, 20, 80, 70], multimask_output=False))
    binary = sam.segment(SegmentAnything2Input(image, box=[[30, 20, 80, 70]], multimask_output=False, return_logits=False))
    assert binary.masks.shape == (1, H, W) and binary.masks.dtype == bool
    assert np.array_equal(binary.masks, logits.masks > 0)


def test_normalized_coordinates_are_the_same_prompt(sam: SegmentAnything2Pipeline, image: Image.Image) -> None:
    pixels = sam.segment(SegmentAnything2Input(image, point_coords=[[60, 45]], point_labels=[1], box=[30, 20, 90, 60]))
    unit = sam.segment(
        SegmentAnything2Input(
            image, point_coords=[[0.5, 0.5]], point_labels=[1], box=[0.25, 20 / H, 0.75, 60 / H], normalize_coords=False
        )
    )
    assert np.allclose(pixels.scores, unit.scores, atol=1e-5)
    assert np.allclose(pixels.logits, unit.logits, atol=1e-4)


def test_mask_input_from_a_previous_answer(sam: SegmentAnything2Pipeline, image: Image.Image) -> None:
    first = sam.segment(SegmentAnything2Input(image, point_coords=[[50, 40]], point_labels=[1]))
    again = sam.segment(
        SegmentAnything2Input(image, point_coords=[[50, 40]], point_labels=[1], mask_input=first.logits[:1].tolist())
    )
    assert again.masks.shape == (3, H, W)
    assert not np.allclose(first.logits, again.logits)
    # 256x256 (the real SAM 2 size) is resized to the model's mask input.
    sam.segment(SegmentAnything2Input(image, mask_input=np.zeros((1, 256, 256)).tolist()))


def test_no_prompt_at_all(sam: SegmentAnything2Pipeline, image: Image.Image) -> None:
    assert sam.segment(SegmentAnything2Input(image)).masks.shape == (3, H, W)


def test_response_is_stringified_lists(sam: SegmentAnything2Pipeline, image: Image.Image) -> None:
    response = sam(
        image,
        point_coords=[[50, 40]],
        point_labels=[1],
        box=None,
        mask_input=None,
        multimask_output=True,
        return_logits=False,
        normalize_coords=True,
    )
    assert set(response) == {"masks", "scores", "logits"} and all(isinstance(v, str) for v in response.values())
    masks, scores, logits = (ast.literal_eval(response[k]) for k in ("masks", "scores", "logits"))
    assert _shape(masks) == (3, H, W) and isinstance(masks[0][0][0], bool)
    assert scores == sorted(scores, reverse=True)
    assert _shape(logits) == (3, 32, 32)


@pytest.mark.parametrize(
    ("prompts", "match"),
    [
        ({"point_coords": [1, 2], "point_labels": [1]}, "Nx2"),
        ({"point_coords": [[1, 2, 3]], "point_labels": [1]}, "Nx2"),
        ({"point_coords": [[1, 2]]}, "point_labels must be supplied"),
        ({"point_coords": [[1, 2]], "point_labels": [1, 0]}, "one label per point"),
        ({"point_coords": [[1, 2]], "point_labels": [0.5]}, "integers"),
        ({"point_labels": [1]}, "without point_coords"),
        ({"point_coords": [["a", "b"]], "point_labels": [1]}, "rectangular array of numbers"),
        ({"point_coords": [[1, 2], [3]], "point_labels": [1, 1]}, "rectangular array of numbers"),
        ({"box": [1, 2, 3]}, "4 numbers"),
        ({"box": [[1, 2, 3, 4], [5, 6, 7, 8]]}, "4 numbers"),
        ({"mask_input": [[[0.0, 1.0], [2.0]]]}, "rectangular"),
        ({"mask_input": [1.0, 2.0]}, "1xHxW"),
        ({"mask_input": {"a": 1}}, "rectangular|1xHxW"),
        ({"point_coords": [[float("nan"), 1]], "point_labels": [1]}, "finite"),
    ],
)
def test_malformed_prompts(
    sam: SegmentAnything2Pipeline, image: Image.Image, prompts: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        sam.segment(SegmentAnything2Input(image, **prompts))
