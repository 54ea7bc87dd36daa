"""Import clones of the Ion Channel Genealogy (ICG) repositories: ``<ModelDB id>_<name>.mod/omnimodel.md``.

Each usable folder becomes a :class:`Channel` whose gates are ICG's 6.3 C tables (x_inf, tau in ms) on the
ICG grid. ICG's supermodel fits (the "omni" baseline: SM1..SM5 parameters and published errors) travel in
each gate's metadata, and :func:`omni_gates` turns them into InfTau gates that GateBank evaluates.

ICG normalises conductance, so gbar is 1.0; E_rev is not in the files, so each channel gets its class
default from :data:`E_REV_DEFAULT_MV` and says so in its metadata (``e_rev_default``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channelzoo.channel import Channel
from channelzoo.errors import ZooError
from channelzoo.forms import SUPERMODELS, get_form
from channelzoo.gates import Gate, InfTau, Rate, Tabulated
from channelzoo.grid import ICG_GRID_MV, ICG_TEMPERATURE_C

# Reversal potentials (mV) by class; ICG files carry none. KCa shares K's, IH is a mixed cation current.
E_REV_DEFAULT_MV: dict[str, float] = {"K": -77.0, "Na": 50.0, "Ca": 120.0, "KCa": -77.0, "IH": -45.0}
# ICG prints tau rounded to 0.01 ms, so a printed 0 means tau < 0.005 ms: an instantaneous gate. We raise
# those points to this floor (the smallest tau the rounding allows) instead of dropping ~700 channels.
TAU_FLOOR_MS = 0.005
# x_inf may leave [0, 1] by this much (then clamped); beyond it the table is not a probability.
INF_TOLERANCE = 1e-6

_OMNIMODEL = "omnimodel.md"
_README = "Readme.md"
_SM_NAMES = tuple(SUPERMODELS)
_ERRORS = tuple(f"ERROR{i} {part}" for i in (1, 2, 3) for part in ("SS", "TAU"))
_SM_SECTIONS = ("FIT", "PARAMS SS", "PARAMS TAU", *_ERRORS)
# Sections every unflagged file has; flagged files stop after ERROR FLAGS is read.
_REQUIRED = ("SUFFIX", "GATES", "RATE VALS TAU", "RATE VALS SS",
             *(f"{sm} {part}" for sm in _SM_NAMES for part in _SM_SECTIONS))

_HEADING = re.compile(r"^##[ \t]+(.*?)[ \t]*$", re.M)
_CLASS_LINE = re.compile(r"^\*\*Ion Channel Class\*\*:[ \t]*(\S+)", re.M)
_ITEM = re.compile(r"^-[ \t]+\*\*(.+?)\*\*:[ \t]*(.*?)[ \t]*$")
_FLAG = re.compile(r"^-[ \t]+(-?[0-9]{1,6})$")
_FENCED_JSON = re.compile(r"\A```json[ \t]*\n(.*)\n```\Z", re.S)
_README_ROW = re.compile(r"^(ModelDB id|ICG id|ICG Class)[ \t]*\|[ \t]*(.*?)[ \t]*$", re.M)
_LINK = re.compile(r"\[(.*?)\]\(.*?\)")
_JSON_NUMBER = (int, float, type(None))


@dataclass
class IcgImport:
    """What an import gave: channels (sorted by id), skipped folders with a reason, and malformed files."""

    channels: list[Channel] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def skip_counts(self) -> dict[str, int]:
        """Skipped folders per reason, most frequent first."""
        return dict(sorted(Counter(r for _, r in self.skipped).items(), key=lambda kv: (-kv[1], kv[0])))

    def report(self) -> str:
        """What was left out and why: a line per skip reason (with its count), a line per malformed file."""
        lines = [f"  skipped {count:5d}: {reason}" for reason, count in self.skip_counts.items()]
        return "\n".join(lines + [f"  error: {message}" for message in self.errors])

    @property
    def class_counts(self) -> dict[str, int]:
        """Imported channels per ion class."""
        return dict(sorted(Counter(c.ion_class for c in self.channels).items()))


class _Skip(Exception):
    """A well-formed folder that holds no usable channel; ``reason`` is a short, countable phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def import_icg(root: str | Path) -> IcgImport:
    """Import every ``*.mod`` folder under ``root`` (a set of icg-channels-* clones, one clone, or one folder).

    A malformed file becomes one message in ``errors`` and the import goes on; an unusable channel is
    skipped with a reason. The same .mod file sits in several repositories when it defines several currents
    (e.g. HH's Na and K): those ids get the class appended, ``113997_HH2.K`` and ``113997_HH2.Na``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ZooError("not a folder; expected a clone of an icg-channels-* repository", file=str(root))
    folders = _mod_folders(root)
    if not folders:
        raise ZooError("no <id>.mod folders found; expected a clone of an icg-channels-* repository",
                       file=str(root))
    result = IcgImport()
    seen: set[tuple[str, str]] = set()
    read: list[Channel] = []
    for folder in folders:
        label = folder.relative_to(root).as_posix() if folder != root else folder.name
        try:
            channel = _read_folder(folder)
        except _Skip as skip:
            result.skipped.append((label, skip.reason))
            continue
        except ZooError as e:
            result.errors.append(str(e))
            continue
        key = (channel.id, channel.ion_class)
        if key in seen:
            result.skipped.append((label, "duplicate of another folder"))
            continue
        seen.add(key)
        read.append(channel)
    classes = Counter(c.id for c in read)
    result.channels = sorted(
        (dataclasses.replace(c, id=f"{c.id}.{c.ion_class}") if classes[c.id] > 1 else c for c in read),
        key=lambda c: c.id)
    return result


def omni_gates(gate: Gate) -> dict[str, Gate]:
    """ICG's supermodel fits of an imported gate as InfTau gates, keyed ``SM1``..``SM5`` (fitted ones only)."""
    out = {}
    for sm, fit in gate.metadata.get("omni", {}).items():
        kinetics = InfTau(Rate.of(fit["inf_form"], fit["params_inf"]), Rate.of(fit["tau_form"], fit["params_tau"]))
        out[sm] = Gate(gate.name, gate.power, kinetics, gate.q10, gate.t_ref, {"supermodel": sm, "source": "icg"})
    return out


