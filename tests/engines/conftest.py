"""Fixtures for the engine tests; the tiny sd-turbo-family model and Hugging Face offline come
from `tests/conftest.py`."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every engine test runs on one torch thread."""
