"""A trained model as two files: ``NAME.safetensors`` (the weights, never pickle) and ``NAME.json`` (the spec).

The spec says what the weights are and where they plug in: its version, the kind of model, the
architecture, the input normalisation, the units, the cell or model it belongs to, the fixed
parameters it was trained with, the job key and code version that made it, and its metrics. It
also lists every tensor (name, dtype, shape) and the weights file's SHA-256, so a loader can tell a
corrupt file, a file of another spec version, or a spec and weights that disagree, and say which
file and field is at fault (an ``InputError``: exit code 2 from the command).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from channelzoo.errors import InputError

SPEC_VERSION = 1
KINDS = ("recovered_gate", "reduced_hybrid", "gate_ensemble")
WEIGHTS_SUFFIX = ".safetensors"
SPEC_SUFFIX = ".json"
MODELS_ARTIFACT = "models"  # a job artifact under this folder is a model file: RESULTS/models/EXPERIMENT/KEY/...
_DTYPES = {torch.float32: "F32", torch.float64: "F64"}


class ModelFileError(InputError):
    """A model file that cannot be used: corrupt, of another spec version, or disagreeing with its weights."""


@dataclass
class SavedModel:
    """A model's spec (JSON-able dict) and its named weights; ``path`` is the spec file it came from, if any."""

    spec: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path | None = None

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    def to_bytes(self, name: str) -> dict[str, bytes]:
        """``{NAME.json: ..., NAME.safetensors: ...}``: the two files, ready for a store's artifacts."""
        check_tensors_dtype(self.tensors)
        tensors = {k: v.detach().contiguous().cpu() for k, v in sorted(self.tensors.items())}
        weights = save_safetensors(tensors, metadata={"spec_version": str(SPEC_VERSION), "kind": self.kind})
        spec = {**self.spec, "spec_version": SPEC_VERSION, "weights": {
            "file": name + WEIGHTS_SUFFIX, "sha256": hashlib.sha256(weights).hexdigest(),
            "tensors": {k: {"dtype": _DTYPES[v.dtype], "shape": list(v.shape)} for k, v in tensors.items()}}}
        text = json.dumps(spec, indent=1, sort_keys=True, allow_nan=True)
        return {name + SPEC_SUFFIX: text.encode(), name + WEIGHTS_SUFFIX: weights}


def relative_model_file(experiment: str, key: str, name: str) -> str:
    """Where a job's model spec lies under the results folder (what result rows reference)."""
    return f"{MODELS_ARTIFACT}/{experiment}/{key}/{name}{SPEC_SUFFIX}"


def model_artifacts(experiment: str, key: str, models: dict[str, SavedModel],
                    code_version: str | None) -> tuple[dict[str, bytes], list[str]]:
    """A job's models as store artifacts (``models/NAME.json``, ``models/NAME.safetensors``) with their
    provenance stamped in, and each one's file as a result row references it (in the order given)."""
    from suite.experiments.base import package_version

    artifacts: dict[str, bytes] = {}
    files = []
    for name, saved in models.items():
        saved.spec.update(experiment=experiment, job_key=key, code_version=code_version,
                          package_version=package_version())
        artifacts.update({f"{MODELS_ARTIFACT}/{f}": b for f, b in saved.to_bytes(name).items()})
        files.append(relative_model_file(experiment, key, name))
    return artifacts, files


def check_tensors_dtype(tensors: dict[str, torch.Tensor]) -> None:
    for k, v in tensors.items():
        if v.dtype not in _DTYPES:
            raise ValueError(f"tensor {k}: dtype {v.dtype} is not saved (float32 or float64 only)")


def save_model(model: SavedModel, folder: str | Path, name: str) -> Path:
    """Write the two files into ``folder``; returns the spec's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file, blob in model.to_bytes(name).items():
        (folder / file).write_bytes(blob)
    return folder / (name + SPEC_SUFFIX)


def spec_path(path: str | Path) -> Path:
    """The spec file of ``path``: the .json itself, its .safetensors twin, or the name without a suffix."""
    p = Path(path)
    if p.suffix == WEIGHTS_SUFFIX:
        return p.with_suffix(SPEC_SUFFIX)
    return p if p.suffix == SPEC_SUFFIX else p.with_name(p.name + SPEC_SUFFIX)


def read_spec(path: str | Path) -> dict[str, Any]:
    """The spec alone (for listing): checked for JSON, version and kind."""
    p = spec_path(path)
    try:
        spec = json.loads(p.read_text())
    except FileNotFoundError:
        raise ModelFileError("no such model file", file=str(p)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"not a JSON model spec ({e})", file=str(p), field="json") from None
    if not isinstance(spec, dict):
        raise ModelFileError("the spec must be a JSON object", file=str(p), field="json")
    version = spec.get("spec_version")
    if version != SPEC_VERSION:
        raise ModelFileError(f"spec version {version!r}; this version of hybridbench reads {SPEC_VERSION}",
                             file=str(p), field="spec_version")
    if spec.get("kind") not in KINDS:
        raise ModelFileError(f"unknown kind {spec.get('kind')!r}; known: {', '.join(KINDS)}", file=str(p),
                             field="kind")
    if not isinstance(spec.get("weights"), dict) or not isinstance(spec["weights"].get("tensors"), dict):
        raise ModelFileError("the spec lists no weights", file=str(p), field="weights")
    return spec


def load_model(path: str | Path) -> SavedModel:
    """Spec and weights, checked against each other (tensor names, dtypes, shapes and the file's hash)."""
    p = spec_path(path)
    spec = read_spec(p)
    weights_file = p.with_name(str(spec["weights"].get("file", p.stem + WEIGHTS_SUFFIX)))
    try:
        blob = weights_file.read_bytes()
    except FileNotFoundError:
        raise ModelFileError("the weights file named by the spec is missing", file=str(weights_file),
                             field="weights.file") from None
    if hashlib.sha256(blob).hexdigest() != spec["weights"].get("sha256"):
        raise ModelFileError("the weights file does not match the spec's SHA-256 (corrupt or replaced)",
                             file=str(weights_file), field="weights.sha256")
    try:
        tensors = load_safetensors(blob)
    except Exception as e:  # noqa: BLE001 - any parse failure of the file is bad input
        raise ModelFileError(f"not a safetensors file ({e})", file=str(weights_file), field="safetensors") from None
    listed = spec["weights"]["tensors"]
    if set(listed) != set(tensors):
        raise ModelFileError(f"the spec lists tensors {sorted(listed)}, the weights hold {sorted(tensors)}",
                             file=str(p), field="weights.tensors")
    for k, t in tensors.items():
        want = listed[k]
        if not isinstance(want, dict) or want.get("dtype") != _DTYPES.get(t.dtype) \
                or list(want.get("shape", [])) != list(t.shape):
            raise ModelFileError(f"tensor {k} is {_DTYPES.get(t.dtype)} {list(t.shape)} in the weights, "
                                 f"{want} in the spec", file=str(p), field=f"weights.tensors.{k}")
    return SavedModel(spec, tensors, p)


def require_field(model: SavedModel, dotted: str) -> Any:
    """``spec[a][b]...`` for ``a.b...``, or a ModelFileError naming the missing field."""
    node: Any = model.spec
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ModelFileError("missing from the spec", file=str(model.path), field=dotted)
        node = node[part]
    return node