def parse_omnimodel(text: str, file: str) -> dict[str, str]:
    """Split an omnimodel.md into ``{SECTION: body}`` by its ``## SECTION`` headings (bodies stripped)."""
    text = text.replace("\r\n", "\n")
    parts = _HEADING.split(text)
    if len(parts) < 3:
        raise ZooError("no '## SECTION' headings; not an ICG omnimodel.md", file=file)
    sections: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in sections:
            raise ZooError("section appears twice", file=file, field=name)
        sections[name] = body.strip()
    return sections


def _mod_folders(root: Path) -> list[Path]:
    """``*.mod`` folders under ``root`` (itself included), sorted; hidden folders like .git are not entered."""
    if root.name.endswith(".mod"):
        return [root]
    found = []
    for here, dirs, _ in os.walk(root):
        mods = [d for d in dirs if d.endswith(".mod")]
        found.extend(Path(here) / d for d in mods)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".mod"))
    return sorted(found)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ZooError(f"cannot be read as UTF-8 text ({e.__class__.__name__})", file=str(path)) from None


def _read_folder(folder: Path) -> Channel:
    """One ``.mod`` folder as a Channel (id without the class suffix), or _Skip / ZooError."""
    omni, readme = folder / _OMNIMODEL, folder / _README
    if not omni.is_file():
        if not readme.is_file():
            raise ZooError(f"empty folder: neither {_OMNIMODEL} nor {_README}", file=str(folder))
        raise _Skip(f"no {_OMNIMODEL}")
    info = _parse_readme(_read_text(readme)) if readme.is_file() else {}
    return _channel_from_text(_read_text(omni), str(omni), folder.name, info)


