"""Typed input errors: each names the file and the field at fault; the CLI turns them into exit code 2."""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be used (a file, a config, a table), with the file and field it came from."""

    def __init__(self, message: str, file: str | None = None, field: str | None = None) -> None:
        self.file = file
        self.field = field
        where = ", ".join(p for p in (file and f"file {file}", field and f"field {field!r}") if p)
        super().__init__(f"{where}: {message}" if where else message)


class ZooError(InputError):
    """Bad channel input: a malformed file, an unknown channel or an invalid definition."""
