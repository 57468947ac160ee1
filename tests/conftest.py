import os
import random

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A numpy Generator whose seed is printed, so a failure can be replayed."""
    seed = int(os.environ.get("SEQTOOLS_TEST_SEED", random.randrange(2**32)))
    print(f"rng seed: {seed} (replay with SEQTOOLS_TEST_SEED={seed})")
    return np.random.default_rng(seed)
