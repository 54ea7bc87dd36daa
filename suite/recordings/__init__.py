"""Current-clamp recordings from files: one reader per format, each giving ``Sweep``s in nA, mV and ms.

``read_recording(paths)`` takes files and folders and picks each file's reader by its suffix
(``READERS``); a file that cannot be used raises an ``InputError`` naming it (the CLI's exit 2).
Nothing here knows a particular cell: units come from the file where it carries them, else from
the caller (``Units``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import import_module
from pathlib import Path

from suite.recordings.sweep import Sweep, Units, check_sweep

# suffix -> "module:function"; each function takes (list of paths, Units) and returns sweeps.
READERS: dict[str, str] = {
    ".ibw": "suite.recordings.igor:read_igor",
    ".csv": "suite.recordings.csvfile:read_csv",
    ".abf": "suite.recordings.abf:read_abf",
    ".nwb": "suite.recordings.nwb:read_nwb",
}

__all__ = ["READERS", "Sweep", "Units", "check_sweep", "read_recording", "recording_files"]


def recording_files(paths: Iterable[str | Path]) -> list[Path]:
    from channelzoo.errors import InputError

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in READERS)
            if not found:
                raise InputError(f"no recording files ({', '.join(sorted(READERS))}) in the folder", file=str(p))
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in READERS:
                raise InputError(f"unknown recording format {p.suffix!r}; known: {', '.join(sorted(READERS))}",
                                 file=str(p))
            out.append(p)
        else:
            raise InputError("no such file or folder", file=str(p))
    return out


def read_recording(paths: Sequence[str | Path], units: Units | None = None) -> list[Sweep]:
    """Every sweep in ``paths`` (files or folders), sorted by (cell, sweep); each checked by ``check_sweep``."""
    from channelzoo.errors import InputError

    units = units or Units()
    by_suffix: dict[str, list[Path]] = {}
    for f in recording_files(paths):
        by_suffix.setdefault(f.suffix.lower(), []).append(f)
    sweeps: list[Sweep] = []
    for suffix, files in by_suffix.items():
        module, _, fn = READERS[suffix].partition(":")
        sweeps.extend(getattr(import_module(module), fn)(files, units))
    seen: dict[tuple[str, int], str] = {}
    for s in sweeps:
        check_sweep(s)
        if (s.cell, s.sweep) in seen:
            raise InputError(f"sweep {s.sweep} of cell {s.cell!r} also in {seen[(s.cell, s.sweep)]}", file=s.source)
        seen[(s.cell, s.sweep)] = s.source
    return sorted(sweeps, key=lambda s: (s.cell, s.sweep))
