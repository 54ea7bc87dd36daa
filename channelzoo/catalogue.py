"""The catalogue: one Parquet table, a row per gate, with curves on the ICG grid.

Writing is atomic (temporary file, then rename) and deterministic (same channels, same
bytes). Loading gives a ``Zoo``, which filters like a table and rebuilds ``Channel`` objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from channelzoo.atomic import atomic_write
from channelzoo.channel import Channel
from channelzoo.errors import ZooError
from channelzoo.gates import Gate, GateBank
from channelzoo.grid import ICG_GRID_MV

SCHEMA_VERSION = 1

SCHEMA = pa.schema([
    ("channel_id", pa.string()),
    ("class", pa.string()),
    ("source", pa.string()),
    ("structure", pa.string()),
    ("gbar", pa.float64()),
    ("e_rev", pa.float64()),
    ("n_gates", pa.int32()),
    ("gate_index", pa.int32()),
    ("gate", pa.string()),
    ("power", pa.int32()),
    ("kinetics", pa.string()),
    ("q10", pa.float64()),
    ("t_ref", pa.float64()),
    ("x_inf", pa.list_(pa.float64())),
    ("tau", pa.list_(pa.float64())),
    ("definition", pa.string()),
    ("channel_metadata", pa.string()),
], metadata={b"hybridbench.catalogue.schema": str(SCHEMA_VERSION).encode()})


def _json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def sample_curves(gates: Sequence[Gate]) -> tuple[list[list[float]], list[list[float]]]:
    """x_inf and tau of every gate on the ICG grid at its own t_ref, in one batched call."""
    v = torch.tensor(ICG_GRID_MV, dtype=torch.float64)
    inf, tau = GateBank(gates, dtype=torch.float64).on_grid(v)
    return inf.tolist(), tau.tolist()


def to_table(channels: Sequence[Channel]) -> pa.Table:
    """The catalogue rows of ``channels`` (a row per gate, in channel then gate order)."""
    ids = [c.id for c in channels]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ZooError(f"channel id {dup!r} appears twice", field="channel_id")
    gates = [g for c in channels for g in c.gates]
    if not gates:
        raise ZooError("no gates to write", field="gates")
    x_inf, tau = sample_curves(gates)
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    k = 0
    for c in channels:
        meta = _json(c.metadata)
        for j, g in enumerate(c.gates):
            for name, value in (
                ("channel_id", c.id), ("class", c.ion_class), ("source", c.source), ("structure", c.structure),
                ("gbar", c.gbar), ("e_rev", c.e_rev), ("n_gates", len(c.gates)), ("gate_index", j),
                ("gate", g.name), ("power", g.power), ("kinetics", g.kinetics.kind), ("q10", g.q10),
                ("t_ref", g.t_ref), ("x_inf", x_inf[k]), ("tau", tau[k]), ("definition", _json(g.to_dict())),
                ("channel_metadata", meta),
            ):
                rows[name].append(value)
            k += 1
    return pa.Table.from_pydict(rows, schema=SCHEMA)


def write_catalogue(channels: Sequence[Channel], path: str | Path) -> Path:
    """Write the catalogue atomically: readers see the old file or the new, never half of one."""
    path = Path(path)
    table = to_table(channels)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def read_catalogue(path: str | Path) -> pd.DataFrame:
    """The rows of one catalogue file; a ZooError names the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ZooError("no catalogue here; build one with `hybridbench zoo build`", file=str(path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ZooError(f"not a readable Parquet file ({e})", file=str(path)) from None
    version = (table.schema.metadata or {}).get(b"hybridbench.catalogue.schema")
    if version is None or int(version) > SCHEMA_VERSION:
        raise ZooError(f"catalogue schema {version!r} is not one this version reads (<= {SCHEMA_VERSION})",
                       file=str(path), field="schema")
    missing = set(SCHEMA.names) - set(table.column_names)
    if missing:
        raise ZooError(f"catalogue lacks columns {sorted(missing)}", file=str(path), field=sorted(missing)[0])
    rows = table.to_pandas()
    check_curves(rows, str(path))
    return rows


# What each sampled curve must satisfy to describe a gate, and how an error says it.
CURVE_RULES = {
    "x_inf": (lambda c: (c >= 0) & (c <= 1), "finite, between 0 and 1"),
    "tau": (lambda c: c > 0, "finite and > 0 ms (a gate with tau 0 or less has no kinetics to fit)"),
}


def _first_bad_curve(curves: pd.Series, ok, expected: str) -> tuple[int, str, int] | None:
    """(row, what is wrong, how many rows are wrong) for the first unusable curve, or None."""
    n = len(ICG_GRID_MV)
    lengths = np.array([-1 if c is None else len(c) for c in curves])
    bad = np.flatnonzero(lengths != n)
    if len(bad):
        return int(bad[0]), f"has {lengths[bad[0]]} values, not one per grid voltage ({n})", len(bad)
    values = np.stack(curves.to_numpy()).astype(np.float64) if len(curves) else np.empty((0, n))
    with np.errstate(invalid="ignore"):
        good = np.isfinite(values) & ok(values)
    bad = np.flatnonzero(~good.all(axis=1))
    if not len(bad):
        return None
    v = values[bad[0]]
    what = "all zero" if not v.any() else "not finite" if not np.isfinite(v).all() else f"not {expected}"
    return int(bad[0]), f"{what} at {int((~good[bad[0]]).sum())} of {n} grid voltages; must be {expected}", len(bad)


def check_curves(rows: pd.DataFrame, file: str) -> None:
    """Every gate's x_inf and tau: one finite value per grid voltage, within its range; else a ZooError naming
    the file, the curve and the first gate at fault."""
    for name, (ok, expected) in CURVE_RULES.items():
        found = _first_bad_curve(rows[name], ok, expected)
        if found:
            i, problem, count = found
            row = rows.iloc[i]
            more = f" ({count} gates in all)" if count > 1 else ""
            raise ZooError(f"channel {row['channel_id']!r} gate {row['gate']!r}: {name} {problem}{more}",
                           file=file, field=name)


class Zoo:
    """A set of channels backed by catalogue rows: filter it, query it, rebuild channels."""

    def __init__(self, rows: pd.DataFrame) -> None:
        self.rows = rows.reset_index(drop=True)

    @classmethod
    def load(cls, paths: str | Path | Iterable[str | Path]) -> Zoo:
        paths = [paths] if isinstance(paths, str | Path) else list(paths)
        if not paths:
            raise ZooError("no catalogue given; build one with `hybridbench zoo build`")
        return cls(pd.concat([read_catalogue(p) for p in paths], ignore_index=True))

    @classmethod
    def from_channels(cls, channels: Sequence[Channel]) -> Zoo:
        return cls(to_table(channels).to_pandas())

    def __len__(self) -> int:
        """Number of channels."""
        return self.rows["channel_id"].nunique()

    @property
    def ids(self) -> list[str]:
        return list(dict.fromkeys(self.rows["channel_id"]))

    def filter(self, ion_class: str | Sequence[str] | None = None, source: str | Sequence[str] | None = None,
               ids: Sequence[str] | None = None) -> Zoo:
        """The channels matching every given criterion (a string or a list of accepted values)."""
        keep = pd.Series(True, index=self.rows.index)
        for column, wanted in (("class", ion_class), ("source", source), ("channel_id", ids)):
            if wanted is not None:
                keep &= self.rows[column].isin([wanted] if isinstance(wanted, str) else list(wanted))
        return Zoo(self.rows[keep])

    def channel(self, channel_id: str) -> Channel:
        rows = self.rows[self.rows["channel_id"] == channel_id]
        if rows.empty:
            raise ZooError(f"unknown channel {channel_id!r} (the zoo holds {len(self)} channels)", field="channel_id")
        return _channel_from_rows(rows)

    def channels(self) -> list[Channel]:
        return [_channel_from_rows(g) for _, g in self.rows.groupby("channel_id", sort=False)]

    def gates(self) -> list[Gate]:
        """Every gate, in row order, rebuilt from its definition."""
        return [Gate.from_dict(json.loads(d)) for d in self.rows["definition"]]

    def query(self, sql: str) -> pd.DataFrame:
        """DuckDB SQL over the rows, as the table ``zoo``."""
        con = duckdb.connect()
        try:
            con.register("zoo", self.rows)
            return con.execute(sql).df()
        except duckdb.Error as e:
            raise ZooError(f"query failed: {e}", field="sql") from None
        finally:
            con.close()

    def summary(self) -> pd.DataFrame:
        """Channels and gates per class and source."""
        return (self.rows.groupby(["source", "class"])
                .agg(channels=("channel_id", "nunique"), gates=("gate", "size")).reset_index())


def _channel_from_rows(rows: pd.DataFrame) -> Channel:
    first = rows.iloc[0]
    gates = tuple(Gate.from_dict(json.loads(d)) for d in rows.sort_values("gate_index")["definition"])
    return Channel(str(first["channel_id"]), str(first["class"]), str(first["source"]), float(first["gbar"]),
                   float(first["e_rev"]), gates, json.loads(first["channel_metadata"]))
