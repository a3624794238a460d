"""Audio-to-text with Whisper through transformers, behaving as ai-runner's audio-to-text pipeline.

Any Whisper checkpoint (`openai/whisper-large-v3`, `-medium`, `distil-whisper/distil-large-v3`,
fine-tunes) loads from a Hugging Face id or a local folder. As in ai-runner:

- the upload is decoded with PyAV (any container FFmpeg reads, any rate and layout; here in
  process instead of through an ffmpeg subprocess) to mono float32 at the model's rate (16 kHz);
- `return_timestamps`: `True` (also `"sentence"`, mapped by the API) gives segment chunks,
  `"word"` word chunks, `False` none (`chunks` is then `[]`);
- audio longer than the chunk length (30 s; 25 s for distil-large-v3) runs chunked with batch
  16, or batch 4 above 200 s with word timestamps; shorter audio runs in one pass;
- timestamps are seconds from the start of the file, clamped to the audio's length (Whisper
  may stamp a final segment at the end of the padded 30 s window);
- word timestamps are refused above 60 minutes; generation stops after 128 new tokens per
  window (a model's `generation_config.max_new_tokens`, when set, wins).

The `duration` used for those decisions is the request's `metadata.duration` when given (as
ai-runner trusts it), else the container's. Not done: ai-runner's faster-whisper backend
(`BACKEND=faster-whisper`); this is its transformers backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, UnsupportedMediaError
from ..loading import model_load_errors, pick_device, resolve_model_source, torch_dtype_for
from .audio import AudioDecodeError, decode_audio

__all__ = ["AudioToTextInput", "AudioToTextPipeline"]

log = logging.getLogger(__name__)

_MAX_NEW_TOKENS = 128
_WORD_TIMESTAMPS_MAX_S = 3600.0
_LONG_WORD_TIMESTAMPS_S = 200.0
_AUDIO_FORMAT_ERROR = "Unsupported audio format or malformed file."


@dataclass(frozen=True)
class _ModelConfig:
    chunk_length_s: int = 30
    batch_size: int = 16
    float32_on_gpu: bool = False


#: ai-runner's per-model settings; other Whisper models get the defaults.
_MODEL_CONFIGS = {
    "openai/whisper-medium": _ModelConfig(float32_on_gpu=True),
    "distil-whisper/distil-large-v3": _ModelConfig(chunk_length_s=25),
}


@dataclass(frozen=True)
class AudioToTextInput:
    """One transcription request.

    Attributes:
        audio: the uploaded file, as uploaded.
        return_timestamps: `True` for segment timestamps, `"word"` for word timestamps,
            `False` for none.
        duration: seconds of audio, if known (chunking and limits follow it).
    """

    audio: bytes
    return_timestamps: bool | str = True
    duration: float | None = None


class AudioToTextPipeline:
    """A Whisper model, loaded in `__init__` (call it in a worker thread).

    Args:
        model_id: Hugging Face id or local folder (see `pipelines.loading`).
        model_dir: ai-runner's MODEL_DIR: local models and the Hugging Face cache.
        device: `"cuda"`, `"cpu"`, ...; default CUDA when available (float16), else CPU (float32).

    Raises:
        ModelLoadError: the model cannot be found or loaded.
    """

    task = "audio-to-text"

    def __init__(self, model_id: str, *, model_dir: Path | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

        self.model_id = model_id
        self.device = pick_device(device)
        self._config = _MODEL_CONFIGS.get(model_id, _ModelConfig())
        self.dtype = torch.float32 if self._config.float32_on_gpu else torch_dtype_for(self.device)
        source = resolve_model_source(model_id, model_dir, probe_file="config.json")
        kwargs = source.from_pretrained_kwargs()
        with model_load_errors("audio-to-text model", model_id):
            # sdpa, not flash attention: word timestamps need the cross-attention weights.
            model = AutoModelForSpeechSeq2Seq.from_pretrained(
                source.pretrained_name, dtype=self.dtype, attn_implementation="sdpa", **kwargs
            )
            processor = AutoProcessor.from_pretrained(source.pretrained_name, **kwargs)
        model.to(self.device)
        self.sampling_rate: int = processor.feature_extractor.sampling_rate
        self._max_new_tokens = model.generation_config.max_new_tokens or _MAX_NEW_TOKENS
        self._asr: Any = pipeline(
            "automatic-speech-recognition",
            model=model,
            tokenizer=processor.tokenizer,
            feature_extractor=processor.feature_extractor,
            dtype=self.dtype,
            device=self.device,
        )
        log.info("audio-to-text %s loaded on %s %s", model_id, self.device, self.dtype)

    def __call__(self, *, audio: Any, return_timestamps: bool | str = True, duration: float | None = None) -> dict[str, Any]:
        """The API's call: `audio` is the upload (an object with `.data`, or bytes)."""
        data = audio if isinstance(audio, (bytes, bytearray)) else audio.data
        return self.transcribe(AudioToTextInput(bytes(data), return_timestamps, duration))

    def transcribe(self, request: AudioToTextInput) -> dict[str, Any]:
        """Transcribe `request.audio`.

        Returns:
            `{"text": str, "chunks": [{"timestamp": [start, end], "text": str}, ...]}`; times in
            seconds from the start of the file, `end` may be `None` for a final open segment.

        Raises:
            InvalidRequestError: unknown `return_timestamps`, or word timestamps over 60 minutes.
            UnsupportedMediaError: no decodable audio in the upload.
        """
        mode = _timestamps_mode(request.return_timestamps)
        try:
            samples = decode_audio(request.audio, self.sampling_rate)
        except AudioDecodeError as exc:
            log.info("audio-to-text: %s", exc)
            raise UnsupportedMediaError(_AUDIO_FORMAT_ERROR) from exc
        duration = request.duration if request.duration is not None else len(samples) / self.sampling_rate
        kwargs = self._call_kwargs(mode, duration)
        log.debug("audio-to-text: %.1f s of audio, timestamps=%s, %s", duration, mode, kwargs)
        output = self._asr(
            {"raw": samples, "sampling_rate": self.sampling_rate},
            return_timestamps=mode,
            generate_kwargs={"max_new_tokens": self._max_new_tokens},
            **kwargs,
        )
        length = len(samples) / self.sampling_rate
        return {
            "text": output["text"],
            "chunks": [{"timestamp": _clamp(c["timestamp"], length), "text": c["text"]} for c in output.get("chunks", [])],
        }

    def _call_kwargs(self, mode: bool | str, duration: float) -> dict[str, Any]:
        cfg = self._config
        batch_size = cfg.batch_size
        if mode == "word":
            if duration > _WORD_TIMESTAMPS_MAX_S:
                raise InvalidRequestError(
                    f"Word timestamps are only supported for audio files up to 60 minutes for model {self.model_id}"
                )
            if duration > _LONG_WORD_TIMESTAMPS_S:
                batch_size = 4
        if duration <= cfg.chunk_length_s:
            return {}
        return {"chunk_length_s": cfg.chunk_length_s, "batch_size": batch_size, "ignore_warning": True}


def _clamp(timestamp: tuple[float | None, float | None], length: float) -> list[float | None]:
    """Keep times inside the audio: Whisper may stamp the last segment at the padded window's end."""
    return [None if t is None else round(min(max(float(t), 0.0), length), 2) for t in timestamp]


def _timestamps_mode(value: bool | str) -> bool | str:
    if isinstance(value, bool) or value == "word":
        return value
    raise InvalidRequestError(
        f"return_timestamps must be 'true', 'false', 'sentence' or 'word', got {value!r}."
    )
