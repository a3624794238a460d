"""The runner API's batch tasks: one module per task, named after it, plus their helpers.

The registry (`pipelines.registry.IMPLEMENTATIONS`) imports each task's module on its first
load; this package imports none of them, so importing one task does not import the others.

    text_to_image.py image_to_image.py image_to_video.py upscale.py    diffusers tasks
    diffusion.py     DiffusersPipeline: loading, families, seeds, safety, LoRAs, memory
    lightning.py     ByteDance/SDXL-Lightning ids (an SDXL base with a distilled UNet)
    loras.py         per-request LoRAs
    safety.py        the safety checker (flags images, leaves them unaltered)
    outputs.py       GeneratedImage
    audio_to_text.py text_to_speech.py audio.py (decode/encode)          audio tasks
    image_to_text.py segment_anything_2.py                               vision tasks

The `llm` task is `pipelines.llm`; the live (frames -> frames) pipelines are `pipelines.live`.
"""
