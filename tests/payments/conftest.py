from __future__ import annotations

import pytest
from evm_helpers import Chain, local_chain


@pytest.fixture
def chain() -> Chain:
    return local_chain()
