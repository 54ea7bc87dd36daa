"""Atomic file writes: readers see the old file or the new, never half of one; and the new file has
the mode any file the user creates would have (a temporary file is private, mode 0600, whatever the
umask, and a shared cluster folder must stay readable by the group)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, put straight back
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[str], object], prefix: str | None = None) -> Path:
    """``write(tmp)`` fills a temporary file beside ``path``, which then replaces ``path`` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
