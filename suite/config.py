"""Experiment configuration: dataclasses loaded from YAML, overridden by ``key=value`` pairs."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from channelzoo.errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """A configuration that cannot be used: names the file (or --set) and the field."""


# Rules for numeric fields, by name: what a value must satisfy, and how the error says it.
RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "positive": (lambda x: math.isfinite(x) and x > 0, "a finite number > 0"),
    "non-negative": (lambda x: math.isfinite(x) and x >= 0, "a finite number >= 0"),
    "at least 1": (lambda x: x >= 1, "at least 1"),
    "finite": (math.isfinite, "a finite number"),
}


def require(config: Any, rule: str, *fields: str) -> None:
    """Each named field (every item of a list field; None is allowed) obeys ``RULES[rule]``, else a ConfigError.

    Called from configs' ``__post_init__``, so a bad value stops the command when the config is loaded,
    before any job runs or anything is written.
    """
    test, expected = RULES[rule]
    for name in fields:
        value = getattr(config, name)
        for item in value if isinstance(value, tuple | list) else (value,):
            if item is not None and not test(item):
                raise ConfigError(f"must be {expected}, got {value!r}", field=name)


def require_choice(config: Any, field: str, choices: Collection[str]) -> None:
    """The field's value (every item of a list field) is one of ``choices``, else a ConfigError naming them."""
    value = getattr(config, field)
    for item in value if isinstance(value, tuple | list) else (value,):
        if item not in choices:
            raise ConfigError(f"unknown value {item!r}; known: {', '.join(sorted(choices))}", field=field)


def _coerce(value: Any, hint: Any, field: str, origin: str) -> Any:
    """Convert a YAML or command-line value to the field's annotated type, or say why not."""
    if isinstance(value, str) and hint is not str and typing.get_origin(hint) is not typing.Literal:
        value = yaml.safe_load(value) if value != "" else value
    o = typing.get_origin(hint)
    args = typing.get_args(hint)
    if o in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, field, origin)
            except ConfigError:
                continue
        raise ConfigError(f"{value!r} is none of {hint}", file=origin, field=field)
    if o is typing.Literal:
        if value not in args:
            raise ConfigError(f"{value!r} is not one of {list(args)}", file=origin, field=field)
        return value
    if o in (tuple, list) or hint in (tuple, list):
        if isinstance(value, str | int | float):
            value = [value]
        if not isinstance(value, Sequence):
            raise ConfigError(f"expected a list, got {value!r}", file=origin, field=field)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, field, origin) for v in value]
        return tuple(items) if (o or hint) is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true or false, got {value!r}", file=origin, field=field)
    if hint in (int, float, str):
        if hint is float and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)  # YAML 1.1 reads "1e-3" as a string
        if hint is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, hint) or isinstance(value, bool):
            raise ConfigError(f"expected {hint.__name__}, got {value!r}", file=origin, field=field)
        return value
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any], origin: str = "config") -> T:
    """Build ``cls`` from a mapping; unknown keys and wrong types are ConfigErrors."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key; known keys: {', '.join(sorted(known))}", file=origin, field=unknown[0])
    return cls(**{k: _coerce(v, hints[k], k, origin) for k, v in data.items()})


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                preset: Mapping[str, Any] | None = None) -> T:
    """Defaults of ``cls``, then a preset's values, then the YAML file, then each ``key=value`` override."""
    data: dict[str, Any] = dict(preset or {})
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read ({e.strerror})", file=str(path)) from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"not UTF-8 text (byte {e.start}); a config is YAML text", file=str(path)) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML ({e})", file=str(path)) from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError("expected a mapping of keys to values", file=str(path))
        data.update(loaded or {})
    origin = str(path) if path is not None else "config"
    config = from_mapping(cls, data, origin)
    hints = typing.get_type_hints(cls)
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep:
            raise ConfigError(f"expected key=value, got {item!r}", file="--set", field=item)
        if key not in hints:
            raise ConfigError(f"unknown key; known keys: {', '.join(sorted(hints))}", file="--set", field=key)
        changes[key] = _coerce(value, hints[key], key, "--set")
    # All at once: keys that only make sense together (zoo=icg with zoo_path=...) are checked together.
    return dataclasses.replace(config, **changes) if changes else config


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML- and JSON-ready dict of a config dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
