"""Image-to-video with Stable Video Diffusion, behaving as ai-runner's image-to-video pipeline.

`StableVideoDiffusionPipeline` (`stabilityai/stable-video-diffusion-img2vid-xt` or any repo of
that class). As in ai-runner:

- the input image is resized to `width` x `height` (multiples of 8) and conditions every frame;
  the number of frames is the model's (25 for img2vid-xt, 14 for img2vid);
- `fps`, `motion_bucket_id` and `noise_aug_strength` are SVD's micro-conditioning;
  `decode_chunk_size` (not a route field; 4 as in ai-runner) bounds how many frames the VAE
  decodes at once, trading speed for memory;
- one seed for the whole video; the safety checker looks at the *input* image and its flag is
  reported on every frame (ai-runner's choice).

The runner API returns the frames as PNG data URLs (`{"frames": [[{url, seed, nsfw}, ...]]}`).
`GeneratedVideo.to_mp4()` encodes them as H.264 with PyAV for callers that want a file.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError
from ..loading import ModelSource
from .diffusion import DiffusersPipeline, check_image, check_size, resolve_seed
from .outputs import GeneratedImage

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GeneratedVideo", "ImageToVideoInput", "ImageToVideoPipeline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageToVideoInput:
    """One image-to-video request; defaults are ai-runner's."""

    image: Image.Image
    height: int = 576
    width: int = 1024
    fps: int = 6
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    num_inference_steps: int = 25
    #: None: a random uint32 seed, reported back in the `GeneratedVideo`.
    seed: int | None = None
    safety_check: bool = True
    decode_chunk_size: int = 4


@dataclass(frozen=True)
class GeneratedVideo:
    """One generated video.

    Attributes:
        frames: RGB frames, all `width` x `height`.
        seed: the seed it was generated with.
        nsfw: the safety checker flagged the input image.
        fps: the frame rate asked for (used by `to_mp4`).
    """

    frames: list[Image.Image]
    seed: int
    nsfw: bool
    fps: int

    def frame_images(self) -> list[GeneratedImage]:
        """Each frame with the video's seed and flag, as the runner API lists them."""
        return [GeneratedImage(image=frame, seed=self.seed, nsfw=self.nsfw) for frame in self.frames]

    def to_mp4(self, *, crf: int = 18) -> bytes:
        """The frames as an H.264 (yuv420p) MP4 at `fps`, encoded with PyAV."""
        import av
        import numpy as np

        buf = io.BytesIO()
        width, height = self.frames[0].size
        with av.open(buf, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=self.fps, options={"crf": str(crf)})
            # yuv420p needs even sides.
            stream.width = width - width % 2
            stream.height = height - height % 2
            stream.pix_fmt = "yuv420p"
            for image in self.frames:
                array = np.asarray(image.convert("RGB"))[: stream.height, : stream.width]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return buf.getvalue()


class ImageToVideoPipeline(DiffusersPipeline):
    """Stable Video Diffusion (see `DiffusersPipeline` for loading and its errors)."""

    task = "image-to-video"
    supports_loras = False

    def _load(self, source: ModelSource, kwargs: dict[str, Any]) -> Any:
        from diffusers import StableVideoDiffusionPipeline

        return StableVideoDiffusionPipeline.from_pretrained(source.pretrained_name, **kwargs)

    @property
    def num_frames(self) -> int:
        """Frames per video: the model's `num_frames`."""
        return int(self._pipe.unet.config.num_frames)

    def generate(self, request: ImageToVideoInput) -> GeneratedVideo:
        """One video of `num_frames` frames from `request.image`.

        Raises:
            InvalidRequestError: size not a positive multiple of 8 (or too large), an input
                image too small or too large, `fps` < 1, negative `noise_aug_strength` or
                `motion_bucket_id`, `decode_chunk_size` < 1.
        """
        check_size(request.height, request.width)
        check_image(request.image)
        if request.fps < 1:
            raise InvalidRequestError(f"fps must be at least 1, got {request.fps}.")
        if request.motion_bucket_id < 0:
            raise InvalidRequestError(f"motion_bucket_id must be >= 0, got {request.motion_bucket_id}.")
        if request.noise_aug_strength < 0:
            raise InvalidRequestError(f"noise_aug_strength must be >= 0, got {request.noise_aug_strength}.")
        if request.decode_chunk_size < 1:
            raise InvalidRequestError(f"decode_chunk_size must be at least 1, got {request.decode_chunk_size}.")
        kwargs: dict[str, Any] = dict(
            image=request.image,
            height=request.height,
            width=request.width,
            fps=request.fps,
            motion_bucket_id=request.motion_bucket_id,
            noise_aug_strength=request.noise_aug_strength,
            decode_chunk_size=request.decode_chunk_size,
        )
        if request.num_inference_steps >= 1:
            kwargs["num_inference_steps"] = request.num_inference_steps
        seed = resolve_seed(request.seed)
        [nsfw] = self._flag([request.image], request.safety_check)
        output = self._call(generator=self._generator(seed), output_type="pil", **kwargs)
        frames = [frame.convert("RGB") for frame in output.frames[0]]
        return GeneratedVideo(frames=frames, seed=seed, nsfw=nsfw, fps=request.fps)
