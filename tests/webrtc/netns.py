"""A loopback-only network namespace for the calling thread (Linux, root).

Network namespaces belong to threads: `loopback_namespace()` moves the current (main) thread
into a fresh namespace with only `lo` up, and back afterwards. Sockets keep the namespace of
the thread that created them, so everything the event loop (main thread) creates, and every
subprocess it starts (Chromium), sees only 127.0.0.1: ICE cannot reach any other address.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["loopback_namespace", "namespace_unavailable"]

_CLONE_NEWNET = 0x40000000


def namespace_unavailable() -> str | None:
    """Why a loopback namespace cannot be made here, or None."""
    if not os.path.exists("/proc/thread-self/ns/net"):
        return "no /proc/thread-self/ns/net (not Linux?)"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or in CI)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


@contextmanager
def loopback_namespace() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
            yield
        finally:
            if libc.setns(original, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace failed")
    finally:
        os.close(original)
