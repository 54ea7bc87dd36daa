"""Build and load the C kernels: every ``.c`` file here, compiled once per machine into one shared library.

Each file is compiled with ``-O3 -march=native`` (the CPU's own vector width) and its own flags, with OpenMP
when the compiler has it, and the objects are linked into one library cached on disk under a name that hashes
the sources and the header, the compiler's identity (``cc --version``), the flags and the CPU (its model and
feature flags): a changed kernel, compiler or flag rebuilds, and a home folder shared by the nodes of a cluster
holds one library per kind of CPU, so no node loads code built for instructions it lacks. The compiler's
output is kept in a log beside the library; a failed build is reported once, as a warning naming the log.
Without a compiler, or with ``$HYBRIDBENCH_NO_NATIVE`` set, ``library()`` is None and every caller runs its
torch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from channelzoo.atomic import atomic_write

SOURCE_DIR = Path(__file__).parent
HEADER = "hybridbench.h"
BASE_FLAGS = ("-O3", "-march=native", "-fPIC")
LINK_FLAGS = ("-shared",)
OPENMP = ("-fopenmp",)


@dataclass(frozen=True)
class Unit:
    """One object file of the library: a source and the flags it is compiled with."""

    name: str
    source: str
    flags: tuple[str, ...] = ()


# The flags each kernel was tuned (and its results pinned) with.
_HYBRID = ("-std=c99", "-ffp-contract=fast")  # fused multiply-adds: the MLP's products and sums are most of a step
# gnu11, not c99: ISO modes turn off FMA contraction. No loop-distribute-patterns: GCC would turn the short row
# copies back into memcpy calls.
_GATES = ("-std=gnu11", "-fno-tree-loop-distribute-patterns")
UNITS = (
    Unit("membrane", "membrane.c", ("-fno-math-errno",)),
    Unit("cable", "cable.c", _HYBRID),
    Unit("hybrid", "hybrid.c", _HYBRID),
    Unit("gates_f32", "gates.c", _GATES),
    Unit("gates_f64", "gates.c", (*_GATES, "-DGATES_DOUBLE")),
)


def cache_dir() -> Path:
    """Where compiled kernels (and NEURON's compiled mechanisms) live: $HYBRIDBENCH_CACHE, else ~/.cache/hybridbench."""
    return Path(os.environ.get("HYBRIDBENCH_CACHE", Path.home() / ".cache" / "hybridbench"))


def compiler() -> str | None:
    """The C compiler: $CC, else gcc, else cc (None when there is none)."""
    return shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")


@functools.cache
def compiler_identity(cc: str) -> str:
    """The compiler's path and ``--version`` text: an upgraded compiler builds afresh."""
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
        version = done.stdout + done.stderr
    except (OSError, subprocess.SubprocessError) as err:
        version = f"unknown ({err})"
    return f"{os.path.realpath(cc)}\n{version}"


def cpu_identity(cpuinfo: str | None = None, cc: str | None = None) -> str:
    """The CPU's model and feature flags (what ``-march=native`` compiles for).

    From ``/proc/cpuinfo`` (its first processor's ``model name`` and ``flags``, or ``Features`` on ARM) where
    there is one, else from the macros the compiler predefines under ``-march=native``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key in ("model name", "flags", "features", "cpu part", "cpu implementer") and key not in fields:
            words = value.split()
            fields[key] = " ".join(sorted(words) if key in ("flags", "features") else words)
    ident = [platform.machine(), *(f"{k}: {v}" for k, v in sorted(fields.items()))]
    if "flags" not in fields and "features" not in fields and cc is not None:
        try:
            done = subprocess.run([cc, "-march=native", "-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                                  text=True, timeout=60)
            ident.append("\n".join(sorted(done.stdout.splitlines())))
        except (OSError, subprocess.SubprocessError):
            ident.append(platform.processor())
    return "\n".join(ident)


def read_sources(source_dir: Path = SOURCE_DIR) -> dict[str, str]:
    """Every ``.c`` and ``.h`` file of the kernels, by name."""
    return {p.name: p.read_text() for p in sorted([*source_dir.glob("*.c"), *source_dir.glob("*.h")])}


def unit_flags(unit: Unit) -> list[str]:
    return [*BASE_FLAGS, *unit.flags]


def cache_key(sources: Mapping[str, str], compiler_id: str, flags: Sequence[Sequence[str]], cpu: str) -> str:
    """A hash of everything the library's machine code depends on."""
    h = hashlib.sha256()
    for part in (*(f"{name}\0{text}" for name, text in sorted(sources.items())), compiler_id,
                 *("\0".join(f) for f in flags), cpu):
        h.update(part.encode())
        h.update(b"\1")
    return h.hexdigest()[:20]


def _run(cmd: list[str], log: list[str]) -> bool:
    log.append("$ " + " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as err:
        log.append(str(err))
        return False
    log.append(done.stdout + done.stderr)
    log.append(f"exit status {done.returncode}")
    return done.returncode == 0


def build(cc: str, source_dir: Path, out: Path, units: Sequence[Unit] = UNITS) -> bool:
    """Compile ``units`` from ``source_dir`` and link them into ``out`` (atomically); the compiler's output goes
    to ``out`` with suffix ``.log``. False when the build failed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    ok = False
    with tempfile.TemporaryDirectory() as tmp:
        for openmp in (OPENMP, ()):  # OpenMP if the compiler has it
            log.append(f"# with {' '.join(openmp) or 'no OpenMP'}")
            objects = []
            for unit in units:
                obj = Path(tmp) / f"{unit.name}.o"
                if not _run([cc, *openmp, *unit_flags(unit), "-I", str(source_dir), "-c",
                             str(source_dir / unit.source), "-o", str(obj)], log):
                    break
                objects.append(str(obj))
            else:
                lib = Path(tmp) / out.name
                if _run([cc, *openmp, *LINK_FLAGS, *objects, "-o", str(lib), "-lm"], log):
                    # atomic, and by a temporary file beside ``out``: a rename from /tmp fails across devices
                    # (a cluster's home folder); a concurrent loader never sees a half-written library
                    atomic_write(out, lambda dst, src=lib: shutil.copyfile(src, dst))
                    ok = True
                    break
    out.with_suffix(".log").write_text("\n".join(log) + "\n")
    return ok


def library_path(cc: str, source_dir: Path = SOURCE_DIR, units: Sequence[Unit] = UNITS) -> Path:
    key = cache_key(read_sources(source_dir), compiler_identity(cc), [unit_flags(u) for u in units],
                    cpu_identity(cc=cc))
    return cache_dir() / f"hybridbench-{key}.so"


def load_from(source_dir: Path = SOURCE_DIR, units: Sequence[Unit] = UNITS) -> ctypes.CDLL | None:
    """The library built from ``source_dir`` (built now unless cached), or None: no compiler,
    ``$HYBRIDBENCH_NO_NATIVE`` set, or a failed build (warned once per call, naming the log)."""
    cc = compiler()
    if os.environ.get("HYBRIDBENCH_NO_NATIVE") or cc is None:
        return None
    path = library_path(cc, source_dir, units)
    if not path.exists() and not build(cc, source_dir, path, units):
        warnings.warn(f"the C kernels did not build (compiler output: {path.with_suffix('.log')}); "
                      "running the torch paths instead", RuntimeWarning, stacklevel=3)
        return None
    return ctypes.CDLL(str(path))
