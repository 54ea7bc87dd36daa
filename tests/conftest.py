"""Shared fixtures: where the read-only shared data lies (tests skip what needs it when absent)."""

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("HYBRIDBENCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def icg_root() -> Path:
    root = SHARED / "data" / "icg"
    if not root.is_dir():
        pytest.skip(f"no ICG data at {root}")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Eager steps on a few hundred numbers: intra-op threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
