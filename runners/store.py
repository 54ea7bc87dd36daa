"""The result store: one Parquet part file per job, hive-partitioned by experiment.

A part is written to a temporary file and renamed, so a part that exists is complete; a part that
passes ``check_part`` (footer, schema tag, its own key) is what marks a job done, which makes a
killed sweep resumable without duplicates. Every reader (``run``, ``status``, ``query``,
``figures``) goes through the same check: a bad part is skipped with a message naming it, and a sweep
moves it to ``quarantine/`` and runs its job again.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from channelzoo.atomic import atomic_write
from runners.parts import (
    PREFIX,
    SCHEMA_VERSION,
    SUFFIX,
    VERSION_KEY,
    NewerSchemaError,
    Part,
    StoreError,
    check_part,
    read_part,
    remove_all,
    stale_temporaries,
    tmp_prefix,
    type_conflicts,
)

__all__ = ["SCHEMA_VERSION", "ResultStore", "Scan", "StoreError"]

UNKNOWN_VERSION = "unknown"  # the code version of rows written before rows carried one


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    atomic_write(path, write, tmp_prefix(path))  # temporaries named by host and process, for the cleanup


def _warn(message: str) -> None:
    print(f"hybridbench: warning: {message}", file=sys.stderr, flush=True)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def view_name(experiment: str) -> str:
    return experiment.replace("-", "_")


@dataclass
class Scan:
    """The parts of one experiment: those that passed the check, by key, and those that did not, with why."""

    parts: dict[str, Part] = field(default_factory=dict)
    bad: dict[Path, StoreError] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts.values())


class ResultStore:
    """``root/tables/experiment=NAME/part-KEY.parquet``, ``root/artifacts/NAME/KEY/FILE``, ``root/models/NAME/KEY/``.

    ``warn`` receives each message about a part skipped or moved aside (default: stderr), once per part.
    """

    def __init__(self, root: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(root)
        self.tables = self.root / "tables"
        self.quarantine = self.root / "quarantine"
        self._warn = warn or _warn
        self._warned: set[Path] = set()

    def part_path(self, experiment: str, key: str) -> Path:
        return self.tables / f"experiment={experiment}" / f"{PREFIX}{key}{SUFFIX}"

    def artifact_dir(self, experiment: str, key: str) -> Path:
        return self.root / "artifacts" / experiment / key

    def model_dir(self, experiment: str, key: str) -> Path:
        return self.root / "models" / experiment / key

    def artifact_path(self, experiment: str, key: str, name: str) -> Path:
        """A job's artifact file; those named ``models/...`` are model files, under ``root/models/NAME/KEY/``."""
        if name.startswith("models/"):
            return self.model_dir(experiment, key) / name.removeprefix("models/")
        return self.artifact_dir(experiment, key) / name

    def experiments(self) -> list[str]:
        return sorted(p.name.split("=", 1)[1] for p in self.tables.glob("experiment=*") if p.is_dir())

    def scan(self, experiment: str) -> Scan:
        """Check every part of ``experiment``; a bad one is reported (once) and left out. A part of a newer
        schema stops the command (NewerSchemaError): a newer hybridbench wrote it, so it is not ours to judge."""
        scan = Scan()
        for path in sorted((self.tables / f"experiment={experiment}").glob(f"{PREFIX}*{SUFFIX}")):
            try:
                part = check_part(path)
            except NewerSchemaError:
                raise
            except StoreError as e:
                scan.bad[path] = e
                if path not in self._warned:
                    self._warned.add(path)
                    self._warn(f"skipped a bad part: {e} (the next `hybridbench run {experiment} ...` moves it "
                               f"to {self.quarantine} and runs its job again)")
                continue
            scan.parts[part.key] = part
        return scan

    def repair(self, experiment: str) -> Scan:
        """Before a sweep: move bad parts to ``quarantine/`` (so their jobs run again) and remove the
        temporary files of killed writes. Returns the scan of the parts that remain."""
        remove_all(stale_temporaries(self.tables / f"experiment={experiment}"), self._warn)
        remove_all(stale_temporaries(self.root / "artifacts" / experiment), self._warn)
        self._warned.update(p for p in (self.tables / f"experiment={experiment}").glob(f"{PREFIX}*{SUFFIX}"))
        scan = self.scan(experiment)
        folder = self.quarantine / f"experiment={experiment}"
        for path, error in scan.bad.items():
            target, n = folder / path.name, 1
            while target.exists():
                target, n = folder / f"{path.stem}.{n}{path.suffix}", n + 1
            try:
                folder.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
            except OSError as e:  # its job reruns all the same, and the new part replaces it
                self._warn(f"could not move a bad part to {folder} ({e.strerror}); its job runs again: {error}")
                continue
            self._warn(f"moved a bad part to {target}; its job runs again: {error}")
        return Scan(scan.parts)

    def done_keys(self, experiment: str) -> set[str]:
        """The keys of the jobs whose parts pass the check."""
        return set(self.scan(experiment).parts)

    def write(self, experiment: str, key: str, rows: pd.DataFrame, artifacts: dict[str, bytes] | None = None) -> Path:
        """Artifacts first, the part last: a part on disk means the whole job is stored. Writing a key again
        replaces its part in one rename (a rerun), so a job never has two parts."""
        for name, blob in (artifacts or {}).items():
            _atomic_write(self.artifact_path(experiment, key, name), lambda tmp, b=blob: Path(tmp).write_bytes(b))
        table = pa.Table.from_pandas(rows.drop(columns=["experiment"], errors="ignore"), preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), VERSION_KEY: str(SCHEMA_VERSION)})
        path = self.part_path(experiment, key)
        _atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
        return path

    def read(self, experiment: str, scan: Scan | None = None) -> pd.DataFrame:
        """The rows of the checked parts of one experiment, in a stable order (by key, then row).

        A column that holds numbers in one part and text in another is a StoreError naming the part and column.
        """
        scan = scan or self.scan(experiment)
        conflicts = type_conflicts(scan.parts.values())
        if conflicts:
            raise conflicts[0]
        tables = [read_part(scan.parts[key].path) for key in sorted(scan.parts)]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return pd.DataFrame()
        rows = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        rows.insert(min(1, rows.shape[1]), "experiment", experiment)
        return rows

    def jobs(self, experiment: str, scan: Scan | None = None) -> pd.DataFrame:
        """One row per stored job with rows: key, failed (a row of it failed), the errors of its failed rows,
        and the code version that computed it (``unknown`` for rows from before rows carried one)."""
        scan = scan or self.scan(experiment)
        files = [scan.parts[k].path.as_posix() for k in sorted(scan.parts) if scan.parts[k].rows]
        if not files:
            return pd.DataFrame({"key": [], "failed": [], "code_version": [], "errors": []})
        names = set().union(*(p.schema.names for p in scan.parts.values()))
        status = "CAST(status AS VARCHAR)" if "status" in names else "NULL"
        error = "CAST(error AS VARCHAR)" if "error" in names else "''"
        version = "CAST(code_version AS VARCHAR)" if "code_version" in names else "NULL"
        failed = f"coalesce({status} = 'failed', false)"
        sql = (f"SELECT key, bool_or({failed}) AS failed, coalesce(min({version}), '{UNKNOWN_VERSION}') AS "
               f"code_version, list(DISTINCT coalesce({error}, '')) FILTER (WHERE {failed}) AS errors "
               f"FROM read_parquet([{', '.join(map(_sql_string, files))}], union_by_name=true) GROUP BY key "
               "ORDER BY key")
        con = duckdb.connect()
        try:
            jobs = con.execute(sql).df()
        except duckdb.Error as e:
            raise StoreError(f"cannot read the status of its jobs ({e})", file=str(self.tables),
                             field=f"experiment={experiment}") from None
        finally:
            con.close()
        jobs["errors"] = [sorted(e) if isinstance(e, list | np.ndarray) else [] for e in jobs["errors"]]
        return jobs

    def write_manifest(self, experiment: str, sweep_key: str, config: dict, keys: list[str]) -> Path:
        """The plan of a sweep (its config and job keys), so `status` can tell what is pending."""
        path = self.root / "sweeps" / experiment / f"{sweep_key}.json"
        blob = json.dumps({"experiment": experiment, "sweep_key": sweep_key, "config": config, "jobs": keys},
                          indent=1, sort_keys=True)
        _atomic_write(path, lambda tmp: Path(tmp).write_text(blob))
        return path

    def manifests(self, experiment: str) -> list[dict]:
        out = []
        for path in sorted((self.root / "sweeps" / experiment).glob("*.json")):
            try:
                manifest = json.loads(path.read_text())
                if not isinstance(manifest.get("jobs"), list):
                    raise ValueError("no list of jobs")
            except (ValueError, OSError, AttributeError) as e:
                self._warn(f"skipped an unreadable sweep plan {path}: {e}")
                continue
            out.append(manifest)
        return out

    def status(self, code_versions: dict[str, str] | None = None) -> list[dict]:
        """Per experiment: jobs done (checked parts), failed, pending (planned by a recorded sweep, not yet
        stored), stale (made by another code version than ``code_versions[name]``; None where unknown),
        and the parts skipped as bad or conflicting."""
        names = sorted(set(self.experiments()) | {p.name for p in (self.root / "sweeps").glob("*") if p.is_dir()})
        out = []
        for name in names:
            scan = self.scan(name)
            jobs = self.jobs(name, scan)
            planned = {k for m in self.manifests(name) for k in m["jobs"]}
            current = (code_versions or {}).get(name)
            stale = None if current is None else int((jobs["code_version"] != current).sum())
            out.append({"experiment": name, "done": len(scan.parts), "failed_jobs": int(jobs["failed"].sum()),
                        "pending": len(planned - set(scan.parts)), "rows": scan.rows, "stale_jobs": stale,
                        "failures": sorted({e for errors in jobs["errors"] for e in errors}),
                        "problems": [str(e) for e in [*scan.bad.values(), *type_conflicts(scan.parts.values())]]})
        return out

    def connect(self) -> duckdb.DuckDBPyConnection:
        """DuckDB with one view per experiment (``zoo-fit`` as ``zoo_fit``) over its checked parts only; an
        experiment without any is an empty view.

        The connection sees no file outside ``root/tables`` (no ``read_csv('/etc/passwd')``, no ``COPY`` or
        ``ATTACH`` elsewhere, no extension installs), and SQL cannot lift that: results are shared on
        clusters. ``query`` also accepts only reading statements (``READ_ONLY_STATEMENTS``).
        """
        con = duckdb.connect()
        con.execute(f"SET allowed_directories=[{_sql_string(self.tables.resolve().as_posix() + '/')}]")
        con.execute("SET enable_external_access=false")
        for name in self.experiments():
            files = [p.path.resolve().as_posix() for _, p in sorted(self.scan(name).parts.items())]
            if files:
                source = (f"read_parquet([{', '.join(map(_sql_string, files))}], hive_partitioning=true, "
                          "union_by_name=true)")
            else:
                source = f"(SELECT CAST(NULL AS VARCHAR) AS key, {_sql_string(name)} AS experiment LIMIT 0)"
            con.execute(f'CREATE VIEW "{view_name(name)}" AS SELECT * FROM {source}')
        con.execute("SET lock_configuration=true")
        return con
