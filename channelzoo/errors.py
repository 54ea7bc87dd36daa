"""Typed errors of the catalogue: each names the file and the field at fault."""

from __future__ import annotations


class ZooError(ValueError):
    """Bad channel input: a malformed file, an unknown channel or an invalid definition."""

    def __init__(self, message: str, file: str | None = None, field: str | None = None) -> None:
        self.file = file
        self.field = field
        where = ", ".join(p for p in (file and f"file {file}", field and f"field {field!r}") if p)
        super().__init__(f"{where}: {message}" if where else message)
