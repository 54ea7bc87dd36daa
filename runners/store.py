"""The result store: one Parquet part file per job, hive-partitioned by experiment.

A part is written to a temporary file and renamed, so a part that exists is complete; its
presence is what marks a job done, which makes a killed sweep resumable without duplicates.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from channelzoo.errors import InputError

SCHEMA_VERSION = 1
_VERSION_KEY = b"hybridbench.results.schema"


class StoreError(InputError):
    """A result table this version cannot read; names the file."""


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """``root/tables/experiment=NAME/part-KEY.parquet``, ``root/artifacts/NAME/KEY/FILE``, ``root/models/NAME/KEY/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.tables = self.root / "tables"

    def part_path(self, experiment: str, key: str) -> Path:
        return self.tables / f"experiment={experiment}" / f"part-{key}.parquet"

    def artifact_dir(self, experiment: str, key: str) -> Path:
        return self.root / "artifacts" / experiment / key

    def artifact_path(self, experiment: str, key: str, name: str) -> Path:
        """A job's artifact file; those named ``models/...`` are model files, under ``root/models/NAME/KEY/``."""
        if name.startswith("models/"):
            return self.root / "models" / experiment / key / name.removeprefix("models/")
        return self.artifact_dir(experiment, key) / name

    def done_keys(self, experiment: str) -> set[str]:
        folder = self.tables / f"experiment={experiment}"
        return {p.stem.removeprefix("part-") for p in folder.glob("part-*.parquet")}

    def experiments(self) -> list[str]:
        return sorted(p.name.split("=", 1)[1] for p in self.tables.glob("experiment=*") if p.is_dir())

    def write(self, experiment: str, key: str, rows: pd.DataFrame, artifacts: dict[str, bytes] | None = None) -> Path:
        """Artifacts first, the part last: a part on disk means the whole job is stored."""
        for name, blob in (artifacts or {}).items():
            _atomic_write(self.artifact_path(experiment, key, name), lambda tmp, b=blob: Path(tmp).write_bytes(b))
        table = pa.Table.from_pandas(rows.drop(columns=["experiment"], errors="ignore"), preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _VERSION_KEY: str(SCHEMA_VERSION)})
        path = self.part_path(experiment, key)
        _atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
        return path

    def read(self, experiment: str) -> pd.DataFrame:
        """All rows of one experiment, in a stable order (by key, then row)."""
        parts = sorted((self.tables / f"experiment={experiment}").glob("part-*.parquet"))
        frames = []
        for part in parts:
            table = pq.read_table(part)
            version = (table.schema.metadata or {}).get(_VERSION_KEY)
            if version is None or int(version) > SCHEMA_VERSION:
                raise StoreError(f"result schema {version!r} is newer than this version reads ({SCHEMA_VERSION}); "
                                 "upgrade hybridbench", file=str(part), field="schema")
            frames.append(table.to_pandas())
        if not frames:
            return pd.DataFrame()
        rows = pd.concat(frames, ignore_index=True)
        rows.insert(1, "experiment", experiment)
        return rows

    def write_manifest(self, experiment: str, sweep_key: str, config: dict, keys: list[str]) -> Path:
        """The plan of a sweep (its config and job keys), so `status` can tell what is pending."""
        path = self.root / "sweeps" / experiment / f"{sweep_key}.json"
        blob = json.dumps({"experiment": experiment, "sweep_key": sweep_key, "config": config, "jobs": keys},
                          indent=1, sort_keys=True)
        _atomic_write(path, lambda tmp: Path(tmp).write_text(blob))
        return path

    def manifests(self, experiment: str) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "sweeps" / experiment).glob("*.json"))]

    def status(self) -> list[dict]:
        """Per experiment: jobs done, failed, pending (planned by a recorded sweep, not yet stored)."""
        names = sorted(set(self.experiments()) | {p.name for p in (self.root / "sweeps").glob("*") if p.is_dir()})
        out = []
        for name in names:
            done = self.done_keys(name)
            planned = {k for m in self.manifests(name) for k in m["jobs"]}
            rows = self.read(name) if done else pd.DataFrame()
            failed = rows[rows["status"] == "failed"] if "status" in rows else rows.iloc[0:0]
            out.append({"experiment": name, "done": len(done), "failed_jobs": int(failed["key"].nunique()),
                        "pending": len(planned - done), "rows": len(rows),
                        "failures": sorted(set(failed["error"])) if len(failed) else []})
        return out

    def connect(self) -> duckdb.DuckDBPyConnection:
        """DuckDB with one view per experiment (``zoo-fit`` as ``zoo_fit``) and ``results`` over all."""
        con = duckdb.connect()
        for name in self.experiments():
            glob = (self.tables / f"experiment={name}" / "part-*.parquet").as_posix()
            con.execute(f"CREATE VIEW \"{name.replace('-', '_')}\" AS SELECT * FROM "
                        f"read_parquet('{glob}', hive_partitioning=true, union_by_name=true)")
        return con
