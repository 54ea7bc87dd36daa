"""Build and load the C kernels (simulators, hybrid, gate fitting) with the machine's own C compiler.

Each kernel is one C source string compiled on first use with ``-march=native`` (so it uses the CPU's
vector width), with OpenMP when the compiler has it, and cached on disk under a name that hashes the
source, the flags and the machine: a changed kernel or flag rebuilds, an unchanged one loads at once.
Without a compiler, or with ``$HYBRIDBENCH_NO_NATIVE`` set, ``compiled_library`` returns None and every
caller falls back to its torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

BASE_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")


def cache_dir() -> Path:
    """Where compiled kernels (and NEURON's compiled mechanisms) live: $HYBRIDBENCH_CACHE, else ~/.cache/hybridbench."""
    return Path(os.environ.get("HYBRIDBENCH_CACHE", Path.home() / ".cache" / "hybridbench"))


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")


def compiled_library(name: str, source: str, flags: Sequence[str] = ()) -> ctypes.CDLL | None:
    """The library built from ``source`` with ``BASE_FLAGS + flags`` (built now if not cached), or None."""
    cc = compiler()
    if os.environ.get("HYBRIDBENCH_NO_NATIVE") or cc is None:
        return None
    all_flags = [*BASE_FLAGS, *flags]
    key = "\0".join([source, *all_flags, cc, platform.machine(), platform.processor()])
    path = cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if not path.exists() and not _build(cc, source, all_flags, path):
        return None
    return ctypes.CDLL(str(path))


def _build(cc: str, source: str, flags: list[str], out: Path) -> bool:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{out.stem}.c"
        src.write_text(source)
        lib = Path(tmp) / out.name
        for openmp in (["-fopenmp"], []):  # OpenMP if the compiler has it
            try:
                done = subprocess.run([cc, *openmp, *flags, str(src), "-o", str(lib), "-lm"], capture_output=True,
                                      text=True)
            except OSError:
                return False
            if done.returncode == 0:
                os.replace(lib, out)  # atomic: a concurrent loader never sees a half-written library
                return True
    return False
