"""Text-to-speech with VITS / MMS-TTS (transformers `VitsModel`), answering as ai-runner's route does.

ai-runner serves Parler-TTS (`parler-tts/parler-tts-large-v1`), which steers the voice with a
free-text `description`. `parler-tts` pins transformers 4.46.1 and does not import on
transformers 5, and transformers has no native Parler model, so this engine's default backend
is VITS: the family of `facebook/mms-tts-*` (1100+ languages, single speaker) and
`kakao-enterprise/vits-vctk` (109 English speakers), native in transformers, fast on CPU.
Parler-TTS needs its own image pinned to transformers 4.46.1 (see docs).

`description` is mapped to VITS's controls, deterministically:

- voice: on a multi-speaker model, "speaker 12" (or "speaker_id=12") picks that speaker;
  any other description picks a speaker by a stable hash of its text, so the same description
  always gets the same voice. Single-speaker models (MMS) have one voice.
- pace: "very slow" 0.6x, "slow"/"slowly" 0.8x, "fast"/"quick"/"rapid" 1.25x, "very fast" 1.5x,
  otherwise (e.g. "moderate speed") 1x.
- expressiveness: "monotone"/"flat" lowers the sampling noise (0.33), "expressive"/"animated"/
  "dramatic" raises it (0.8); the model's default otherwise.

Long text is split at sentence ends into pieces of at most 400 characters, each synthesised on
its own, and joined with 0.15 s of silence. The answer is a 16-bit mono WAV at the model's rate
(16 kHz for MMS; ai-runner's Parler answers at 44.1 kHz), as a `data:audio/wav;base64,` URL.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, ModelLoadError
from ..loading import pick_device, resolve_model_source
from .audio import encode_wav

__all__ = [
    "SpeechOutput",
    "TextToSpeechInput",
    "TextToSpeechPipeline",
    "VoiceSettings",
    "split_text",
    "voice_from_description",
]

log = logging.getLogger(__name__)

#: ai-runner's limits (`routes/text_to_speech.py`).
MAX_TEXT_CHARS = 10_000
MAX_DESCRIPTION_CHARS = 1_000
_PIECE_CHARS = 400
_PAUSE_S = 0.15
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_SPEAKER = re.compile(r"speaker(?:[ _-]?id)?\s*[:=#]?\s*(\d+)", re.IGNORECASE)
_PACES = (
    (re.compile(r"\bvery (slow|slowly)\b"), 0.6),
    (re.compile(r"\bvery (fast|quick|quickly|rapid|rapidly)\b"), 1.5),
    (re.compile(r"\b(slow|slowly)\b"), 0.8),
    (re.compile(r"\b(fast|quick|quickly|rapid|rapidly)\b"), 1.25),
)
_FLAT = re.compile(r"\b(monotone|monotonous|flat)\b")
_EXPRESSIVE = re.compile(r"\b(expressive|animated|dramatic|lively)\b")


@dataclass(frozen=True)
class TextToSpeechInput:
    """One text-to-speech request; `description` steers the voice (see the module docstring)."""

    text: str
    description: str = ""


@dataclass(frozen=True)
class VoiceSettings:
    """What a description selects: a speaker (None on single-speaker models), a pace, a noise scale."""

    speaker_id: int | None
    speaking_rate: float = 1.0
    #: None: the model's own default.
    noise_scale: float | None = None


@dataclass(frozen=True)
class SpeechOutput:
    """Generated speech: a WAV file and what it holds."""

    wav: bytes
    sample_rate: int
    num_samples: int
    voice: VoiceSettings

    @property
    def data_url(self) -> str:
        return "data:audio/wav;base64," + base64.b64encode(self.wav).decode("ascii")


def voice_from_description(description: str, num_speakers: int) -> VoiceSettings:
    """Map a Parler-style speaker description to VITS settings (deterministic).

    Raises:
        InvalidRequestError: an explicit speaker number the model does not have.
    """
    text = " ".join(description.lower().split())
    speaker_id: int | None = None
    if num_speakers > 1:
        match = _SPEAKER.search(text)
        if match:
            speaker_id = int(match.group(1))
            if speaker_id >= num_speakers:
                raise InvalidRequestError(
                    f"description asks for speaker {speaker_id}, but this model has speakers 0-{num_speakers - 1}."
                )
        else:
            speaker_id = zlib.crc32(text.encode()) % num_speakers
    rate = next((r for pattern, r in _PACES if pattern.search(text)), 1.0)
    noise: float | None = None
    if _FLAT.search(text):
        noise = 0.333
    elif _EXPRESSIVE.search(text):
        noise = 0.8
    return VoiceSettings(speaker_id=speaker_id, speaking_rate=rate, noise_scale=noise)


def split_text(text: str, max_chars: int = _PIECE_CHARS) -> list[str]:
    """Split at sentence ends into pieces of at most `max_chars` (a longer sentence is cut at spaces)."""
    pieces: list[str] = []
    current = ""
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        if not sentence:
            continue
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces


class TextToSpeechPipeline:
    """A VITS text-to-speech model, loaded in `__init__` (call it in a worker thread).

    Args:
        model_id: Hugging Face id or local folder of a VITS model (`facebook/mms-tts-eng`, ...).
        model_dir: ai-runner's MODEL_DIR: local models and the Hugging Face cache.
        device: `"cuda"`, `"cpu"`, ...; default CUDA when available, else CPU. VITS runs in float32.

    Raises:
        ModelLoadError: the model cannot be found or loaded, or is not a VITS model (Parler-TTS
            ids among them: they need a separate image pinned to transformers 4.46).
    """

    task = "text-to-speech"

    def __init__(self, model_id: str, *, model_dir: Path | None = None, device: str | None = None) -> None:
        from transformers import AutoTokenizer, VitsModel
        from transformers.utils import cached_file

        self.model_id = model_id
        self.device = pick_device(device)
        source = resolve_model_source(model_id, model_dir, probe_file="config.json")
        kwargs = source.from_pretrained_kwargs()
        try:
            # The raw config: transformers 5 cannot even parse a Parler-TTS config.
            config_file = cached_file(source.pretrained_name, "config.json", **kwargs)
            model_type = str(json.loads(Path(str(config_file)).read_text()).get("model_type", ""))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"Could not load text-to-speech model {model_id!r}: {exc}") from exc
        if model_type != "vits":
            hint = " Parler-TTS needs a separate image pinned to transformers 4.46." if "parler" in model_type else ""
            raise ModelLoadError(
                f"text-to-speech model {model_id!r} is a {model_type!r} model; this engine serves VITS / "
                f"MMS-TTS models (model_type 'vits').{hint}"
            )
        try:
            model = VitsModel.from_pretrained(source.pretrained_name, **kwargs)
            self._tokenizer: Any = AutoTokenizer.from_pretrained(source.pretrained_name, **kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as exc:
            raise ModelLoadError(f"Could not load text-to-speech model {model_id!r}: {exc}") from exc
        self._model: Any = model.to(self.device).eval()
        self.sample_rate: int = int(model.config.sampling_rate)
        self.num_speakers: int = int(model.config.num_speakers)
        self._default_noise_scale = float(model.noise_scale)
        log.info("text-to-speech %s loaded (VITS, %d speaker(s)) on %s", model_id, self.num_speakers, self.device)

    def __call__(self, *, text: str, description: str = "", **_: Any) -> dict[str, Any]:
        """The API's call: returns `AudioResponse`'s shape, `{"audio": {"url": "data:audio/wav;base64,..."}}`."""
        return {"audio": {"url": self.synthesize(TextToSpeechInput(text, description)).data_url}}

    def synthesize(self, request: TextToSpeechInput) -> SpeechOutput:
        """Speak `request.text` in the voice `request.description` selects.

        Raises:
            InvalidRequestError: empty or over-long text or description, no speakable characters,
                or a speaker the model does not have.
        """
        import numpy as np
        import torch

        text = request.text.strip()
        if not text:
            raise InvalidRequestError("Text input must be provided.")
        if len(request.text) > MAX_TEXT_CHARS:
            raise InvalidRequestError(f"text exceeds {MAX_TEXT_CHARS} characters")
        if len(request.description) > MAX_DESCRIPTION_CHARS:
            raise InvalidRequestError(f"description exceeds {MAX_DESCRIPTION_CHARS} characters")
        voice = voice_from_description(request.description, self.num_speakers)
        pause = np.zeros(int(_PAUSE_S * self.sample_rate), dtype=np.float32)
        parts: list[np.ndarray] = []
        self._model.noise_scale = self._default_noise_scale if voice.noise_scale is None else voice.noise_scale
        for piece in split_text(text):
            inputs = self._tokenizer(piece, return_tensors="pt")
            ids = inputs["input_ids"]
            if ids.shape[-1] == 0 or not bool((ids != self._tokenizer.pad_token_id).any()):
                continue  # nothing this model's alphabet can say in this piece
            with torch.inference_mode():
                waveform = self._model(
                    **inputs.to(self.device), speaker_id=voice.speaker_id, speaking_rate=voice.speaking_rate
                ).waveform
            if parts:
                parts.append(pause)
            parts.append(waveform[0].float().cpu().numpy())
        if not parts:
            raise InvalidRequestError(f"text has no characters model {self.model_id} can speak.")
        samples = np.concatenate(parts)
        return SpeechOutput(encode_wav(samples, self.sample_rate), self.sample_rate, len(samples), voice)