def _channel_from_text(text: str, file: str, folder: str, readme: dict[str, str]) -> Channel:
    """The Channel an omnimodel.md's ``text`` describes (or _Skip / ZooError); ``readme``: Readme.md's rows."""
    sections = parse_omnimodel(text, file)
    flags = _error_flags(sections, file)
    if flags:
        raise _Skip(("error flag " if len(flags) == 1 else "error flags ") + ", ".join(map(str, sorted(flags))))
    for name in _REQUIRED:
        if name not in sections:
            raise ZooError("section missing (truncated file?)", file=file, field=name)
    class_line = _CLASS_LINE.search(text)
    ion_class = readme.get("ICG Class") or (class_line.group(1) if class_line else None)
    if not ion_class:
        raise ZooError("no ion class: neither Readme.md 'ICG Class' nor '**Ion Channel Class**'", file=file)
    if ion_class not in E_REV_DEFAULT_MV:
        raise _Skip(f"ion class {ion_class} has no default E_rev")

    gates = _gate_powers(sections["GATES"], file)
    taus = _json_section(sections, "RATE VALS TAU", file)
    infs = _json_section(sections, "RATE VALS SS", file)
    if "RATE VALS V" in sections:
        grids = _json_section(sections, "RATE VALS V", file)
        if any(_numbers(v, file, "RATE VALS V") != ICG_GRID_MV for v in grids.values()):
            raise _Skip("voltage grid differs from ICG's")
    q10 = _scalar(sections.get("Q10 TAU", "null"), file, "Q10 TAU")
    omni = _omni_fits(sections, list(gates), file)

    built, scores = [], []
    for name, power in gates.items():
        tau_key, tau = _gate_table(taus, name, file, "RATE VALS TAU")
        inf_key, inf = _gate_table(infs, name, file, "RATE VALS SS")
        if any(t < 0 for t in tau):
            raise _Skip("tau < 0")
        if any(not -INF_TOLERANCE <= x <= 1 + INF_TOLERANCE for x in inf):
            raise _Skip("x_inf outside [0, 1]")
        scores.append(_scores(omni[name], inf, tau))
        meta = {"tau_table": tau_key, "inf_table": inf_key, "cai_mM": _concentration(tau_key, name),
                "tau_floored_points": sum(t < TAU_FLOOR_MS for t in tau),
                "omni": omni[name], "omni_best": _best([scores[-1]])}
        kinetics = Tabulated(ICG_GRID_MV, tuple(min(max(x, 0.0), 1.0) for x in inf),
                             tuple(max(t, TAU_FLOOR_MS) for t in tau))
        built.append(Gate(name, power, kinetics, q10 if q10 is not None else 1.0, ICG_TEMPERATURE_C, meta))

    modeldb = readme.get("ModelDB id") or folder.split("_", 1)[0]
    return Channel(
        id=folder.removesuffix(".mod"), ion_class=ion_class, source="icg", gbar=1.0,
        e_rev=E_REV_DEFAULT_MV[ion_class], gates=tuple(built),
        metadata={"modeldb_id": modeldb, "icg_id": readme.get("ICG id"), "suffix": sections["SUFFIX"],
                  "file": f"{Path(file).parent.parent.name}/{folder}", "e_rev_default": True,
                  "q10_tau": q10, "q10_default": q10 is None, "omni_best": _best(scores)})


def _parse_readme(text: str) -> dict[str, str]:
    """Readme.md's 'ModelDB id', 'ICG id', 'ICG Class' rows; values are markdown links or plain text."""
    rows = {}
    for key, value in _README_ROW.findall(text):
        link = _LINK.fullmatch(value)
        rows[key] = (link.group(1) if link else value).replace("\\_", "_").strip()
    return rows


def _error_flags(sections: dict[str, str], file: str) -> list[int]:
    """ICG's error flags: ``[]`` or one ``- N`` line per flag."""
    body = sections.get("ERROR FLAGS")
    if body is None:
        raise ZooError("section missing (truncated file?)", file=file, field="ERROR FLAGS")
    if body == "[]":
        return []
    lines = [_FLAG.match(line.strip()) for line in body.splitlines() if line.strip()]
    if not lines or not all(lines):
        raise ZooError("expected '[]' or lines '- N'", file=file, field="ERROR FLAGS")
    return [int(m.group(1)) for m in lines]


