"""Tiny random-weight models of each task's real architecture: test fixtures, not real models.

Only `livestream models tiny` (`livestream.cli`), the tests and the benchmarks import this
package; no runtime module does (`tests/test_import_graph.py` checks it).

    models.py           write_tiny_model(task, out): the task -> builder table, SD 1.x text-to-image
    parts.py            what the builders share: byte-level CLIP tokenizer, SD UNet/VAE/scheduler
    visual.py           instruct-pix2pix, SDXL, SD3, FLUX, SVD (image-to-video), x4 upscaler
    streamdiffusion.py  the sd-turbo family with its TAESD, for the live `streamdiffusion` pipeline
    llm.py              a Llama-3-style chat model, tokenizer and chat template
    audio.py            Whisper (audio-to-text) and VITS/MMS-TTS (text-to-speech)
    vision.py           BLIP captioning (image-to-text) and SAM 2 (segment-anything-2)
    media_files.py      not a model: tones and a small MP4 encoded with PyAV, for the audio tests and benchmarks
"""

from .models import TINY_TASKS, write_tiny_model

__all__ = ["TINY_TASKS", "write_tiny_model"]
