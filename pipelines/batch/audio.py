"""Audio in and out for the batch pipelines, with PyAV and the standard library only.

`decode_audio` turns any container/codec FFmpeg reads (WAV, MP3, FLAC, Ogg, MP4/M4A, WebM,
a video file's audio track, ...) at any rate and channel layout into mono float32 samples at
the rate a model wants. `encode_wav` writes 16-bit PCM WAV. No torchaudio, no soundfile.
"""

from __future__ import annotations

import io
import logging
import wave
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["AudioDecodeError", "decode_audio", "encode_wav"]

log = logging.getLogger(__name__)

#: Corrupt packets skipped before a file is declared unreadable.
_MAX_BAD_PACKETS = 100


class AudioDecodeError(ValueError):
    """The data holds no decodable audio."""


def decode_audio(data: bytes, sample_rate: int) -> np.ndarray:
    """Decode the first audio stream of `data` to mono float32 samples at `sample_rate` Hz.

    Corrupt packets are skipped (a truncated upload yields the audio before the cut), up to
    a budget. Channels are down-mixed by FFmpeg's resampler.

    Returns:
        `(num_samples,)` float32 in [-1, 1].

    Raises:
        AudioDecodeError: not a media file, no audio stream, or no sample could be decoded.
    """
    import av
    import numpy as np

    chunks: list[np.ndarray] = []
    bad_packets = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    bad_packets += 1
                    if bad_packets > _MAX_BAD_PACKETS:
                        break
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        if not chunks:
            raise AudioDecodeError(f"cannot decode audio: {exc}") from None
        # A file cut short mid-stream: keep what was decoded before the damage.
        log.info("audio ends early after %d samples: %s", sum(len(c) for c in chunks), exc)
    if bad_packets:
        log.info("skipped %d corrupt audio packets", bad_packets)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise AudioDecodeError("no audio could be decoded")
    return samples.astype(np.float32, copy=False)


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float samples in [-1, 1] -> a 16-bit PCM WAV file."""
    import numpy as np

    pcm = (np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return buf.getvalue()
