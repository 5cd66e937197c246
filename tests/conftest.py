import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ASR_SHARED_DATA", ROOT.parent / "shared" / "data"))
FSDD = SHARED_DATA / "fsdd" / "recordings"
YESNO = SHARED_DATA / "yesno" / "waves_yesno"

needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD not found at {FSDD}")
needs_yesno = pytest.mark.skipif(not YESNO.is_dir(), reason=f"yesno not found at {YESNO}")


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # Tests run on 2 cores next to each other; keep torch from oversubscribing. OMP_NUM_THREADS=1
    # (a machine another job shares) is honoured: two spinning OpenMP threads on one free core
    # made step-by-step decoders about 20x slower.
    import torch

    torch.set_num_threads(max(1, min(2, int(os.environ.get("OMP_NUM_THREADS", "2") or 2))))
