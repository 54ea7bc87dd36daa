"""Shared fixtures: the committed test data (tests/data) and the full shared data, when present.

Tests read single ICG folders and the CA1 cell from ``tests/data`` (a dozen ICG folders, good and bad,
and the CA1 SWC files; see its README), so they run on a fresh clone. Tests that need the whole ICG set
read ``$HYBRIDBENCH_SHARED/data/icg`` (default ``../shared`` beside the repository) and skip, saying so,
where it is absent.
"""

import gzip
import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("HYBRIDBENCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FULL_ICG = SHARED / "data" / "icg"
DATA = Path(__file__).resolve().parent / "data"
ICG_FIXTURE = DATA / "icg"
NEEDS_FULL_ICG = f"needs the full ICG set at {FULL_ICG} (set HYBRIDBENCH_SHARED); tests/data holds only a dozen folders"

needs_full_icg = pytest.mark.skipif(not FULL_ICG.is_dir(), reason=NEEDS_FULL_ICG)


@pytest.fixture(scope="session")
def icg_root() -> Path:
    """The full ICG set (every clone), for tests whose answers are counts or fits over all of it."""
    if not FULL_ICG.is_dir():
        pytest.skip(NEEDS_FULL_ICG)
    return FULL_ICG


@pytest.fixture(scope="session")
def morphologies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the committed SWC files, unpacked (``ca1_n120.swc``, ``ca1_n120_single_point_soma.swc``)."""
    out = tmp_path_factory.mktemp("morphologies")
    for packed in (DATA / "morphologies").glob("*.swc.gz"):
        (out / packed.name.removesuffix(".gz")).write_bytes(gzip.decompress(packed.read_bytes()))
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Eager steps on a few hundred numbers: intra-op threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
