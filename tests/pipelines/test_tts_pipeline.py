"""text-to-speech on the tiny VITS model: description -> voice, long text, WAV output, errors."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from pipelines.batch.audio import decode_audio
from pipelines.batch.text_to_speech import (
    TextToSpeechInput,
    TextToSpeechPipeline,
    VoiceSettings,
    split_text,
    voice_from_description,
)
from pipelines.errors import InvalidRequestError, ModelLoadError
from pipelines.testing import write_tiny_model

PARLER_DEFAULT = "A male speaker delivers a slightly expressive and animated speech with a moderate speed and pitch."


@pytest.fixture(scope="module")
def tts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.getbasetemp() / "tiny-text-to-speech"
    if not (out / "config.json").exists():
        write_tiny_model("text-to-speech", out)
    return out


@pytest.fixture(scope="module")
def tts(tts_dir: Path) -> TextToSpeechPipeline:
    return TextToSpeechPipeline(str(tts_dir), device="cpu")


def _read_wav(data: bytes) -> tuple[int, int, np.ndarray]:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getsampwidth() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), w.getnchannels(), frames


def test_description_maps_to_voice() -> None:
    assert voice_from_description(PARLER_DEFAULT, 1) == VoiceSettings(speaker_id=None, speaking_rate=1.0, noise_scale=0.8)
    assert voice_from_description("Speaker 3 talks very fast in a monotone voice", 4) == VoiceSettings(3, 1.5, 0.333)
    assert voice_from_description("speaker_id=2, slowly", 4) == VoiceSettings(2, 0.8, None)
    assert voice_from_description("very slow", 1).speaking_rate == 0.6
    assert voice_from_description("a quick female voice", 1).speaking_rate == 1.25
    # Same description, same voice; different descriptions spread over the speakers.
    a = voice_from_description("A calm female voice", 109)
    assert a == voice_from_description("a  calm FEMALE voice", 109)
    voices = {voice_from_description(f"voice number {i}", 109).speaker_id for i in range(40)}
    assert len(voices) > 20
    with pytest.raises(InvalidRequestError, match="speakers 0-3"):
        voice_from_description("speaker 4", 4)


def test_split_text() -> None:
    assert split_text("One. Two!  Three?\nFour") == ["One. Two! Three? Four"]
    pieces = split_text("First sentence here. " * 50, max_chars=100)
    assert all(len(p) <= 100 for p in pieces) and len(pieces) > 5
    assert " ".join(pieces) == ("First sentence here. " * 50).strip()
    long_word_run = "word " * 300
    assert all(len(p) <= 100 for p in split_text(long_word_run, max_chars=100))
    assert split_text("   ") == []


def test_synthesize_wav(tts: TextToSpeechPipeline) -> None:
    out = tts.synthesize(TextToSpeechInput("Hello world, this is a test.", PARLER_DEFAULT))
    rate, channels, frames = _read_wav(out.wav)
    assert (rate, channels) == (16000, 1) == (out.sample_rate, 1)
    assert len(frames) == out.num_samples > 1000
    assert np.abs(frames).max() > 0
    # PyAV reads it too, as any client would.
    assert len(decode_audio(out.wav, 16000)) == out.num_samples
    assert out.data_url.startswith("data:audio/wav;base64,UklGR")  # "RIFF"


def test_description_changes_voice_and_pace(tts: TextToSpeechPipeline) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    slow = tts.synthesize(TextToSpeechInput(text, "speaker 1, very slow"))
    fast = tts.synthesize(TextToSpeechInput(text, "speaker 1, very fast"))
    assert slow.voice.speaker_id == fast.voice.speaker_id == 1
    assert slow.num_samples > fast.num_samples


def test_long_text_is_split_and_joined(tts: TextToSpeechPipeline) -> None:
    sentence = "This sentence is spoken again and again. "
    one = tts.synthesize(TextToSpeechInput(sentence, "speaker 0"))
    many = tts.synthesize(TextToSpeechInput(sentence * 30, "speaker 0"))  # ~1200 chars: 3+ pieces
    assert many.num_samples > 20 * one.num_samples


def test_api_call_shape(tts: TextToSpeechPipeline) -> None:
    result = tts(text="hi there", description="")
    assert set(result) == {"audio"} and result["audio"]["url"].startswith("data:audio/wav;base64,")


@pytest.mark.parametrize(
    ("text", "description", "match"),
    [
        ("   ", "", "must be provided"),
        ("x" * 10_001, "", "exceeds 10000"),
        ("hello", "d" * 1001, "exceeds 1000"),
        ("日本語のテキスト", "", "no characters"),
    ],
)
def test_bad_requests(tts: TextToSpeechPipeline, text: str, description: str, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        tts.synthesize(TextToSpeechInput(text, description))


def test_non_vits_model_is_refused(tmp_path: Path) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'bert' model; this engine serves VITS"):
        TextToSpeechPipeline(str(tmp_path), device="cpu")


def test_parler_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "parler_tts", "architectures": ["ParlerTTSForConditionalGeneration"]}')
    with pytest.raises(ModelLoadError, match="'parler_tts' model.*separate image pinned to transformers 4.46"):
        TextToSpeechPipeline(str(tmp_path), device="cpu")
