"""GPU information for `/hardware/info` and `/hardware/stats`, as ai-runner reports it.

NVML (`nvidia-ml-py`, the `gpu` extra) first, as ai-runner does; else `torch.cuda` when torch
already runs on a GPU (no utilization figures there: NVML is the only source of those, so they
read 0); else no GPU: `{}`. Calls block, so handlers run them in a worker thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from .schemas import GPUComputeInfo, GPUUtilizationInfo

__all__ = ["HardwareInfo", "smallest_gpu_memory"]

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class HardwareInfo:
    """GPU facts; NVML is initialised on first use and shut down by `close()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._probed = False

    def _nvml_module(self) -> Any:
        with self._lock:
            if not self._probed:
                self._probed = True
                try:
                    import pynvml

                    pynvml.nvmlInit()
                    self._nvml = pynvml
                    log.info("NVML initialised: %d GPU(s)", pynvml.nvmlDeviceGetCount())
                except ImportError:
                    log.debug("nvidia-ml-py not installed; GPU facts come from torch.cuda if available")
                except Exception as exc:  # NVMLError: no driver, no GPU
                    log.info("NVML not available: %s", exc)
            return self._nvml

    def _devices(self) -> dict[int, dict[str, Any]]:
        nvml = self._nvml_module()
        if nvml is not None:
            devices: dict[int, dict[str, Any]] = {}
            try:
                for i in range(nvml.nvmlDeviceGetCount()):
                    handle = nvml.nvmlDeviceGetHandleByIndex(i)
                    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                    rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                    devices[i] = {
                        "id": _text(nvml.nvmlDeviceGetUUID(handle)),
                        "name": _text(nvml.nvmlDeviceGetName(handle)),
                        "memory_total": int(memory.total),
                        "memory_free": int(memory.free),
                        "major": int(major),
                        "minor": int(minor),
                        "utilization_compute": int(rates.gpu),
                        "utilization_memory": int(rates.memory),
                    }
            except Exception as exc:
                log.warning("failed to read GPU information from NVML: %s", exc)
            return devices
        return self._torch_devices()

    @staticmethod
    def _torch_devices() -> dict[int, dict[str, Any]]:
        # Only when something already imported torch: importing it here would cost seconds.
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return {}
        devices: dict[int, dict[str, Any]] = {}
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            uuid = getattr(props, "uuid", None)
            devices[i] = {
                "id": f"GPU-{uuid}" if uuid is not None else str(i),
                "name": props.name,
                "memory_total": int(total),
                "memory_free": int(free),
                "major": int(props.major),
                "minor": int(props.minor),
                "utilization_compute": 0,
                "utilization_memory": 0,
            }
        return devices

    def compute_info(self) -> dict[int, GPUComputeInfo]:
        return {i: GPUComputeInfo.model_validate(d) for i, d in self._devices().items()}

    def utilization_stats(self) -> dict[int, GPUUtilizationInfo]:
        return {i: GPUUtilizationInfo.model_validate(d) for i, d in self._devices().items()}

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception as exc:
                    log.debug("NVML shutdown failed: %s", exc)
                self._nvml = None
            self._probed = False


def smallest_gpu_memory() -> int | None:
    """Bytes of memory of this machine's smallest GPU (NVML, or torch if already imported);
    None without a GPU. Blocks briefly (NVML's init): call it at start-up."""
    info = HardwareInfo()
    try:
        devices = info._devices()
    finally:
        info.close()
    return min((int(d["memory_total"]) for d in devices.values()), default=None)
