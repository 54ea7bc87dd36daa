"""One result part, verified before it counts: a readable footer, a schema tag we read, rows of its own key.

A part's file name is ``part-KEY.parquet``; it counts as the stored result of job KEY only if it
passes ``check_part``. Anything else (a truncated or foreign file, a newer schema, a renamed file)
is a ``StoreError`` naming the file and the field at fault.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from channelzoo.errors import InputError

SCHEMA_VERSION = 1
VERSION_KEY = b"hybridbench.results.schema"
PREFIX, SUFFIX = "part-", ".parquet"
STALE_TMP_S = 24 * 3600  # a temporary file of another machine's writer is left alone this long
_HOST = socket.gethostname().replace(".", "_")
_TMP_OWNER = re.compile(r"\.~(?P<host>[^.]+)-(?P<pid>\d+)~\.")


class StoreError(InputError):
    """A result table this version cannot read; names the file."""


class NewerSchemaError(StoreError):
    """A part written by a newer hybridbench: not bad, so never moved aside; this version stops instead."""


def key_of(path: Path) -> str:
    return path.name.removeprefix(PREFIX).removesuffix(SUFFIX)


@dataclass(frozen=True)
class Part:
    """A checked part: its file, job key, Arrow schema and number of rows."""

    path: Path
    key: str
    schema: pa.Schema
    rows: int


def _stored_keys(f: pq.ParquetFile, schema: pa.Schema) -> set[str]:
    """The distinct keys of a part: from the row groups' min/max statistics where they are written
    (pyarrow writes them), else from the column itself."""
    column = schema.get_field_index("key")
    meta = f.metadata
    found: set[str] = set()
    for g in range(meta.num_row_groups):
        chunk = meta.row_group(g).column(column)
        stats = chunk.statistics
        if chunk.num_values and (stats is None or not stats.has_min_max):
            return {str(k) for k in f.read(columns=["key"]).column("key").unique().to_pylist()}
        if chunk.num_values:
            found |= {v.decode() if isinstance(v, bytes) else str(v) for v in (stats.min, stats.max)}
    return found


def check_part(path: Path) -> Part:
    """The part, if it is one of ours; a StoreError naming the file and what is wrong otherwise.

    Reads the footer only (the key from its statistics), so checking every part of a sweep stays cheap.
    """
    try:
        with pq.ParquetFile(path) as f:
            schema = f.schema_arrow
            rows = f.metadata.num_rows
            keys = _stored_keys(f, schema) if "key" in schema.names else None
    except (pa.ArrowException, OSError) as e:
        raise StoreError(f"not a readable Parquet file ({e}); truncated or not a result part",
                         file=str(path), field="footer") from None
    tag = (schema.metadata or {}).get(VERSION_KEY)
    if tag is None:
        raise StoreError("has no schema tag (not written by hybridbench?)", file=str(path), field="schema")
    try:
        version = int(tag)
    except ValueError:
        raise StoreError(f"schema tag {tag!r} is not a version number", file=str(path), field="schema") from None
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(f"result schema {version} is newer than this version reads ({SCHEMA_VERSION}); "
                               "upgrade hybridbench", file=str(path), field="schema")
    if keys is None:
        raise StoreError("has no 'key' column", file=str(path), field="key")
    if keys and keys != {key_of(path)}:  # a job may have no rows: nothing to contradict its name
        shown = ", ".join(sorted(keys)[:3])
        raise StoreError(f"holds key {shown}, not the {key_of(path)!r} its name says (a renamed or copied file?)",
                         file=str(path), field="key")
    return Part(path, key_of(path), schema, rows)


def read_part(path: Path) -> pa.Table:
    """The rows of a checked part."""
    try:
        with pq.ParquetFile(path) as f:
            return f.read()
    except (pa.ArrowException, OSError) as e:
        raise StoreError(f"not a readable Parquet file ({e})", file=str(path), field="data") from None


def tmp_prefix(path: Path) -> str:
    """The prefix of a temporary file for ``path``: hidden, and naming the host and process writing it."""
    return f".{path.name}.~{_HOST}-{os.getpid()}~."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def stale_temporaries(folder: Path, now: float | None = None) -> list[Path]:
    """Temporary files under ``folder`` left by killed writes: their process on this host is gone, or they
    are older than a day (whoever wrote them: another host, or a version before temporaries named their writer)."""
    now = time.time() if now is None else now
    out = []
    for path in folder.rglob(".*.tmp") if folder.is_dir() else ():
        owner = _TMP_OWNER.search(path.name)
        stale = bool(owner) and owner["host"] == _HOST and not _alive(int(owner["pid"]))
        with contextlib.suppress(OSError):
            stale = stale or now - path.stat().st_mtime > STALE_TMP_S  # no write takes a day
        if stale:
            out.append(path)
    return out


def remove_all(paths: Iterable[Path], warn: Callable[[str], None]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            warn(f"removed {path}, left by a write that was killed")


def _kind(t: pa.DataType) -> str | None:
    """What a column's type is to pandas when parts are concatenated (None: no values, fits any)."""
    if pa.types.is_null(t):
        return None
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = _kind(t.value_type)
        return f"list of {inner}" if inner else "list"
    return str(t)


def type_conflicts(parts: Iterable[Part]) -> list[StoreError]:
    """A column whose values are numbers in some parts and text in others cannot make one table: for each
    such column, an error naming a part of the rarer type and the column."""
    kinds: dict[str, dict[str, list[Part]]] = {}
    for part in parts:
        for f in part.schema:
            kind = _kind(f.type)
            if kind is not None:
                kinds.setdefault(f.name, {}).setdefault(kind, []).append(part)
    out = []
    for column, by_kind in kinds.items():
        if len(by_kind) > 1:
            ranked = sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0]))
            (common, many), (odd, few) = ranked[0], ranked[-1]
            out.append(StoreError(f"column {column!r} holds {odd} here but {common} in {len(many)} other part(s); "
                                  "one table cannot hold both (move this part aside, or rerun its job)",
                                  file=str(few[0].path), field=column))
    return out
