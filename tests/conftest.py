"""Suite-wide settings.

Tests use tiny tensors, for which torch's intra-op threads cost far more than they save on a
shared 2-core machine (measured: ~20x slower tiny-model steps with 2 threads under load).
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
