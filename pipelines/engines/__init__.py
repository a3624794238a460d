"""ONNX export and TensorRT engines for the real-time diffusion pipeline.

- `onnx_export`: the UNet and VAE encoder/decoder as ONNX with dynamic batch and resolution
  axes, checked against PyTorch with onnxruntime (runs on the CPU).
- `cache`: the engine cache's key, manifest and staleness rules (pure Python).
- `build`: TensorRT engine builds from those ONNX files (needs TensorRT and a GPU).

The runtime side is `pipelines.live.tensorrt_backend.TensorRTBackend`.
"""
