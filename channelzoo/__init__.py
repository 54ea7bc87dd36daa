"""The catalogue of channel models: generated, imported from ICG, queried as a table."""

from channelzoo.catalogue import Zoo, write_catalogue
from channelzoo.channel import Channel
from channelzoo.errors import ZooError
from channelzoo.gates import AlphaBeta, Gate, GateBank, InfTau, Rate, Tabulated, evaluate_gates

__all__ = ["AlphaBeta", "Channel", "Gate", "GateBank", "InfTau", "Rate", "Tabulated", "Zoo", "ZooError",
           "evaluate_gates", "write_catalogue"]
