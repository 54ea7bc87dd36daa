"""The catalogue of channel models: generated, imported from ICG, queried as a table.

The names below load on first use (PEP 562), so that a light submodule (``channelzoo.grid``) can be
imported without torch, as ``analysis`` does.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Zoo": "catalogue", "write_catalogue": "catalogue", "Channel": "channel", "ZooError": "errors",
    **{name: "gates" for name in ("AlphaBeta", "Gate", "GateBank", "InfTau", "Rate", "Tabulated", "evaluate_gates")},
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'channelzoo' has no attribute {name!r}")
    return getattr(import_module(f"channelzoo.{_EXPORTS[name]}"), name)
