"""A channel's x_inf(V) and tau(V), one column per gate, for `hybridbench zoo plot`."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from channelzoo.channel import Channel  # noqa: E402
from channelzoo.gates import GateBank  # noqa: E402
from channelzoo.grid import ICG_GRID_MV, VALID_RANGE_MV  # noqa: E402


def plot_channel(channel: Channel, out: str | Path) -> Path:
    """Curves on a fine grid (lines) and on the ICG grid (dots), written to ``out``."""
    fine = torch.linspace(*VALID_RANGE_MV, 401, dtype=torch.float64)
    grid = torch.tensor(ICG_GRID_MV, dtype=torch.float64)
    bank = GateBank(channel.gates, dtype=torch.float64)
    inf, tau = bank.on_grid(fine)
    inf_g, tau_g = bank.on_grid(grid)
    n = len(channel.gates)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 5.0), squeeze=False, sharex=True)
    for j, gate in enumerate(channel.gates):
        for row, (curve, dots, label) in enumerate(((inf, inf_g, r"$x_\infty$"), (tau, tau_g, r"$\tau$ (ms)"))):
            ax = axes[row][j]
            ax.plot(fine, curve[j], color="k", lw=1.5)
            ax.plot(grid, dots[j], "o", ms=2.5, color="tab:blue")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"{gate.name} (power {gate.power}, {gate.kinetics.kind})", fontsize=9)
            else:
                ax.set_xlabel("V (mV)")
    fig.suptitle(f"{channel.id}  [{channel.ion_class}, {channel.source}]", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
