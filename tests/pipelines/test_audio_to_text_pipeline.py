"""audio-to-text on the tiny Whisper model: decoding real files, timestamp modes, chunking, limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_media import mp3, tone, truncated, video_with_audio, wav

from pipelines.batch.audio import AudioDecodeError, decode_audio, encode_wav
from pipelines.batch.audio_to_text import AudioToTextInput, AudioToTextPipeline
from pipelines.errors import InvalidRequestError, ModelLoadError, UnsupportedMediaError
from pipelines.testing import write_tiny_model


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.getbasetemp() / "tiny-audio-to-text"
    if not (out / "config.json").exists():
        write_tiny_model("audio-to-text", out)
    return out


@pytest.fixture(scope="module")
def asr(whisper_dir: Path) -> AudioToTextPipeline:
    return AudioToTextPipeline(str(whisper_dir), device="cpu")


def _check_chunks(result: dict[str, object], length: float) -> list[dict[str, object]]:
    chunks = result["chunks"]
    assert isinstance(chunks, list) and isinstance(result["text"], str)
    for chunk in chunks:
        assert set(chunk) == {"timestamp", "text"}
        start, end = chunk["timestamp"]
        assert 0.0 <= start <= length
        assert end is None or start <= end <= length
    return chunks


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "seconds"),
    [
        (lambda: wav(1.5, 16000, 1), 1.5),
        (lambda: wav(1.5, 44100, 2), 1.5),  # stereo 44.1 kHz: down-mixed and resampled
        (lambda: wav(1.5, 8000, 1), 1.5),
        (lambda: mp3(1.5), 1.5),
        (lambda: video_with_audio(1.5), 1.5),  # a video file: its audio track
    ],
    ids=["wav16k", "wav44k-stereo", "wav8k", "mp3", "mp4-video"],
)
def test_decode_any_container_to_16k_mono(make: object, seconds: float) -> None:
    samples = decode_audio(make(), 16000)  # type: ignore[operator]
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / 16000 - seconds) < 0.1
    assert 0.1 < float(np.abs(samples).max()) <= 1.0


def test_decode_truncated_keeps_the_audio_before_the_cut() -> None:
    for data in (mp3(2.0), wav(2.0, 44100, 2)):
        samples = decode_audio(truncated(data, 0.5), 16000)
        assert 0.7 < len(samples) / 16000 < 1.3


@pytest.mark.parametrize(
    "data",
    [
        b"definitely not audio" * 20,
        wav(1.0)[:44],  # a WAV header and no samples
        video_with_audio(1.0, with_audio=False),
        truncated(video_with_audio(1.0), 0.7),  # MP4 cut before its index (moov at the end)
    ],
    ids=["garbage", "header-only", "video-without-audio", "truncated-mp4"],
)
def test_decode_rejects_files_without_decodable_audio(data: bytes) -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(data, 16000)


def test_encode_wav_round_trip() -> None:
    samples = tone(0.25, 16000)[0]
    back = decode_audio(encode_wav(samples, 16000), 16000)
    assert len(back) == len(samples)
    assert np.allclose(back, samples, atol=1e-3)


# --- transcription ----------------------------------------------------------------------------


def test_no_timestamps(asr: AudioToTextPipeline) -> None:
    result = asr.transcribe(AudioToTextInput(wav(2.0), return_timestamps=False))
    assert result["chunks"] == [] and isinstance(result["text"], str)


@pytest.mark.parametrize("mode", [True, "word"])
def test_timestamps_inside_the_audio(asr: AudioToTextPipeline, mode: bool | str) -> None:
    result = asr.transcribe(AudioToTextInput(mp3(3.0), return_timestamps=mode))
    chunks = _check_chunks(result, 3.0 + 0.05)
    assert chunks, "the tiny model always emits tokens"
    assert "".join(str(c["text"]) for c in chunks).strip() == str(result["text"]).strip()


def test_silence_and_video_audio(asr: AudioToTextPipeline) -> None:
    _check_chunks(asr.transcribe(AudioToTextInput(wav(1.0, amplitude=0.0))), 1.05)
    _check_chunks(asr(audio=video_with_audio(1.0), return_timestamps=True, duration=None), 1.05)


def test_long_audio_runs_chunked(asr: AudioToTextPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, object]] = []
    call = asr._asr

    def spy(inputs: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return call(inputs, **kwargs)

    monkeypatch.setattr(asr, "_asr", spy)
    result = asr.transcribe(AudioToTextInput(wav(35.0, 16000), return_timestamps=True))
    assert seen[0]["chunk_length_s"] == 30 and seen[0]["batch_size"] == 16
    _check_chunks(result, 35.05)


def test_chunking_and_limits_follow_the_duration(asr: AudioToTextPipeline) -> None:
    assert asr._call_kwargs(True, 30.0) == {}
    assert asr._call_kwargs(True, 31.0)["batch_size"] == 16
    assert asr._call_kwargs("word", 150.0)["batch_size"] == 16
    assert asr._call_kwargs("word", 250.0)["batch_size"] == 4
    assert asr._call_kwargs(False, 250.0)["batch_size"] == 16
    with pytest.raises(InvalidRequestError, match="up to 60 minutes"):
        asr._call_kwargs("word", 3601.0)


def test_metadata_duration_is_trusted(asr: AudioToTextPipeline) -> None:
    # As ai-runner: the request's duration decides, even when the file is short.
    with pytest.raises(InvalidRequestError, match="60 minutes"):
        asr.transcribe(AudioToTextInput(wav(0.5), return_timestamps="word", duration=4000.0))


def test_bad_inputs(asr: AudioToTextPipeline) -> None:
    with pytest.raises(InvalidRequestError, match="return_timestamps"):
        asr.transcribe(AudioToTextInput(wav(0.5), return_timestamps="paragraph"))
    with pytest.raises(UnsupportedMediaError, match="Unsupported audio format"):
        asr.transcribe(AudioToTextInput(b"\x00" * 1000))


def test_missing_model_fails_to_load(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        AudioToTextPipeline(str(tmp_path / "nowhere"), device="cpu")
    with pytest.raises(ModelLoadError):
        AudioToTextPipeline("openai/not-cached-anywhere", model_dir=tmp_path, device="cpu")
