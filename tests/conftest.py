import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

# the test tensors are tiny: one thread is as fast and immune to a busy machine. SLOTH_TORCH_THREADS=2
# runs the suite on two: float comparisons must hold at any thread count (tests/noise.py)
torch.set_num_threads(max(1, int(os.environ.get("SLOTH_TORCH_THREADS", "1"))))


@pytest.fixture(scope="session")
def sd15():
    from unets import sd15_unet

    return sd15_unet(seed=0)


@pytest.fixture(scope="session")
def sdxl():
    from unets import sdxl_like_unet

    return sdxl_like_unet(seed=0)