def _items(body: str, file: str, section: str) -> dict[str, str]:
    """``- **name**: value`` lines as a dict."""
    out = {}
    for line in body.splitlines():
        if not line.strip():
            continue
        m = _ITEM.match(line.strip())
        if not m:
            raise ZooError(f"expected lines '- **name**: value', got {line.strip()[:40]!r}", file=file, field=section)
        out[m.group(1)] = m.group(2)
    return out


def _gate_powers(body: str, file: str) -> dict[str, int]:
    items = _items(body, file, "GATES")
    if not items:
        raise _Skip("no gates")
    powers = {}
    for name, value in items.items():
        if not re.fullmatch(r"[0-9]{1,3}", value):
            raise ZooError(f"power of gate {name!r} is {value!r}, not a whole number", file=file, field="GATES")
        powers[name] = int(value)
    if min(powers.values()) < 1:
        raise _Skip("gate with power 0")
    return powers


def _json_section(sections: dict[str, str], section: str, file: str) -> dict[str, Any]:
    """A section's JSON object (fenced in ```json or bare); json.loads only, never eval."""
    body = sections[section]
    fenced = _FENCED_JSON.match(body)
    try:
        value = json.loads(fenced.group(1) if fenced else body)
    except (ValueError, RecursionError) as e:
        raise ZooError(f"not valid JSON ({str(e)[:60]})", file=file, field=section) from None
    if not isinstance(value, dict):
        raise ZooError(f"expected a JSON object, got {type(value).__name__}", file=file, field=section)
    return value


def _numbers(value: Any, file: str, section: str) -> tuple[float, ...]:
    """A JSON list of numbers as floats; JSON's null (how ICG writes NaN) becomes NaN."""
    if not isinstance(value, list):
        raise ZooError(f"expected a list of numbers, got {type(value).__name__}", file=file, field=section)
    if not all(type(x) in _JSON_NUMBER for x in value):  # type(), not isinstance: JSON true is no number
        raise ZooError("table holds a non-numeric value", file=file, field=section)
    try:
        return tuple(math.nan if x is None else float(x) for x in value)
    except OverflowError:  # an integer literal beyond float range
        raise ZooError("table holds a number out of range", file=file, field=section) from None


def _gate_table(tables: dict[str, Any], gate: str, file: str, section: str) -> tuple[str, tuple[float, ...]]:
    """The 6.3 C table of ``gate``: ``g_6.3``, else ``g_<cai>_6.3`` (calcium-dependent), else bare ``g``.

    The bare key duplicates the 6.3 table but ICG emptied it for some gates, so it comes last.
    """
    tagged = sorted(k for k in tables if re.fullmatch(re.escape(gate) + r"_.+_6\.3", k))
    keys = [k for k in (f"{gate}_6.3", *tagged, gate) if tables.get(k)]
    if not keys:
        raise _Skip("gate missing from tables")
    values = _numbers(tables[keys[0]], file, section)
    if len(values) != len(ICG_GRID_MV):
        raise _Skip(f"table length is not {len(ICG_GRID_MV)}")
    if not all(math.isfinite(x) for x in values):
        raise _Skip("non-finite table value")
    return keys[0], values


def _concentration(key: str, gate: str) -> float | None:
    """The calcium concentration (mM) in a key like ``m_5e-05_6.3``: ICG's tables of Ca-dependent gates."""
    tag = re.fullmatch(re.escape(gate) + r"_(.+)_6\.3", key)
    try:
        return float(tag.group(1)) if tag else None
    except ValueError:
        return None


def _scalar(body: str, file: str, section: str) -> float | None:
    """A number, or None for ICG's null/NaN/[] (a value it could not compute)."""
    body = body.strip()
    if body in ("null", "[]", ""):
        return None
    try:
        value = float(body)
    except ValueError:
        raise ZooError(f"expected a number, got {body[:40]!r}", file=file, field=section) from None
    return value if math.isfinite(value) else None


