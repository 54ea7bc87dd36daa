"""Driver-side progress: done / failed / running, and an ETA from the mean job time so far."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, name: str, total: int, skipped: int, stream: TextIO | None = None) -> None:
        self.name = name
        self.total = total
        self.skipped = skipped
        self.done = 0
        self.failed = 0
        self.start = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, ok: bool, running: int) -> None:
        self.done += 1
        self.failed += not ok
        elapsed = self.elapsed()
        eta = elapsed / self.done * (self.total - self.done)
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        line = (f"[{self.name}] |{'#' * filled}{'.' * (width - filled)}| {self.done}/{self.total} done, "
                f"{self.failed} failed, {min(running, self.total - self.done)} running "
                f"({self.skipped} done before) {elapsed:.0f} s, eta {eta:.0f} s")
        end = "\r" if self.interactive and self.done < self.total else "\n"
        print(line, end=end, file=self.stream, flush=True)