def _per_gate(sections: dict[str, str], section: str, file: str) -> dict[str, float | None]:
    """A per-gate number section: ``- **g**: value`` lines, or a JSON object (ICG's form when fits are missing)."""
    body = sections[section]
    if not body.startswith(("```json", "{")):
        return {gate: _scalar(value, file, section) for gate, value in _items(body, file, section).items()}
    out: dict[str, float | None] = {}
    for gate, value in _json_section(sections, section, file).items():
        if value is None or value == []:
            out[gate] = None
        elif type(value) in _JSON_NUMBER:
            (number,) = _numbers([value], file, section)
            out[gate] = number if math.isfinite(number) else None
        else:
            raise ZooError(f"gate {gate!r}: expected a number, got {str(value)[:40]!r}", file=file, field=section)
    return out


def _omni_fits(sections: dict[str, str], gates: list[str], file: str) -> dict[str, dict[str, dict[str, Any]]]:
    """ICG's supermodel fits per gate and SMk: forms, parameters and published errors (fitted SMs only).

    An SMk counts as fitted for a gate when both its SS and TAU parameter lists are non-empty and finite;
    ICG's ``SMk FIT`` is false whenever any gate of the channel lacks a fit, so it says nothing per gate.
    """
    fits: dict[str, dict[str, dict[str, Any]]] = {gate: {} for gate in gates}
    for sm, (inf_form, tau_form) in SUPERMODELS.items():
        if sections[f"{sm} FIT"] not in ("true", "false"):
            raise ZooError("expected true or false", file=file, field=f"{sm} FIT")
        params = {part: _json_section(sections, f"{sm} PARAMS {part}", file) for part in ("SS", "TAU")}
        errors = {name: _per_gate(sections, f"{sm} {name}", file) for name in _ERRORS}
        for gate in gates:
            values = {}
            for part, form in (("SS", inf_form), ("TAU", tau_form)):
                section, expected = f"{sm} PARAMS {part}", len(get_form(form).params)
                raw = params[part].get(gate)
                values[part] = _numbers(raw, file, section) if raw else ()
                if values[part] and len(values[part]) != expected:
                    raise ZooError(f"gate {gate!r} has {len(values[part])} parameters, {form} takes {expected}",
                                   file=file, field=section)
            if not (values["SS"] and values["TAU"]) or not all(map(math.isfinite, values["SS"] + values["TAU"])):
                continue
            fit: dict[str, Any] = {"inf_form": inf_form, "tau_form": tau_form,
                                   "params_inf": list(values["SS"]), "params_tau": list(values["TAU"])}
            for name in _ERRORS:  # "ERROR1 SS" -> "err1_ss"
                fit[name.lower().replace("error", "err").replace(" ", "_")] = errors[name].get(gate)
            fits[gate][sm] = fit
    return fits


def _scores(fits: dict[str, dict[str, Any]], inf: tuple[float, ...], tau: tuple[float, ...]) -> dict[str, float]:
    """err1 (SS) + err1 (TAU) per fitted SM, ICG's relative error. err1 divides by the curve's std, so for a
    constant curve ICG publishes null or floating-point noise; there err3 (relative to the norm) stands in."""
    flat = {"ss": max(inf) == min(inf), "tau": max(tau) == min(tau)}
    scores = {}
    for sm, fit in fits.items():
        errors = [fit[f"err3_{part}" if flat[part] else f"err1_{part}"] for part in ("ss", "tau")]
        scores[sm] = math.inf if None in errors else sum(errors)
    return scores


def _best(scores: list[dict[str, float]]) -> str | None:
    """The SM fitted for every gate with the lowest summed score (ties: lower-numbered); None if none is finite.

    With one gate's scores this is the gate's best SM; with all gates', ICG's best per channel.
    """
    totals = [(sum(s[sm] for s in scores), sm) for sm in _SM_NAMES if all(sm in s for s in scores)]
    best = min(totals, default=(math.inf, None))
    return best[1] if math.isfinite(best[0]) else None
